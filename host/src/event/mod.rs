//! The normalized event: one JSON shape for every channel (contract).
//!
//! These types are the source of the published JSON Schema (`omnigate schema`); change
//! them only deliberately, with docs and a changelog entry.

mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use types::EventType;

/// Version of this event shape, carried in every event as `schema`.
pub const SCHEMA_VERSION: &str = "omnigate.event.v1";

/// One normalized event, as delivered to downstream tools.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Event {
    /// Unique id, `evt_<ulid>`; also the CloudEvents `id` and the `webhook-id`.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// Always [`SCHEMA_VERSION`].
    pub schema: String,
    /// When it happened (the provider's time when it gives one).
    #[schemars(with = "String")]
    pub occurred_at: Timestamp,
    /// When omnigate received it.
    #[schemars(with = "String")]
    pub received_at: Timestamp,
    /// The channel it came through or went out on.
    pub channel: ChannelRef,
    /// The provider's id of the message or event, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The customer.
    pub contact: Arc<ContactSnapshot>,
    /// The conversation, as it stands after this event.
    pub conversation: Arc<ConversationSnapshot>,
    /// The message, for `message.*` events that carry one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Arc<Message>>,
    /// Delivery state, for `message.status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusInfo>,
    /// The reaction, for `message.reaction`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reaction: Option<ReactionInfo>,
    /// The provider id of the edited or deleted message, for `message.edited`/`message.deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_message_id: Option<String>,
    /// The ad, link or QR code behind this event, when the provider reported one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral: Option<Arc<Referral>>,
    /// The contacts of a `contact.merged` / `contact.unmerged` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeRef>,
    /// For `conversation.first_response`: how fast the business answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response: Option<FirstResponseInfo>,
    /// For `conversation.stage_changed`: the move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageInfo>,
    /// For `conversation.opportunity_lost`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<LostInfo>,
    /// For `conversion.recorded`: the conversion (its attribution is the conversation's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<ConversionInfo>,
    /// The last messages of the conversation, oldest first (per subscription `history`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// The provider's payload (per subscription `include_raw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
}

impl Event {
    /// An event of `kind` about `contact` and `conversation` with nothing else attached:
    /// the one place an event's every field is written (callers set what they carry).
    /// The events of one message share its snapshots.
    pub fn about(
        id: String,
        kind: EventType,
        channel: ChannelRef,
        occurred_at: Timestamp,
        received_at: Timestamp,
        contact: impl Into<Arc<ContactSnapshot>>,
        conversation: impl Into<Arc<ConversationSnapshot>>,
    ) -> Self {
        Self {
            id,
            kind,
            schema: SCHEMA_VERSION.to_owned(),
            occurred_at,
            received_at,
            channel,
            external_id: None,
            contact: contact.into(),
            conversation: conversation.into(),
            message: None,
            status: None,
            reaction: None,
            target_message_id: None,
            referral: None,
            merge: None,
            first_response: None,
            stage: None,
            lost: None,
            conversion: None,
            history: Vec::new(),
            raw: None,
        }
    }
}

/// The first response of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct FirstResponseInfo {
    /// Seconds from the customer's first message to the first business message that
    /// counts (`[outcomes] first_response`).
    pub seconds: u64,
    /// Within `[outcomes] response_sla`.
    pub within_sla: bool,
    /// Who answered, when the reply said (`author` of `POST …/messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<crate::outcome::Author>,
}

/// A stage change of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct StageInfo {
    /// The stage before.
    pub from: String,
    /// The stage now.
    pub to: String,
    /// Why (required for `lost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who moved it: the caller's `by`, or `conversion:<id>` for a purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A lost opportunity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct LostInfo {
    /// `unanswered`, `window_expired`, `closed_without_outcome`, `referral_only`, or the
    /// reason a tool moved the conversation to `lost` with (`price`, …).
    pub reason: String,
}

/// A conversion recorded through `POST /v1/conversions`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ConversionInfo {
    /// The caller's id.
    pub id: String,
    /// `purchase`, `lead`, … or `custom:<name>`.
    pub name: String,
    /// Amount, a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// ISO 4217 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// When it happened.
    #[schemars(with = "String")]
    pub occurred_at: Timestamp,
    /// Whether a conversation (the event's) was found for it.
    pub attributed: bool,
    /// Why not, when not attributed: `no_conversation`, `outside_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Consent flags for ad platforms, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<serde_json::Value>,
    /// The caller's properties, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

