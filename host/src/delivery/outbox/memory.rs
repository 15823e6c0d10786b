//! The outbox in process memory: same semantics as the Redis one, NOT durable.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    Append, DEAD_LETTER_LIMIT, Outbox, OutboxError, Record, Stored, StoredDeadLetter,
    StoredSubscription,
};

/// Per-partition logs with one cursor and pending set per subscription. An entry is
/// dropped (and its reserved room released) once every subscription has acknowledged it.
pub(crate) struct MemoryOutbox {
    partitions: Vec<Mutex<Log>>,
    /// Kept so the type documents where permits come from; entries hold their own.
    _capacity: Arc<Semaphore>,
    /// Dead letters by increasing sequence number.
    dead: Mutex<DeadLetters>,
    subscriptions: Mutex<std::collections::BTreeMap<String, StoredSubscription>>,
    disabled: Mutex<std::collections::BTreeMap<String, String>>,
}

#[derive(Default)]
struct DeadLetters {
    next: u64,
    letters: std::collections::BTreeMap<u64, StoredDeadLetter>,
}

#[derive(Default)]
struct Log {
    /// Sequence number of `entries[0]`.
    base: u64,
    entries: VecDeque<Entry>,
    groups: HashMap<String, Group>,
}

struct Entry {
    record: Record,
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Group {
    /// Next sequence number to read.
    cursor: u64,
    /// Read, not acknowledged.
    pending: BTreeSet<u64>,
}

impl Log {
    fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn stored(&self, seq: u64) -> Option<Stored> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.entries.get(index).map(|entry| Stored {
            id: seq.to_string(),
            record: Ok(entry.record.clone()),
        })
    }

    /// Drops entries every group is done with.
    fn trim(&mut self) {
        while !self.entries.is_empty() {
            let base = self.base;
            let done = self
                .groups
                .values()
                .all(|group| group.cursor > base && !group.pending.contains(&base));
            if !done {
                break;
            }
            self.entries.pop_front();
            self.base += 1;
        }
    }
}

impl MemoryOutbox {
    /// An empty outbox with `partitions` logs.
    pub(crate) fn new(partitions: u32, capacity: Arc<Semaphore>) -> Self {
        Self {
            partitions: (0..partitions.max(1))
                .map(|_| Mutex::new(Log::default()))
                .collect(),
            _capacity: capacity,
            dead: Mutex::default(),
            subscriptions: Mutex::default(),
            disabled: Mutex::default(),
        }
    }

    /// Adds `subscription`'s cursors (at the end of every log), synchronously.
    pub(crate) fn register_now(&self, subscription: &str) {
        for log in &self.partitions {
            let mut log = log.lock();
            let end = log.end();
            log.groups
                .entry(subscription.to_owned())
                .or_insert_with(|| Group {
                    cursor: end,
                    pending: BTreeSet::new(),
                });
        }
    }

    fn log(&self, partition: u32) -> Result<&Mutex<Log>, OutboxError> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| OutboxError::Config(format!("no partition {partition}")))
    }
}

fn parse_seq(id: &str) -> Result<u64, OutboxError> {
    id.parse()
        .map_err(|_| OutboxError::Unavailable(format!("unknown entry id `{id}`")))
}

