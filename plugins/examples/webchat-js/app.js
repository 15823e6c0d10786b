// The web chat channel in JavaScript: the same behaviour as the Rust plugin `plugins/webchat`.
// The site's backend POSTs each visitor message as JSON signed with Standard Webhooks;
// replies go back as signed JSON POSTs to the site's `callback_url` (docs/channels/webchat.md).

import {
  badRequest, bytes, config, exportChannel, formatRfc3339, invalid, now, okJson, parseRfc3339,
  referralFromUrl, requireMethod, sendRequest, signStandardWebhooks, text, verifyStandardWebhooks,
} from '../../../sdk/js/src/index.js';

const SIGNING_SECRET = 'signing_secret';
const CALLBACK_URL = 'callback_url';
const TOLERANCE_SECS = 5 * 60;
const SEND_TIMEOUT_MS = 10000;
const MEDIA_KINDS = ['image', 'video', 'audio', 'voice', 'document', 'sticker'];

function str(value, field) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw badRequest(`invalid JSON body: \`${field}\` is not a string`);
  return value;
}

function requiredField(obj, field, path) {
  if (obj[field] === undefined || obj[field] === null) {
    throw badRequest(`invalid JSON body: missing field \`${field}\`${path ? ` in \`${path}\`` : ''}`);
  }
  return str(obj[field], path ? `${path}.${field}` : field);
}

function media(attachment) {
  if (typeof attachment !== 'object' || attachment === null) throw badRequest('invalid JSON body: an attachment is not an object');
  const kind = requiredField(attachment, 'type', 'attachments');
  if (!MEDIA_KINDS.includes(kind)) throw badRequest(`invalid JSON body: unknown variant \`${kind}\``);
  return {
    tag: 'media',
    val: {
      kind, id: undefined, url: requiredField(attachment, 'url', 'attachments'),
      mimeType: str(attachment.mime_type, 'mime_type'), caption: str(attachment.caption, 'caption'),
      filename: str(attachment.filename, 'filename'),
      size: Number.isInteger(attachment.size) ? BigInt(attachment.size) : undefined, sha256: undefined,
    },
  };
}

function toEvent(message) {
  const id = requiredField(message, 'id', '');
  const visitor = message.visitor;
  if (typeof visitor !== 'object' || visitor === null) throw badRequest('invalid JSON body: missing field `visitor`');
  const visitorId = requiredField(visitor, 'id', 'visitor');
  if (!id.trim()) throw badRequest('`id` is empty');
  if (!visitorId.trim()) throw badRequest('`visitor.id` is empty');
  const body = str(message.text, 'text') || undefined;
  const attachments = message.attachments || [];
  const interactive = message.interactive_reply;
  if (body === undefined && !attachments.length && (interactive === undefined || interactive === null)) {
    throw badRequest('message has no text, attachments or interactive_reply');
  }
  let occurredAt;
  if (message.sent_at !== undefined && message.sent_at !== null) {
    occurredAt = parseRfc3339(String(message.sent_at));
    if (occurredAt === undefined) throw badRequest(`\`sent_at\` is not an RFC 3339 timestamp: ${JSON.stringify(message.sent_at)}`);
  }
  const verified = visitor.authenticated === true;
  const handles = [['email', visitor.email], ['phone', visitor.phone]]
    .filter(([, value]) => value)
    .map(([kind, value]) => ({ kind: kind === 'email' ? 'email' : 'phone', value, verified }));
  const page = message.page;
  return {
    externalId: id,
    occurredAt,
    account: undefined,
    contact: { id: visitorId, name: str(visitor.name, 'visitor.name'), handles },
    body: {
      tag: 'message',
      val: {
        direction: 'inbound', text: body, parts: attachments.map(media),
        replyTo: str(message.reply_to, 'reply_to'), forwarded: false,
        interactiveReply: interactive ? {
          kind: interactive.kind === 'list' ? 'list' : 'button',
          id: requiredField(interactive, 'id', 'interactive_reply'), title: str(interactive.title, 'title'),
        } : undefined,
        referral: page && page.url ? referralFromUrl(page.url, page.referrer) : undefined,
      },
    },
    raw: undefined,
  };
}

