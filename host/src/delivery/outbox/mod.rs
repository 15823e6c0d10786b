//! The outbox: where published events wait until every subscription has them.
//!
//! Shaped like Redis Streams with consumer groups, because that is the durable backend:
//! - events are appended to one of `partitions` logs, chosen by a stable hash of the
//!   conversation id, so one conversation's events stay in one log, in order;
//! - every subscription is a consumer group on every partition: it reads the log at its
//!   own pace and acknowledges each entry once delivered or dead-lettered, so a slow
//!   subscription never holds up another;
//! - one instance at a time owns a (subscription, partition) pair through a lease. The
//!   owner is the only reader of that pair, which is what keeps a conversation's order
//!   across instances; when an owner dies its lease expires, another instance takes it
//!   and first claims (`XAUTOCLAIM`) what the dead one had read but not acknowledged.
//!
//! [`MemoryOutbox`] implements the same interface in process memory: NOT durable (a
//! crash or restart loses what it holds). [`RedisOutbox`] persists every event before
//! [`Outbox::append`] returns, so the provider's webhook is acknowledged only after that.
//! The design is described in `docs/delivery.md`.

mod memory;
mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OwnedSemaphorePermit;

pub(crate) use memory::MemoryOutbox;
pub(crate) use redis::{Connection, RedisOutbox};

use crate::event::Event;

/// Why the outbox could not answer.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The backend is unreachable or failed.
    #[error("outbox unavailable: {0}")]
    Unavailable(String),
    /// The outbox URL or its shared settings are invalid.
    #[error("outbox configuration: {0}")]
    Config(String),
}

/// One event as appended: the event and, for a replay, the only subscription it is for.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// The event.
    pub(crate) event: Arc<Event>,
    /// `Some(id)`: only subscription `id` delivers it (a replayed dead letter); `None`:
    /// every subscription whose filter matches.
    pub(crate) target: Option<String>,
    /// W3C `traceparent` of the span that published it (when spans are exported), so its
    /// delivery attempts join the inbound message's trace; `None` in entries written
    /// without tracing or by versions before it.
    pub(crate) trace: Option<String>,
}

/// A dead letter as kept: what the API lists, plus the event to replay.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredDeadLetter {
    /// Subscription id.
    pub(crate) subscription: String,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// Error of the last attempt.
    pub(crate) last_error: String,
    /// When it was given up.
    pub(crate) at: jiff::Timestamp,
    /// The event.
    pub(crate) event: Event,
}

/// A subscription created through the API, as kept in the outbox backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredSubscription {
    pub(crate) id: String,
    pub(crate) url: String,
    /// `whsec_…` (stored as is: protect the Redis like the rest of the context).
    pub(crate) secret: String,
    pub(crate) events: Vec<String>,
    pub(crate) channels: Vec<String>,
    pub(crate) history: usize,
    pub(crate) include_raw: bool,
    pub(crate) mode: super::CloudEventsMode,
    pub(crate) previous_secret: Option<String>,
    pub(crate) previous_secret_expires: Option<jiff::Timestamp>,
}

/// Dead letters kept at most (oldest dropped first).
pub(crate) const DEAD_LETTER_LIMIT: usize = 100_000;

/// A record with its position in its partition.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// Entry id, increasing within a partition (Redis stream id, e.g. `1700000000000-0`).
    pub(crate) id: String,
    /// What was appended; `Err` when the stored entry could not be decoded (corrupt or
    /// from an incompatible version): the consumer dead-letters it instead of looping.
    pub(crate) record: Result<Record, String>,
}

/// A record to append, with the capacity it holds.
pub(crate) struct Append {
    /// Partition, from [`partition_of`].
    pub(crate) partition: u32,
    /// The record.
    pub(crate) record: Record,
    /// Room reserved for it; a non-durable outbox keeps it until every subscription is
    /// done with the entry (that bounds its memory), a durable one drops it once stored.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// The outbox operations delivery needs. Every method is about one partition's log for
/// one subscription (its consumer group), except `append` and `register`.
#[async_trait]
pub(crate) trait Outbox: Send + Sync + 'static {
    /// Whether appended events survive a crash of this process.
    fn durable(&self) -> bool;

    /// Backend name for logs.
    fn backend(&self) -> &'static str;

    /// Makes sure `subscription` has its consumer group on every partition. A new group
    /// starts at the end of the log: a subscription gets events published after it exists.
    async fn register(&self, subscription: &str) -> Result<(), OutboxError>;

    /// Removes `subscription`'s groups (its undelivered entries are dropped).
    async fn unregister(&self, subscription: &str) -> Result<(), OutboxError>;

    /// Appends records durably (for a durable backend) and in order per partition.
    async fn append(&self, entries: Vec<Append>) -> Result<(), OutboxError>;

