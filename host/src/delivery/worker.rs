//! The consumer of one subscription on one outbox partition.
//!
//! Every instance runs one worker per (subscription, partition); only the lease holder
//! works, the others wait to take over. The owner first claims the entries a previous
//! owner read but did not acknowledge, then reads new ones. Entries are queued per
//! conversation: a conversation has at most one delivery in flight (its order), while
//! different conversations are delivered concurrently (no head-of-line blocking). An
//! entry is acknowledged when delivered or dead-lettered, never before.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use futures::FutureExt as _;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::config::Subscription;
use super::dispatcher::{Deliverer, Finished, Phase, panic_message, stopped};
use super::outbox::{Outbox, Stored};

/// How a worker's timing is set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Lease time to live; a dead owner is replaced after at most this plus `retake`.
    pub(crate) lease_ttl: Duration,
    /// How often a non-owner tries to take the lease.
    pub(crate) retake: Duration,
    /// How often an owner looks for entries appended by other instances (its own
    /// instance wakes it at once).
    pub(crate) poll: Duration,
    /// Entries held in memory per worker (queued + in flight).
    pub(crate) window: usize,
    /// Deliveries in flight per worker (distinct conversations).
    pub(crate) concurrency: usize,
}

/// One (subscription, partition) consumer.
pub(crate) struct Worker {
    pub(crate) partition: u32,
    pub(crate) subscription: Arc<Subscription>,
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) deliverer: Deliverer,
    /// Poked when this instance appends to the partition.
    pub(crate) wake: Arc<Notify>,
    pub(crate) timing: Timing,
    /// Set when the subscription stops here (updated, disabled, deleted).
    pub(crate) retire: tokio::sync::watch::Receiver<bool>,
}

/// Why ownership ended.
enum Ownership {
    /// Shutdown: stop the worker.
    Stop,
    /// The subscription stops here: end without releasing the lease (a replacement
    /// worker of this instance may take it over at once).
    Retired,
    /// The lease was lost or the backend failed: try to take it again.
    Lost,
}

/// A finished delivery task: conversation, entry id, how it ended.
type Done = (String, String, Finished);

/// What an owner holds.
#[derive(Default)]
struct Held {
    /// Entries per conversation, oldest first, not yet started.
    queues: HashMap<String, VecDeque<Stored>>,
    /// Conversations with queued entries and nothing in flight, in arrival order.
    ready: VecDeque<String>,
    /// Conversations with a delivery in flight.
    busy: std::collections::HashSet<String>,
    running: JoinSet<Done>,
    /// Entries held (queued + in flight).
    count: usize,
}

