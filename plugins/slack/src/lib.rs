//! omnigate channel plugin for Slack apps.
//!
//! Slack POSTs Events API requests signed with `X-Slack-Signature` (`v0=` HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{body}` with the app's signing secret, at most five
//! minutes old): the `url_verification` handshake and `event_callback`s with `message`
//! events (channels, DMs, threads, edits, deletions, files). Replies go to
//! `chat.postMessage` with the bot token as a bearer placeholder, in the thread they answer.
//! Setup and mapping: `docs/channels/slack.md`.

#![warn(missing_docs)]

use omnigate_sdk::{
    Capability, Channel, ChannelKind, HttpRequest, OutboundMessage, PluginInfo, SendError,
    SendReceipt, Setting, WebhookError, WebhookOutcome,
};

pub mod inbound;
pub mod outbound;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// Config: the Slack Web API base URL (tests point it at a fake Slack).
pub const API_BASE: &str = "api_base";
/// Secret: the app's signing secret (Basic Information → App Credentials).
pub const SIGNING_SECRET: &str = "signing_secret";
/// Secret: the bot user OAuth token (`xoxb-…`).
pub const BOT_TOKEN: &str = "bot_token";
/// `api_base` when not configured.
pub const DEFAULT_API_BASE: &str = "https://slack.com";
/// How old a signed request may be, in seconds (Slack recommends five minutes).
pub const TOLERANCE_SECS: u64 = 300;

/// The Slack channel.
pub struct Slack;

impl Channel for Slack {
    /// Who we are and what we need. Never depends on configuration.
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "slack".into(),
            name: "Slack".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Slack,
            capabilities: vec![
                Capability::Text,
                Capability::Media,
                Capability::Edits,
                Capability::Deletes,
                Capability::Replies,
            ],
            config: vec![Setting::optional(
                API_BASE,
                "Slack Web API base URL (default https://slack.com)",
            )],
            secrets: vec![
                Setting::required(
                    SIGNING_SECRET,
                    "the app's signing secret: verifies X-Slack-Signature",
                ),
                Setting::required(BOT_TOKEN, "the bot user OAuth token (xoxb-…) for sending"),
            ],
            outbound_hosts: vec!["slack.com".into()],
        }
    }

    /// A handshake, or one event callback → its message event, if it is one we map.
    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        inbound::handle(&request)
    }

    /// A reply → one `chat.postMessage` call.
    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        outbound::send(&message)
    }
}

omnigate_sdk::export_plugin!(Slack);
