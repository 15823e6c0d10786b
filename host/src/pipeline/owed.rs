//! What a change owes its subscribers, in the form the pipeline keeps it in the store
//! (the payload of an [`Owed`] record), and the one place the events of a change are built.
//!
//! The store writes the record with the change, atomically. The events are built from
//! the record and the store's state — right away by the publisher, or later, after a
//! crash, by a provider's retry or the relay — with the same event ids, so a receiver
//! that already has one (at-least-once) recognizes it by its `webhook-id`.

use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::{
    Attribution, ChannelRef, ContactSnapshot, ConversationSnapshot, ConversationStatus,
    ConversionInfo, Event, EventType, FirstResponseInfo, LostInfo, Message, ReactionInfo, Referral,
    StageInfo, StatusInfo,
};
use crate::outcome::Author;
use crate::outcome::rollup::Delta;
use crate::store::{Conversation, Erased, Ingested, Merge};

/// The payload of an owed record, as written (borrowing what it describes).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "owes", rename_all = "snake_case")]
pub enum Owes<'a> {
    /// An inbound event and what it caused.
    Inbound(&'a Inbound),
    /// A message the business sent (`message.sent`).
    Sent(&'a Sent),
    /// A conversation the sweeper closed (`conversation.closed`).
    Closed {
        /// The event's id.
        event_id: &'a str,
    },
    /// A merge undone (`contact.unmerged`; the record holds the undone merge).
    Unmerged {
        /// The event's id.
        event_id: &'a str,
    },
    /// A merge a redeemed link token made (`contact.merged`; the record holds the merge).
    Merged {
        /// The event's id (the one the redeeming message publishes it with).
        event_id: &'a str,
    },
    /// What an outcome change caused: its events and counter changes.
    Outcome(&'a OutcomeDebt),
    /// A contact erased (`contact.erased`, whole: the contact is gone when it is
    /// republished, and the event carries no personal data).
    Erased {
        /// The event.
        event: &'a Event,
    },
}

impl Owes<'_> {
    /// The payload text kept in the store.
    pub fn payload(&self) -> String {
        // Serializing these types cannot fail (string keys, no non-finite floats).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The payload of an owed record, as read back ([`Owes`] written).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "owes", rename_all = "snake_case")]
pub enum Debt {
    /// An inbound event and what it caused.
    Inbound(Box<Inbound>),
    /// A message the business sent (`message.sent`).
    Sent(Box<Sent>),
    /// A conversation the sweeper closed (`conversation.closed`).
    Closed {
        /// The event's id.
        event_id: String,
    },
    /// A merge undone (`contact.unmerged`).
    Unmerged {
        /// The event's id.
        event_id: String,
    },
    /// A merge a redeemed link token made (`contact.merged`).
    Merged {
        /// The event's id.
        event_id: String,
    },
    /// What an outcome change caused.
    Outcome(Box<OutcomeDebt>),
    /// A contact erased (`contact.erased`).
    Erased {
        /// The event.
        event: Box<Event>,
    },
}

impl Debt {
    /// The debt of a stored payload.
    pub fn from_payload(payload: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload)
    }
}

/// An inbound event as the pipeline publishes it, with the ids of every event it may
/// cause (decided before the store call, so a rebuild gives the same ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// The event's own id.
    pub event_id: String,
    /// Ids of `conversation.started`, `conversation.channel_switched`, the link token's
    /// `contact.merged` and the store's `contact.merged`, in that order.
    pub caused_ids: [String; 4],
    /// Event type.
    pub kind: EventType,
    /// The channel, with the business account.
    pub channel: ChannelRef,
    /// Provider id.
    pub external_id: String,
    /// When it happened.
    pub at: Timestamp,
    /// When omnigate received it.
    pub received_at: Timestamp,
    /// Message content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Arc<Message>>,
    /// Status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusInfo>,
    /// Reaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<ReactionInfo>,
    /// Edited/deleted message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_message_id: Option<String>,
    /// Referral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<Arc<Referral>>,
    /// The provider's payload, when a subscription wants it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
    /// The merge a redeemed link token made before the event was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_merge: Option<Merge>,
}

/// A message the business sent through omnigate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    /// The event's id.
    pub event_id: String,
    /// When it was sent.
    pub at: Timestamp,
    /// The channel it went out on.
    pub channel: ChannelRef,
    /// The provider's message id.
    pub external_id: String,
    /// The message.
    pub message: Arc<Message>,
    /// Who wrote it, when the caller said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
}

/// What an outcome change owes: its events (with ids decided at the change) and the
/// counter changes, applied once (keyed by the owed record's key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeDebt {
    /// The conversation (empty for an unattributed conversion).
    #[serde(default)]
    pub conversation_id: String,
    /// The events, in order.
    pub events: Vec<OutcomeEvent>,
    /// Counter changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<Delta>,
}

