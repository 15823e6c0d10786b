//! Counter changes of outcome debts that owe no event (a conversation opened, its
//! touches' keys refreshed), added to the rollups in batches off the request path.
//!
//! Why: such a change is one more write per bucket (hour, day, month, year) and a
//! settle, per conversation opened. Batched, the changes of many debts in the same hour
//! are summed into one write per bucket, and settled with one request.
//!
//! Nothing is lost: each debt stays owed with its conversation until its batch is
//! written and settled; if the process dies first, the relay adds it (once per key, so
//! a batch written but not settled is not counted twice). A report flushes the queue
//! first, so an instance reads its own writes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::outcome::rollup::{Bucket, Delta};
use crate::store::{ContextStore, RollupWrite, StoreError};

/// Debts held at most; beyond, the caller writes its own (backpressure, bounded memory).
const MAX_PENDING: usize = 20_000;
/// Debts per write: bounds a script's arguments.
const BATCH: usize = 256;
/// How long the writer lets a batch gather before writing it: under load many changes
/// then share one write per counter (a report does not wait for it: it flushes).
const LINGER: std::time::Duration = std::time::Duration::from_millis(25);

/// A debt's counter changes, owed with contact `contact_id` under `key`.
#[derive(Debug, Clone)]
pub struct PendingRollup {
    /// The contact whose owed record holds the debt.
    pub contact_id: String,
    /// The owed key (also the once key of its rollups).
    pub key: String,
    /// The changes.
    pub deltas: Vec<Delta>,
}

/// The queue, and the single writer that drains it.
pub struct RollupQueue {
    store: Arc<dyn ContextStore>,
    pending: parking_lot::Mutex<Vec<PendingRollup>>,
    /// Held while a batch is written, so a flush waits for the batch in flight.
    writing: tokio::sync::Mutex<()>,
    /// A drain task is running.
    draining: AtomicBool,
}

impl RollupQueue {
    /// An empty queue over `store`.
    pub fn new(store: Arc<dyn ContextStore>) -> Arc<Self> {
        Arc::new(Self {
            store,
            pending: parking_lot::Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
            draining: AtomicBool::new(false),
        })
    }

    /// Queue `debt`, starting a drain task if none runs; `Err` gives it back when the
    /// queue is full (the caller writes it itself).
    pub fn push(self: &Arc<Self>, debt: PendingRollup) -> Result<(), PendingRollup> {
        {
            let mut pending = self.pending.lock();
            if pending.len() >= MAX_PENDING {
                return Err(debt);
            }
            pending.push(debt);
        }
        if !self.draining.swap(true, Ordering::AcqRel) {
            let queue = self.clone();
            tokio::spawn(async move { queue.drain().await });
        }
        Ok(())
    }

    /// Write everything queued so far (and what is in flight) before returning.
    pub async fn flush(&self) {
        while self.write_batch().await {}
    }

    async fn drain(&self) {
        loop {
            tokio::time::sleep(LINGER).await;
            self.flush().await;
            self.draining.store(false, Ordering::Release);
            // A push between the last batch and the flag's reset found the flag set and
            // started no task: look once more.
            if self.pending.lock().is_empty() || self.draining.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// Write one batch; `false` when nothing was queued (or the store failed: the
    /// debts stay owed, and the relay adds them).
    async fn write_batch(&self) -> bool {
        let _turn = self.writing.lock().await;
        let batch: Vec<PendingRollup> = {
            let mut pending = self.pending.lock();
            let take = pending.len().min(BATCH);
            pending.drain(..take).collect()
        };
        if batch.is_empty() {
            return false;
        }
        match write(self.store.as_ref(), &batch).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, debts = batch.len(), "outcome rollups not written; the relay adds them later");
                false
            }
        }
    }
}

/// Add `batch`'s changes, summed, then settle its debts. A bucket that has seen one of
/// the keys takes nothing; then each debt is added on its own.
pub async fn write(store: &dyn ContextStore, batch: &[PendingRollup]) -> Result<(), StoreError> {
    let keys: Vec<String> = batch.iter().map(|debt| debt.key.clone()).collect();
    let deltas = batch.iter().flat_map(|debt| debt.deltas.iter());
    if !store.outcomes().add_rollups(&keys, &summed(deltas)).await? {
        for debt in batch {
            store
                .outcomes()
                .add_rollups(std::slice::from_ref(&debt.key), &summed(debt.deltas.iter()))
                .await?;
        }
    }
    let owed: Vec<(String, String)> = batch
        .iter()
        .map(|debt| (debt.contact_id.clone(), debt.key.clone()))
        .collect();
    store.settle(&owed).await
}

