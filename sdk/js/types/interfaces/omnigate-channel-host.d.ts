/// <reference path="./omnigate-channel-types.d.ts" />
declare module 'omnigate:channel/host@0.2.0' {
  /**
   * Write a line to the host's log, tagged with the plugin and channel.
   */
  export function log(level: LogLevel, message: string): void;
  /**
   * The current time.
   */
  export function now(): Timestamp;
  /**
   * A configuration value of this channel (`config = { … }` in the host config).
   * Secrets are not readable here.
   */
  export function config(key: string): string | undefined;
  /**
   * Check `signature` over `message` with the channel secret called `secret`.
   * The secret's value never enters the plugin.
   */
  export function verify(scheme: SignatureScheme, secret: string, message: Uint8Array, signature: string): boolean;
  /**
   * Sign `message` with the channel secret called `secret`; returns the signature
   * formatted as the scheme's header value (`sha256=…`, `v1,…`, `v0=…`, hex, base64).
   */
  export function sign(scheme: SignatureScheme, secret: string, message: Uint8Array): string;
  /**
   * Make an HTTP request on the plugin's behalf.
   */
  export function httpFetch(request: FetchRequest): FetchResponse;
  export type Header = import('omnigate:channel/types@0.2.0').Header;
  export type Timestamp = import('omnigate:channel/types@0.2.0').Timestamp;
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * Very detailed.
   * ## `"debug"`
   * 
   * Debugging detail.
   * ## `"info"`
   * 
   * Normal operation.
   * ## `"warn"`
   * 
   * Something looks wrong.
   * ## `"error"`
   * 
   * Something failed.
   */
  export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /**
   * Signature schemes the host computes natively, in constant time.
   * # Variants
   * 
   * ## `"hmac-sha256-hex"`
   * 
   * HMAC-SHA256, lowercase hex (Shopify-style, Slack without prefix).
   * ## `"hmac-sha256-base64"`
   * 
   * HMAC-SHA256, standard base64.
   * ## `"hmac-sha256-prefixed"`
   * 
   * HMAC-SHA256 as `sha256=<hex>` (Meta's `X-Hub-Signature-256`, GitHub).
   * ## `"hmac-sha1-base64"`
   * 
   * HMAC-SHA1, base64 (Twilio's `X-Twilio-Signature`).
   * ## `"standard-webhooks"`
   * 
   * Standard Webhooks: secret `whsec_<base64>`, message `id.timestamp.body`,
   * signature header `v1,<base64>` (several, space-separated, during rotation).
   * ## `"slack-v0"`
   * 
   * Slack: message `v0:timestamp:body`, signature `v0=<hex>`.
   * ## `"equals"`
   * 
   * Plain constant-time equality of the presented value with the secret
   * (Telegram's secret token, Meta's verify token). The message is ignored.
   */
  export type SignatureScheme = 'hmac-sha256-hex' | 'hmac-sha256-base64' | 'hmac-sha256-prefixed' | 'hmac-sha1-base64' | 'standard-webhooks' | 'slack-v0' | 'equals';
  /**
   * Why a secret could not be used.
   */
  export type SecretError = SecretErrorUnknown | SecretErrorMalformed;
  /**
   * The channel has no secret of that name.
   */
  export interface SecretErrorUnknown {
    tag: 'unknown',
    val: string,
  }
  /**
   * The secret's value does not fit the scheme (e.g. not a `whsec_` key).
   */
  export interface SecretErrorMalformed {
    tag: 'malformed',
    val: string,
  }
  /**
   * An outgoing HTTP request. URL, header values and body may contain
   * `{{secret:NAME}}` placeholders, which the host fills in after checking the URL's
   * host against the channel's allow-list.
   */
  export interface FetchRequest {
    /**
     * `GET`, `POST`, …
     */
    method: string,
    /**
     * Absolute `http`/`https` URL.
     */
    url: string,
    /**
     * Request headers.
     */
    headers: Array<Header>,
    /**
     * Request body.
     */
    body: Uint8Array,
    /**
     * Timeout in milliseconds; the host caps it at its own limit.
     */
    timeoutMs?: number,
  }
  /**
   * The answer to a fetch. Secret values the host filled in are redacted from it.
   */
  export interface FetchResponse {
    /**
     * Status code.
     */
    status: number,
    /**
     * Response headers.
     */
    headers: Array<Header>,
    /**
     * Response body, at most the host's size limit.
     */
    body: Uint8Array,
  }
  /**
   * Why a fetch did not produce a response.
   */
  export type FetchError = FetchErrorDenied | FetchErrorInvalidRequest | FetchErrorTimeout | FetchErrorTooLarge | FetchErrorConnection;
  /**
   * The URL's host is not allowed for this channel, or a placeholder names an
   * unknown secret. Nothing was sent.
   */
  export interface FetchErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * The request is malformed (bad URL, method or header).
   */
  export interface FetchErrorInvalidRequest {
    tag: 'invalid-request',
    val: string,
  }
  /**
   * No answer within the timeout.
   */
  export interface FetchErrorTimeout {
    tag: 'timeout',
  }
  /**
   * The response was larger than the host's limit.
   */
  export interface FetchErrorTooLarge {
    tag: 'too-large',
    val: bigint,
  }
  /**
   * Connection or protocol failure.
   */
  export interface FetchErrorConnection {
    tag: 'connection',
    val: string,
  }
}
