//! Fan-out to subscriptions, per-conversation lanes, the retry loop, and the bookkeeping
//! (capacity tickets, counters, dead letters) they share.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use jiff::Timestamp;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};

use super::attempt::{self, Outcome};
use super::config::Subscription;
use super::envelope;
use super::{DeadLetter, DeliveryStats};
use crate::event::Event;

/// Dead letters kept in memory; the oldest go first.
const DEAD_LETTER_LIMIT: usize = 10_000;

/// State shared by the handle, the lanes and the tickets.
#[derive(Default)]
pub(crate) struct Shared {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
    abandoned: AtomicU64,
    /// Events published and not yet finished on every matching subscription.
    pending: AtomicUsize,
    /// Woken when `pending` drops to zero (shutdown waits for it).
    idle: Notify,
    /// parking_lot: no poisoning, so a panic elsewhere cannot make this unusable.
    dead_letters: parking_lot::Mutex<VecDeque<DeadLetter>>,
}

impl Shared {
    pub(crate) fn stats(&self) -> DeliveryStats {
        DeliveryStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            pending: self.pending(),
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub(crate) fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    pub(crate) fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().iter().cloned().collect()
    }

    /// Waits until nothing is pending or `deadline` passes; returns whether idle.
    pub(crate) async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            // Register interest before checking, so a wake-up between the check and the
            // wait is not lost.
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pending() == 0;
            }
        }
    }

    fn record_dead_letter(&self, letter: DeadLetter) {
        tracing::error!(
            subscription = %letter.subscription,
            event_id = %letter.event_id,
            attempts = letter.attempts,
            last_error = %letter.last_error,
            "delivery dead-lettered"
        );
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let mut letters = self.dead_letters.lock();
        if letters.len() >= DEAD_LETTER_LIMIT {
            letters.pop_front();
        }
        letters.push_back(letter);
    }
}

/// One event's hold on capacity. Shared by the event's jobs (one per matching
/// subscription); the permit goes back when the last job is dropped, i.e. when every
/// subscription has finished with the event (or given it up).
pub(crate) struct Ticket {
    _permit: Option<OwnedSemaphorePermit>,
    /// Jobs not yet finished (delivered or dead-lettered).
    unfinished: AtomicUsize,
    shared: Arc<Shared>,
}

impl Ticket {
    pub(crate) fn new(
        permit: Option<OwnedSemaphorePermit>,
        jobs: usize,
        shared: Arc<Shared>,
    ) -> Self {
        shared.pending.fetch_add(1, Ordering::AcqRel);
        Self {
            _permit: permit,
            unfinished: AtomicUsize::new(jobs),
            shared,
        }
    }

