// Write omnigate channel plugins in JavaScript (contract `omnigate:channel@0.2.0`).
//
// A plugin module exports `plugin = exportChannel({ describe, handleWebhook, send })`;
// componentize-js builds it into a component (with `-d http -d fetch-event`: plugins reach
// the network only through the host's `httpFetch`). Values follow the component model's
// JavaScript mapping: records are objects with camelCase fields, enums are strings,
// variants `{ tag, val }`, `list<u8>` a Uint8Array, `s64`/`u64` BigInt.

import { log, now, config, verify, sign, httpFetch } from 'omnigate:channel/host@0.2.0';

export { log, now, config };

/** A webhook refusal: `tag` is `unauthorized` (401), `forbidden` (403) or `bad-request` (400). */
export class WebhookRefused extends Error {
  constructor(tag, reason) {
    super(reason);
    this.tag = tag;
  }
}
/** Signature or secret missing or wrong (401). */
export const unauthorized = (reason) => new WebhookRefused('unauthorized', reason);
/** The request cannot be understood (400); the reason goes back to the caller. */
export const badRequest = (reason) => new WebhookRefused('bad-request', reason);
/** A handshake that must fail (403). */
export const forbidden = (reason) => new WebhookRefused('forbidden', reason);

/** A failed reply: `tag` is `rate-limited`, `rejected`, `unauthorized`, `transient` or `invalid`. */
export class SendFailed extends Error {
  constructor(tag, val) {
    super(typeof val === 'string' ? val : tag);
    this.tag = tag;
    this.val = val;
  }
}
/** The message cannot be expressed on this channel. */
export const invalid = (reason) => new SendFailed('invalid', reason);

