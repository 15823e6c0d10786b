//! What the store keeps for the outcome loop: each conversation's outcome record (opaque
//! JSON, under compare-and-set), the due index the sweeper reads, the started index the
//! export reads, rollup counters and conversion answers. The rules are not here: they are
//! `outcome::rules`, run by the pipeline; a backend only keeps what they decide.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

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
