//! Records of the context store and the inputs of its operations.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::event::{
    Attribution, ContactSnapshot, ConversationSnapshot, ConversationStatus, Handle, HandleKind,
    HistoryEntry, Referral,
};

/// A contact.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Contact {
    /// `ct_<ulid>`.
    pub id: String,
    /// Display name (latest seen).
    pub name: Option<String>,
    /// Every handle, normalized.
    pub handles: Vec<Handle>,
    /// When first seen.
    pub created_at: Timestamp,
}

impl Contact {
    /// Contact `id`, first seen `at`, with no name or handle yet.
    pub fn new(id: &str, at: Timestamp) -> Self {
        Self {
            id: id.to_owned(),
            name: None,
            handles: Vec::new(),
            created_at: at,
        }
    }

    /// The contact's user id on `channel`, if it has written there.
    pub fn user_on(&self, channel: &str) -> Option<&str> {
        self.handles
            .iter()
            .filter(|handle| handle.kind == HandleKind::ChannelUser)
            .find_map(|handle| {
                let (on, user) = handle.value.split_once(':')?;
                (on == channel).then_some(user)
            })
    }

    /// The snapshot carried by events.
    pub fn snapshot(&self) -> ContactSnapshot {
        ContactSnapshot {
            id: self.id.clone(),
            name: self.name.clone(),
            handles: self.handles.clone(),
        }
    }
}

/// A conversation.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Conversation {
    /// `cv_<ulid>`.
    pub id: String,
    /// The contact.
    pub contact_id: String,
    /// Open or closed.
    pub status: ConversationStatus,
    /// Start.
    pub started_at: Timestamp,
    /// Last message in either direction.
    pub last_activity_at: Timestamp,
    /// Channels in order of first use.
    pub channels_used: Vec<String>,
    /// Channel of the latest message.
    pub current_channel: String,
    /// Channel before the latest switch.
    pub previous_channel: Option<String>,
    /// Message count.
    pub messages: u64,
    /// Reply window end on the current channel.
    pub reply_window_until: Option<Timestamp>,
    /// First/last touch.
    pub attribution: Attribution,
    /// The customer's first message (a fact the outcome rules read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_inbound_at: Option<Timestamp>,
    /// The customer's first message since the business last wrote, while unanswered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_since: Option<Timestamp>,
}

impl Conversation {
    /// The snapshot carried by events.
    pub fn snapshot(&self) -> ConversationSnapshot {
        ConversationSnapshot {
            id: self.id.clone(),
            status: self.status,
            started_at: self.started_at,
            last_activity_at: self.last_activity_at,
            channels_used: self.channels_used.clone(),
            current_channel: self.current_channel.clone(),
            previous_channel: self.previous_channel.clone(),
            messages: self.messages,
            reply_window_until: self.reply_window_until,
            attribution: self.attribution.clone(),
        }
    }
}

/// Who an inbound event is from, with handles already normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// The `channel-user` handle (`<channel>:<user id>`).
    pub user: Handle,
    /// Display name, if given.
    pub name: Option<String>,
    /// Phone/e-mail handles.
    pub handles: Vec<Handle>,
}

/// One inbound event to record.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Channel id.
    pub channel: String,
    /// The provider's id, the dedupe key within the channel.
    pub external_id: String,
    /// When it happened.
    pub at: Timestamp,
    /// Who.
    pub person: Person,
    /// The message to append to history, for events that are messages.
    pub message: Option<HistoryEntry>,
    /// Referral to record as first/last touch.
    pub referral: Option<Arc<Referral>>,
    /// The channel's reply window, opened by an inbound message.
    pub reply_window: Option<Duration>,
    /// What the publisher needs to build this event's events, kept with the change (as
    /// [`Owed::payload`]) until [`super::ContextStore::settle`] says they are published;
    /// `None` when the change owes nothing (no subscription wants its events and no
    /// outcome step follows it): no record is written.
    pub owed: Option<String>,
    /// The owed payload of the `contact.merged` of a merge the ingest makes on a
    /// verified handle another contact owns ([`merges_on`]), kept with the merge under
    /// [`owed_merged_key`] until settled (on Redis the merge is a step before the
    /// ingest's own, and a crash in between must not lose the event); `None` when the
    /// sender reports no such handle.
    pub merged_owed: Option<String>,
}

