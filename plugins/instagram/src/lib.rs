//! omnigate channel plugin for Instagram messaging (an Instagram professional account's Direct inbox).
//!
//! Meta POSTs `object: "instagram"` notifications signed with `X-Hub-Signature-256` (after a
//! `hub.challenge` handshake); replies go through the Send API,
//! `POST {api_base}/{account_id}/messages`. Messenger and Instagram share the Messenger
//! Platform, so the mapping both ways lives once in `omnigate_meta::messaging`; this
//! crate only says who it is. Setup and mapping: `docs/channels/instagram.md`.

#![warn(missing_docs)]

use omnigate_meta::messaging::{self, Platform};
use omnigate_sdk::{
    Capability, Channel, ChannelKind, HttpRequest, OutboundMessage, PluginInfo, SendError,
    SendReceipt, WebhookError, WebhookOutcome,
};

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// Config: the Instagram professional account id: the events' `account`, and who sends replies.
pub const ACCOUNT_ID: &str = "account_id";

/// Instagram on the Messenger Platform.
pub const PLATFORM: Platform = Platform {
    object: "instagram",
    account_key: ACCOUNT_ID,
    default_api_base: "https://graph.facebook.com/v21.0",
    any_emoji_reaction: false,
};

/// The Instagram messaging channel.
pub struct Instagram;

impl Channel for Instagram {
    /// Who we are and what we need. Never depends on configuration.
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "instagram".into(),
            name: "Instagram messaging".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Instagram,
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
            config: messaging::config_settings(
                &PLATFORM,
                "the Instagram professional account id (IG user id)",
            ),
            secrets: messaging::secret_settings(
                "access token of the page linked to the account, with instagram_manage_messages",
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

omnigate_sdk::export_plugin!(Instagram);
