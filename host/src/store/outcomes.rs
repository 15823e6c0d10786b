//! What the store keeps for the outcome loop: each conversation's outcome record (opaque
//! JSON, under compare-and-set), the due index the sweeper reads, the started index the
//! export reads, rollup counters and conversion answers. The rules are not here: they are
//! `outcome::rules`, run by the pipeline; a backend only keeps what they decide.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use parking_lot::Mutex;

use super::StoreError;
use super::model::Conversation;
use crate::event::Handle;

/// A conversation with its outcome record.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The conversation (with the facts the rules read).
    pub conversation: Conversation,
    /// The record's version: 0 before the first commit.
    pub version: u64,
    /// The record (JSON), once committed.
    pub record: Option<String>,
}

/// One compare-and-set of an outcome record.
#[derive(Debug, Clone)]
pub struct OutcomeCommit<'a> {
    /// The conversation's contact (the record lives in its slot).
    pub contact_id: &'a str,
    /// The conversation.
    pub conversation_id: &'a str,
    /// The version read: the commit fails when the record changed since.
    pub version: u64,
    /// The record to keep (JSON).
    pub record: &'a str,
    /// When the conversation started (for the started index, written with version 0).
    pub started_at: Timestamp,
    /// When the sweeper should look again.
    pub due: Option<Timestamp>,
    /// What the change owes (owed key, payload), kept in the same atomic step.
    pub owed: Option<(&'a str, &'a str)>,
    /// The contact's relay hint is in place already: the caller holds an owed record of
    /// the contact, not settled, that was written with its hint, and a hint only goes
    /// when the contact owes nothing. The commit need not write it again.
    pub hinted: bool,
}

/// One counter change in one bucket. Borrows what it can: a batch makes many writes
/// from few names (a bucket name is shared by every write to that bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupWrite<'a> {
    /// Bucket name (`h…`, `d…`, `m…`).
    pub bucket: Arc<str>,
    /// Table (`f.campaign`, …).
    pub table: Cow<'a, str>,
    /// Field (`<key>\x1f<metric>`).
    pub field: Cow<'a, str>,
    /// Amount.
    pub n: i64,
}

/// A conversation in the started index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StartedRef {
    /// Start, in ms.
    pub at_ms: i64,
    /// The conversation.
    pub conversation_id: String,
}

/// The outcome tables of a backend.
#[async_trait]
pub trait OutcomeStore: Send + Sync {
    /// The conversation `id` with its record; `None` when there is no such conversation.
    async fn tracked(&self, conversation_id: &str) -> Result<Option<Tracked>, StoreError>;

