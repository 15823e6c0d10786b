//! The delivered request: a CloudEvents 1.0 structured JSON body, signed with Standard
//! Webhooks headers.

use std::borrow::Cow;

use jiff::Timestamp;
use omnigate_signature::{Scheme, SecretError, sign, standard_webhooks::signed_content};
use serde::Serialize;

use super::config::Subscription;
use crate::event::Event;

/// `content-type` of a structured CloudEvent.
pub(crate) const CONTENT_TYPE: &str = "application/cloudevents+json";

/// `user-agent` of every delivery.
pub(crate) const USER_AGENT: &str = concat!("omnigate/", env!("CARGO_PKG_VERSION"));

/// CloudEvents 1.0 structured-mode envelope.
#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    #[serde(rename = "type")]
    kind: String,
    source: String,
    subject: &'a str,
    time: Timestamp,
    datacontenttype: &'static str,
    data: &'a Event,
}

/// The JSON body for `subscription`: built once per event and subscription, so every
/// retry sends identical bytes (only the timestamp and signature headers change).
pub(crate) fn body(
    event: &Event,
    subscription: &Subscription,
) -> Result<Vec<u8>, serde_json::Error> {
    let data = tailor(event, subscription.history, subscription.include_raw);
    serde_json::to_vec(&CloudEvent {
        specversion: "1.0",
        id: &event.id,
        kind: format!("dev.omnigate.{}", event.kind.as_str()),
        source: format!("/channels/{}", event.channel.id),
        subject: &event.conversation.id,
        time: event.occurred_at,
        datacontenttype: "application/json",
        data: &data,
    })
}

/// The event as this subscription sees it: the last `history` messages (oldest first) and
/// `raw` only when asked for. Borrows when nothing needs removing, which is the common
/// case, so large events are not copied per subscription.
fn tailor(event: &Event, history: usize, include_raw: bool) -> Cow<'_, Event> {
    let trim_history = event.history.len() > history;
    let drop_raw = !include_raw && event.raw.is_some();
    if !trim_history && !drop_raw {
        return Cow::Borrowed(event);
    }
    let mut owned = event.clone();
    if trim_history {
        let excess = owned.history.len() - history;
        owned.history.drain(..excess);
    }
    if drop_raw {
        owned.raw = None;
    }
    Cow::Owned(owned)
}

/// Standard Webhooks headers of one attempt.
#[derive(Debug)]
pub(crate) struct SignedHeaders {
    pub(crate) timestamp: String,
    pub(crate) signature: String,
}

/// Signs `body` for an attempt made at `timestamp` (unix seconds). The `webhook-id` is the
/// event id, so receivers can deduplicate retries.
pub(crate) fn sign_attempt(
    subscription: &Subscription,
    event_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<SignedHeaders, SecretError> {
    let content = signed_content(event_id, timestamp, body);
    let signature = sign(
        Scheme::StandardWebhooks,
        subscription.secret.expose().as_bytes(),
        &content,
    )?;
    Ok(SignedHeaders {
        timestamp: timestamp.to_string(),
        signature,
    })
}
