//! Inbound webhooks of the three providers → [`Mail`] → one message event.

use omnigate_sdk::{
    HttpRequest, SignatureScheme, WebhookError, WebhookOutcome, host, json, ok, outcome,
    require_method, signature,
};
use serde::Deserialize;

use crate::address::{self, Mailbox};
use crate::mail::{Attachment, Mail, says_pass};
use crate::multipart::{self, Form};
use crate::{Provider, SIGNING_KEY, WEBHOOK_PASSWORD, WEBHOOK_USER};

/// How old a Mailgun signature's timestamp may be, in seconds.
pub const MAILGUN_TOLERANCE_SECS: i64 = 300;

/// Authenticate the request the provider's way, then map the mail.
pub fn handle(provider: Provider, request: &HttpRequest) -> Result<WebhookOutcome, WebhookError> {
    require_method(request, "POST")?;
    let mail = match provider {
        Provider::Postmark => {
            basic_auth(request)?;
            postmark(&json::<PostmarkInbound>(&request.body)?)
        }
        Provider::Sendgrid => {
            basic_auth(request)?;
            sendgrid(&multipart::read(request)?)?
        }
        Provider::Mailgun => {
            // Mailgun signs fields of the form itself, so the form is read first; nothing
            // in it is used before the signature is checked.
            let form = multipart::read(request)?;
            verify_mailgun(&form)?;
            mailgun(&form)?
        }
    };
    Ok(outcome(ok(), vec![mail.into_event()?]))
}

/// Basic auth on the webhook URL (Postmark and SendGrid sign nothing).
fn basic_auth(request: &HttpRequest) -> Result<(), WebhookError> {
    let user = host::config(WEBHOOK_USER);
    signature::verify_basic_auth(request, user.as_deref(), WEBHOOK_PASSWORD)
}

// ---- Postmark ----------------------------------------------------------------------

/// Postmark's inbound webhook JSON (the fields the plugin reads).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PostmarkInbound {
    /// `{"Email", "Name", "MailboxHash"}` of the sender.
    pub from_full: Option<PostmarkAddress>,
    /// The `To` recipients.
    pub to_full: Vec<PostmarkAddress>,
    /// The `Cc` recipients.
    pub cc_full: Vec<PostmarkAddress>,
    /// The address the mail was delivered to.
    pub original_recipient: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Postmark's id of the inbound message.
    #[serde(rename = "MessageID")]
    pub message_id: Option<String>,
    /// Text part.
    pub text_body: Option<String>,
    /// The text of a reply without the quoted mail below it.
    pub stripped_text_reply: Option<String>,
    /// HTML part.
    pub html_body: Option<String>,
    /// Every header of the mail.
    pub headers: Vec<PostmarkHeader>,
    /// Attachments (content base64, not read).
    pub attachments: Vec<PostmarkAttachment>,
}

/// An address in Postmark's `*Full` fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PostmarkAddress {
    /// The address.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
}

/// A header in Postmark's `Headers`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PostmarkHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// An attachment in Postmark's `Attachments`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PostmarkAttachment {
    /// File name.
    pub name: Option<String>,
    /// MIME type.
    pub content_type: Option<String>,
    /// Size in bytes.
    pub content_length: Option<u64>,
}

