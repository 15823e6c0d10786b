//! Delivering one event to one subscription (the retry loop), and the bookkeeping the
//! workers share (counters, dead letters).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;
use tracing::Instrument as _;

use super::DeliveryStats;
use super::config::Subscription;
use super::envelope;
use super::outbox::{Outbox, StoredDeadLetter};
use super::outcome::{self, Outcome};
use super::sink::Attempt;
use crate::event::Event;
use crate::ops::trace;

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
    /// Where dead letters are kept.
    pub(crate) outbox: Arc<dyn Outbox>,
    /// After failing continuously this long a subscription is disabled.
    pub(crate) disable_after: Option<Duration>,
    /// Reports (subscription, reason) to disable.
    pub(crate) failing: tokio::sync::mpsc::UnboundedSender<(String, String)>,
}

/// An attempt as the console's Delivery page lists it.
fn recent_attempt(
    event: &Event,
    attempt: u32,
    outcome: &Outcome,
    took: Duration,
) -> super::metrics::RecentAttempt {
    let (label, class, error) = match outcome {
        Outcome::Delivered => ("delivered", None, None),
        Outcome::Retry { class, error, .. } => ("failed", Some(class.clone()), Some(error.clone())),
        Outcome::Permanent { class, error } | Outcome::Disable { class, error } => {
            ("refused", Some(class.clone()), Some(error.clone()))
        }
        Outcome::NotBefore { at } => ("held", None, Some(format!("until {at}"))),
    };
    super::metrics::RecentAttempt {
        at: Timestamp::now(),
        event_id: event.id.clone(),
        event_type: event.kind.as_str().to_owned(),
        attempt,
        outcome: label,
        class,
        error,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    }
}