/// One event an outcome change causes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeEvent {
    /// Event id.
    pub id: String,
    /// Type.
    pub kind: EventType,
    /// When it happened.
    pub at: Timestamp,
    /// `conversation.first_response`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response: Option<FirstResponseInfo>,
    /// `conversation.stage_changed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageInfo>,
    /// `conversation.opportunity_lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<LostInfo>,
    /// `conversion.recorded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<ConversionInfo>,
}

/// The events of an outcome debt about `contact` and, when attributed, `conversation`
/// (`None`: an empty conversation, as for a contact event); `channel` names the
/// conversation's current channel.
pub fn outcome_events(
    debt: &OutcomeDebt,
    contact: ContactSnapshot,
    conversation: Option<&Conversation>,
    kind_of: &dyn Fn(&str) -> String,
) -> Vec<Event> {
    debt.events
        .iter()
        .map(|spec| {
            let mut event = contact_event(spec.kind, contact.clone(), conversation, kind_of);
            event.id.clone_from(&spec.id);
            event.occurred_at = spec.at;
            event.first_response.clone_from(&spec.first_response);
            event.stage.clone_from(&spec.stage);
            event.lost.clone_from(&spec.lost);
            event.conversion.clone_from(&spec.conversion);
            event
        })
        .collect()
}

/// The events an inbound event publishes, in order: the merges (the link token's, then
/// the store's), `conversation.started` or `conversation.channel_switched` (never both:
/// a new conversation starts on the event's channel), then the event itself.
pub fn inbound_events(inbound: &Inbound, ingested: &Ingested) -> Vec<Event> {
    let contact = Arc::new(ingested.contact.snapshot());
    let conversation = Arc::new(ingested.conversation.snapshot());
    let about = |kind: EventType, id: &str, occurred_at: Timestamp| {
        Event::about(
            id.to_owned(),
            kind,
            inbound.channel.clone(),
            occurred_at,
            inbound.received_at,
            contact.clone(),
            conversation.clone(),
        )
    };
    let [started_id, switched_id, link_id, store_id] = &inbound.caused_ids;
    let mut out = Vec::with_capacity(3);
    let merges = [
        (inbound.link_merge.as_ref(), link_id),
        (ingested.merged.as_ref(), store_id),
    ];
    for (merge, id) in merges {
        if let Some(merge) = merge {
            let mut event = about(EventType::ContactMerged, id, merge.at);
            event.merge = Some(super::enrich::merge_ref(merge));
            out.push(event);
        }
    }
    for (happened, kind, id) in [
        (ingested.started, EventType::ConversationStarted, started_id),
        (
            ingested.switched_from.is_some(),
            EventType::ConversationChannelSwitched,
            switched_id,
        ),
    ] {
        if happened {
            let mut event = about(kind, id, inbound.at);
            event.referral.clone_from(&inbound.referral);
            out.push(event);
        }
    }
    let mut main = about(inbound.kind, &inbound.event_id, inbound.at);
    main.external_id = Some(inbound.external_id.clone());
    main.message.clone_from(&inbound.message);
    main.status.clone_from(&inbound.status);
    main.reaction.clone_from(&inbound.reaction);
    main.target_message_id
        .clone_from(&inbound.target_message_id);
    main.referral.clone_from(&inbound.referral);
    main.history.clone_from(&ingested.history);
    main.raw.clone_from(&inbound.raw);
    out.push(main);
    out
}

/// `message.sent` for a message the business sent.
pub fn sent_event(sent: &Sent, ingested: &Ingested) -> Event {
    let mut event = Event::about(
        sent.event_id.clone(),
        EventType::MessageSent,
        sent.channel.clone(),
        sent.at,
        sent.at,
        ingested.contact.snapshot(),
        ingested.conversation.snapshot(),
    );
    event.external_id = Some(sent.external_id.clone());
    event.message = Some(sent.message.clone());
    event.history.clone_from(&ingested.history);
    event
}

/// `conversation.closed`, at `at` (when the sweeper closed it).
pub fn closed_event(
    event_id: &str,
    channel: ChannelRef,
    at: Timestamp,
    ingested: &Ingested,
) -> Event {
    Event::about(
        event_id.to_owned(),
        EventType::ConversationClosed,
        channel,
        at,
        at,
        ingested.contact.snapshot(),
        ingested.conversation.snapshot(),
    )
}