    /// Takes or renews this instance's lease on (subscription, partition) for `ttl`;
    /// `false` when another live instance holds it.
    async fn lease(
        &self,
        partition: u32,
        subscription: &str,
        ttl: Duration,
    ) -> Result<bool, OutboxError>;

    /// Gives the lease up (shutdown), so another instance can take over at once.
    async fn release(&self, partition: u32, subscription: &str) -> Result<(), OutboxError>;

    /// Takes over every entry of the group read but not acknowledged (by a dead owner or
    /// by this instance before it lost the lease), oldest first. Only the lease holder
    /// calls this, so taking entries however recently they were read is safe.
    async fn claim_pending(
        &self,
        partition: u32,
        subscription: &str,
    ) -> Result<Vec<Stored>, OutboxError>;

    /// Up to `count` entries never read by the group, oldest first; they become pending
    /// for this instance until acknowledged.
    async fn read_new(
        &self,
        partition: u32,
        subscription: &str,
        count: usize,
    ) -> Result<Vec<Stored>, OutboxError>;

    /// The group is done with entry `id` (delivered, dead-lettered or not for it).
    async fn ack(&self, partition: u32, subscription: &str, id: &str) -> Result<(), OutboxError>;

    /// Entries of `subscription` not yet acknowledged, over every partition (read or not).
    async fn backlog(&self, subscription: &str) -> Result<u64, OutboxError>;

    /// Keeps a dead letter (with its event, for replay); returns its id, increasing with
    /// time.
    async fn add_dead_letter(&self, letter: &StoredDeadLetter) -> Result<String, OutboxError>;

    /// Dead letters, oldest first, at most `limit` (the newest are kept when trimming).
    async fn dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, StoredDeadLetter)>, OutboxError>;

    /// Removes dead letter `id` (replayed); `false` if there is none.
    async fn remove_dead_letter(&self, id: &str) -> Result<bool, OutboxError>;

    /// Subscriptions created through the API (shared by every instance).
    async fn subscriptions(&self) -> Result<Vec<StoredSubscription>, OutboxError>;

    /// Creates or replaces an API subscription.
    async fn put_subscription(&self, subscription: &StoredSubscription) -> Result<(), OutboxError>;

    /// Deletes an API subscription; `false` if there was none.
    async fn delete_subscription(&self, id: &str) -> Result<bool, OutboxError>;

    /// Disabled subscriptions (config or API) and why.
    async fn disabled(&self) -> Result<BTreeMap<String, String>, OutboxError>;

    /// Disables (`Some(reason)`) or re-enables (`None`) a subscription.
    async fn set_disabled(&self, id: &str, reason: Option<&str>) -> Result<(), OutboxError>;

    /// Drops entries every subscription is done with (delivery calls it now and then, for
    /// every partition).
    async fn trim(&self, _partition: u32) -> Result<(), OutboxError> {
        Ok(())
    }

    /// Entries held in this process, when the outbox lives here (memory); `None` for a
    /// shared backend.
    fn local_len(&self) -> Option<usize> {
        None
    }
}

/// The partition of a conversation: FNV-1a, stable across processes, versions and
/// instances (they must all agree, or one conversation would be consumed from two logs).
pub(crate) fn partition_of(conversation_id: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in conversation_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// Opens the outbox for `url`: `memory://` (non-durable) or any Redis URL the context
/// store accepts (`redis://`, `rediss://`, `redis+cluster://`, comma-separated seeds).
pub(crate) async fn open(
    url: &str,
    partitions: u32,
    capacity: Arc<tokio::sync::Semaphore>,
    tls: &crate::redis_url::RedisTls,
) -> Result<Arc<dyn Outbox>, OutboxError> {
    let url = url.trim();
    if url == "memory://" || url == "memory" {
        tracing::warn!(
            "delivery outbox in MEMORY: events not yet delivered are lost on restart \
             (use a redis:// store or [delivery] outbox_url in production)"
        );
        return Ok(Arc::new(MemoryOutbox::new(partitions, capacity)));
    }
    if crate::redis_url::is_redis_url(url) {
        let outbox = RedisOutbox::connect(url, partitions, tls).await?;
        return Ok(Arc::new(outbox));
    }
    Err(OutboxError::Config(format!(
        "unsupported outbox URL `{}` (memory:// or redis://)",
        crate::redis_url::redact(url)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        // Pinned values: changing the hash would split conversations across versions.
        assert_eq!(partition_of("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as u32);
        assert_eq!(partition_of("cv_a", 16), partition_of("cv_a", 16));
        for id in ["cv_1", "cv_2", "cv_3", "x"] {
            assert!(partition_of(id, 7) < 7);
        }
        assert_eq!(partition_of("cv_1", 1), 0);
    }
}