    fn finish(&self) {
        self.unfinished.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Dropped with unfinished jobs: a queue was discarded (shutdown) or a lane was gone.
        if self.unfinished.load(Ordering::Acquire) > 0 {
            self.shared.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        if self.shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

/// One event for one subscription.
pub(crate) struct Job {
    pub(crate) event: Arc<Event>,
    pub(crate) ticket: Arc<Ticket>,
}

/// A subscription as seen by the publisher: its filter and the senders of its lanes.
pub(crate) struct Route {
    pub(crate) subscription: Arc<Subscription>,
    pub(crate) lanes: Vec<UnboundedSender<Job>>,
}

impl Route {
    /// Queues `job` on the lane of its conversation. Unbounded on purpose: the capacity
    /// tickets already bound the number of queued jobs, and publishing must never block.
    pub(crate) fn dispatch(&self, job: Job) {
        let index = lane_index(&job.event.conversation.id, self.lanes.len());
        let Some(lane) = self.lanes.get(index) else {
            return;
        };
        if let Err(rejected) = lane.send(job) {
            // The lane has stopped (shutdown); dropping the job marks the event abandoned.
            tracing::warn!(
                subscription = %self.subscription.id,
                event_id = %rejected.0.event.id,
                "delivery lane stopped; event not delivered"
            );
        }
    }
}

/// The lane of a conversation. FNV-1a rather than std's hasher: stable across processes
/// and Rust versions, so a future shared outbox can partition the same way.
pub(crate) fn lane_index(conversation_id: &str, lanes: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in conversation_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % lanes.max(1) as u64) as usize
}

/// How a job ended.
enum Finished {
    /// Delivered or dead-lettered.
    Done,
    /// Shutdown cut it short; the event stays undelivered.
    Abandoned,
}

/// One sequential worker of a subscription.
pub(crate) struct Lane {
    pub(crate) subscription: Arc<Subscription>,
    pub(crate) client: reqwest::Client,
    pub(crate) schedule: Arc<[Duration]>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) cancel: watch::Receiver<bool>,
}

impl Lane {
    /// Delivers jobs one at a time until cancelled or every sender is gone.
    pub(crate) async fn run(mut self, mut jobs: UnboundedReceiver<Job>) {
        loop {
            let job = tokio::select! {
                biased;
                () = cancelled(&mut self.cancel) => break,
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            self.handle(job).await;
        }
        // Returning drops `jobs`, which drops whatever is still queued: those tickets
        // count their events as abandoned.
    }

    /// Runs one job, containing a panic to this job so the lane (and its other
    /// conversations) keeps going.
    async fn handle(&mut self, job: Job) {
        match AssertUnwindSafe(self.deliver(&job.event))
            .catch_unwind()
            .await
        {
            Ok(Finished::Done) => job.ticket.finish(),
            Ok(Finished::Abandoned) => {}
            Err(panic) => {
                let reason = panic_message(panic.as_ref());
                self.dead_letter(&job.event, 0, format!("delivery panicked: {reason}"));
                job.ticket.finish();
            }
        }
    }

    /// Tries the event until it is delivered, permanently refused, out of retries, or
    /// shutdown abandons it.
    async fn deliver(&mut self, event: &Event) -> Finished {
        let body = match envelope::body(event, &self.subscription) {
            Ok(body) => body,
            Err(error) => {
                self.dead_letter(event, 0, format!("cannot serialize the event: {error}"));
                return Finished::Done;
            }
        };
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            match attempt::send(&self.client, &self.subscription, &event.id, &body).await {
                Outcome::Delivered => {
                    self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(subscription = %self.subscription.id, event_id = %event.id, attempts, "delivered");
                    return Finished::Done;
                }
                Outcome::Permanent { class, error } => {
                    self.failed_attempt(event, attempts, &class, &error, None);
                    self.dead_letter(event, attempts, error);
                    return Finished::Done;
                }
                Outcome::Retry {
                    class,
                    error,
                    retry_after,
                } => {
                    let scheduled = usize::try_from(attempts - 1)
                        .ok()
                        .and_then(|index| self.schedule.get(index).copied());
                    let Some(scheduled) = scheduled else {
                        self.failed_attempt(event, attempts, &class, &error, None);
                        self.dead_letter(event, attempts, error);
                        return Finished::Done;
                    };
                    let delay = attempt::next_delay(scheduled, retry_after);
                    self.failed_attempt(event, attempts, &class, &error, Some(delay));
                    tokio::select! {
                        biased;
                        () = cancelled(&mut self.cancel) => return Finished::Abandoned,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn failed_attempt(
        &self,
        event: &Event,
        attempt: u32,
        class: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) {
        self.shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            subscription = %self.subscription.id,
            event_id = %event.id,
            attempt,
            class,
            error,
            retry_in = ?retry_in,
            "delivery attempt failed"
        );
    }

    fn dead_letter(&self, event: &Event, attempts: u32, last_error: String) {
        self.shared.record_dead_letter(DeadLetter {
            subscription: self.subscription.id.clone(),
            event_id: event.id.clone(),
            conversation_id: event.conversation.id.clone(),
            event_type: event.kind.as_str().to_owned(),
            attempts,
            last_error,
            at: Timestamp::now(),
        });
    }
}

/// Resolves once shutdown cancels the lanes. If the handle is dropped without a
/// shutdown, it never resolves: lanes then drain their queues and stop when the senders
/// are gone.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|cancelled| *cancelled).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_index_is_stable_and_in_range() {
        // Pinned values: changing the hash would reorder conversations across versions.
        assert_eq!(lane_index("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as usize);
        assert_eq!(lane_index("cv_a", 16), lane_index("cv_a", 16));
        for id in ["cv_1", "cv_2", "cv_3", "x"] {
            assert!(lane_index(id, 7) < 7);
        }
        assert_eq!(lane_index("cv_1", 1), 0);
    }

    #[tokio::test]
    async fn ticket_releases_capacity_and_counts_abandoned() {
        let shared = Arc::new(Shared::default());
        let semaphore = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = semaphore.clone().try_acquire_owned().ok();
        let ticket = Arc::new(Ticket::new(permit, 2, shared.clone()));
        assert_eq!((shared.pending(), semaphore.available_permits()), (1, 0));
        ticket.finish();
        drop(ticket);
        assert_eq!((shared.pending(), semaphore.available_permits()), (0, 1));
        assert_eq!(shared.abandoned(), 1);
    }
}