/// The writes `deltas` make to the hour, day, month and year buckets, summed per
/// counter (a counter summing to zero is left out). The writes borrow the deltas' names.
pub fn summed<'a>(deltas: impl Iterator<Item = &'a Delta>) -> Vec<RollupWrite<'a>> {
    // Per hour first, then per bucket (a batch spans few hours): nothing is copied but
    // the bucket names, made once per hour and shared.
    let mut per_hour: BTreeMap<(i64, &str, &str), i64> = BTreeMap::new();
    for delta in deltas {
        *per_hour
            .entry((delta.hour, &delta.table, &delta.field))
            .or_insert(0) += delta.n;
    }
    let mut sums: BTreeMap<(Bucket, &str, &str), i64> = BTreeMap::new();
    for ((hour, table, field), n) in per_hour {
        for bucket in Bucket::of_hour(hour) {
            *sums.entry((bucket, table, field)).or_insert(0) += n;
        }
    }
    let mut names: BTreeMap<Bucket, Arc<str>> = BTreeMap::new();
    sums.into_iter()
        .filter(|(_, n)| *n != 0)
        .map(|((bucket, table, field), n)| RollupWrite {
            bucket: names
                .entry(bucket)
                .or_insert_with(|| bucket.name().into())
                .clone(),
            table: Cow::Borrowed(table),
            field: Cow::Borrowed(field),
            n,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(hour: i64, field: &str, n: i64) -> Delta {
        Delta {
            hour,
            table: "f.channel".into(),
            field: field.into(),
            n,
        }
    }

    #[test]
    fn changes_of_one_hour_are_summed_per_bucket() {
        let deltas = [
            delta(500_000, "web\x1fconversations", 1),
            delta(500_000, "web\x1fconversations", 1),
            delta(500_000, "web\x1fanswered", 1),
            delta(500_000, "web\x1fanswered", -1),
        ];
        let writes = summed(deltas.iter());
        // One counter (the other sums to zero), in each of the four buckets.
        assert_eq!(writes.len(), 4, "{writes:?}");
        assert!(writes.iter().all(|write| write.n == 2));
        let buckets: Vec<&str> = writes.iter().map(|write| &*write.bucket).collect();
        let expected: Vec<String> = Bucket::of_hour(500_000).map(|b| b.name()).to_vec();
        assert_eq!(buckets.len(), expected.len());
        assert!(expected.iter().all(|name| buckets.contains(&name.as_str())));
    }

    /// A conversation opened on `web` in hour 500 000, owed under `key`.
    fn opened(key: &str) -> PendingRollup {
        PendingRollup {
            contact_id: "ct_1".into(),
            key: key.into(),
            deltas: vec![delta(500_000, "web\x1fconversations", 1)],
        }
    }

    /// The `web` conversations counted in hour 500 000.
    async fn conversations(store: &dyn ContextStore) -> Option<i64> {
        let hour = Bucket::of_hour(500_000)[0].name();
        let tables = store
            .outcomes()
            .rollups("f.channel", &[hour])
            .await
            .expect("rollups");
        tables[0].get("web\x1fconversations").copied()
    }

    #[tokio::test]
    async fn a_batch_counts_each_debt_once_even_after_one_was_added_alone() {
        let store: Arc<dyn ContextStore> = Arc::new(crate::store::MemoryStore::new());
        // The relay added `a` on its own first; the batch must not count it again.
        write(store.as_ref(), &[opened("a")]).await.expect("write");
        write(store.as_ref(), &[opened("a"), opened("b"), opened("c")])
            .await
            .expect("write");
        assert_eq!(conversations(store.as_ref()).await, Some(3));
    }

    #[tokio::test]
    async fn a_flush_writes_what_was_queued() {
        let store: Arc<dyn ContextStore> = Arc::new(crate::store::MemoryStore::new());
        let queue = RollupQueue::new(store.clone());
        for i in 0..600 {
            assert!(queue.push(opened(&format!("k{i}"))).is_ok());
        }
        queue.flush().await;
        assert_eq!(conversations(store.as_ref()).await, Some(600));
    }
}
