//! Stage 3: what the store did → the events to publish, with contact, conversation and
//! history snapshots.

use jiff::Timestamp;

use super::normalize::Normalized;
use crate::event::MergeRef;
use crate::event::{ChannelRef, Event, EventType, SCHEMA_VERSION};
use crate::store::{Ingested, Merge};

/// The events one ingested inbound event publishes, in order: `conversation.started` (if
/// it opened one), `conversation.channel_switched` (if it moved channel), then itself.
pub fn events(
    normalized: Normalized,
    ingested: &Ingested,
    channel: &ChannelRef,
    received_at: Timestamp,
    raw: Option<serde_json::Value>,
) -> Vec<Event> {
    let mut channel = channel.clone();
    channel.account.clone_from(&normalized.account);
    let base = |kind: EventType, id: String| Event {
        id,
        kind,
        schema: SCHEMA_VERSION.to_owned(),
        occurred_at: normalized.at,
        received_at,
        channel: channel.clone(),
        external_id: None,
        contact: ingested.contact.snapshot(),
        conversation: ingested.conversation.snapshot(),
        message: None,
        status: None,
        reaction: None,
        target_message_id: None,
        referral: normalized.referral.clone(),
        merge: None,
        history: Vec::new(),
        raw: None,
    };
    let mut out = Vec::with_capacity(3);
    if ingested.started {
        out.push(base(EventType::ConversationStarted, crate::ids::event()));
    }
    if ingested.switched_from.is_some() {
        out.push(base(
            EventType::ConversationChannelSwitched,
            crate::ids::event(),
        ));
    }
    let mut main = base(normalized.kind, normalized.event_id);
    main.external_id = Some(normalized.external_id);
    main.message = normalized.message;
    main.status = normalized.status;
    main.reaction = normalized.reaction;
    main.target_message_id = normalized.target_message_id;
    main.history = ingested.history.clone();
    main.raw = raw;
    out.push(main);
    out
}

/// The raw payload for an event: the plugin's per-event JSON, else the whole body (as
/// JSON when it is JSON, as a string otherwise).
pub fn raw_payload(per_event: Option<&str>, body: &[u8]) -> serde_json::Value {
    per_event
        .and_then(|text| serde_json::from_str(text).ok())
        .or_else(|| serde_json::from_slice(body).ok())
        .unwrap_or_else(|| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// `contact.merged`, carried with the survivor and the conversation the triggering event
/// continued.
pub fn merged(
    merge: &Merge,
    ingested: &Ingested,
    channel: &ChannelRef,
    received_at: Timestamp,
) -> Event {
    Event {
        id: crate::ids::event(),
        kind: EventType::ContactMerged,
        schema: SCHEMA_VERSION.to_owned(),
        occurred_at: merge.at,
        received_at,
        channel: channel.clone(),
        external_id: None,
        contact: ingested.contact.snapshot(),
        conversation: ingested.conversation.snapshot(),
        message: None,
        status: None,
        reaction: None,
        target_message_id: None,
        referral: None,
        merge: Some(merge_ref(merge)),
        history: Vec::new(),
        raw: None,
    }
}

/// The event's view of a merge.
pub fn merge_ref(merge: &Merge) -> MergeRef {
    MergeRef {
        id: merge.id.clone(),
        survivor: merge.survivor.clone(),
        absorbed: merge.absorbed.clone(),
        evidence: merge.evidence.clone(),
    }
}
