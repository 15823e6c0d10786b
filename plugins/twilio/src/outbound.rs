//! Replies → `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`.
//!
//! One request per reply: text (`Body`), media by URL (`MediaUrl`, repeated), or a
//! WhatsApp template as a Content API template (`ContentSid` = the template name,
//! `ContentVariables` = its components JSON). Twilio's error codes that mean something to
//! the sender are mapped: 21610 (the customer replied STOP), 21211 (not a valid number),
//! 63016 (outside WhatsApp's 24 h window: a template is needed), 20429 and HTTP 429 (rate).

use omnigate_sdk::{
    Fetch, FetchResponse, OutboundMessage, Part, ProviderError, SendError, SendReceipt, host,
    send_error_for_status,
};
use serde::Deserialize;

use crate::inbound::WHATSAPP_PREFIX;
use crate::{ACCOUNT_SID, API_BASE, AUTH_TOKEN, DEFAULT_API_BASE, FROM};

/// Twilio's answer to a created message.
#[derive(Debug, Deserialize)]
pub struct Created {
    /// `SM…` / `MM…`: the message's SID, also in its status callbacks.
    pub sid: String,
}

/// Twilio's error body (`{"code": 21211, "message": "…", "more_info": "…", "status": 400}`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TwilioError {
    /// Twilio's error code.
    pub code: Option<u32>,
    /// What went wrong.
    pub message: Option<String>,
}

/// Send `message` through the Messages API.
pub fn send(message: &OutboundMessage) -> Result<SendReceipt, SendError> {
    let account = config(ACCOUNT_SID)?;
    let from = config(FROM)?;
    let base = host::config(API_BASE).unwrap_or_else(|| DEFAULT_API_BASE.into());
    let params = form(message, &from)?;
    let url = format!(
        "{}/2010-04-01/Accounts/{account}/Messages.json",
        base.trim_end_matches('/')
    );
    let response = Fetch::post(url)
        // Basic auth: the Account SID and the auth token, which only the host sees.
        .basic_auth_secret(&account, AUTH_TOKEN)
        .form(&params)?
        .timeout_ms(10_000)
        .send()?;
    if !response.is_success() {
        return Err(send_error(&response));
    }
    let created: Created = response
        .json()
        .map_err(|error| SendError::Transient(format!("unreadable answer from Twilio: {error}")))?;
    Ok(SendReceipt {
        external_id: created.sid,
        raw: Some(response.text()),
    })
}

fn config(key: &str) -> Result<String, SendError> {
    host::config(key).ok_or_else(|| SendError::Invalid(format!("config `{key}` is not set")))
}

/// The form parameters of `message`, sent from `from`.
pub fn form(message: &OutboundMessage, from: &str) -> Result<Vec<(String, String)>, SendError> {
    let to = message.recipient.trim();
    if to.is_empty() {
        return Err(SendError::Invalid("no recipient number".into()));
    }
    if message.reaction.is_some() || message.interactive.is_some() {
        return Err(SendError::Invalid(
            "Twilio Messaging sends text, media and templates; not reactions or buttons".into(),
        ));
    }
    let mut params = vec![("To".to_owned(), to.to_owned()), sender(from, to)];
    if let Some(template) = &message.template {
        params.push(("ContentSid".into(), template.name.clone()));
        if let Some(variables) = &template.components {
            params.push(("ContentVariables".into(), variables.clone()));
        }
        return Ok(params);
    }
    for part in &message.parts {
        params.push(("MediaUrl".into(), media_url(part)?));
    }
    match &message.text {
        Some(text) => params.push(("Body".into(), text.clone())),
        None if message.parts.is_empty() => {
            return Err(SendError::Invalid(
                "a reply needs text, media or a template".into(),
            ));
        }
        None => {}
    }
    Ok(params)
}

/// `From`, or `MessagingServiceSid` for an `MG…` sender. A WhatsApp recipient needs a
/// `whatsapp:` sender, so a plain number gets the prefix.
fn sender(from: &str, to: &str) -> (String, String) {
    let from = from.trim();
    if from.starts_with("MG") {
        return ("MessagingServiceSid".into(), from.to_owned());
    }
    let whatsapp = to.starts_with(WHATSAPP_PREFIX) && !from.starts_with(WHATSAPP_PREFIX);
    let value = if whatsapp {
        format!("{WHATSAPP_PREFIX}{from}")
    } else {
        from.to_owned()
    };
    ("From".into(), value)
}

fn media_url(part: &Part) -> Result<String, SendError> {
    match part {
        Part::Media(media) => media.url.clone().ok_or_else(|| {
            SendError::Invalid("Twilio sends media by public URL; this part has none".into())
        }),
        _ => Err(SendError::Invalid(
            "Twilio Messaging sends media parts only (no locations or contact cards)".into(),
        )),
    }
}

/// What Twilio's refusal means for the reply.
pub fn send_error(response: &FetchResponse) -> SendError {
    let error: TwilioError = response.json().unwrap_or_default();
    let message = error.message.clone().unwrap_or_default();
    let rejected = |code: u32, title: &str| {
        SendError::Rejected(ProviderError {
            code: code.to_string(),
            title: title.into(),
            detail: error.message.clone(),
        })
    };
    match error.code {
        Some(21610) => rejected(21610, "the recipient unsubscribed (replied STOP)"),
        Some(63016) => rejected(
            63016,
            "outside the WhatsApp 24 h window: only a template can reach the customer",
        ),
        Some(21211) => SendError::Invalid(format!("Twilio 21211: not a valid number: {message}")),
        Some(20429) => send_error_for_status(429, &response.headers, &response.body),
        _ => send_error_for_status(response.status, &response.headers, &response.body),
    }
}
