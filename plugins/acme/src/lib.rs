//! omnigate channel plugin for Acme Messaging, a fictional provider: the worked example of
//! `docs/writing-a-plugin.md`, built and tested with the real plugins. The guide's code
//! blocks are the regions between `ANCHOR: <name>` and `ANCHOR_END: <name>` below (a test
//! keeps them equal).
//!
//! Acme POSTs batches of messages as JSON signed like Meta's webhooks (HMAC-SHA256 of the
//! body, `X-Hub-Signature-256: sha256=<hex>`), and takes replies at `POST {api_base}/messages`
//! with a bearer token:
//!
//! ```json
//! {"messages": [{"id": "am-1001",
//!                "from": {"id": "u-42", "name": "Ana", "phone": "+34600111222"},
//!                "text": "Hola", "sent_at": "2026-11-24T10:00:00Z",
//!                "landing_url": "https://shop.example/p?utm_source=acme&gclid=g-1"}]}
//! ```

#![warn(missing_docs)]

// ANCHOR: describe
use omnigate_sdk::{
    Capability, Channel, ChannelKind, HttpRequest, OutboundMessage, PluginInfo, SendError,
    SendReceipt, Setting, WebhookError, WebhookOutcome,
};

/// The Acme Messaging channel.
pub struct Acme;

impl Channel for Acme {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "acme".into(),
            name: "Acme Messaging".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Other,
            capabilities: vec![Capability::Text, Capability::Referrals],
            config: vec![Setting::required("api_base", "Acme API base URL")],
            secrets: vec![
                Setting::required("webhook_secret", "signs Acme's webhooks"),
                Setting::required("api_token", "bearer token for the API"),
            ],
            outbound_hosts: vec!["api.acme.example".into()],
        }
    }

    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        inbound::handle(request)
    }

    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        outbound::send(message)
    }
}

omnigate_sdk::export_plugin!(Acme);
// ANCHOR_END: describe

pub mod inbound;
pub mod outbound;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
