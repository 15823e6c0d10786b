//! Delivering one event to one subscription (the retry loop), and the bookkeeping the
//! workers share (counters, dead letters).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::attempt::{self, Outcome};
use super::config::Subscription;
use super::envelope;
use super::{DeadLetter, DeliveryStats};
use crate::event::Event;

/// Dead letters kept in memory; the oldest go first.
const DEAD_LETTER_LIMIT: usize = 10_000;

/// Where delivery is in its life: workers watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Normal work.
    Running,
    /// Shutdown requested: no new intake; a durable outbox's workers stop reading new
    /// entries and finish what they hold, a memory outbox's keep draining it.
    Draining,
    /// Grace is over: waiting retries are abandoned (the entries stay in a durable
    /// outbox for the next owner), attempts on the wire finish.
    Stopped,
}

/// State shared by the handle and the workers.
#[derive(Default)]
pub(crate) struct Shared {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    dead_lettered: AtomicU64,
    abandoned: AtomicU64,
    /// Entries read from the outbox by this process's workers and not yet finished.
    held: AtomicUsize,
    /// parking_lot: no poisoning, so a panic elsewhere cannot make this unusable.
    dead_letters: parking_lot::Mutex<VecDeque<DeadLetter>>,
}

impl Shared {
    pub(crate) fn stats(&self, pending: usize) -> DeliveryStats {
        DeliveryStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            pending,
        }
    }

    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    pub(crate) fn hold(&self, n: usize) {
        self.held.fetch_add(n, Ordering::AcqRel);
    }

    pub(crate) fn unhold(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }

    pub(crate) fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    pub(crate) fn count_abandoned(&self, n: usize) {
        self.abandoned.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().iter().cloned().collect()
    }

    pub(crate) fn record_dead_letter(&self, letter: DeadLetter) {
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

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Delivered or dead-lettered: the outbox entry can be acknowledged.
    Done,
    /// Shutdown cut it short: the entry stays in the outbox.
    Abandoned,
}

/// What every delivery needs besides the subscription and the event.
#[derive(Clone)]
pub(crate) struct Deliverer {
    pub(crate) client: reqwest::Client,
    pub(crate) schedule: Arc<[Duration]>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) phase: watch::Receiver<Phase>,
}

impl Deliverer {
    /// Tries the event until it is delivered, permanently refused, out of retries, or
    /// shutdown abandons it.
    pub(crate) async fn deliver(&self, subscription: &Subscription, event: &Event) -> Finished {
        let body = match envelope::body(event, subscription) {
            Ok(body) => body,
            Err(error) => {
                self.dead_letter(
                    subscription,
                    event,
                    0,
                    format!("cannot serialize the event: {error}"),
                );
                return Finished::Done;
            }
        };
        let mut phase = self.phase.clone();
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            match attempt::send(&self.client, subscription, &event.id, &body).await {
                Outcome::Delivered => {
                    self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(subscription = %subscription.id, event_id = %event.id, attempts, "delivered");
                    return Finished::Done;
                }
                Outcome::Permanent { class, error } => {
                    self.failed_attempt(subscription, event, attempts, &class, &error, None);
                    self.dead_letter(subscription, event, attempts, error);
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
                        self.failed_attempt(subscription, event, attempts, &class, &error, None);
                        self.dead_letter(subscription, event, attempts, error);
                        return Finished::Done;
                    };
                    let delay = attempt::next_delay(scheduled, retry_after);
                    self.failed_attempt(subscription, event, attempts, &class, &error, Some(delay));
                    tokio::select! {
                        biased;
                        () = stopped(&mut phase) => return Finished::Abandoned,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn failed_attempt(
        &self,
        subscription: &Subscription,
        event: &Event,
        attempt: u32,
        class: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) {
        self.shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            subscription = %subscription.id,
            event_id = %event.id,
            attempt,
            class,
            error,
            retry_in = ?retry_in,
            "delivery attempt failed"
        );
    }

    pub(crate) fn dead_letter(
        &self,
        subscription: &Subscription,
        event: &Event,
        attempts: u32,
        last_error: String,
    ) {
        self.shared.record_dead_letter(DeadLetter {
            subscription: subscription.id.clone(),
            event_id: event.id.clone(),
            conversation_id: event.conversation.id.clone(),
            event_type: event.kind.as_str().to_owned(),
            attempts,
            last_error,
            at: Timestamp::now(),
        });
    }
}

/// Resolves once the phase is [`Phase::Stopped`]. If the handle is dropped without a
/// shutdown, it never resolves.
pub(crate) async fn stopped(phase: &mut watch::Receiver<Phase>) {
    if phase
        .wait_for(|phase| *phase == Phase::Stopped)
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_owned()
    }
}
