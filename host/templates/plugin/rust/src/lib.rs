//! omnigate channel plugin `__NAME__`.
//!
//! The provider POSTs each customer message as JSON, signed with HMAC-SHA256 of the body
//! in `X-Hub-Signature-256: sha256=<hex>`:
//!
//! ```json
//! {"id": "m-1", "from": {"id": "u-1", "name": "Ana"}, "text": "Hello"}
//! ```
//!
//! Replies go to `POST {api_base}/messages` as `{"to": …, "text": …}` with the API token
//! as a bearer token; the provider answers `{"id": …}`. Change both to your provider's.

use omnigate_sdk::{
    Capability, Channel, ChannelKind, Direction, EventBody, Fetch, HttpRequest, InboundEvent,
    Message, OutboundMessage, Party, PluginInfo, SendError, SendReceipt, Setting, WebhookError,
    WebhookOutcome, host, json, ok_json, outcome, require_method, signature,
};
use serde::Deserialize;

/// The channel.
pub struct Plugin;

/// What the provider POSTs.
#[derive(Debug, Deserialize)]
pub struct Incoming {
    /// The provider's unique message id (the host drops duplicates by it).
    pub id: String,
    /// Who wrote it.
    pub from: Sender,
    /// The text.
    pub text: String,
}

/// The customer.
#[derive(Debug, Deserialize)]
pub struct Sender {
    /// The provider's user id; replies go to it.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
}

/// What the provider answers when it accepts a reply.
#[derive(Debug, Deserialize)]
struct Accepted {
    id: String,
}

impl Channel for Plugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "__NAME__".into(),
            name: "__NAME__".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Other,
            capabilities: vec![Capability::Text],
            config: vec![Setting::required("api_base", "the provider's API base URL")],
            secrets: vec![
                Setting::required("webhook_secret", "signs the provider's webhooks"),
                Setting::required("api_token", "bearer token for the provider's API"),
            ],
            outbound_hosts: vec![],
        }
    }

    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        require_method(&request, "POST")?;
        // The signature first: an unsigned body is never parsed.
        signature::verify_hub_signature(&request, "webhook_secret")?;
        let incoming: Incoming = json(&request.body)?;
        let event = InboundEvent {
            external_id: incoming.id,
            occurred_at: None,
            account: None,
            contact: Party {
                id: incoming.from.id,
                name: incoming.from.name,
                handles: vec![],
            },
            body: EventBody::Message(Message {
                direction: Direction::Inbound,
                text: Some(incoming.text),
                parts: vec![],
                reply_to: None,
                forwarded: false,
                interactive_reply: None,
                referral: None,
            }),
            raw: None,
        };
        Ok(outcome(ok_json(&serde_json::json!({"ok": true})), vec![event]))
    }

    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        let base = host::config("api_base")
            .ok_or_else(|| SendError::Invalid("config `api_base` is not set".into()))?;
        let text = message
            .text
            .ok_or_else(|| SendError::Invalid("this channel sends text only".into()))?;
        let response = Fetch::post(format!("{base}/messages"))
            .bearer_secret("api_token")
            .json(&serde_json::json!({"to": message.recipient, "text": text}))?
            .timeout_ms(10_000)
            .send()?
            .error_for_status()?;
        let accepted: Accepted = response
            .json()
            .map_err(|error| SendError::Transient(format!("unreadable answer: {error}")))?;
        Ok(SendReceipt {
            external_id: accepted.id,
            raw: Some(response.text()),
        })
    }
}

omnigate_sdk::export_plugin!(Plugin);

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