/// A message sent by the business through omnigate.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Conversation it belongs to.
    pub conversation_id: String,
    /// The history entry (direction outbound).
    pub message: HistoryEntry,
    /// Kept with the change until settled, under the key `out` + the entry's event id
    /// (see [`Owed`]).
    pub owed: String,
}

/// Store-wide rules for ingest.
#[derive(Debug, Clone)]
pub struct IngestPolicy {
    /// How long dedupe keys live.
    pub dedupe_ttl: Duration,
    /// Inactivity after which the next message opens a new conversation.
    pub inactivity: Duration,
    /// Messages kept per conversation.
    pub history_cap: usize,
    /// Timeline entries kept per conversation: older ones are dropped from the front
    /// (timeline cursors stay stable).
    pub timeline_cap: usize,
    /// Messages returned with the result (for enrichment).
    pub history_depth: usize,
}

impl IngestPolicy {
    /// How many messages a result carries: the depth asked for, at most what a
    /// conversation keeps (a cap of 0 keeps one).
    pub fn history_returned(&self) -> usize {
        self.history_depth.min(self.history_cap.max(1))
    }
}

/// What ingest did.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The contact after the event.
    pub contact: Contact,
    /// The conversation after the event.
    pub conversation: Conversation,
    /// Whether this event opened the conversation.
    pub started: bool,
    /// Whether this event is the customer's first message in the conversation.
    pub first_inbound: bool,
    /// The channel the conversation was on before, if this event switched channel.
    pub switched_from: Option<String>,
    /// The last `history_depth` messages, oldest first, this one included.
    pub history: Vec<HistoryEntry>,
    /// The merge this event caused: the sender's contact carried a verified phone or
    /// e-mail that another contact owns, so it was merged into that contact (the owner
    /// survives) before the event was recorded there. Reported at least once: a
    /// concurrent event of the same sender may report the same merge (same `id`).
    pub merged: Option<Merge>,
}

/// A reversible merge: `absorbed` became part of `survivor`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Merge {
    /// `mg_<ulid>`.
    pub id: String,
    /// The contact that remains.
    pub survivor: String,
    /// The contact merged into it (kept, so the merge can be undone).
    pub absorbed: String,
    /// The handles that moved to the survivor (and move back on unmerge).
    pub handles: Vec<Handle>,
    /// Always `verified`: only verified evidence merges (probable links never do).
    pub strength: LinkStrength,
    /// Why, e.g. `link token redeemed on channel wa`.
    pub evidence: String,
    /// When.
    pub at: Timestamp,
    /// When it was undone, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undone_at: Option<Timestamp>,
}

impl Merge {
    /// A verified merge of `source` (absorbed) into `target` (survivor): the handles that
    /// move are the source's the target does not have yet.
    pub fn verified(target: &Contact, source: &Contact, evidence: &str, at: Timestamp) -> Self {
        let handles = source
            .handles
            .iter()
            .filter(|handle| !target.handles.iter().any(|have| have.same_as(handle)))
            .cloned()
            .collect();
        Self {
            id: crate::ids::merge(),
            survivor: target.id.clone(),
            absorbed: source.id.clone(),
            handles,
            strength: LinkStrength::Verified,
            evidence: evidence.to_owned(),
            at,
            undone_at: None,
        }
    }
}

/// The evidence of a merge on a verified handle two contacts share, e.g. `same verified
/// phone +34600111222 reported on channel wa`.
pub fn shared_handle_evidence(handle: &Handle, channel: &str) -> String {
    let kind = match handle.kind {
        HandleKind::Phone => "phone",
        HandleKind::Email => "e-mail",
        HandleKind::ChannelUser => "channel user",
    };
    format!(
        "same verified {kind} {} reported on channel {channel}",
        handle.value
    )
}

