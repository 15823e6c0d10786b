//! omnigate channel plugin for the WhatsApp Cloud API (Meta).
//!
//! Meta POSTs webhook notifications signed with `X-Hub-Signature-256` (after a
//! `hub.challenge` handshake); replies go to the Graph API's
//! `POST {api_base}/{phone_number_id}/messages` with the access token as a bearer
//! placeholder. The handshake, signature and Graph error handling are shared with the
//! Messenger and Instagram plugins in `omnigate-meta`. Setup and mapping:
//! `docs/channels/whatsapp.md`.

#![warn(missing_docs)]

use omnigate_meta::{graph, webhook};
use omnigate_sdk::{
    Capability, Channel, ChannelKind, HttpRequest, OutboundMessage, PluginInfo, SendError,
    SendReceipt, Setting, WebhookError, WebhookOutcome, host, json, ok, outcome,
};

pub mod inbound;
pub mod outbound;
pub mod payload;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// Config: Graph API base URL with its version.
pub const API_BASE: &str = "api_base";
/// Config: the business phone number's id.
pub const PHONE_NUMBER_ID: &str = "phone_number_id";
/// Secret: the Meta app secret that signs webhooks.
pub const APP_SECRET: &str = "app_secret";
/// Secret: the (system user) access token for the Cloud API.
pub const ACCESS_TOKEN: &str = "access_token";
/// Secret: the verify token typed into the app's webhook settings.
pub const VERIFY_TOKEN: &str = "verify_token";
/// `api_base` when not configured.
pub const DEFAULT_API_BASE: &str = "https://graph.facebook.com/v21.0";

/// The WhatsApp Cloud API channel.
pub struct WhatsApp;

impl Channel for WhatsApp {
    /// Who we are and what we need. Never depends on configuration.
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "whatsapp".into(),
            name: "WhatsApp Cloud API".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Whatsapp,
            capabilities: vec![
                Capability::Text,
                Capability::Media,
                Capability::Location,
                Capability::Contacts,
                Capability::Reactions,
                Capability::Edits,
                Capability::Deletes,
                Capability::Receipts,
                Capability::Interactive,
                Capability::Templates,
                Capability::Referrals,
                Capability::Replies,
            ],
            config: vec![
                Setting::optional(
                    API_BASE,
                    "Graph API base URL with version (default https://graph.facebook.com/v21.0)",
                ),
                Setting::required(
                    PHONE_NUMBER_ID,
                    "the business phone number id (WhatsApp Manager → API setup)",
                ),
            ],
            secrets: vec![
                Setting::required(
                    APP_SECRET,
                    "Meta app secret: verifies X-Hub-Signature-256 on webhooks",
                ),
                Setting::required(
                    ACCESS_TOKEN,
                    "Cloud API access token (system user token) for sending",
                ),
                Setting::required(
                    VERIFY_TOKEN,
                    "the verify token entered in the app's webhook settings (handshake)",
                ),
            ],
            outbound_hosts: vec!["graph.facebook.com".into()],
        }
    }

    /// A handshake, or a notification → every message and status in it.
    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        // Handshake or signature first: unsigned input is never parsed.
        if let webhook::Verified::Handshake(done) =
            webhook::verify(&request, VERIFY_TOKEN, APP_SECRET)?
        {
            return Ok(done);
        }
        // A body that is not JSON at all cannot be from Meta once signed by it; say so.
        let notification: payload::Notification = json(&request.body)?;
        Ok(outcome(ok(), inbound::events(notification)))
    }

    /// A reply → one Cloud API call.
    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        let base = host::config(API_BASE).unwrap_or_else(|| DEFAULT_API_BASE.into());
        let phone_number_id = host::config(PHONE_NUMBER_ID)
            .ok_or_else(|| SendError::Invalid(format!("config `{PHONE_NUMBER_ID}` is not set")))?;
        let body = outbound::to_body(&message)?;
        let url = format!("{}/{phone_number_id}/messages", base.trim_end_matches('/'));
        let response = graph::check(graph::post_json(&url, ACCESS_TOKEN, &body)?, |e| {
            // The customer has not written in 24 h: only a template can reach them now.
            (e.code == 131047).then(|| e.rejected(Some("outside the 24 h window")))
        })?;
        let sent: outbound::Sent = response.json().unwrap_or_default();
        let external_id = match (
            sent.messages.first(),
            outbound::option(&message, outbound::MARK_READ),
        ) {
            (Some(m), _) => m.id.clone(),
            (None, Some(wamid)) if sent.success => format!("{wamid}:read"),
            _ => {
                return Err(SendError::Transient(format!(
                    "unexpected answer from the Cloud API: {}",
                    response.text()
                )));
            }
        };
        Ok(SendReceipt {
            external_id,
            raw: Some(response.text()),
        })
    }
}

omnigate_sdk::export_plugin!(WhatsApp);
