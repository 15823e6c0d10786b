//! A conversation's outcome record: what happened after the click, kept with the
//! conversation (the store keeps it opaque, as JSON, under compare-and-set).

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Who wrote a business message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthorKind {
    /// A person.
    Agent,
    /// An automation.
    Bot,
}

/// The author of a reply sent through the API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Author {
    /// `agent` or `bot`.
    pub kind: AuthorKind,
    /// The author's id in the calling tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The keys one touch puts a conversation's counters under.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TouchKeys {
    /// The channel the touch was seen on (the conversation's first channel without one).
    pub channel: String,
    /// The referral's source kind (`ad`, `post`, `link`, `qr`, `other`), `organic` without one.
    pub source: String,
    /// Campaign (the referral's, else its `utm_campaign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Ad id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad: Option<String>,
}

/// A conversion recorded on the conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConversionRef {
    /// The caller's id (the idempotency key).
    pub id: String,
    /// `purchase`, `lead`, … or `custom:<name>`.
    pub name: String,
    /// Amount, when given.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub value: Option<Decimal>,
    /// ISO 4217 code, with `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// When it happened.
    pub occurred_at: Timestamp,
}

/// A lost opportunity found on the conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LostFound {
    /// `unanswered`, `window_expired`, `closed_without_outcome`, `referral_only`.
    pub reason: String,
    /// When it became lost.
    pub at: Timestamp,
}

/// A stage change, kept so the conversation's timeline can show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StageMove {
    /// When.
    pub at: Timestamp,
    /// Stage before.
    pub from: String,
    /// Stage after.
    pub to: String,
    /// Why (the lost reason, or a tool's note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who (`console`, a tool, `conversion:<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Stage changes kept per record (the oldest go first): the record is read and written
/// whole under compare-and-set, so it stays small.
pub const MAX_MOVES: usize = 100;

/// The outcome of one conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutcomeRecord {
    /// The current stage.
    pub stage: String,
    /// Since when.
    pub stage_at: Timestamp,
    /// Every stage reached, in order of first reach.
    pub reached: Vec<String>,
    /// The reason of the `lost` stage, while lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_reason: Option<String>,
    /// The customer's first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_inbound_at: Option<Timestamp>,
    /// The first business message after it that counts as a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_at: Option<Timestamp>,
    /// Seconds from the first message to the first response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_response_seconds: Option<u64>,
    /// Whether the first response came within the SLA in force then.
    #[serde(default)]
    pub within_sla: bool,
    /// Lost opportunities found, each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<LostFound>,
    /// Conversions attributed to the conversation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conversions: Vec<ConversionRef>,
    /// Stage changes, oldest first (at most [`MAX_MOVES`], the newest); records written
    /// before they were kept have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<StageMove>,
    /// The hour (Unix seconds / 3600) the conversation started: its counters' bucket.
    pub hour: i64,
    /// Whether the conversation has a referral.
    #[serde(default)]
    pub referred: bool,
    /// First-touch keys.
    pub first: TouchKeys,
    /// Last-touch keys.
    pub last: TouchKeys,
    /// Whether the conversation has ended (closed, or idle past the inactivity).
    #[serde(default)]
    pub ended: bool,
    /// When the sweeper should look at it next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Timestamp>,
}

impl OutcomeRecord {
    /// The record from its stored JSON.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The stored JSON.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether a lost opportunity with `reason` was found.
    pub fn has_lost(&self, reason: &str) -> bool {
        self.lost.iter().any(|lost| lost.reason == reason)
    }

    /// Sum of the conversions' values per currency.
    pub fn value_by_currency(&self) -> std::collections::BTreeMap<String, Decimal> {
        let mut sums = std::collections::BTreeMap::new();
        for conversion in &self.conversions {
            if let (Some(value), Some(currency)) = (conversion.value, &conversion.currency) {
                *sums.entry(currency.clone()).or_insert(Decimal::ZERO) += value;
            }
        }
        sums
    }
}