impl Deliverer {
    /// Tries the event until it is delivered, permanently refused, out of retries, or
    /// shutdown abandons it. `trace` is the outbox entry's `traceparent`: each attempt's
    /// span is its child.
    pub(crate) async fn deliver(
        &self,
        subscription: &Subscription,
        event: &Event,
        trace: Option<&str>,
    ) -> Finished {
        let mode = subscription.sink.mode();
        let prepared =
            match envelope::prepare(event, subscription.history, subscription.include_raw, mode) {
                Ok(prepared) => prepared,
                Err(error) => {
                    return self
                        .dead_letter(
                            subscription,
                            event,
                            0,
                            format!("cannot serialize the event: {error}"),
                        )
                        .await;
                }
            };
        let mut phase = self.phase.clone();
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let metrics = &subscription.metrics;
            metrics.attempts.fetch_add(1, Ordering::Relaxed);
            let span = attempt_span(subscription, event, attempts, trace);
            let started = std::time::Instant::now();
            let outcome = self
                .attempt(subscription, event, &prepared, attempts, &span)
                .instrument(span.clone())
                .await;
            let took = started.elapsed();
            metrics.attempt_latency.record(took);
            metrics.attempted(recent_attempt(event, attempts, &outcome, took));
            record_outcome(&span, &outcome);
            match outcome {
                Outcome::Delivered => {
                    self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                    metrics.delivered.fetch_add(1, Ordering::Relaxed);
                    metrics.healthy();
                    let since_accepted = Timestamp::now().duration_since(event.received_at);
                    metrics
                        .end_to_end_latency
                        .record(Duration::try_from(since_accepted).unwrap_or_default());
                    tracing::debug!(subscription = %subscription.id, event_id = %event.id, channel = %event.channel.id, conversation = %event.conversation.id, attempts, "delivered");
                    return Finished::Done;
                }
                Outcome::Permanent { class, error } => {
                    self.failed_attempt(subscription, event, attempts, &class, &error, None);
                    return self.dead_letter(subscription, event, attempts, error).await;
                }
                Outcome::Disable { class, error } => {
                    self.failed_attempt(subscription, event, attempts, &class, &error, None);
                    let reason = format!("the target refused every event: {error}");
                    // Dead-lettered first: disabling stops the workers.
                    let finished = self.dead_letter(subscription, event, attempts, error).await;
                    let _ = self.failing.send((subscription.id.clone(), reason));
                    return finished;
                }
                Outcome::NotBefore { at } => {
                    // A hold is not a failure: this attempt does not count.
                    attempts -= 1;
                    let wait =
                        Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
                    tracing::debug!(subscription = %subscription.id, event_id = %event.id, %at, "held by the target until");
                    tokio::select! {
                        biased;
                        () = stopped(&mut phase) => return Finished::Abandoned,
                        () = tokio::time::sleep(wait) => {}
                    }
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
                        return self.dead_letter(subscription, event, attempts, error).await;
                    };
                    let delay = outcome::next_delay(scheduled, retry_after);
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

    /// One attempt, inside its span.
    async fn attempt(
        &self,
        subscription: &Subscription,
        event: &Event,
        prepared: &envelope::Prepared,
        attempt: u32,
        span: &tracing::Span,
    ) -> Outcome {
        // The attempt span's own context when spans are exported, so the receiver
        // continues the message's trace; else one derived from the event id.
        let traceparent =
            trace::traceparent(span).unwrap_or_else(|| envelope::traceparent(&event.id));
        subscription
            .sink
            .attempt(Attempt {
                client: &self.client,
                event_id: &event.id,
                event: Some(event),
                attempt,
                prepared,
                traceparent: &traceparent,
            })
            .await
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
        subscription.metrics.failed(class);
        let failing_for = subscription.metrics.failing_for();
        if let Some(limit) = self.disable_after
            && failing_for >= limit
        {
            // Reported on every further failure until the registry stops the workers;
            // disabling twice is harmless.
            let reason = format!(
                "every attempt failed for {}s (last: {error})",
                failing_for.as_secs()
            );
            let _ = self.failing.send((subscription.id.clone(), reason));
        }
        tracing::warn!(
            subscription = %subscription.id,
            event_id = %event.id,
            channel = %event.channel.id,
            conversation = %event.conversation.id,
            attempt,
            class,
            error,
            retry_in = ?retry_in,
            "delivery attempt failed"
        );
    }

    /// Keeps the dead letter, retrying while the outbox is unavailable (the entry is
    /// acknowledged only once the dead letter is stored); `Abandoned` if shutdown comes
    /// first, so the entry stays in the outbox.
    pub(crate) async fn dead_letter(
        &self,
        subscription: &Subscription,
        event: &Event,
        attempts: u32,
        last_error: String,
    ) -> Finished {
        tracing::error!(
            subscription = %subscription.id,
            event_id = %event.id,
            channel = %event.channel.id,
            conversation = %event.conversation.id,
            attempts,
            last_error = %last_error,
            "delivery dead-lettered"
        );
        subscription
            .sink
            .dead_lettered(event, attempts, &last_error)
            .await;
        let letter = StoredDeadLetter {
            subscription: subscription.id.clone(),
            attempts,
            last_error,
            at: Timestamp::now(),
            event: event.clone(),
        };
        let mut phase = self.phase.clone();
        let mut delays = outcome::until_stopped(Duration::from_millis(100));
        loop {
            match self.outbox.add_dead_letter(&letter).await {
                Ok(_) => {
                    self.shared.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    subscription
                        .metrics
                        .dead_lettered
                        .fetch_add(1, Ordering::Relaxed);
                    return Finished::Done;
                }
                Err(error) => {
                    tracing::warn!(subscription = %subscription.id, event_id = %event.id, %error, "cannot store the dead letter; retrying");
                }
            }
            tokio::select! {
                biased;
                () = stopped(&mut phase) => return Finished::Abandoned,
                () = tokio::time::sleep(delays.next().unwrap_or_default()) => {}
            }
        }
    }
}

/// The span of one delivery attempt: a child of the outbox entry's trace context, or,
/// for entries without one (sent messages, replays, entries from before tracing), of a
/// context derived from the event id, so every attempt of an event shares a trace id and
/// matches the `traceparent` the receiver gets.
fn attempt_span(
    subscription: &Subscription,
    event: &Event,
    attempt: u32,
    trace: Option<&str>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "delivery.attempt",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        subscription = %subscription.id,
        event_id = %event.id,
        event_type = event.kind.as_str(),
        channel = %event.channel.id,
        conversation = %event.conversation.id,
        attempt,
        outcome = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    if !span.is_disabled() {
        match trace {
            Some(parent) => trace::set_remote_parent(&span, parent),
            None => trace::set_remote_parent(&span, &envelope::derived_parent(&event.id)),
        }
    }
    span
}

/// Records an attempt's outcome on its span.
fn record_outcome(span: &tracing::Span, outcome: &Outcome) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Outcome::Delivered => {
            span.record("outcome", "delivered");
        }
        Outcome::Retry { class, .. } => {
            span.record("outcome", "retry");
            span.record("error", class.as_str());
            span.record("otel.status_code", "error");
        }
        Outcome::Permanent { class, .. } | Outcome::Disable { class, .. } => {
            span.record("outcome", "failed");
            span.record("error", class.as_str());
            span.record("otel.status_code", "error");
        }
        Outcome::NotBefore { .. } => {
            span.record("outcome", "held");
        }
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
