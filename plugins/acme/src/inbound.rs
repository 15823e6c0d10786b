//! Acme's webhook: a signed batch of messages → one inbound event each.

use omnigate_sdk::{
    Direction, EventBody, Handle, HandleKind, InboundEvent, Message, Party, WebhookError,
    referral_from_url, time,
};
use serde::Deserialize;

// ANCHOR: handle
use omnigate_sdk::{
    HttpRequest, WebhookOutcome, json, ok_json_text, outcome, require_method, signature,
};

/// Verify, parse, map: the whole of `handle-webhook`.
pub fn handle(request: HttpRequest) -> Result<WebhookOutcome, WebhookError> {
    require_method(&request, "POST")?;
    // The signature first: an unsigned body is never parsed.
    signature::verify_hub_signature(&request, "webhook_secret")?;
    // A malformed body is a BadRequest naming what is wrong (the provider sees it).
    let batch: Batch = json(&request.body)?;
    let events = batch
        .messages
        .into_iter()
        .map(to_event)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(outcome(ok_json_text(r#"{"ok":true}"#), events))
}
// ANCHOR_END: handle

/// What Acme POSTs.
#[derive(Debug, Deserialize)]
pub struct Batch {
    /// One or more messages.
    pub messages: Vec<AcmeMessage>,
}

/// One customer message.
#[derive(Debug, Deserialize)]
pub struct AcmeMessage {
    /// Acme's unique message id: the host dedupes on it.
    pub id: String,
    /// Who wrote it.
    pub from: Sender,
    /// The text.
    pub text: String,
    /// When it was sent, RFC 3339.
    pub sent_at: Option<String>,
    /// The page the customer came from, with its UTM parameters and click ids.
    pub landing_url: Option<String>,
}

/// The customer.
#[derive(Debug, Deserialize)]
pub struct Sender {
    /// Acme's stable user id; replies go to it.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Phone number Acme verified at sign-up.
    pub phone: Option<String>,
}

// ANCHOR: to_event
/// One Acme message → one inbound event.
pub fn to_event(message: AcmeMessage) -> Result<InboundEvent, WebhookError> {
    let occurred_at = match &message.sent_at {
        None => None,
        Some(sent_at) => Some(time::parse_rfc3339(sent_at).ok_or_else(|| {
            WebhookError::BadRequest(format!("`sent_at` is not RFC 3339: {sent_at:?}"))
        })?),
    };
    // Acme verifies phone numbers itself, so the handle is verified: it links this
    // customer to the same person on other channels.
    let handles = message
        .from
        .phone
        .into_iter()
        .map(|value| Handle {
            kind: HandleKind::Phone,
            value,
            verified: true,
        })
        .collect();
    Ok(InboundEvent {
        external_id: message.id,
        occurred_at,
        account: None,
        contact: Party {
            id: message.from.id,
            name: message.from.name,
            handles,
        },
        body: EventBody::Message(Message {
            direction: Direction::Inbound,
            text: Some(message.text),
            parts: Vec::new(),
            reply_to: None,
            forwarded: false,
            interactive_reply: None,
            referral: message
                .landing_url
                .and_then(|url| referral_from_url(&url, None)),
        }),
        // The plugin's JSON of just this message, when subscriptions ask for `raw`.
        raw: None,
    })
}
// ANCHOR_END: to_event
