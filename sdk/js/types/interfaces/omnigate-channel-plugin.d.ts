/// <reference path="./omnigate-channel-types.d.ts" />
declare module 'omnigate:channel/plugin@0.2.0' {
  /**
   * Who the plugin is and what it needs. Must not depend on configuration.
   */
  export function describe(): PluginInfo;
  /**
   * Verify and normalize one provider webhook (or answer a handshake).
   */
  export function handleWebhook(request: HttpRequest): WebhookOutcome;
  /**
   * Deliver a reply through the provider's API, using `host.http-fetch`.
   */
  export function send(message: OutboundMessage): SendReceipt;
  export type PluginInfo = import('omnigate:channel/types@0.2.0').PluginInfo;
  export type HttpRequest = import('omnigate:channel/types@0.2.0').HttpRequest;
  export type WebhookOutcome = import('omnigate:channel/types@0.2.0').WebhookOutcome;
  export type WebhookError = import('omnigate:channel/types@0.2.0').WebhookError;
  export type OutboundMessage = import('omnigate:channel/types@0.2.0').OutboundMessage;
  export type SendReceipt = import('omnigate:channel/types@0.2.0').SendReceipt;
  export type SendError = import('omnigate:channel/types@0.2.0').SendError;
}
