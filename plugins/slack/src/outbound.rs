//! Replies → `POST {api_base}/api/chat.postMessage`.
//!
//! The recipient `{channel}/{user}` names the conversation; `reply_to` (a message id
//! `{channel}:{ts}`, the `reply_to` of a threaded message or the message itself) puts the
//! reply in that thread. Slack answers errors with HTTP 200 and `{"ok": false, "error"}`:
//! `ratelimited` (and HTTP 429 with `Retry-After`) is a rate limit, token errors are
//! unauthorized, anything else a rejection with Slack's error name as the code.

use omnigate_sdk::{Fetch, OutboundMessage, ProviderError, SendError, SendReceipt, host};
use serde::Deserialize;
use serde_json::json;

use crate::inbound::message_id;
use crate::{API_BASE, BOT_TOKEN, DEFAULT_API_BASE};

/// `chat.postMessage`'s answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Posted {
    /// Whether Slack accepted it.
    pub ok: bool,
    /// The error name when not.
    pub error: Option<String>,
    /// The channel it went to.
    pub channel: Option<String>,
    /// The new message's `ts`.
    pub ts: Option<String>,
}

/// Slack's errors that mean the token is wrong.
const TOKEN_ERRORS: &[&str] = &[
    "not_authed",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
];

/// Post `message`.
pub fn send(message: &OutboundMessage) -> Result<SendReceipt, SendError> {
    let body = body(message)?;
    let base = host::config(API_BASE).unwrap_or_else(|| DEFAULT_API_BASE.into());
    let url = format!("{}/api/chat.postMessage", base.trim_end_matches('/'));
    let response = Fetch::post(url)
        .bearer_secret(BOT_TOKEN)
        .json(&body)?
        .timeout_ms(10_000)
        .send()?
        .error_for_status()?;
    let posted: Posted = response
        .json()
        .map_err(|error| SendError::Transient(format!("unreadable answer from Slack: {error}")))?;
    match (posted.ok, posted.channel, posted.ts) {
        (true, Some(channel), Some(ts)) => Ok(SendReceipt {
            external_id: message_id(&channel, &ts),
            raw: Some(response.text()),
        }),
        (true, _, _) => Err(SendError::Transient(format!(
            "Slack accepted the message but sent no channel/ts: {}",
            response.text()
        ))),
        (false, ..) => Err(slack_error(
            posted.error.as_deref().unwrap_or("unknown_error"),
        )),
    }
}

/// The `chat.postMessage` body of `message`.
pub fn body(message: &OutboundMessage) -> Result<serde_json::Value, SendError> {
    let channel = message
        .recipient
        .split('/')
        .next()
        .filter(|channel| !channel.is_empty())
        .ok_or_else(|| SendError::Invalid("no Slack channel in the recipient".into()))?;
    let text = message
        .text
        .as_deref()
        .filter(|text| !text.is_empty())
        .ok_or_else(|| SendError::Invalid("Slack replies need text".into()))?;
    if !message.parts.is_empty()
        || message.template.is_some()
        || message.interactive.is_some()
        || message.reaction.is_some()
    {
        return Err(SendError::Invalid(
            "the Slack plugin sends text replies only".into(),
        ));
    }
    let mut body = json!({"channel": channel, "text": text});
    if let Some(thread) = thread_ts(message, channel)? {
        body["thread_ts"] = json!(thread);
    }
    Ok(body)
}

/// The thread to post in: the `ts` of `reply_to`, which must be in the same channel.
fn thread_ts(message: &OutboundMessage, channel: &str) -> Result<Option<String>, SendError> {
    let Some(reply_to) = message.reply_to.as_deref() else {
        return Ok(None);
    };
    match reply_to.split_once(':') {
        Some((on, ts)) if on == channel => Ok(Some(ts.to_owned())),
        Some((on, _)) => Err(SendError::Invalid(format!(
            "reply_to is a message in channel {on}, not {channel}"
        ))),
        // A bare `ts` is taken as it is.
        None => Ok(Some(reply_to.to_owned())),
    }
}

/// What Slack's `error` means for the reply.
pub fn slack_error(error: &str) -> SendError {
    if error == "ratelimited" {
        return SendError::RateLimited(None);
    }
    if TOKEN_ERRORS.contains(&error) {
        return SendError::Unauthorized(format!("Slack: {error}"));
    }
    if error.starts_with("internal_error")
        || error == "fatal_error"
        || error == "service_unavailable"
    {
        return SendError::Transient(format!("Slack: {error}"));
    }
    SendError::Rejected(ProviderError {
        code: error.to_owned(),
        title: format!("Slack refused the message: {error}"),
        detail: None,
    })
}