/// A `contact.*` event about `contact`, on its latest `conversation` (a contact without
/// one gets an empty conversation id); `kind_of` names a channel's kind.
pub fn contact_event(
    kind: EventType,
    contact: ContactSnapshot,
    conversation: Option<&Conversation>,
    kind_of: &dyn Fn(&str) -> String,
) -> Event {
    let now = Timestamp::now();
    let snapshot = conversation.map_or_else(
        || ConversationSnapshot {
            id: String::new(),
            status: ConversationStatus::Closed,
            started_at: now,
            last_activity_at: now,
            channels_used: Vec::new(),
            current_channel: String::new(),
            previous_channel: None,
            messages: 0,
            reply_window_until: None,
            attribution: Attribution::default(),
        },
        Conversation::snapshot,
    );
    let channel = ChannelRef {
        kind: kind_of(&snapshot.current_channel),
        id: snapshot.current_channel.clone(),
        account: None,
    };
    Event::about(
        crate::ids::event(),
        kind,
        channel,
        now,
        now,
        contact,
        snapshot,
    )
}

/// `contact.erased`: what to erase downstream, with no personal data (the contact's id,
/// its latest conversation without attribution).
pub fn erased_event(erased: &Erased, kind_of: &dyn Fn(&str) -> String) -> Event {
    let mut conversation = erased.latest.clone();
    if let Some(conversation) = &mut conversation {
        conversation.attribution = Attribution::default();
    }
    let contact = ContactSnapshot {
        id: erased.contact_id.clone(),
        name: None,
        handles: Vec::new(),
    };
    contact_event(
        EventType::ContactErased,
        contact,
        conversation.as_ref(),
        kind_of,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Direction;

    fn inbound() -> Inbound {
        let at = Timestamp::from_second(1_764_000_000).expect("time");
        Inbound {
            event_id: "evt_main".into(),
            caused_ids: [
                "evt_a".into(),
                "evt_b".into(),
                "evt_c".into(),
                "evt_d".into(),
            ],
            kind: EventType::MessageReceived,
            channel: ChannelRef {
                id: "web".into(),
                kind: "webchat".into(),
                account: Some("acct".into()),
            },
            external_id: "m-1".into(),
            at,
            received_at: at,
            message: Some(std::sync::Arc::new(Message {
                direction: Direction::Inbound,
                text: Some("hola \u{1f} with a unit separator".into()),
                parts: Vec::new(),
                reply_to: None,
                forwarded: false,
                interactive_reply: None,
            })),
            status: None,
            reaction: None,
            target_message_id: None,
            referral: Some(Arc::new(Referral {
                channel_kind: Some("webchat".into()),
                campaign: Some("bf25".into()),
                click_id: [("gclid".to_owned(), "g-1".to_owned())].into(),
                ..Referral::ad("web", at, "ad-1")
            })),
            raw: Some(serde_json::json!({"id": "m-1"})),
            link_merge: None,
        }
    }

    #[test]
    fn an_inbound_payload_reads_back_as_written() {
        let inbound = inbound();
        let payload = Owes::Inbound(&inbound).payload();
        match Debt::from_payload(&payload).expect("readable") {
            Debt::Inbound(read) => assert_eq!(*read, inbound),
            other => panic!("read back as {other:?}"),
        }
    }

    #[test]
    fn sent_unmerged_and_closed_payloads_read_back_as_written() {
        let inbound = inbound();
        let sent = Sent {
            event_id: "evt_sent".into(),
            at: inbound.at,
            channel: inbound.channel.clone(),
            external_id: "wamid.1".into(),
            message: inbound.message.clone().expect("message"),
            author: None,
        };
        match Debt::from_payload(&Owes::Sent(&sent).payload()).expect("readable") {
            Debt::Sent(read) => assert_eq!(*read, sent),
            other => panic!("read back as {other:?}"),
        }
        let unmerged = Owes::Unmerged { event_id: "evt_u" }.payload();
        assert!(matches!(
            Debt::from_payload(&unmerged).expect("readable"),
            Debt::Unmerged { event_id } if event_id == "evt_u"
        ));
        let closed = Owes::Closed { event_id: "evt_x" }.payload();
        assert!(matches!(
            Debt::from_payload(&closed).expect("readable"),
            Debt::Closed { event_id } if event_id == "evt_x"
        ));
        assert!(Debt::from_payload("{\"owes\":\"nothing\"}").is_err());
    }

    #[test]
    fn an_erasure_payload_keeps_the_whole_event_without_personal_data() {
        let erased = Erased {
            contact_id: "ct_1".into(),
            absorbed: vec!["ct_2".into()],
            conversations: Vec::new(),
            latest: None,
        };
        let event = erased_event(&erased, &|_: &str| "webchat".to_owned());
        let payload = Owes::Erased { event: &event }.payload();
        match Debt::from_payload(&payload).expect("readable") {
            Debt::Erased { event: read } => assert_eq!(*read, event),
            other => panic!("read back as {other:?}"),
        }
        assert_eq!(event.kind, EventType::ContactErased);
        assert_eq!(event.contact.name, None);
        assert!(event.contact.handles.is_empty());
    }
}
