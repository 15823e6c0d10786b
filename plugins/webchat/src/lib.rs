//! omnigate channel plugin for a website's own chat widget: the reference plugin.
//!
//! The site's backend POSTs each visitor message as JSON signed with Standard Webhooks;
//! replies go back as signed JSON POSTs to the site's `callback_url`. The payload formats
//! are in `docs/channels/webchat.md`; the mapping lives in [`inbound`] and [`outbound`].
//!
//! Copy this crate to start a new plugin: one type implementing [`Channel`], one
//! `export_plugin!` line, helpers from `omnigate_sdk` for everything else.

#![warn(missing_docs)]

use omnigate_sdk::{
    Capability, Channel, ChannelKind, Fetch, HttpRequest, OutboundMessage, PluginInfo, SendError,
    SendReceipt, Setting, WebhookError, WebhookOutcome, host, json, ok_json_text, outcome,
    require_method, signature,
};

pub mod inbound;
pub mod outbound;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// The secret the site signs its requests with and we sign replies with (`whsec_…`).
pub const SIGNING_SECRET: &str = "signing_secret";
/// The config key holding the URL replies are POSTed to.
pub const CALLBACK_URL: &str = "callback_url";
/// How old (or how far in the future) a request's `webhook-timestamp` may be.
pub const TOLERANCE_SECS: u64 = 5 * 60;
/// How long a reply may take; the host caps it at its own limit.
const SEND_TIMEOUT_MS: u32 = 10_000;

/// The web chat channel.
pub struct WebChat;

impl Channel for WebChat {
    /// Who we are and what we need. Never depends on configuration.
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "webchat".into(),
            name: "Web chat".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Webchat,
            capabilities: vec![
                Capability::Text,
                Capability::Media,
                Capability::Interactive,
                Capability::Referrals,
                Capability::Replies,
            ],
            config: vec![Setting::required(
                CALLBACK_URL,
                "URL on the site that receives replies (POST, JSON)",
            )],
            secrets: vec![Setting::required(
                SIGNING_SECRET,
                "Standard Webhooks key (whsec_…) shared with the site, both directions",
            )],
            // The callback host is the operator's own site: they allow it per channel.
            outbound_hosts: vec![],
        }
    }

    /// One visitor message from the site's backend → one event.
    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        require_method(&request, "POST")?;
        // Check the signature before looking at the body: unsigned input is never parsed.
        signature::verify_standard_webhooks(&request, SIGNING_SECRET, TOLERANCE_SECS)?;

        // One parse on the hot path; only a body that fails it is looked at again, so
        // another `type` gets "unknown type" rather than a missing-field error.
        let message: inbound::VisitorMessage =
            json(&request.body).map_err(|error| match json::<inbound::Kind>(&request.body) {
                Ok(kind) if kind.kind != "message" => unknown_type(&kind.kind),
                _ => error,
            })?;
        if message.kind != "message" {
            return Err(unknown_type(&message.kind));
        }
        let event = inbound::to_event(message)?;
        Ok(outcome(ok_json_text(r#"{"ok":true}"#), vec![event]))
    }

    /// A reply → one signed POST to the site's `callback_url`.
    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        let callback_url = host::config(CALLBACK_URL)
            .ok_or_else(|| SendError::Invalid(format!("config `{CALLBACK_URL}` is not set")))?;
        let now_ms = host::now();
        let body = serde_json::to_vec(&outbound::to_payload(&message, now_ms)?)
            .map_err(|e| SendError::Invalid(format!("cannot serialize reply: {e}")))?;

        // The host signs with the secret; the plugin only names it. The message id doubles
        // as `webhook-id`, so the site can drop a retried delivery it already has.
        let signed = signature::sign_standard_webhooks(
            SIGNING_SECRET,
            &message.id,
            now_ms.div_euclid(1000),
            &body,
        )
        .map_err(|e| SendError::Invalid(format!("cannot sign reply: {e}")))?;
        let request = signed
            .iter()
            .fold(Fetch::post(callback_url), |fetch, h| {
                fetch.header(&h.name, &h.value)
            })
            .header("content-type", "application/json")
            .body(body)
            .timeout_ms(SEND_TIMEOUT_MS);

        // Fetch failures and non-2xx answers map to retryable or permanent SendErrors.
        let response = request.send()?.error_for_status()?;
        let ack: Option<outbound::Ack> = response.json().ok();
        Ok(SendReceipt {
            external_id: ack.and_then(|a| a.id).unwrap_or(message.id),
            raw: (!response.body.is_empty()).then(|| response.text()),
        })
    }
}

fn unknown_type(kind: &str) -> WebhookError {
    WebhookError::BadRequest(format!("unknown type `{kind}`"))
}

omnigate_sdk::export_plugin!(WebChat);