    /// Keep `commit.record` if the record is still at `commit.version`, with its owed
    /// record, atomically; `false` when another change came first (read again, decide
    /// again). Also notes the due time and, for a first commit, the started index.
    async fn commit(&self, commit: &OutcomeCommit<'_>) -> Result<bool, StoreError>;

    /// Up to `limit` conversations due at `now` (a hint: the record says what is due).
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Forget a due entry (the record has nothing due any more, or is gone).
    async fn undue(&self, conversation_id: &str) -> Result<(), StoreError>;

    /// Add `writes` (the summed changes of the debts named by `once`) to the counters,
    /// atomically per bucket, and only where no key of `once` was added before: a
    /// bucket that has seen one of them takes nothing. `false` when some bucket took
    /// nothing: the caller adds the keys one by one (a single key already added is a
    /// retry, and nothing more is owed).
    async fn add_rollups(
        &self,
        once: &[String],
        writes: &[RollupWrite<'_>],
    ) -> Result<bool, StoreError>;

    /// The counters (`field → n`) of `table` in each of `buckets`, in order.
    async fn rollups(
        &self,
        table: &str,
        buckets: &[String],
    ) -> Result<Vec<HashMap<String, i64>>, StoreError>;

    /// Keep the answer to conversion `id` unless one is kept; returns the kept one if any.
    async fn keep_conversion(&self, id: &str, body: &str) -> Result<Option<String>, StoreError>;

    /// The answer kept for conversion `id`.
    async fn conversion(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Keep `body` as what `destination` did with conversion `id`, replacing its
    /// previous receipt.
    async fn keep_receipt(&self, id: &str, destination: &str, body: &str)
    -> Result<(), StoreError>;

    /// The receipts of conversion `id`, by destination (in destination order).
    async fn receipts(&self, id: &str) -> Result<Vec<String>, StoreError>;

    /// Up to `limit` conversations started in `[from_ms, to_ms)`, in start order, after
    /// `after` (the previous page's last).
    async fn started(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<&StartedRef>,
        limit: usize,
    ) -> Result<Vec<StartedRef>, StoreError>;

    /// Keep an owed record with the contact unless one with `key` is kept already (events
    /// not about one conversation: an unattributed conversion); `false` when one was
    /// (another attempt owns publishing it).
    async fn owe_once(
        &self,
        contact_id: &str,
        key: &str,
        payload: &str,
    ) -> Result<bool, StoreError>;

    /// The contact owning a verified phone, e-mail or a channel user.
    async fn contact_by_handle(&self, handle: &Handle) -> Result<Option<String>, StoreError>;
}

/// The owed key of an outcome commit: `oc\x1f<conversation>\x1f<version>`.
pub fn owed_outcome_key(conversation_id: &str, version: u64) -> String {
    format!("oc\u{1f}{conversation_id}\u{1f}{version}")
}

/// The owed key of an unattributed conversion: `cn\x1f<conversion id>`.
pub fn owed_conversion_key(conversion_id: &str) -> String {
    format!("cn\u{1f}{conversion_id}")
}

/// The indexes and counters of the memory backend (records live with the conversations).
#[derive(Default)]
pub(super) struct MemoryTables {
    inner: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    due: BTreeSet<(i64, String)>,
    due_of: HashMap<String, i64>,
    started: BTreeSet<StartedRef>,
    /// Bucket → table → field → n.
    rollups: HashMap<String, HashMap<String, HashMap<String, i64>>>,
    once: HashSet<String>,
    once_order: VecDeque<String>,
    conversions: HashMap<String, String>,
    receipts: HashMap<String, BTreeMap<String, String>>,
}

/// `once` keys remembered (a retry comes within minutes; older ones can go).
const ONCE_KEPT: usize = 100_000;

impl MemoryTables {
    pub(super) fn note(&self, commit: &OutcomeCommit<'_>) {
        let mut tables = self.inner.lock();
        if commit.version == 0 {
            tables.started.insert(StartedRef {
                at_ms: commit.started_at.as_millisecond(),
                conversation_id: commit.conversation_id.to_owned(),
            });
        }
        if let Some(due) = commit.due {
            let ms = due.as_millisecond();
            let id = commit.conversation_id.to_owned();
            if let Some(old) = tables.due_of.insert(id.clone(), ms) {
                tables.due.remove(&(old, id.clone()));
            }
            tables.due.insert((ms, id));
        }
    }

    pub(super) fn due(&self, now: Timestamp, limit: usize) -> Vec<String> {
        let now = now.as_millisecond();
        self.inner
            .lock()
            .due
            .iter()
            .take_while(|(ms, _)| *ms <= now)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub(super) fn undue(&self, conversation_id: &str) {
        let mut tables = self.inner.lock();
        if let Some(ms) = tables.due_of.remove(conversation_id) {
            tables.due.remove(&(ms, conversation_id.to_owned()));
        }
    }

    pub(super) fn forget(&self, conversation_ids: &[String]) {
        let mut tables = self.inner.lock();
        for id in conversation_ids {
            if let Some(ms) = tables.due_of.remove(id) {
                tables.due.remove(&(ms, id.clone()));
            }
        }
        tables
            .started
            .retain(|started| !conversation_ids.contains(&started.conversation_id));
    }

    pub(super) fn add_rollups(&self, once: &[String], writes: &[RollupWrite<'_>]) -> bool {
        let mut tables = self.inner.lock();
        if once.iter().any(|key| tables.once.contains(key)) {
            return false;
        }
        for key in once {
            tables.once.insert(key.clone());
            tables.once_order.push_back(key.clone());
        }
        while tables.once_order.len() > ONCE_KEPT {
            let Some(old) = tables.once_order.pop_front() else {
                break;
            };
            tables.once.remove(&old);
        }
        for write in writes {
            let counters = counters_of(&mut tables.rollups, &write.bucket, &write.table);
            // Names are copied only the first time they are seen.
            let n = match counters.get_mut(write.field.as_ref()) {
                Some(n) => n,
                None => counters.entry(write.field.to_string()).or_insert(0),
            };
            *n += write.n;
            if *n == 0 {
                counters.remove(write.field.as_ref());
            }
        }
        true
    }

    pub(super) fn rollups(&self, table: &str, buckets: &[String]) -> Vec<HashMap<String, i64>> {
        let tables = self.inner.lock();
        buckets
            .iter()
            .map(|bucket| {
                tables
                    .rollups
                    .get(bucket)
                    .and_then(|tables| tables.get(table))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    pub(super) fn keep_conversion(&self, id: &str, body: &str) -> Option<String> {
        let mut tables = self.inner.lock();
        match tables.conversions.get(id) {
            Some(kept) => Some(kept.clone()),
            None => {
                tables.conversions.insert(id.to_owned(), body.to_owned());
                None
            }
        }
    }

    pub(super) fn conversion(&self, id: &str) -> Option<String> {
        self.inner.lock().conversions.get(id).cloned()
    }

    pub(super) fn keep_receipt(&self, id: &str, destination: &str, body: &str) {
        self.inner
            .lock()
            .receipts
            .entry(id.to_owned())
            .or_default()
            .insert(destination.to_owned(), body.to_owned());
    }

    pub(super) fn receipts(&self, id: &str) -> Vec<String> {
        self.inner
            .lock()
            .receipts
            .get(id)
            .map(|by_destination| by_destination.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn started(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<&StartedRef>,
        limit: usize,
    ) -> Vec<StartedRef> {
        let tables = self.inner.lock();
        let start = StartedRef {
            at_ms: from_ms,
            conversation_id: String::new(),
        };
        tables
            .started
            .range(start..)
            .filter(|started| after.is_none_or(|after| *started > after))
            .take_while(|started| started.at_ms < to_ms)
            .take(limit)
            .cloned()
            .collect()
    }
}

/// The counters of `table` in `bucket`, made on first use.
fn counters_of<'m>(
    rollups: &'m mut HashMap<String, HashMap<String, HashMap<String, i64>>>,
    bucket: &str,
    table: &str,
) -> &'m mut HashMap<String, i64> {
    if !rollups.contains_key(bucket) {
        rollups.insert(bucket.to_owned(), HashMap::new());
    }
    let tables = rollups.get_mut(bucket).expect("inserted above");
    if !tables.contains_key(table) {
        tables.insert(table.to_owned(), HashMap::new());
    }
    tables.get_mut(table).expect("inserted above")
}