function toPayload(message, nowMs) {
  if (message.template !== undefined) throw invalid('webchat cannot send templates');
  if (message.reaction !== undefined) throw invalid('webchat cannot send reactions');
  const parts = message.parts.map((part) => {
    if (part.tag === 'location') throw invalid('webchat cannot send locations');
    if (part.tag === 'contact') throw invalid('webchat cannot send contact cards');
    if (part.tag !== 'media') throw invalid(`webchat cannot send unsupported part "${part.val.providerType}"`);
    const m = part.val;
    if (m.url === undefined) throw invalid('webchat cannot send media without a url');
    const entry = { type: m.kind, url: m.url };
    if (m.mimeType !== undefined) entry.mime_type = m.mimeType;
    if (m.filename !== undefined) entry.filename = m.filename;
    if (m.caption !== undefined) entry.caption = m.caption;
    if (m.size !== undefined) entry.size = Number(m.size);
    return entry;
  });
  if (message.text === undefined && !parts.length && message.interactive === undefined) throw invalid('webchat cannot send an empty message');
  const payload = {
    type: 'message', id: message.id, conversation_id: message.conversationId, visitor_id: message.recipient,
    text: message.text ?? null, parts, reply_to: message.replyTo ?? null,
  };
  if (message.interactive !== undefined) {
    const e = message.interactive;
    payload.interactive = {
      style: e.style, body: e.body,
      ...(e.actionLabel !== undefined ? { action_label: e.actionLabel } : {}),
      choices: e.choices.map((c) => ({ id: c.id, title: c.title, ...(c.description !== undefined ? { description: c.description } : {}) })),
    };
  }
  payload.sent_at = formatRfc3339(nowMs);
  return payload;
}

const WebChat = {
  describe() {
    return {
      id: 'webchat', name: 'Web chat', version: '0.2.0', kind: 'webchat',
      capabilities: ['text', 'media', 'interactive', 'referrals', 'replies'],
      config: [{ name: CALLBACK_URL, description: 'URL on the site that receives replies (POST, JSON)', required: true }],
      secrets: [{ name: SIGNING_SECRET, description: 'Standard Webhooks key (whsec_…) shared with the site, both directions', required: true }],
      outboundHosts: [],
    };
  },

  handleWebhook(request) {
    requireMethod(request, 'POST');
    // Check the signature before looking at the body: unsigned input is never parsed.
    verifyStandardWebhooks(request, SIGNING_SECRET, TOLERANCE_SECS);
    let message;
    try {
      message = JSON.parse(text(request.body));
    } catch (error) {
      throw badRequest(`invalid JSON body: ${error.message}`);
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) throw badRequest('invalid JSON body: not an object');
    if (message.type !== 'message') throw badRequest(`unknown type \`${message.type}\``);
    return { response: okJson({ ok: true }), events: [toEvent(message)] };
  },

  send(message) {
    const callbackUrl = config(CALLBACK_URL);
    if (callbackUrl === undefined) throw invalid(`config \`${CALLBACK_URL}\` is not set`);
    const nowMs = now();
    const body = bytes(JSON.stringify(toPayload(message, nowMs)));
    // The host signs; the plugin only names the secret. The message id doubles as `webhook-id`.
    const headers = signStandardWebhooks(SIGNING_SECRET, message.id, nowMs / 1000n, body);
    headers.push({ name: 'content-type', value: 'application/json' });
    const response = sendRequest({ method: 'POST', url: callbackUrl, headers, body, timeoutMs: SEND_TIMEOUT_MS });
    let externalId = message.id;
    try {
      const ack = JSON.parse(text(response.body));
      if (ack && typeof ack.id === 'string') externalId = ack.id;
    } catch {
      // No JSON answer: the message id stands.
    }
    return { externalId, raw: response.body.length ? text(response.body) : undefined };
  },
};

export const plugin = exportChannel(WebChat);
