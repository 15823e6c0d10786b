//! omnigate channel plugin for Facebook Messenger (a Facebook Page's inbox).
//!
//! Meta POSTs `object: "page"` notifications signed with `X-Hub-Signature-256` (after a
//! `hub.challenge` handshake); replies go through the Send API,
//! `POST {api_base}/{page_id}/messages`. Messenger and Instagram share the Messenger
//! Platform, so the mapping both ways lives once in `omnigate_meta::messaging`; this
//! crate only says who it is. Setup and mapping: `docs/channels/messenger.md`.

#![warn(missing_docs)]

use omnigate_meta::messaging::{self, Platform};
use omnigate_sdk::{
    Capability, Channel, ChannelKind, HttpRequest, OutboundMessage, PluginInfo, SendError,
    SendReceipt, WebhookError, WebhookOutcome,
};

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// Config: the Facebook Page id: the events' `account`, and who sends replies.
pub const PAGE_ID: &str = "page_id";

/// Messenger on the Messenger Platform.
pub const PLATFORM: Platform = Platform {
    object: "page",
    account_key: PAGE_ID,
    default_api_base: "https://graph.facebook.com/v21.0",
    any_emoji_reaction: true,
};

/// The Messenger channel.
pub struct Messenger;

impl Channel for Messenger {
    /// Who we are and what we need. Never depends on configuration.
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "messenger".into(),
            name: "Facebook Messenger".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Messenger,
            capabilities: vec![
                Capability::Text,
                Capability::Media,
                Capability::Reactions,
                Capability::Edits,
                Capability::Deletes,
                Capability::Receipts,
                Capability::Interactive,
                Capability::Referrals,
                Capability::Replies,
            ],
            config: messaging::config_settings(&PLATFORM, "the Facebook Page id"),
            secrets: messaging::secret_settings(
                "page access token with pages_messaging, for the Send API",
            ),
            outbound_hosts: vec!["graph.facebook.com".into()],
        }
    }

    /// A handshake, or a notification → every `messaging[]` event in it.
    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        messaging::handle_webhook(&PLATFORM, &request)
    }

    /// A reply → one Send API call.
    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        messaging::send(&PLATFORM, &message)
    }
}

omnigate_sdk::export_plugin!(Messenger);