/// Which contacts a merge joined (`contact.merged`) or separated again
/// (`contact.unmerged`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct MergeRef {
    /// Merge id, `mg_<ulid>`.
    pub id: String,
    /// The contact that remained (`contact` of the event, for `contact.merged`).
    pub survivor: String,
    /// The contact merged into it (restored by an unmerge).
    pub absorbed: String,
    /// Why they were merged, e.g. `link token redeemed on channel wa`.
    pub evidence: String,
}

/// The channel of an event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ChannelRef {
    /// Configured channel id, e.g. `wa-main`.
    pub id: String,
    /// Channel kind, e.g. `whatsapp`.
    pub kind: String,
    /// The business account on the provider (phone number id, page id), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// Kind of a contact handle.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum HandleKind {
    /// Phone number in E.164.
    Phone,
    /// E-mail address, lowercased.
    Email,
    /// A user id on one channel (`value` is `<channel id>:<user id>`).
    ChannelUser,
}

/// One way to reach a contact.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
pub struct Handle {
    /// Kind.
    pub kind: HandleKind,
    /// Normalized value.
    pub value: String,
    /// Whether a provider or an authenticated source vouches for it.
    pub verified: bool,
}

impl Handle {
    /// Whether `other` is the same handle (kind and value), verified or not.
    pub fn same_as(&self, other: &Handle) -> bool {
        self.kind == other.kind && self.value == other.value
    }
}

/// The customer, as known when the event was published.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ContactSnapshot {
    /// Contact id, `ct_<ulid>`.
    pub id: String,
    /// Display name, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every handle of the contact.
    pub handles: Vec<Handle>,
}

/// Conversation status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// Messages continue it.
    Open,
    /// Closed after inactivity or by a tool; the next message starts a new one.
    Closed,
}

/// The conversation, as it stands after the event.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ConversationSnapshot {
    /// Conversation id, `cv_<ulid>`.
    pub id: String,
    /// Open or closed.
    pub status: ConversationStatus,
    /// When it started.
    #[schemars(with = "String")]
    pub started_at: Timestamp,
    /// Last message in either direction.
    #[schemars(with = "String")]
    pub last_activity_at: Timestamp,
    /// Channels used, in order of first use.
    pub channels_used: Vec<String>,
    /// The channel of the latest message.
    pub current_channel: String,
    /// The channel used before the latest switch, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_channel: Option<String>,
    /// Messages in the conversation, both directions.
    pub messages: u64,
    /// Until when the business may reply freely on the current channel (e.g. WhatsApp's
    /// 24 h window), if the channel has such a window.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub reply_window_until: Option<Timestamp>,
    /// First and last touch.
    pub attribution: Attribution,
}

/// Where the conversation came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Attribution {
    /// The first referral seen in the conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_touch: Option<Arc<Referral>>,
    /// The latest referral seen in the conversation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_touch: Option<Arc<Referral>>,
}

/// Source kind of a referral.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReferralSource {
    /// A paid ad.
    Ad,
    /// An organic post.
    Post,
    /// A link (m.me, wa.me, t.me, a URL with UTM parameters).
    Link,
    /// A QR code.
    Qr,
    /// Anything else.
    Other,
}

/// The ad, link or QR code behind a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Referral {
    /// Kind of source.
    pub source: ReferralSource,
    /// Channel where it was seen.
    pub channel: String,
    /// The kind of that channel (`whatsapp`, `instagram`, …), so a tool or destination
    /// can tell a click-to-WhatsApp ad from an Instagram one when the conversation has
    /// moved on to another channel. Absent on referrals recorded before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_kind: Option<String>,
    /// When it was seen.
    #[schemars(with = "String")]
    pub at: Timestamp,
    /// Ad id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ad_id: Option<String>,
    /// Campaign (name or id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Click ids by name (`ctwa_clid`, `fbclid`, `gclid`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub click_id: BTreeMap<String, String>,
    /// UTM parameters without the `utm_` prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub utm: BTreeMap<String, String>,
    /// Landing or source URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Referring page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// Ref payload (m.me `ref`, Telegram start payload, link token).
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub ref_payload: Option<String>,
    /// Ad headline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    /// Ad body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Ad media URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_url: Option<String>,
}

