//! Owed records of inbound events settled after the answer, in batches.
//!
//! Why: settling is one more request per message, and nothing waits for it. A record
//! left unsettled (the process died first, or the store failed) only makes the relay
//! publish its events once more, with the same ids, which receivers dedupe on
//! ([store.md](../../../docs/store.md)). So the publisher hands the key over and answers;
//! one task per pipeline settles what has gathered with one store call (one round trip
//! for a whole batch on Redis), and under load a batch fills while the previous one is
//! written.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::ContextStore;

/// Keys a batch settles at most.
const BATCH: usize = 512;
/// Keys waiting at most; beyond, the publisher settles its own (bounded memory while the
/// store is slow or down).
const MAX_PENDING: usize = 20_000;

/// An owed record: its contact and its key.
pub type OwedKey = (String, String);

/// What the task is handed.
enum Item {
    /// A record to settle.
    Settle(OwedKey),
    /// Answer once everything handed over before is settled.
    Flush(oneshot::Sender<()>),
}

/// The queue, drained by one task.
pub struct SettleQueue {
    store: Arc<dyn ContextStore>,
    /// `None` outside a Tokio runtime: every settle is then made inline.
    sender: Option<mpsc::Sender<Item>>,
}

impl SettleQueue {
    /// A queue over `store`, its task started on the current runtime (if any).
    pub fn new(store: Arc<dyn ContextStore>) -> Self {
        let sender = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (sender, receiver) = mpsc::channel(MAX_PENDING);
            runtime.spawn(drain(store.clone(), receiver));
            sender
        });
        Self { store, sender }
    }

    /// Settle `owed` soon (now, when the queue is full or there is no task).
    pub async fn settle(&self, owed: OwedKey) {
        let item = match &self.sender {
            Some(sender) => match sender.try_send(Item::Settle(owed)) {
                Ok(()) => return,
                Err(
                    mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item),
                ) => item,
            },
            None => Item::Settle(owed),
        };
        if let Item::Settle(owed) = item {
            settle(self.store.as_ref(), &[owed]).await;
        }
    }

    /// Wait until everything handed over so far is settled (at shutdown: otherwise the
    /// relay of the next start publishes those events once more).
    pub async fn flush(&self) {
        let Some(sender) = &self.sender else {
            return;
        };
        let (done, settled) = oneshot::channel();
        if sender.send(Item::Flush(done)).await.is_ok() {
            let _ = settled.await;
        }
    }
}

/// Settle batches until every sender is gone (the pipeline dropped), then what is left.
async fn drain(store: Arc<dyn ContextStore>, mut receiver: mpsc::Receiver<Item>) {
    let mut items = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut items, BATCH).await > 0 {
        let mut flushed = Vec::new();
        for item in items.drain(..) {
            match item {
                Item::Settle(owed) => batch.push(owed),
                Item::Flush(done) => flushed.push(done),
            }
        }
        if !batch.is_empty() {
            settle(store.as_ref(), &batch).await;
            batch.clear();
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// One store call; a failure is only logged (the relay publishes those events again).
async fn settle(store: &dyn ContextStore, owed: &[OwedKey]) {
    if let Err(error) = store.settle(owed).await {
        tracing::warn!(%error, records = owed.len(), "owed records not settled; the relay will publish their events again (same event ids)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn queued_settles_are_made_after_the_caller_went_on() {
        let store: Arc<dyn ContextStore> = Arc::new(MemoryStore::new());
        let policy = crate::store::memory::tests::policy();
        let at = jiff::Timestamp::now();
        let mut keys = Vec::new();
        for id in ["m1", "m2", "m3"] {
            let ingest = crate::store::memory::tests::ingest("web", "ana", id, None, at);
            let ingested = store
                .ingest(ingest, &policy)
                .await
                .expect("ok")
                .expect("new");
            keys.push((
                ingested.contact.id,
                crate::store::owed_inbound_key("web", id),
            ));
        }
        let owed = |store: &Arc<dyn ContextStore>| {
            let store = store.clone();
            async move {
                store
                    .stale_owed(jiff::Timestamp::MAX, 100)
                    .await
                    .expect("ok")
                    .len()
            }
        };
        assert_eq!(owed(&store).await, 3);
        let queue = SettleQueue::new(store.clone());
        for key in keys {
            queue.settle(key).await;
        }
        queue.flush().await;
        assert_eq!(owed(&store).await, 0, "settled by the flush");
    }
}
