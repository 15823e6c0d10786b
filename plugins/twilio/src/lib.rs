//! omnigate channel plugin for Twilio Programmable Messaging: SMS, MMS and WhatsApp
//! through Twilio.
//!
//! Twilio POSTs `application/x-www-form-urlencoded` webhooks for incoming messages and
//! for status callbacks, signed with `X-Twilio-Signature` (HMAC-SHA1 of the public URL it
//! called followed by the sorted POST parameters; the host passes that URL as
//! `x-omnigate-public-url`). Replies go to
//! `POST {api_base}/2010-04-01/Accounts/{account_sid}/Messages.json` with HTTP Basic
//! authentication (Account SID and the auth token, filled in by the host). Setup and
//! mapping: `docs/channels/twilio.md`.

#![warn(missing_docs)]

use omnigate_sdk::{
    Capability, Channel, ChannelKind, HttpRequest, OutboundMessage, PluginInfo, SendError,
    SendReceipt, Setting, WebhookError, WebhookOutcome,
};

pub mod inbound;
pub mod outbound;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// Config: the Twilio Account SID (`AC…`), the Basic auth user and part of the API path.
pub const ACCOUNT_SID: &str = "account_sid";
/// Config: who replies come from: a number (`+1…`), `whatsapp:+…`, or a Messaging
/// Service SID (`MG…`).
pub const FROM: &str = "from";
/// Config: the API base URL (tests point it at a fake Twilio).
pub const API_BASE: &str = "api_base";
/// Secret: the account's auth token; signs webhooks and authenticates API calls.
pub const AUTH_TOKEN: &str = "auth_token";
/// `api_base` when not configured.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// The Twilio Programmable Messaging channel.
pub struct Twilio;

impl Channel for Twilio {
    /// Who we are and what we need. Never depends on configuration.
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "twilio".into(),
            name: "Twilio Messaging (SMS, MMS, WhatsApp)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Sms,
            capabilities: vec![
                Capability::Text,
                Capability::Media,
                Capability::Location,
                Capability::Receipts,
                Capability::Interactive,
                Capability::Templates,
                Capability::Referrals,
                Capability::Replies,
            ],
            config: vec![
                Setting::required(ACCOUNT_SID, "the Twilio Account SID (AC…)"),
                Setting::required(
                    FROM,
                    "replies come from: +E.164 number, whatsapp:+E.164, or a Messaging Service SID (MG…)",
                ),
                Setting::optional(
                    API_BASE,
                    "Twilio API base URL (default https://api.twilio.com)",
                ),
            ],
            secrets: vec![Setting::required(
                AUTH_TOKEN,
                "the account's auth token: verifies X-Twilio-Signature and authenticates sends",
            )],
            outbound_hosts: vec!["api.twilio.com".into()],
        }
    }

    /// An incoming message or a status callback → one event.
    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        inbound::handle(&request)
    }

    /// A reply → one `Messages.json` call.
    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        outbound::send(&message)
    }
}

omnigate_sdk::export_plugin!(Twilio);
