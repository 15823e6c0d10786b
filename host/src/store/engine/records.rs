//! What the engine keeps under each key (see `keys.rs` for the key of each).

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::event::HistoryEntry;
use crate::store::model::{Contact, Conversation, Merge, Owed, TimelineEntry};
use crate::store::plugins::{Activations, PluginRecord};
use crate::store::rules::{self, Windows};

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Doc {
    /// A contact with its conversations and merges (`c/`).
    Contact(Box<ContactDoc>),
    /// A conversation with what the rules read and where its lists stand (`v/`).
    Thread(Box<ThreadDoc>),
    /// One message of a conversation's history (`m/`).
    Message(Box<HistoryEntry>),
    /// One entry of a conversation's timeline (`t/`).
    Entry(Box<TimelineEntry>),
    /// Events a change owes (`o/`).
    Owed(Box<Owed>),
    /// The id an index entry points at: a handle's contact, a link token's contact.
    Id(String),
    /// A record whose presence is the fact: a dedupe key, a revoked session, a
    /// probable-link member, an open conversation, a rollup debt seen.
    Mark,
    /// A place in an ordered index (due outcomes, started conversations).
    At {
        /// Milliseconds since the epoch.
        ms: i64,
        /// The conversation.
        id: String,
    },
    /// Rollup counters of one table in one bucket.
    Counters(Box<HashMap<String, i64>>),
    /// Opaque text: a conversion's answer, a receipt.
    Text(String),
    /// A plugin version's record (`P/v/`).
    Plugin(Box<PluginRecord>),
    /// A plugin version's wasm (`P/w/`).
    Wasm(Vec<u8>),
    /// Every channel's plugin activation (`P/a`).
    Activations(Box<StoredActivations>),
}

impl Doc {
    /// The contact, if this is one.
    pub fn as_contact(&self) -> Option<&ContactDoc> {
        match self {
            Doc::Contact(contact) => Some(contact.as_ref()),
            _ => None,
        }
    }

    /// The conversation, if this is one.
    pub fn as_thread(&self) -> Option<&ThreadDoc> {
        match self {
            Doc::Thread(thread) => Some(thread.as_ref()),
            _ => None,
        }
    }

    /// The id an index entry points at, if this is one.
    pub fn as_id(&self) -> Option<&str> {
        match self {
            Doc::Id(id) => Some(id),
            _ => None,
        }
    }

    /// The owed record, if this is one.
    pub fn as_owed(&self) -> Option<&Owed> {
        match self {
            Doc::Owed(owed) => Some(owed),
            _ => None,
        }
    }

    /// The text, if this is some.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Doc::Text(text) => Some(text),
            _ => None,
        }
    }
}

/// A contact and what is kept with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactDoc {
    /// The contact.
    pub contact: Contact,
    /// Its latest conversation.
    pub latest: Option<String>,
    /// Its conversations, oldest first.
    pub conversations: Vec<String>,
    /// The contact it is merged into, while merged.
    pub merged_into: Option<String>,
    /// Merges into it, undone ones included.
    pub merges: Vec<Merge>,
    /// The probable-link keys it is listed under (its name changes; the keys stay).
    pub probable: Vec<String>,
}

impl ContactDoc {
    /// A contact first seen `at`, with nothing yet.
    pub fn new(id: &str, at: Timestamp) -> Self {
        Self {
            contact: Contact::new(id, at),
            latest: None,
            conversations: Vec::new(),
            merged_into: None,
            merges: Vec::new(),
            probable: Vec::new(),
        }
    }
}

/// Positions `[from, next)` of a list kept as one key per entry: `next` counts every
/// entry ever added (so a position names the same entry for every reader), `from` is the
/// first still kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// The first position kept.
    pub from: u64,
    /// The position the next entry takes.
    pub next: u64,
}

impl Span {
    /// How many entries are kept.
    pub fn len(self) -> u64 {
        self.next - self.from
    }

    /// Whether nothing is kept.
    pub fn is_empty(self) -> bool {
        self.next == self.from
    }

    /// The positions of the last `n` entries kept.
    pub fn last(self, n: usize) -> std::ops::Range<u64> {
        self.next.saturating_sub(n as u64).max(self.from)..self.next
    }
}

/// A conversation, with the facts the rules read and its lists' positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadDoc {
    /// The conversation (`contact_id`: the contact that opened it, which keeps it).
    pub conversation: Conversation,
    /// Channel → end of its reply window.
    pub windows: Windows,
    /// Wall-clock time of the latest message (the sweeper's idea of activity, whatever
    /// time providers report).
    pub touched: Timestamp,
    /// Its messages (`m/`).
    pub history: Span,
    /// Its timeline (`t/`).
    pub timeline: Span,
    /// The outcome record's version (0: none yet).
    pub outcome_version: u64,
    /// The outcome record (JSON).
    pub outcome: Option<String>,
    /// Its key in the started index, once an outcome commit put it there.
    pub started_key: Option<String>,
}

impl ThreadDoc {
    /// A conversation `id` of `contact_id` opened on `channel` at `at`, with its first
    /// timeline entry (to push).
    pub fn opened(
        id: String,
        contact_id: &str,
        channel: &str,
        at: Timestamp,
    ) -> (Self, TimelineEntry) {
        let (conversation, started) = rules::opened(id, contact_id, channel, at);
        let thread = Self {
            conversation,
            windows: Windows::new(),
            touched: Timestamp::now(),
            history: Span::default(),
            timeline: Span::default(),
            outcome_version: 0,
            outcome: None,
            started_key: None,
        };
        (thread, started)
    }
}

/// [`Activations`] as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredActivations {
    /// Bumped by every activation.
    pub revision: u64,
    /// Channel id → activation.
    pub channels: std::collections::BTreeMap<String, crate::store::plugins::Activation>,
}

impl From<StoredActivations> for Activations {
    fn from(stored: StoredActivations) -> Self {
        Activations {
            revision: stored.revision,
            channels: stored.channels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_survives_a_round_trip_through_json() {
        let at = Timestamp::from_second(1_700_000_000).expect("valid");
        let (thread, started) = ThreadDoc::opened("cv_1".into(), "ct_1", "web", at);
        let docs = vec![
            Doc::Contact(Box::new(ContactDoc::new("ct_1", at))),
            Doc::Thread(Box::new(thread)),
            Doc::Entry(Box::new(started)),
            Doc::Id("ct_1".into()),
            Doc::Mark,
            Doc::At {
                ms: -5,
                id: "cv_1".into(),
            },
            Doc::Counters(Box::new(HashMap::from([("a\u{1f}n".to_owned(), 3)]))),
            Doc::Owed(Box::new(Owed::about_contact(
                "ct_1",
                "k".into(),
                at,
                None,
                "{}".into(),
            ))),
        ];
        for doc in docs {
            let json = serde_json::to_string(&doc).expect("serializes");
            let back: Doc = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, doc, "{json}");
        }
    }

    #[test]
    fn a_span_names_its_last_entries() {
        let span = Span { from: 3, next: 10 };
        assert_eq!(span.len(), 7);
        assert_eq!(span.last(2), 8..10);
        assert_eq!(span.last(20), 3..10);
    }
}