/// A Postmark inbound message → [`Mail`].
pub fn postmark(inbound: &PostmarkInbound) -> Mail {
    let header = |name: &str| {
        inbound
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
    };
    let to_mailbox = |a: &PostmarkAddress| {
        address::mailbox(&a.email).map(|mailbox| Mailbox {
            name: a.name.clone().filter(|n| !n.is_empty()),
            ..mailbox
        })
    };
    let mut recipients: Vec<Mailbox> = inbound
        .to_full
        .iter()
        .chain(&inbound.cc_full)
        .filter_map(to_mailbox)
        .collect();
    recipients.extend(
        inbound
            .original_recipient
            .as_deref()
            .and_then(address::mailbox),
    );
    let authenticated = ["Received-SPF", "Authentication-Results"]
        .iter()
        .filter_map(|name| header(name))
        .any(|verdict| says_pass(&verdict));
    Mail {
        from: inbound.from_full.as_ref().and_then(to_mailbox),
        recipients,
        subject: inbound.subject.clone().filter(|s| !s.is_empty()),
        message_id: header("Message-ID").and_then(|v| address::message_ids(&v).into_iter().next()),
        provider_id: inbound.message_id.clone(),
        in_reply_to: header("In-Reply-To")
            .and_then(|v| address::message_ids(&v).into_iter().next()),
        references: header("References")
            .map(|v| address::message_ids(&v))
            .unwrap_or_default(),
        // A reply's own words, without the quoted history, when Postmark found them.
        text: inbound
            .stripped_text_reply
            .clone()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| inbound.text_body.clone()),
        html: inbound.html_body.clone().filter(|h| !h.trim().is_empty()),
        attachments: inbound
            .attachments
            .iter()
            .enumerate()
            .map(|(n, a)| Attachment {
                reference: format!("Attachments[{n}]"),
                filename: a.name.clone(),
                mime_type: a.content_type.clone(),
                size: a.content_length,
            })
            .collect(),
        authenticated,
    }
}

// ---- Mailgun -----------------------------------------------------------------------

/// `signature` = hex HMAC-SHA256 of `timestamp` + `token` with the webhook signing key,
/// and `timestamp` at most [`MAILGUN_TOLERANCE_SECS`] from the host's clock.
fn verify_mailgun(form: &Form) -> Result<(), WebhookError> {
    let field = |name: &str| {
        form.get(name)
            .ok_or_else(|| WebhookError::Unauthorized(format!("missing form field `{name}`")))
    };
    let timestamp = field("timestamp")?;
    let token = field("token")?;
    let signed = field("signature")?;
    let secs: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::Unauthorized(format!("invalid timestamp {timestamp:?}")))?;
    let age = host::now().div_euclid(1000) - secs;
    if age.abs() > MAILGUN_TOLERANCE_SECS {
        return Err(WebhookError::Unauthorized(format!(
            "timestamp {age} s from now, tolerance {MAILGUN_TOLERANCE_SECS} s"
        )));
    }
    let message = format!("{timestamp}{token}");
    match host::verify(
        SignatureScheme::HmacSha256Hex,
        SIGNING_KEY,
        message.as_bytes(),
        signed.trim(),
    ) {
        Ok(true) => Ok(()),
        Ok(false) => Err(WebhookError::Unauthorized(
            "signature does not match".into(),
        )),
        Err(_) => {
            let reason = format!("secret `{SIGNING_KEY}` is not configured or unusable");
            host::error(&reason);
            Err(WebhookError::Unauthorized(reason))
        }
    }
}

/// A Mailgun route's forwarded message → [`Mail`].
pub fn mailgun(form: &Form) -> Result<Mail, WebhookError> {
    let headers = mailgun_headers(form)?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .or_else(|| form.get(name))
    };
    let from = form
        .get("from")
        .or_else(|| form.get("sender"))
        .ok_or_else(|| WebhookError::BadRequest("missing form field `from`".into()))?;
    let authenticated = ["X-Mailgun-Spf", "X-Mailgun-Dkim-Check-Result"]
        .iter()
        .filter_map(|name| header(name))
        .any(|verdict| says_pass(&verdict));
    let count = attachment_count(form, "attachment-count")?;
    let attachments = (1..=count)
        .map(|n| {
            let reference = format!("attachment-{n}");
            let file = form.file(&reference);
            Attachment {
                filename: file.and_then(|f| f.filename.clone()),
                mime_type: file.and_then(|f| f.content_type.clone()),
                size: file.map(|f| f.data.len() as u64),
                reference,
            }
        })
        .collect();
    Ok(Mail {
        from: address::mailbox(&from),
        recipients: form
            .get("recipient")
            .map(|r| address::mailboxes(&r))
            .unwrap_or_default(),
        subject: form.get("subject"),
        message_id: header("Message-Id").and_then(|v| address::message_ids(&v).into_iter().next()),
        provider_id: None,
        in_reply_to: header("In-Reply-To")
            .and_then(|v| address::message_ids(&v).into_iter().next()),
        references: header("References")
            .map(|v| address::message_ids(&v))
            .unwrap_or_default(),
        // A reply's own words, without the quoted history, when Mailgun found them.
        text: form.get("stripped-text").or_else(|| form.get("body-plain")),
        html: form.get("body-html"),
        attachments,
        authenticated,
    })
}

