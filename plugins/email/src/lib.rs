//! omnigate channel plugin for e-mail through an inbound-mail provider: Postmark,
//! Mailgun or SendGrid (config `provider`).
//!
//! Inbound: Postmark's JSON inbound webhook and SendGrid's Inbound Parse (multipart), both
//! protected by HTTP Basic auth on the webhook URL, and Mailgun's routes (multipart or
//! form, signed with `timestamp` + `token` HMAC-SHA256). Each mail is one message: its
//! text (HTML reduced to text when there is no text part; the HTML kept as an attachment
//! reference), attachments as media references, threading headers, and a link token from
//! a plus-address (`support+<token>@…`). Outbound through the same provider's send API with
//! `In-Reply-To`/`References`. Setup and mapping: `docs/channels/email.md`.

#![warn(missing_docs)]

use omnigate_sdk::{
    Capability, Channel, ChannelKind, HttpRequest, OutboundMessage, PluginInfo, SendError,
    SendReceipt, Setting, WebhookError, WebhookOutcome, host,
};

pub mod address;
pub mod inbound;
pub mod mail;
pub mod multipart;
pub mod outbound;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// Config: `postmark`, `mailgun` or `sendgrid`.
pub const PROVIDER: &str = "provider";
/// Config: the address replies are sent from (e.g. `support@shop.example`).
pub const FROM: &str = "from";
/// Config: the display name replies are sent with.
pub const FROM_NAME: &str = "from_name";
/// Config: the provider's API base URL (tests point it at a fake provider).
pub const API_BASE: &str = "api_base";
/// Config: the Mailgun sending domain (`/v3/{domain}/messages`).
pub const MAILGUN_DOMAIN: &str = "mailgun_domain";
/// Config: the Basic auth user name of the webhook URL (Postmark, SendGrid).
pub const WEBHOOK_USER: &str = "webhook_user";
/// Secret: the Basic auth password of the webhook URL (Postmark, SendGrid).
pub const WEBHOOK_PASSWORD: &str = "webhook_password";
/// Secret: Mailgun's HTTP webhook signing key.
pub const SIGNING_KEY: &str = "signing_key";
/// Secret: the provider's API key (Postmark server token, Mailgun API key, SendGrid key).
pub const API_KEY: &str = "api_key";

/// The provider behind the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Postmark.
    Postmark,
    /// Mailgun.
    Mailgun,
    /// SendGrid (Twilio SendGrid).
    Sendgrid,
}

impl Provider {
    /// The configured provider, or a reason naming the setting.
    pub fn configured() -> Result<Self, String> {
        let value = host::config(PROVIDER).unwrap_or_default();
        match value.trim().to_ascii_lowercase().as_str() {
            "postmark" => Ok(Self::Postmark),
            "mailgun" => Ok(Self::Mailgun),
            "sendgrid" => Ok(Self::Sendgrid),
            "" => Err(format!("config `{PROVIDER}` is not set")),
            other => Err(format!(
                "config `{PROVIDER}` is {other:?}; expected postmark, mailgun or sendgrid"
            )),
        }
    }

    /// The API base URL when `api_base` is not configured.
    pub fn default_api_base(self) -> &'static str {
        match self {
            Self::Postmark => "https://api.postmarkapp.com",
            Self::Mailgun => "https://api.mailgun.net",
            Self::Sendgrid => "https://api.sendgrid.com",
        }
    }
}

/// The e-mail channel.
pub struct Email;

impl Channel for Email {
    /// Who we are and what we need. Never depends on configuration.
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "email".into(),
            name: "E-mail (Postmark, Mailgun, SendGrid)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Email,
            capabilities: vec![
                Capability::Text,
                Capability::Media,
                Capability::Referrals,
                Capability::Replies,
            ],
            config: vec![
                Setting::required(PROVIDER, "postmark, mailgun or sendgrid"),
                Setting::required(
                    FROM,
                    "the address replies come from, e.g. support@shop.example",
                ),
                Setting::optional(FROM_NAME, "the display name replies come from"),
                Setting::optional(
                    API_BASE,
                    "the provider's API base URL (default: its public API)",
                ),
                Setting::optional(MAILGUN_DOMAIN, "Mailgun: the sending domain"),
                Setting::optional(
                    WEBHOOK_USER,
                    "Postmark/SendGrid: the Basic auth user name in the webhook URL",
                ),
            ],
            secrets: vec![
                Setting::optional(
                    WEBHOOK_PASSWORD,
                    "Postmark/SendGrid: the Basic auth password in the webhook URL",
                ),
                Setting::optional(SIGNING_KEY, "Mailgun: the HTTP webhook signing key"),
                Setting::required(
                    API_KEY,
                    "Postmark server token, Mailgun API key or SendGrid API key, for sending",
                ),
            ],
            outbound_hosts: vec![
                "api.postmarkapp.com".into(),
                "api.mailgun.net".into(),
                "api.eu.mailgun.net".into(),
                "api.sendgrid.com".into(),
            ],
        }
    }

    /// One inbound mail → one message event.
    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        let provider = Provider::configured().map_err(|reason| {
            host::error(&reason);
            WebhookError::Unauthorized(reason)
        })?;
        inbound::handle(provider, &request)
    }

    /// A reply → one send API call.
    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        let provider = Provider::configured().map_err(SendError::Invalid)?;
        outbound::send(provider, &message)
    }
}

omnigate_sdk::export_plugin!(Email);