/// Whether `handle` is one that merges contacts when verified: a phone or an e-mail
/// (channel users identify a sender on one channel only).
pub fn merges_on(handle: &Handle) -> bool {
    handle.verified && matches!(handle.kind, HandleKind::Phone | HandleKind::Email)
}

/// How sure a link between handles or contacts is.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LinkStrength {
    /// Proven: the same verified phone, a redeemed link token, an authenticated visitor.
    Verified,
    /// Likely (same name and e-mail domain…); shown, never merged automatically.
    Probable,
}

/// A contact with everything `GET /v1/contacts/{id}` shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContactDetails {
    /// The contact.
    #[serde(flatten)]
    pub contact: Contact,
    /// The contact this one was merged into, while merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Merges into this contact (the links between contacts, with their evidence),
    /// including undone ones.
    pub merges: Vec<Merge>,
    /// Conversation ids of the contact and of the contacts merged into it, oldest first.
    pub conversations: Vec<String>,
    /// The contact's own latest conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_conversation: Option<String>,
    /// Contacts that look like the same person; shown, never merged automatically.
    pub probable_links: Vec<ProbableLink>,
}

impl ContactDetails {
    /// The contacts merged into this one (live merges only): what erasing it also erases.
    pub fn live_absorbed(&self) -> Vec<String> {
        self.merges
            .iter()
            .filter(|merge| merge.undone_at.is_none())
            .map(|merge| merge.absorbed.clone())
            .collect()
    }
}

/// Another contact that probably is the same person.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbableLink {
    /// The other contact.
    pub contact_id: String,
    /// Always `probable`.
    pub strength: LinkStrength,
    /// Why, e.g. ``same name `ana pérez` and e-mail domain `example.com` ``.
    pub evidence: String,
}