impl Worker {
    /// Works until shutdown stops it.
    pub(crate) async fn run(self) {
        let mut phase = self.deliverer.phase.clone();
        let mut retire = self.retire.clone();
        loop {
            if *phase.borrow() == Phase::Stopped {
                break;
            }
            if *retire.borrow() {
                return;
            }
            let owned = self
                .outbox
                .lease(self.partition, &self.subscription.id, self.timing.lease_ttl)
                .await;
            match owned {
                Ok(true) => match self.own().await {
                    Ownership::Stop => break,
                    Ownership::Retired => return,
                    Ownership::Lost => {}
                },
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(subscription = %self.subscription.id, partition = self.partition, %error, "cannot take the outbox lease");
                }
            }
            tokio::select! {
                () = stopped(&mut phase) => break,
                _ = retire.wait_for(|retired| *retired) => return,
                () = tokio::time::sleep(super::outcome::jitter(self.timing.retake)) => {}
            }
        }
        if let Err(error) = self
            .outbox
            .release(self.partition, &self.subscription.id)
            .await
        {
            tracing::warn!(subscription = %self.subscription.id, partition = self.partition, %error, "cannot release the outbox lease");
        }
    }

    /// Delivers while holding the lease.
    async fn own(&self) -> Ownership {
        let shared = self.deliverer.shared.clone();
        let mut held = Held::default();
        let result = self.own_with(&mut held).await;
        // Whatever is still held stays pending in the outbox for the next owner.
        held.running.abort_all();
        while held.running.join_next().await.is_some() {}
        if held.count > 0 {
            shared.count_abandoned(held.count);
            shared.unhold(held.count);
        }
        result
    }

    async fn own_with(&self, held: &mut Held) -> Ownership {
        let partition = self.partition;
        let id = self.subscription.id.clone();
        match self.outbox.claim_pending(partition, &id).await {
            Ok(entries) => {
                for entry in entries {
                    self.take(held, entry).await;
                }
            }
            Err(error) => {
                tracing::warn!(subscription = %id, partition, %error, "cannot claim pending outbox entries");
                return Ownership::Lost;
            }
        }
        let mut phase = self.deliverer.phase.clone();
        let mut retire = self.retire.clone();
        let mut renew = tokio::time::interval(self.timing.lease_ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut more = true;
        loop {
            if *retire.borrow() {
                self.settle_finished(held).await;
                return Ownership::Retired;
            }
            self.start_ready(held);
            let current = *phase.borrow();
            if current == Phase::Stopped {
                // Attempts on the wire finish (their retry waits see Stopped and return).
                while let Some(done) = held.running.join_next().await {
                    self.finished(held, done).await;
                }
                return Ownership::Stop;
            }
            let reading = held.count < self.timing.window
                && (current == Phase::Running || !self.outbox.durable());
            if current == Phase::Draining && !reading && held.count == 0 {
                return Ownership::Stop;
            }
            if reading && more {
                let room = self.timing.window - held.count;
                match self.outbox.read_new(partition, &id, room).await {
                    Ok(entries) => {
                        more = entries.len() == room;
                        for entry in entries {
                            self.take(held, entry).await;
                        }
                    }
                    Err(error) => {
                        // The read may have been served with its reply lost (the
                        // connection dropped): those entries now sit in this consumer's
                        // pending list, which `read_new` never returns. Give the pair up;
                        // the next ownership claims every pending entry first.
                        tracing::warn!(subscription = %id, partition, %error, "cannot read the outbox; pending entries will be claimed again");
                        return Ownership::Lost;
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                Ok(()) = phase.changed() => {}
                Ok(()) = retire.changed() => {
                    if *retire.borrow() {
                        self.settle_finished(held).await;
                        return Ownership::Retired;
                    }
                }
                Some(done) = held.running.join_next(), if !held.running.is_empty() => {
                    self.finished(held, done).await;
                }
                _ = renew.tick() => {
                    match self.outbox.lease(partition, &id, self.timing.lease_ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(subscription = %id, partition, "outbox lease lost to another instance");
                            return Ownership::Lost;
                        }
                        Err(error) => {
                            // Keep going: the lease may still be ours; a later renewal tells.
                            tracing::warn!(subscription = %id, partition, %error, "cannot renew the outbox lease");
                        }
                    }
                    // Trimming is delivery's own periodic task (`delivery::tidy`), for
                    // every partition, owned or not.
                    more = true;
                }
                () = self.wake.notified(), if reading => more = true,
                () = tokio::time::sleep(self.timing.poll), if reading => more = true,
            }
        }
    }

    /// Settles the deliveries that already finished (their entries acknowledged), so a
    /// retired pair does not leave them to be delivered again when it runs again (a
    /// destination disabled by the very event it dead-lettered).
    async fn settle_finished(&self, held: &mut Held) {
        while let Some(done) = held.running.try_join_next() {
            self.finished(held, done).await;
        }
    }

    /// Queues an entry, or settles it at once when it is not for this subscription.
    async fn take(&self, held: &mut Held, entry: Stored) {
        let record = match &entry.record {
            Ok(record) => record,
            Err(reason) => {
                tracing::error!(subscription = %self.subscription.id, entry = %entry.id, reason, "undecodable outbox entry dropped");
                self.ack(&entry.id).await;
                return;
            }
        };
        let for_us = match &record.target {
            Some(target) => *target == self.subscription.id,
            None => self.subscription.filter.matches(&record.event),
        };
        if !for_us {
            self.ack(&entry.id).await;
            return;
        }
        let conversation = record.event.conversation.id.clone();
        let queue = held.queues.entry(conversation.clone()).or_default();
        let was_idle = queue.is_empty() && !held.busy.contains(&conversation);
        queue.push_back(entry);
        held.count += 1;
        self.deliverer.shared.hold(1);
        if was_idle {
            held.ready.push_back(conversation);
        }
    }

    /// Starts deliveries for ready conversations, up to the concurrency limit.
    fn start_ready(&self, held: &mut Held) {
        while held.running.len() < self.timing.concurrency {
            let Some(conversation) = held.ready.pop_front() else {
                break;
            };
            let Some(entry) = held
                .queues
                .get_mut(&conversation)
                .and_then(VecDeque::pop_front)
            else {
                continue;
            };
            let Ok(record) = entry.record else {
                continue;
            };
            held.busy.insert(conversation.clone());
            let deliverer = self.deliverer.clone();
            let subscription = self.subscription.clone();
            let entry_id = entry.id;
            held.running.spawn(async move {
                let event = record.event;
                let delivery = deliverer.deliver(&subscription, &event, record.trace.as_deref());
                let finished = match AssertUnwindSafe(delivery).catch_unwind().await {
                    Ok(finished) => finished,
                    Err(panic) => {
                        let reason = panic_message(panic.as_ref());
                        deliverer
                            .dead_letter(
                                &subscription,
                                &event,
                                0,
                                format!("delivery panicked: {reason}"),
                            )
                            .await
                    }
                };
                (conversation, entry_id, finished)
            });
        }
    }

    /// Settles a finished delivery and readies its conversation's next entry.
    async fn finished(&self, held: &mut Held, done: Result<Done, tokio::task::JoinError>) {
        let Ok((conversation, entry_id, finished)) = done else {
            // Aborted (lease lost): the entry stays pending for the next owner.
            return;
        };
        held.count -= 1;
        self.deliverer.shared.unhold(1);
        held.busy.remove(&conversation);
        match finished {
            Finished::Done => self.ack(&entry_id).await,
            Finished::Abandoned => {
                self.deliverer.shared.count_abandoned(1);
                // Later entries of the conversation must not overtake it: drop them from
                // memory too (they stay pending in a durable outbox).
                if let Some(queue) = held.queues.remove(&conversation) {
                    held.count -= queue.len();
                    self.deliverer.shared.unhold(queue.len());
                    self.deliverer.shared.count_abandoned(queue.len());
                }
                return;
            }
        }
        match held.queues.get(&conversation) {
            Some(queue) if !queue.is_empty() => held.ready.push_back(conversation),
            _ => {
                held.queues.remove(&conversation);
            }
        }
    }

    /// Acknowledges an entry, retrying briefly: an unacknowledged entry is delivered
    /// again by a later owner (a duplicate, which at-least-once allows).
    async fn ack(&self, entry_id: &str) {
        let acked = (|| {
            self.outbox
                .ack(self.partition, &self.subscription.id, entry_id)
        })
        .retry(
            ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(50))
                .with_max_times(4)
                .with_jitter(),
        )
        .await;
        if let Err(error) = acked {
            tracing::warn!(subscription = %self.subscription.id, partition = self.partition, entry = entry_id, %error, "cannot acknowledge an outbox entry; it will be delivered again");
        }
    }
}