/** The component's `plugin` export: typed errors become the contract's error values. */
export function exportChannel(channel) {
  return {
    describe: () => channel.describe(),
    handleWebhook(request) {
      try {
        return channel.handleWebhook(request);
      } catch (error) {
        if (error instanceof WebhookRefused) throw { tag: error.tag, val: error.message };
        throw error;
      }
    },
    send(message) {
      try {
        return channel.send(message);
      } catch (error) {
        if (error instanceof SendFailed) throw { tag: error.tag, val: error.val };
        throw error;
      }
    },
  };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string. */
export const bytes = (text) => encoder.encode(text);
/** A string from UTF-8 bytes. */
export const text = (data) => decoder.decode(data);

/** The first value of header `name` (case-insensitive). */
export function header(request, name) {
  const lower = name.toLowerCase();
  const found = request.headers.find((h) => h.name.toLowerCase() === lower);
  return found === undefined ? undefined : found.value;
}

/** Refuse (400) a request of another method. */
export function requireMethod(request, method) {
  if (request.method.toUpperCase() !== method) {
    throw badRequest(`method ${request.method} not allowed, expected ${method}`);
  }
}

/** A 200 response with `value` as JSON. */
export function okJson(value) {
  return { status: 200, headers: [{ name: 'content-type', value: 'application/json' }], body: bytes(JSON.stringify(value)) };
}

function required(request, name) {
  const value = header(request, name);
  if (value === undefined) throw unauthorized(`missing ${name} header`);
  return value;
}

function check(scheme, secret, message, signature) {
  let valid;
  try {
    valid = verify(scheme, secret, message, signature);
  } catch (error) {
    throw unauthorized(`secret \`${secret}\` cannot be used`);
  }
  if (!valid) throw unauthorized('signature does not match');
}

function concat(prefix, body) {
  const head = bytes(prefix);
  const all = new Uint8Array(head.length + body.length);
  all.set(head);
  all.set(body, head.length);
  return all;
}

/** Standard Webhooks: `webhook-id`, `webhook-timestamp` (within `toleranceSecs`), `webhook-signature`. */
export function verifyStandardWebhooks(request, secret, toleranceSecs) {
  const id = required(request, 'webhook-id');
  const timestamp = required(request, 'webhook-timestamp');
  const signature = required(request, 'webhook-signature');
  if (!/^\s*\d+\s*$/.test(timestamp)) throw unauthorized('webhook-timestamp is not a Unix timestamp');
  const ts = Number(timestamp.trim());
  const age = Number(now() / 1000n) - ts;
  if (Math.abs(age) > toleranceSecs) throw unauthorized(`timestamp ${age} s old, tolerance ${toleranceSecs} s`);
  check('standard-webhooks', secret, concat(`${id}.${ts}.`, request.body), signature);
}

/** The three Standard Webhooks headers for sending `body`, signed by the host. */
export function signStandardWebhooks(secret, id, tsSecs, body) {
  const signature = sign('standard-webhooks', secret, concat(`${id}.${tsSecs}.`, body));
  return [
    { name: 'webhook-id', value: id },
    { name: 'webhook-timestamp', value: String(tsSecs) },
    { name: 'webhook-signature', value: signature },
  ];
}

/** Meta's `X-Hub-Signature-256` over the body. */
export function verifyHubSignature(request, secret) {
  check('hmac-sha256-prefixed', secret, request.body, required(request, 'x-hub-signature-256'));
}

/** A fetch through the host; non-2xx answers and failures become `SendFailed` as in the Rust SDK. */
export function sendRequest(request) {
  let response;
  try {
    response = httpFetch(request);
  } catch (error) {
    const failure = error && error.payload ? error.payload : error;
    const tag = failure && failure.tag;
    if (tag === 'denied' || tag === 'invalid-request') throw new SendFailed('invalid', `fetch ${tag}: ${failure.val}`);
    throw new SendFailed('transient', `${tag || 'fetch failed'}${failure && failure.val ? `: ${failure.val}` : ''}`);
  }
  const status = response.status;
  if (status >= 200 && status <= 299) return response;
  const detail = text(response.body).trim().slice(0, 500) || undefined;
  const described = detail ? `HTTP ${status}: ${detail}` : `HTTP ${status}`;
  if (status === 429) {
    const retry = response.headers.find((h) => h.name.toLowerCase() === 'retry-after');
    throw new SendFailed('rate-limited', retry && /^\d+$/.test(retry.value.trim()) ? Number(retry.value.trim()) : undefined);
  }
  if (status === 401 || status === 403) throw new SendFailed('unauthorized', described);
  if (status === 408 || (status >= 500 && status <= 599)) throw new SendFailed('transient', described);
  throw new SendFailed('rejected', { code: String(status), title: `HTTP ${status}`, detail });
}

const CLICK_IDS = ['fbclid', 'gclid', 'gbraid', 'wbraid', 'ttclid', 'msclkid', 'li_fat_id', 'ctwa_clid'];
const PAID_CLICK_IDS = ['gclid', 'gbraid', 'wbraid', 'msclkid', 'ttclid', 'li_fat_id'];
const PAID_MEDIUMS = ['cpc', 'ppc', 'paid', 'paid_social', 'paidsocial', 'ad', 'ads', 'display', 'cpm'];
const UTM = ['source', 'medium', 'campaign', 'term', 'content'];

function decode(component) {
  try {
    return decodeURIComponent(component.replace(/\+/g, ' '));
  } catch {
    return component;
  }
}

/** The referral behind a visit to `url` (UTM parameters, click ids), the Rust SDK's rules. */
export function referralFromUrl(url, referrer) {
  const ref = referrer && referrer.trim() ? referrer.trim() : undefined;
  const query = url.split('#', 1)[0].split('?').slice(1).join('?');
  const params = query ? query.split('&').filter(Boolean).map((pair) => {
    const at = pair.indexOf('=');
    return at < 0 ? [decode(pair), ''] : [decode(pair.slice(0, at)), decode(pair.slice(at + 1))];
  }) : [];
  const first = (name) => {
    const found = params.find(([key, value]) => key === name && value);
    return found ? found[1] : undefined;
  };
  const utm = UTM.filter((name) => first(`utm_${name}`)).map((name) => ({ name, value: first(`utm_${name}`) }));
  const clickIds = CLICK_IDS.filter((name) => first(name)).map((name) => ({ name, value: first(name) }));
  if (!utm.length && !clickIds.length && ref === undefined) return undefined;
  const medium = (first('utm_medium') || '').toLowerCase();
  const paid = clickIds.some((p) => PAID_CLICK_IDS.includes(p.name)) || PAID_MEDIUMS.includes(medium);
  return {
    source: paid ? 'ad' : 'link',
    adId: undefined, campaign: first('utm_campaign'), clickIds, utm, url, referrer: ref,
    refPayload: undefined, headline: undefined, body: undefined, mediaUrl: undefined,
  };
}

/** Milliseconds (BigInt) since the epoch of an RFC 3339 timestamp, or undefined. */
export function parseRfc3339(value) {
  if (!/^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(value)) return undefined;
  const millis = Date.parse(value);
  return Number.isNaN(millis) ? undefined : BigInt(millis);
}

/** `2026-11-24T10:00:00Z` (with milliseconds when there are any). */
export function formatRfc3339(millis) {
  const iso = new Date(Number(millis)).toISOString();
  return iso.endsWith('.000Z') ? `${iso.slice(0, -5)}Z` : iso;
}