/// The probable-link keys of a person: normalized name + domain of each e-mail, with the
/// evidence text.
pub fn probable_keys(name: Option<&str>, handles: &[Handle]) -> Vec<(String, String)> {
    let Some(name) = name
        .map(|name| {
            name.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .filter(|name| !name.is_empty())
    else {
        return Vec::new();
    };
    let mut keys: Vec<(String, String)> = handles
        .iter()
        .filter(|handle| handle.kind == crate::event::HandleKind::Email)
        .filter_map(|handle| handle.value.rsplit_once('@').map(|(_, domain)| domain))
        .map(|domain| {
            (
                format!("{name}|{domain}"),
                format!("same name `{name}` and e-mail domain `{domain}`"),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// What an erasure removed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Erased {
    /// The erased contact.
    pub contact_id: String,
    /// Contacts merged into it, erased with it.
    pub absorbed: Vec<String>,
    /// Conversations removed (with their messages).
    pub conversations: Vec<String>,
    /// Its latest conversation as it was (for the `contact.erased` event).
    pub latest: Option<Conversation>,
}

/// One entry of a conversation's timeline: its messages and conversation events, in order.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TimelineEntry {
    /// `message`, `referral`, `conversation.started`, `conversation.channel_switched`,
    /// `conversation.closed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When.
    pub at: Timestamp,
    /// Channel.
    pub channel: String,
    /// For `conversation.channel_switched`: the channel before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_channel: Option<String>,
    /// For `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<HistoryEntry>,
    /// For `referral`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<Arc<Referral>>,
}

impl TimelineEntry {
    /// An entry of `kind` with nothing attached.
    pub fn new(kind: &str, at: Timestamp, channel: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            at,
            channel: channel.to_owned(),
            previous_channel: None,
            message: None,
            referral: None,
        }
    }
}

/// One page of a timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelinePage {
    /// Entries, oldest first.
    pub entries: Vec<TimelineEntry>,
    /// Cursor of the next page, if there is more.
    pub next: Option<u64>,
}

/// Events a change owes its subscribers. A store keeps one with the change that owes it,
/// in the same atomic step (the same Lua script on Redis), and drops it when the publisher
/// [settles](super::ContextStore::settle) it after the events are in the outbox. A crash in
/// between leaves it behind: a provider's retry of the webhook (a duplicate) or the relay
/// (which lists owed records older than a while) publishes it then, so nothing a store
/// accepted is lost.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Owed {
    /// The contact it is kept with (on Redis: in that contact's slot).
    pub contact_id: String,
    /// Unique within the contact: [`owed_inbound_key`], [`owed_outbound_key`],
    /// [`owed_closed_key`], [`owed_merged_key`], [`owed_unmerged_key`] or
    /// [`owed_erased_key`].
    pub key: String,
    /// When the change committed.
    pub at: Timestamp,
    /// The conversation the events are about.
    pub conversation_id: String,
    /// Whether the change opened the conversation.
    pub started: bool,
    /// The channel the conversation was on before, if the change switched channel.
    pub switched_from: Option<String>,
    /// A merge the store made for the change (a verified handle another contact owns).
    pub merged: Option<Merge>,
    /// What the publisher passed with the change (opaque to the store).
    pub payload: String,
}

impl Owed {
    /// A record about conversation `conversation_id` of `contact_id` that opened
    /// nothing, switched nothing and merged nothing (a sent message, a close, an outcome
    /// step).
    pub fn about_conversation(
        contact_id: &str,
        key: String,
        at: Timestamp,
        conversation_id: &str,
        payload: String,
    ) -> Self {
        Self {
            contact_id: contact_id.to_owned(),
            key,
            at,
            conversation_id: conversation_id.to_owned(),
            started: false,
            switched_from: None,
            merged: None,
            payload,
        }
    }

    /// A record about a contact rather than a conversation (a merge, an unmerge, an
    /// erasure): `merged` is the merge it is about, if any.
    pub fn about_contact(
        contact_id: &str,
        key: String,
        at: Timestamp,
        merged: Option<Merge>,
        payload: String,
    ) -> Self {
        Self {
            contact_id: contact_id.to_owned(),
            key,
            at,
            conversation_id: String::new(),
            started: false,
            switched_from: None,
            merged,
            payload,
        }
    }
}

/// The owed key of an inbound event: its dedupe key, `<channel>\x1f<external id>`.
pub fn owed_inbound_key(channel: &str, external_id: &str) -> String {
    format!("{channel}\u{1f}{external_id}")
}

/// The owed key of a message the business sent: `out\x1f<event id>`.
pub fn owed_outbound_key(event_id: &str) -> String {
    format!("out\u{1f}{event_id}")
}

/// The owed key of an undone merge (`contact.unmerged`): `unmerged\x1f<merge id>`.
pub fn owed_unmerged_key(merge_id: &str) -> String {
    format!("unmerged\u{1f}{merge_id}")
}

/// The owed key of a merge a redeemed link token made (`contact.merged`):
/// `merged\x1f<merge id>`, on the survivor.
pub fn owed_merged_key(merge_id: &str) -> String {
    format!("merged\u{1f}{merge_id}")
}

/// The owed key of an erasure (`contact.erased`): `erased\x1f<contact id>`, kept with
/// the erased contact's id after everything else of it is gone.
pub fn owed_erased_key(contact_id: &str) -> String {
    format!("erased\u{1f}{contact_id}")
}

/// The owed key of a conversation closed by the sweeper: `closed\x1f<conversation id>`.
pub fn owed_closed_key(conversation_id: &str) -> String {
    format!("closed\u{1f}{conversation_id}")
}

/// A conversation the sweeper closed, with the key of the `conversation.closed` it owes.
#[derive(Debug, Clone)]
pub struct Closed {
    /// The contact.
    pub contact: Contact,
    /// The conversation as closed.
    pub conversation: Conversation,
    /// The owed record kept with the close ([`owed_closed_key`]).
    pub owed: Owed,
}