#[cfg(test)]
impl Referral {
    /// A click on ad `ad_id` seen on `channel` at `at`, nothing else known: tests fill in
    /// what they need with struct update syntax.
    pub(crate) fn ad(channel: &str, at: Timestamp, ad_id: &str) -> Self {
        Self {
            source: ReferralSource::Ad,
            channel: channel.to_owned(),
            channel_kind: None,
            at,
            ad_id: Some(ad_id.to_owned()),
            campaign: None,
            click_id: BTreeMap::new(),
            utm: BTreeMap::new(),
            url: None,
            referrer: None,
            ref_payload: None,
            headline: None,
            body: None,
            media_url: None,
        }
    }
}

/// Direction of a message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Customer → business.
    Inbound,
    /// Business → customer.
    Outbound,
}

/// A message's content.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Message {
    /// Direction.
    pub direction: Direction,
    /// Text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Media, location, contacts, unsupported parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// Provider id of the message it replies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Forwarded by the customer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded: bool,
    /// The customer's answer to buttons, lists or postbacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactive_reply: Option<InteractiveReply>,
}

/// A media attachment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Media {
    /// Provider media id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// MIME type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Caption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// File name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// SHA-256 given by the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A shared location.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Location {
    /// Latitude.
    pub latitude: f64,
    /// Longitude.
    pub longitude: f64,
    /// Place name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A shared contact card.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ContactCard {
    /// Name.
    pub name: String,
    /// Phones.
    #[serde(default)]
    pub phones: Vec<String>,
    /// E-mails.
    #[serde(default)]
    pub emails: Vec<String>,
    /// User id on the channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// One part of a message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Picture.
    Image {
        /// The media.
        media: Media,
    },
    /// Video.
    Video {
        /// The media.
        media: Media,
    },
    /// Audio file.
    Audio {
        /// The media.
        media: Media,
    },
    /// Voice note.
    Voice {
        /// The media.
        media: Media,
    },
    /// Document.
    Document {
        /// The media.
        media: Media,
    },
    /// Sticker.
    Sticker {
        /// The media.
        media: Media,
    },
    /// Location.
    Location {
        /// The location.
        location: Location,
    },
    /// Contact card.
    Contact {
        /// The card.
        contact: ContactCard,
    },
    /// Something the plugin could not map; `raw` on the event keeps it.
    Unsupported {
        /// The provider's type name.
        provider_type: String,
        /// Why.
        reason: String,
    },
}

/// Kind of interactive element answered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InteractiveKind {
    /// Reply button or quick reply.
    Button,
    /// List row.
    List,
    /// Postback.
    Postback,
    /// Telegram callback.
    Callback,
}

/// The customer's choice.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct InteractiveReply {
    /// Kind.
    pub kind: InteractiveKind,
    /// Option id / payload.
    pub id: String,
    /// Option title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Delivery state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Accepted by the provider.
    Sent,
    /// Delivered.
    Delivered,
    /// Read.
    Read,
    /// Failed.
    Failed,
}

/// A status update.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct StatusInfo {
    /// Provider id of the message.
    pub message_id: String,
    /// New state.
    pub status: DeliveryStatus,
    /// Provider error for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProviderError>,
}

/// An error reported by a provider.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ProviderError {
    /// Provider code.
    pub code: String,
    /// Title.
    pub title: String,
    /// Detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A reaction.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ReactionInfo {
    /// Provider id of the message reacted to.
    pub message_id: String,
    /// Emoji; absent when removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

/// One message of a conversation's history.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct HistoryEntry {
    /// The event that carried it.
    pub event_id: String,
    /// When.
    #[schemars(with = "String")]
    pub at: Timestamp,
    /// Channel.
    pub channel: String,
    /// Direction.
    pub direction: Direction,
    /// Provider id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Text, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Part types, e.g. `["image"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
}

/// The JSON Schema of [`Event`], as published by `omnigate schema`.
pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Event)).unwrap_or_default();
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$id".into(),
            serde_json::Value::String(format!("https://omnigate.dev/schema/{SCHEMA_VERSION}.json")),
        );
    }
    schema
}
