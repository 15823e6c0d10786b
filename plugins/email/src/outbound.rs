//! Replies → the provider's send API, with `In-Reply-To`/`References` so the customer's
//! mail client threads them under their message.
//!
//! - Postmark: `POST {api_base}/email`, `X-Postmark-Server-Token: {{secret:api_key}}`.
//! - Mailgun: `POST {api_base}/v3/{mailgun_domain}/messages`, Basic auth `api` + the key.
//! - SendGrid: `POST {api_base}/v3/mail/send`, `Authorization: Bearer {{secret:api_key}}`.
//!
//! The subject is the option `subject`, else `Re: ` + the option `in_reply_to_subject`,
//! else `Re: your message`. Text only: attachments are refused.

use omnigate_sdk::{
    Fetch, FetchResponse, OutboundMessage, ProviderError, SendError, SendReceipt, host,
    secret_placeholder, send_error_for_status,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{API_BASE, API_KEY, FROM, FROM_NAME, MAILGUN_DOMAIN, Provider};

/// What every provider's request is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Sender address.
    pub from: String,
    /// Sender display name.
    pub from_name: Option<String>,
    /// Recipient address.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Text body.
    pub text: String,
    /// `In-Reply-To` (with brackets), if the reply answers a mail.
    pub in_reply_to: Option<String>,
    /// `References` (with brackets).
    pub references: Option<String>,
}

/// Send `message` through `provider`.
pub fn send(provider: Provider, message: &OutboundMessage) -> Result<SendReceipt, SendError> {
    let outgoing = outgoing(message)?;
    let base = host::config(API_BASE).unwrap_or_else(|| provider.default_api_base().into());
    let base = base.trim_end_matches('/');
    let response = match provider {
        Provider::Postmark => postmark(base, &outgoing)?,
        Provider::Mailgun => mailgun(base, &outgoing)?,
        Provider::Sendgrid => sendgrid(base, &outgoing)?,
    };
    if !response.is_success() {
        return Err(send_error(provider, &response));
    }
    let external_id = receipt_id(provider, &response).ok_or_else(|| {
        SendError::Transient(format!(
            "the provider accepted the mail but gave no id: {}",
            response.text()
        ))
    })?;
    Ok(SendReceipt {
        external_id,
        raw: Some(response.text()).filter(|text| !text.is_empty()),
    })
}

/// The reply as a mail.
pub fn outgoing(message: &OutboundMessage) -> Result<Outgoing, SendError> {
    let invalid = |why: &str| SendError::Invalid(why.to_owned());
    if !message.parts.is_empty()
        || message.template.is_some()
        || message.interactive.is_some()
        || message.reaction.is_some()
    {
        return Err(invalid("the e-mail plugin sends text replies only"));
    }
    let text = message
        .text
        .clone()
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| invalid("a reply needs text"))?;
    let to = message.recipient.trim();
    if !to.contains('@') {
        return Err(invalid("the recipient is not an e-mail address"));
    }
    let from = host::config(FROM).ok_or_else(|| invalid("config `from` is not set"))?;
    let option = |name: &str| {
        message
            .options
            .iter()
            .find(|pair| pair.name == name)
            .map(|pair| pair.value.clone())
    };
    let subject = option("subject")
        .or_else(|| option("in_reply_to_subject").map(|s| format!("Re: {s}")))
        .unwrap_or_else(|| "Re: your message".into());
    let bracket = |id: &str| format!("<{}>", id.trim().trim_matches(['<', '>']));
    let in_reply_to = message.reply_to.as_deref().map(bracket);
    let references = option("references").or_else(|| in_reply_to.clone());
    Ok(Outgoing {
        from,
        from_name: host::config(FROM_NAME),
        to: to.to_owned(),
        subject,
        text,
        in_reply_to,
        references,
    })
}

fn threading(outgoing: &Outgoing) -> Vec<(&'static str, String)> {
    [
        ("In-Reply-To", outgoing.in_reply_to.clone()),
        ("References", outgoing.references.clone()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name, value)))
    .collect()
}

