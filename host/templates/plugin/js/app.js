// omnigate channel plugin `__NAME__`.
//
// The provider POSTs each customer message as JSON, signed with HMAC-SHA256 of the body in
// `X-Hub-Signature-256: sha256=<hex>`:
//
//     {"id": "m-1", "from": {"id": "u-1", "name": "Ana"}, "text": "Hello"}
//
// Replies go to `POST {api_base}/messages` as `{"to": …, "text": …}` with the API token as
// a bearer token; the provider answers `{"id": …}`. Change both to your provider's.

import {
  SendFailed, badRequest, bytes, config, exportChannel, invalid, okJson, requireMethod,
  sendRequest, text, verifyHubSignature,
} from './vendor/omnigate-sdk.js';

const Channel = {
  describe() {
    return {
      id: '__NAME__',
      name: '__NAME__',
      version: '0.1.0',
      kind: 'other',
      capabilities: ['text'],
      config: [{ name: 'api_base', description: "the provider's API base URL", required: true }],
      secrets: [
        { name: 'webhook_secret', description: "signs the provider's webhooks", required: true },
        { name: 'api_token', description: "bearer token for the provider's API", required: true },
      ],
      outboundHosts: [],
    };
  },

  handleWebhook(request) {
    requireMethod(request, 'POST');
    // The signature first: an unsigned body is never parsed.
    verifyHubSignature(request, 'webhook_secret');
    let incoming;
    try {
      incoming = JSON.parse(text(request.body));
    } catch (error) {
      throw badRequest(`invalid JSON body: ${error.message}`);
    }
    const from = incoming && incoming.from;
    if (typeof incoming.id !== 'string' || !from || typeof from.id !== 'string' || typeof incoming.text !== 'string') {
      throw badRequest('invalid JSON body: `id`, `from.id` and `text` are required strings');
    }
    const event = {
      externalId: incoming.id,
      occurredAt: undefined,
      account: undefined,
      contact: { id: from.id, name: typeof from.name === 'string' ? from.name : undefined, handles: [] },
      body: {
        tag: 'message',
        val: {
          direction: 'inbound', text: incoming.text, parts: [], replyTo: undefined,
          forwarded: false, interactiveReply: undefined, referral: undefined,
        },
      },
      raw: undefined,
    };
    return { response: okJson({ ok: true }), events: [event] };
  },

  send(message) {
    const base = config('api_base');
    if (base === undefined) throw invalid('config `api_base` is not set');
    if (message.text === undefined) throw invalid('this channel sends text only');
    const response = sendRequest({
      method: 'POST',
      url: `${base}/messages`,
      headers: [
        { name: 'content-type', value: 'application/json' },
        { name: 'authorization', value: 'Bearer {{secret:api_token}}' },
      ],
      body: bytes(JSON.stringify({ to: message.recipient, text: message.text })),
      timeoutMs: 10000,
    });
    try {
      const accepted = JSON.parse(text(response.body));
      return { externalId: String(accepted.id), raw: text(response.body) };
    } catch (error) {
      throw new SendFailed('transient', `unreadable answer: ${error.message}`);
    }
  },
};

export const plugin = exportChannel(Channel);