#[async_trait]
impl Outbox for MemoryOutbox {
    fn durable(&self) -> bool {
        false
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn register(&self, subscription: &str) -> Result<(), OutboxError> {
        self.register_now(subscription);
        Ok(())
    }

    async fn unregister(&self, subscription: &str) -> Result<(), OutboxError> {
        for log in &self.partitions {
            let mut log = log.lock();
            log.groups.remove(subscription);
            log.trim();
        }
        Ok(())
    }

    async fn append(&self, entries: Vec<Append>) -> Result<(), OutboxError> {
        for append in entries {
            let mut log = self.log(append.partition)?.lock();
            log.entries.push_back(Entry {
                record: append.record,
                _permit: append.permit,
            });
            // No subscription: nothing will ever read it.
            log.trim();
        }
        Ok(())
    }

    async fn lease(&self, _: u32, _: &str, _: Duration) -> Result<bool, OutboxError> {
        // One process: this instance is always the owner.
        Ok(true)
    }

    async fn release(&self, _: u32, _: &str) -> Result<(), OutboxError> {
        Ok(())
    }

    async fn claim_pending(
        &self,
        partition: u32,
        subscription: &str,
    ) -> Result<Vec<Stored>, OutboxError> {
        let log = self.log(partition)?.lock();
        let Some(group) = log.groups.get(subscription) else {
            return Ok(Vec::new());
        };
        Ok(group
            .pending
            .iter()
            .filter_map(|seq| log.stored(*seq))
            .collect())
    }

    async fn read_new(
        &self,
        partition: u32,
        subscription: &str,
        count: usize,
    ) -> Result<Vec<Stored>, OutboxError> {
        let mut log = self.log(partition)?.lock();
        let end = log.end();
        let Some(cursor) = log.groups.get(subscription).map(|group| group.cursor) else {
            return Ok(Vec::new());
        };
        let last = end.min(cursor.saturating_add(count as u64));
        let stored: Vec<Stored> = (cursor..last).filter_map(|seq| log.stored(seq)).collect();
        if let Some(group) = log.groups.get_mut(subscription) {
            group.pending.extend(cursor..last);
            group.cursor = last;
        }
        Ok(stored)
    }

    async fn ack(&self, partition: u32, subscription: &str, id: &str) -> Result<(), OutboxError> {
        let seq = parse_seq(id)?;
        let mut log = self.log(partition)?.lock();
        if let Some(group) = log.groups.get_mut(subscription) {
            group.pending.remove(&seq);
        }
        log.trim();
        Ok(())
    }

    async fn add_dead_letter(&self, letter: &StoredDeadLetter) -> Result<String, OutboxError> {
        let mut dead = self.dead.lock();
        dead.next += 1;
        let id = dead.next;
        dead.letters.insert(id, letter.clone());
        while dead.letters.len() > DEAD_LETTER_LIMIT {
            dead.letters.pop_first();
        }
        Ok(format!("{id}"))
    }

    async fn dead_letters(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, StoredDeadLetter)>, OutboxError> {
        let dead = self.dead.lock();
        let skip = dead.letters.len().saturating_sub(limit);
        Ok(dead
            .letters
            .iter()
            .skip(skip)
            .map(|(id, letter)| (id.to_string(), letter.clone()))
            .collect())
    }

    async fn remove_dead_letter(&self, id: &str) -> Result<bool, OutboxError> {
        let Ok(id) = id.parse::<u64>() else {
            return Ok(false);
        };
        Ok(self.dead.lock().letters.remove(&id).is_some())
    }

    async fn subscriptions(&self) -> Result<Vec<StoredSubscription>, OutboxError> {
        Ok(self.subscriptions.lock().values().cloned().collect())
    }

    async fn put_subscription(&self, subscription: &StoredSubscription) -> Result<(), OutboxError> {
        self.subscriptions
            .lock()
            .insert(subscription.id.clone(), subscription.clone());
        Ok(())
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, OutboxError> {
        Ok(self.subscriptions.lock().remove(id).is_some())
    }

    async fn disabled(&self) -> Result<std::collections::BTreeMap<String, String>, OutboxError> {
        Ok(self.disabled.lock().clone())
    }

    async fn set_disabled(&self, id: &str, reason: Option<&str>) -> Result<(), OutboxError> {
        let mut disabled = self.disabled.lock();
        match reason {
            Some(reason) => disabled.insert(id.to_owned(), reason.to_owned()),
            None => disabled.remove(id),
        };
        Ok(())
    }

    fn local_len(&self) -> Option<usize> {
        Some(
            self.partitions
                .iter()
                .map(|log| log.lock().entries.len())
                .sum(),
        )
    }

    async fn backlog(&self, subscription: &str) -> Result<u64, OutboxError> {
        Ok(self
            .partitions
            .iter()
            .map(|log| {
                let log = log.lock();
                log.groups.get(subscription).map_or(0, |group| {
                    group.pending.len() as u64 + log.end().saturating_sub(group.cursor)
                })
            })
            .sum())
    }
}
