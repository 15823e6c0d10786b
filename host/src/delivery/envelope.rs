//! The delivered request: a CloudEvents 1.0 event in structured mode (the envelope is
//! the JSON body) or binary mode (the event is the body, attributes are `ce-*` headers),
//! signed with Standard Webhooks headers (several signatures while a secret rotates), and
//! a W3C `traceparent`.

use std::borrow::Cow;

use jiff::Timestamp;
use omnigate_signature::{Scheme, SecretError, sign, standard_webhooks::signed_content};
use serde::Serialize;

use serde::Deserialize;

use crate::event::Event;
use crate::secret::Secret;

/// How a CloudEvent is carried in the HTTP request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudEventsMode {
    /// `application/cloudevents+json` body holding attributes and `data`.
    #[default]
    Structured,
    /// The event JSON as body, attributes in `ce-*` headers.
    Binary,
}

/// A secret being rotated out, valid until a moment.
#[derive(Debug)]
pub(crate) struct PreviousSecret {
    pub(crate) secret: Secret,
    /// Unix seconds after which it is no longer used.
    pub(crate) expires: i64,
}

impl PreviousSecret {
    /// Whether an attempt signed at `timestamp` still carries it.
    pub(crate) fn valid_at(&self, timestamp: i64) -> bool {
        timestamp < self.expires
    }
}

/// `content-type` of a structured CloudEvent.
pub(crate) const CONTENT_TYPE: &str = "application/cloudevents+json";

/// `content-type` of a binary-mode CloudEvent's body (the event itself).
pub(crate) const DATA_CONTENT_TYPE: &str = "application/json";

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

/// What every attempt of one event to one subscription sends: built once, so every retry
/// sends identical bytes (only the timestamp, signature and traceparent headers change).
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The body.
    pub(crate) body: Vec<u8>,
    /// `content-type`.
    pub(crate) content_type: &'static str,
    /// CloudEvents attributes as `ce-*` headers (binary mode), else empty.
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// The event as a subscription sees it (its last `history` messages, `raw` only with
/// `include_raw`), in CloudEvents `mode` (the sink's).
pub(crate) fn prepare(
    event: &Event,
    history: usize,
    include_raw: bool,
    mode: CloudEventsMode,
) -> Result<Prepared, serde_json::Error> {
    let data = tailor(event, history, include_raw);
    let kind = format!("dev.omnigate.{}", event.kind.as_str());
    let source = format!("/channels/{}", event.channel.id);
    match mode {
        CloudEventsMode::Structured => Ok(Prepared {
            body: serde_json::to_vec(&CloudEvent {
                specversion: "1.0",
                id: &event.id,
                kind,
                source,
                subject: &event.conversation.id,
                time: event.occurred_at,
                datacontenttype: DATA_CONTENT_TYPE,
                data: &data,
            })?,
            content_type: CONTENT_TYPE,
            headers: Vec::new(),
        }),
        CloudEventsMode::Binary => Ok(Prepared {
            body: serde_json::to_vec(&data)?,
            content_type: DATA_CONTENT_TYPE,
            headers: vec![
                ("ce-specversion", "1.0".to_owned()),
                ("ce-id", event.id.clone()),
                ("ce-type", kind),
                ("ce-source", source),
                ("ce-subject", event.conversation.id.clone()),
                ("ce-time", event.occurred_at.to_string()),
            ],
        }),
    }
}

/// The type of the test event.
pub(crate) const PING_TYPE: &str = "dev.omnigate.ping";

/// A test event (`dev.omnigate.ping`) for `POST /v1/subscriptions/{id}/test`.
pub(crate) fn ping(event_id: &str, mode: CloudEventsMode) -> Prepared {
    let now = Timestamp::now();
    let data = serde_json::json!({"message": "test delivery from omnigate"});
    match mode {
        CloudEventsMode::Structured => Prepared {
            body: serde_json::json!({
                "specversion": "1.0",
                "id": event_id,
                "type": PING_TYPE,
                "source": "/omnigate",
                "time": now,
                "datacontenttype": DATA_CONTENT_TYPE,
                "data": data,
            })
            .to_string()
            .into_bytes(),
            content_type: CONTENT_TYPE,
            headers: Vec::new(),
        },
        CloudEventsMode::Binary => Prepared {
            body: data.to_string().into_bytes(),
            content_type: DATA_CONTENT_TYPE,
            headers: vec![
                ("ce-specversion", "1.0".to_owned()),
                ("ce-id", event_id.to_owned()),
                ("ce-type", PING_TYPE.to_owned()),
                ("ce-source", "/omnigate".to_owned()),
                ("ce-time", now.to_string()),
            ],
        },
    }
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
/// event id, so receivers can deduplicate retries. While a previous secret is in its grace
/// period, the header carries both signatures (space-separated, new first), so receivers
/// still holding the old secret keep verifying.
pub(crate) fn sign_attempt(
    secret: &Secret,
    previous: Option<&PreviousSecret>,
    event_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<SignedHeaders, SecretError> {
    let content = signed_content(event_id, timestamp, body);
    let mut signature = sign(
        Scheme::StandardWebhooks,
        secret.expose().as_bytes(),
        &content,
    )?;
    if let Some(previous) = previous
        && previous.valid_at(timestamp)
    {
        let old = sign(
            Scheme::StandardWebhooks,
            previous.secret.expose().as_bytes(),
            &content,
        )?;
        signature.push(' ');
        signature.push_str(&old);
    }
    Ok(SignedHeaders {
        timestamp: timestamp.to_string(),
        signature,
    })
}

/// A W3C `traceparent` for one attempt when spans are not exported: the trace id is
/// derived from the event id, so every attempt (and every subscription) of an event
/// shares one trace; the span id is new per attempt.
pub(crate) fn traceparent(event_id: &str) -> String {
    let trace = derived_trace_id(event_id);
    // The W3C format forbids an all-zero span id.
    let span: u64 = rand::random_range(1..=u64::MAX);
    format!("00-{trace}-{span:016x}-01")
}

/// The parent context of attempts of an event whose outbox entry carries no trace
/// context (spans exported): the trace id of [`traceparent`] and a span id also derived
/// from the event id, so they stay in one trace across retries and instances.
pub(crate) fn derived_parent(event_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(event_id.as_bytes());
    let mut span = hex::encode(&digest[16..24]);
    if span.bytes().all(|b| b == b'0') {
        // An all-zero span id is invalid; astronomically unlikely, but stay valid.
        span = "0000000000000001".to_owned();
    }
    format!("00-{}-{span}-01", derived_trace_id(event_id))
}

/// 32 hex digits from the event id.
fn derived_trace_id(event_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(event_id.as_bytes());
    hex::encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_w3c_and_stable_per_event() {
        let one = traceparent("evt_1");
        let again = traceparent("evt_1");
        let parts: Vec<&str> = one.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert!(parts[1].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(one[..35], again[..35], "same trace id");
        assert_ne!(traceparent("evt_2")[..35], one[..35]);
    }

    #[test]
    fn derived_parent_is_stable_and_shares_the_trace_id() {
        let parent = derived_parent("evt_1");
        assert_eq!(parent, derived_parent("evt_1"));
        assert_eq!(parent[..35], traceparent("evt_1")[..35]);
        assert!(crate::ops::trace::parse(&parent).is_some(), "{parent}");
    }
}