fn postmark(base: &str, outgoing: &Outgoing) -> Result<FetchResponse, SendError> {
    let from = match &outgoing.from_name {
        Some(name) => format!("{name} <{}>", outgoing.from),
        None => outgoing.from.clone(),
    };
    let headers: Vec<Value> = threading(outgoing)
        .into_iter()
        .map(|(name, value)| json!({"Name": name, "Value": value}))
        .collect();
    let body = json!({
        "From": from,
        "To": outgoing.to,
        "Subject": outgoing.subject,
        "TextBody": outgoing.text,
        "Headers": headers,
        "MessageStream": "outbound",
    });
    Ok(Fetch::post(format!("{base}/email"))
        .header("accept", "application/json")
        .header("x-postmark-server-token", &secret_placeholder(API_KEY))
        .json(&body)?
        .timeout_ms(10_000)
        .send()?)
}

fn mailgun(base: &str, outgoing: &Outgoing) -> Result<FetchResponse, SendError> {
    let domain = host::config(MAILGUN_DOMAIN)
        .ok_or_else(|| SendError::Invalid("config `mailgun_domain` is not set".into()))?;
    let from = match &outgoing.from_name {
        Some(name) => format!("{name} <{}>", outgoing.from),
        None => outgoing.from.clone(),
    };
    let mut form = vec![
        ("from".to_owned(), from),
        ("to".to_owned(), outgoing.to.clone()),
        ("subject".to_owned(), outgoing.subject.clone()),
        ("text".to_owned(), outgoing.text.clone()),
    ];
    form.extend(
        threading(outgoing)
            .into_iter()
            .map(|(name, value)| (format!("h:{name}"), value)),
    );
    Ok(Fetch::post(format!("{base}/v3/{domain}/messages"))
        .basic_auth_secret("api", API_KEY)
        .form(&form)?
        .timeout_ms(10_000)
        .send()?)
}

fn sendgrid(base: &str, outgoing: &Outgoing) -> Result<FetchResponse, SendError> {
    let mut from = json!({"email": outgoing.from});
    if let Some(name) = &outgoing.from_name {
        from["name"] = json!(name);
    }
    let headers: serde_json::Map<String, Value> = threading(outgoing)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), json!(value)))
        .collect();
    let mut body = json!({
        "personalizations": [{"to": [{"email": outgoing.to}]}],
        "from": from,
        "subject": outgoing.subject,
        "content": [{"type": "text/plain", "value": outgoing.text}],
    });
    if !headers.is_empty() {
        body["headers"] = Value::Object(headers);
    }
    Ok(Fetch::post(format!("{base}/v3/mail/send"))
        .bearer_secret(API_KEY)
        .json(&body)?
        .timeout_ms(10_000)
        .send()?)
}

/// The id the provider gave the sent mail.
fn receipt_id(provider: Provider, response: &FetchResponse) -> Option<String> {
    #[derive(Deserialize)]
    struct Postmark {
        #[serde(rename = "MessageID")]
        message_id: String,
    }
    #[derive(Deserialize)]
    struct Mailgun {
        id: String,
    }
    match provider {
        Provider::Postmark => response.json::<Postmark>().ok().map(|p| p.message_id),
        Provider::Mailgun => response
            .json::<Mailgun>()
            .ok()
            .map(|m| m.id.trim_matches(['<', '>']).to_owned()),
        // SendGrid answers 202 with an empty body and the id in a header.
        Provider::Sendgrid => response.header("x-message-id").map(str::to_owned),
    }
}

/// What a refusal means. Postmark answers 422 with its own `ErrorCode`: 406 (inactive
/// recipient: bounced or unsubscribed) and 300 (invalid address) are told apart.
pub fn send_error(provider: Provider, response: &FetchResponse) -> SendError {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct PostmarkError {
        #[serde(rename = "ErrorCode")]
        error_code: u32,
        #[serde(rename = "Message")]
        message: Option<String>,
    }
    if provider == Provider::Postmark && response.status == 422 {
        let error: PostmarkError = response.json().unwrap_or_default();
        return match error.error_code {
            300 => SendError::Invalid(format!(
                "Postmark 300: invalid address: {}",
                error.message.unwrap_or_default()
            )),
            code => SendError::Rejected(ProviderError {
                code: code.to_string(),
                title: match code {
                    406 => "inactive recipient (bounced or unsubscribed)".into(),
                    _ => "Postmark refused the mail".into(),
                },
                detail: error.message,
            }),
        };
    }
    send_error_for_status(response.status, &response.headers, &response.body)
}