/// `message-headers`: a JSON list of `[name, value]` pairs.
fn mailgun_headers(form: &Form) -> Result<Vec<(String, String)>, WebhookError> {
    let Some(raw) = form.get("message-headers") else {
        return Ok(Vec::new());
    };
    serde_json::from_str(&raw).map_err(|error| {
        WebhookError::BadRequest(format!(
            "`message-headers` is not a JSON list of pairs: {error}"
        ))
    })
}

fn attachment_count(form: &Form, name: &str) -> Result<u32, WebhookError> {
    form.get(name).map_or(Ok(0), |value| {
        value.trim().parse().map_err(|_| {
            WebhookError::BadRequest(format!("form field `{name}` is not a count: {value:?}"))
        })
    })
}

// ---- SendGrid ----------------------------------------------------------------------

/// One entry of SendGrid's `attachment-info`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AttachmentInfo {
    filename: Option<String>,
    #[serde(rename = "type")]
    mime_type: Option<String>,
}

/// A SendGrid Inbound Parse post → [`Mail`].
pub fn sendgrid(form: &Form) -> Result<Mail, WebhookError> {
    let from = form.require("from")?;
    let headers = form.get("headers").unwrap_or_default();
    let header = |name: &str| raw_header(&headers, name);
    let authenticated = form.get("SPF").is_some_and(|spf| says_pass(&spf))
        || form.get("dkim").is_some_and(|dkim| says_pass(&dkim));
    let info: std::collections::BTreeMap<String, AttachmentInfo> = match form.get("attachment-info")
    {
        None => Default::default(),
        Some(raw) => serde_json::from_str(&raw).map_err(|error| {
            WebhookError::BadRequest(format!("`attachment-info` is not JSON: {error}"))
        })?,
    };
    let count = attachment_count(form, "attachments")?;
    let attachments = (1..=count)
        .map(|n| {
            let reference = format!("attachment{n}");
            let described = info.get(&reference);
            let file = form.file(&reference);
            Attachment {
                filename: described
                    .and_then(|i| i.filename.clone())
                    .or_else(|| file.and_then(|f| f.filename.clone())),
                mime_type: described
                    .and_then(|i| i.mime_type.clone())
                    .or_else(|| file.and_then(|f| f.content_type.clone())),
                size: file.map(|f| f.data.len() as u64),
                reference,
            }
        })
        .collect();
    let mut recipients = form
        .get("to")
        .map(|to| address::mailboxes(&to))
        .unwrap_or_default();
    recipients.extend(envelope_recipients(form)?);
    Ok(Mail {
        from: address::mailbox(&from),
        recipients,
        subject: form.get("subject"),
        message_id: header("Message-ID").and_then(|v| address::message_ids(&v).into_iter().next()),
        provider_id: None,
        in_reply_to: header("In-Reply-To")
            .and_then(|v| address::message_ids(&v).into_iter().next()),
        references: header("References")
            .map(|v| address::message_ids(&v))
            .unwrap_or_default(),
        text: form.get("text"),
        html: form.get("html"),
        attachments,
        authenticated,
    })
}

/// `envelope`: `{"to": ["…"], "from": "…"}`, the SMTP recipients.
fn envelope_recipients(form: &Form) -> Result<Vec<Mailbox>, WebhookError> {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        to: Vec<String>,
    }
    let Some(raw) = form.get("envelope") else {
        return Ok(Vec::new());
    };
    let envelope: Envelope = serde_json::from_str(&raw)
        .map_err(|error| WebhookError::BadRequest(format!("`envelope` is not JSON: {error}")))?;
    Ok(envelope
        .to
        .iter()
        .filter_map(|to| address::mailbox(to))
        .collect())
}

/// The value of header `name` in a raw header block (continuation lines unfolded).
pub fn raw_header(block: &str, name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    for line in block.lines() {
        if let Some(found) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                found.push(' ');
                found.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((key, rest)) = line.split_once(':')
            && key.trim().eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_owned());
        }
    }
    value
}
