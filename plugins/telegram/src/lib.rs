//! omnigate channel plugin for Telegram bots.
//!
//! Telegram POSTs each `Update` to the webhook set with `setWebhook`, with the
//! `secret_token` given there in `X-Telegram-Bot-Api-Secret-Token`. Replies are Bot API
//! calls with the bot token in the URL path, written as a `{{secret:bot_token}}`
//! placeholder the host fills in: the plugin never sees the token. Setup and mapping:
//! `docs/channels/telegram.md`.

#![warn(missing_docs)]

use omnigate_sdk::{
    Capability, Channel, ChannelKind, Fetch, FetchResponse, HttpRequest, OutboundMessage,
    PluginInfo, ProviderError, SendError, SendReceipt, Setting, WebhookError, WebhookOutcome,
    header, host, json, ok, outcome, require_method, secret_placeholder, signature,
};
use serde::Deserialize;

pub mod inbound;
pub mod outbound;
pub mod payload;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

/// Config: Bot API base URL.
pub const API_BASE: &str = "api_base";
/// Config: the bot's numeric id (the part of the token before `:`), reported as the
/// events' `account`.
pub const BOT_ID: &str = "bot_id";
/// Secret: the bot token from @BotFather.
pub const BOT_TOKEN: &str = "bot_token";
/// Secret: the `secret_token` given to `setWebhook`.
pub const SECRET_TOKEN: &str = "secret_token";
/// `api_base` when not configured.
pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";
/// The header Telegram puts the secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// How long a Bot API call may take; the host caps it at its own limit.
const TIMEOUT_MS: u32 = 15_000;

/// The Telegram bot channel.
pub struct Telegram;

impl Channel for Telegram {
    /// Who we are and what we need. Never depends on configuration.
    fn describe() -> PluginInfo {
        PluginInfo {
            id: "telegram".into(),
            name: "Telegram bot".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: ChannelKind::Telegram,
            capabilities: vec![
                Capability::Text,
                Capability::Media,
                Capability::Location,
                Capability::Contacts,
                Capability::Reactions,
                Capability::Edits,
                Capability::Interactive,
                Capability::Referrals,
                Capability::Replies,
            ],
            config: vec![
                Setting::optional(
                    API_BASE,
                    "Bot API base URL (default https://api.telegram.org)",
                ),
                Setting::optional(
                    BOT_ID,
                    "the bot's numeric id (token part before ':'), reported as the events' account",
                ),
            ],
            secrets: vec![
                Setting::required(
                    BOT_TOKEN,
                    "the bot token from @BotFather (used in the Bot API URL path)",
                ),
                Setting::required(
                    SECRET_TOKEN,
                    "the secret_token given to setWebhook; Telegram sends it in X-Telegram-Bot-Api-Secret-Token",
                ),
            ],
            outbound_hosts: vec!["api.telegram.org".into()],
        }
    }

    /// One update → one event.
    fn handle_webhook(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
        require_method(&request, "POST")?;
        // The secret token first, in constant time: unauthenticated input is never parsed.
        let presented = header(&request, SECRET_HEADER)
            .ok_or_else(|| WebhookError::Unauthorized(format!("missing {SECRET_HEADER} header")))?;
        signature::verify_equals(presented, SECRET_TOKEN)?;

        let raw: serde_json::Value = json(&request.body)?;
        let update: payload::Update = match serde_json::from_value(raw.clone()) {
            Ok(update) => update,
            Err(e) => {
                // A field of an unexpected type: still an event (unsupported), never an
                // error that makes Telegram hold back every later update.
                host::warn(&format!("unreadable update: {e}"));
                payload::Update {
                    update_id: raw
                        .get("update_id")
                        .and_then(serde_json::Value::as_i64)
                        .unwrap_or_default(),
                    ..Default::default()
                }
            }
        };
        let event = inbound::event(update, &raw, host::config(BOT_ID));
        Ok(outcome(ok(), vec![event]))
    }

    /// A reply → one Bot API call.
    fn send(message: OutboundMessage) -> Result<SendReceipt, SendError> {
        let base = host::config(API_BASE).unwrap_or_else(|| DEFAULT_API_BASE.into());
        let (method, params) = outbound::to_call(&message)?;
        let url = format!(
            "{}/bot{}/{method}",
            base.trim_end_matches('/'),
            secret_placeholder(BOT_TOKEN)
        );
        let response = Fetch::post(url)
            .json(&params)?
            .timeout_ms(TIMEOUT_MS)
            .send()?;
        let answer: Answer = response.json().unwrap_or_default();
        if !response.is_success() || !answer.ok {
            return Err(send_error(&response, answer));
        }
        let external_id = match (
            &answer.result,
            outbound::option(&message, outbound::ANSWER_CALLBACK_QUERY),
        ) {
            (_, Some(callback)) => format!("callback:{callback}"),
            (serde_json::Value::Object(m), _) => {
                match m.get("message_id").and_then(serde_json::Value::as_i64) {
                    Some(id) => id.to_string(),
                    None => message.id.clone(),
                }
            }
            // `true` for setMessageReaction and friends: no message of its own.
            _ => message.id.clone(),
        };
        Ok(SendReceipt {
            external_id,
            raw: Some(response.text()),
        })
    }
}

/// Every Bot API answer: `{"ok": true, "result": …}` or
/// `{"ok": false, "error_code": 429, "description": "…", "parameters": {"retry_after": 35}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Answer {
    ok: bool,
    result: serde_json::Value,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<Parameters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Parameters {
    retry_after: Option<u32>,
}

/// A failed Bot API call as a [`SendError`].
fn send_error(response: &FetchResponse, answer: Answer) -> SendError {
    let code = answer.error_code.unwrap_or(response.status);
    let description = answer
        .description
        .unwrap_or_else(|| format!("HTTP {}", response.status));
    match code {
        429 => {
            SendError::RateLimited(answer.parameters.and_then(|p| p.retry_after).or_else(|| {
                response
                    .header("retry-after")
                    .and_then(|v| v.trim().parse().ok())
            }))
        }
        // 401: a revoked token; 404 on every method: a malformed token in the URL.
        401 => SendError::Unauthorized(description),
        404 if description == "Not Found" => {
            SendError::Unauthorized("Bot API answered 404: the bot token is malformed".into())
        }
        500..=599 => SendError::Transient(description),
        // 403: the user blocked the bot, deleted their account, or never started it:
        // permanent for this chat.
        _ => SendError::Rejected(ProviderError {
            code: code.to_string(),
            title: description,
            detail: None,
        }),
    }
}

omnigate_sdk::export_plugin!(Telegram);
