//! Delivery numbers in one place, for the metrics endpoint (ops) to export: per
//! subscription, attempts, successes, failures by class, latency histograms and backlog.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds (seconds) of the latency histogram buckets; a last `+Inf` bucket is implied.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A failed attempt's class (bounded set, fit for a metric label).
pub(crate) fn failure_class(class: &str) -> &'static str {
    match class {
        "timeout" => "timeout",
        "connect" => "connect",
        "transport" => "transport",
        "redis" => "redis",
        "status 408" => "http_408",
        "status 409" => "http_409",
        "status 429" => "http_429",
        other => match other
            .strip_prefix("status ")
            .and_then(|c| c.parse::<u16>().ok())
        {
            Some(code) if code >= 500 => "http_5xx",
            Some(_) => "http_4xx",
            None => "other",
        },
    }
}

/// Attempts kept per subscription, for the console (the newest).
pub const RECENT_ATTEMPTS: usize = 20;

/// One delivery attempt as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentAttempt {
    /// When it ended.
    pub at: jiff::Timestamp,
    /// The event's id.
    pub event_id: String,
    /// The event's type (`message.received`, …).
    pub event_type: String,
    /// Its number for this event (1 = first).
    pub attempt: u32,
    /// `delivered`, `failed` (tried again later, or given up), `refused` (dead-lettered
    /// at once) or `held` (the target takes it later).
    pub outcome: &'static str,
    /// The failure's class (`status 503`, `timeout`, …), when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// What went wrong, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the attempt took, in milliseconds.
    pub duration_ms: u64,
}

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// One count per bucket of [`LATENCY_BUCKETS`], plus `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn record(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let index = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            bounds: LATENCY_BUCKETS.to_vec(),
            count: counts.iter().sum(),
            counts,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Counters of one subscription in this process.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionMetrics {
    pub(crate) attempts: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    failures: parking_lot::Mutex<BTreeMap<&'static str, u64>>,
    /// One HTTP attempt, request to response.
    pub(crate) attempt_latency: Histogram,
    /// From the webhook's arrival at the gateway to the receiver's 2xx (retries included).
    pub(crate) end_to_end_latency: Histogram,
    /// Since when every attempt has failed (none since the last success).
    failing_since: parking_lot::Mutex<Option<std::time::Instant>>,
    /// The newest attempts, oldest first (at most [`RECENT_ATTEMPTS`]).
    recent: parking_lot::Mutex<std::collections::VecDeque<RecentAttempt>>,
}

impl SubscriptionMetrics {
    /// A success: the subscription is healthy again.
    pub(crate) fn healthy(&self) {
        *self.failing_since.lock() = None;
    }

    /// A failed attempt: how long the subscription has been failing continuously.
    pub(crate) fn failing_for(&self) -> Duration {
        let mut since = self.failing_since.lock();
        since.get_or_insert_with(std::time::Instant::now).elapsed()
    }

    pub(crate) fn failed(&self, class: &str) {
        *self
            .failures
            .lock()
            .entry(failure_class(class))
            .or_default() += 1;
    }

    /// Keep `attempt` among the recent ones, forgetting the oldest beyond
    /// [`RECENT_ATTEMPTS`].
    pub(crate) fn attempted(&self, attempt: RecentAttempt) {
        let mut recent = self.recent.lock();
        if recent.len() == RECENT_ATTEMPTS {
            recent.pop_front();
        }
        recent.push_back(attempt);
    }

    pub(crate) fn snapshot(&self, id: &str, backlog: Option<u64>) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            subscription: id.to_owned(),
            attempts: self.attempts.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            failures: self
                .failures
                .lock()
                .iter()
                .map(|(class, count)| ((*class).to_owned(), *count))
                .collect(),
            attempt_latency: self.attempt_latency.snapshot(),
            end_to_end_latency: self.end_to_end_latency.snapshot(),
            backlog,
            recent_attempts: self.recent.lock().iter().rev().cloned().collect(),
        }
    }
}

/// A histogram as read: per-bucket (not cumulative) counts, the last one `+Inf`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramSnapshot {
    /// Bucket upper bounds in seconds ([`LATENCY_BUCKETS`]).
    pub bounds: Vec<f64>,
    /// Observations per bucket; `counts.len() == bounds.len() + 1`.
    pub counts: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

/// One subscription's numbers (counters since this process started).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionSnapshot {
    /// Subscription id.
    pub subscription: String,
    /// HTTP attempts made.
    pub attempts: u64,
    /// Events delivered (2xx).
    pub delivered: u64,
    /// Events given up.
    pub dead_lettered: u64,
    /// Failed attempts by class: `timeout`, `connect`, `transport`, `http_408`,
    /// `http_409`, `http_429`, `http_5xx`, `http_4xx`, `other`.
    pub failures: BTreeMap<String, u64>,
    /// Duration of single attempts.
    pub attempt_latency: HistogramSnapshot,
    /// Webhook accepted → receiver 2xx.
    pub end_to_end_latency: HistogramSnapshot,
    /// Entries not yet finished across all instances (outbox lag + pending); `None` when
    /// the outbox did not answer.
    pub backlog: Option<u64>,
    /// The newest attempts of this process, newest first (at most [`RECENT_ATTEMPTS`]).
    pub recent_attempts: Vec<RecentAttempt>,
}

/// Everything delivery exposes for metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// Outbox backend: `memory` or `redis`.
    pub outbox: &'static str,
    /// Per subscription.
    pub subscriptions: Vec<SubscriptionSnapshot>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_histogram() {
        assert_eq!(failure_class("status 503"), "http_5xx");
        assert_eq!(failure_class("status 429"), "http_429");
        assert_eq!(failure_class("status 400"), "http_4xx");
        assert_eq!(failure_class("timeout"), "timeout");
        assert_eq!(failure_class("signing"), "other");
        let histogram = Histogram::default();
        histogram.record(Duration::from_micros(1500));
        histogram.record(Duration::from_secs(100));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 2);
        assert_eq!(snapshot.counts[1], 1, "1.5 ms is in the ≤2 ms bucket");
        assert_eq!(snapshot.counts[LATENCY_BUCKETS.len()], 1, "+Inf");
    }

    #[test]
    fn the_newest_attempts_are_kept_newest_first() {
        let metrics = SubscriptionMetrics::default();
        for n in 0..RECENT_ATTEMPTS + 3 {
            metrics.attempted(RecentAttempt {
                at: jiff::Timestamp::UNIX_EPOCH,
                event_id: format!("evt_{n}"),
                event_type: "message.received".into(),
                attempt: 1,
                outcome: "delivered",
                class: None,
                error: None,
                duration_ms: 1,
            });
        }
        let recent = metrics.snapshot("s", None).recent_attempts;
        assert_eq!(recent.len(), RECENT_ATTEMPTS);
        assert_eq!(recent[0].event_id, format!("evt_{}", RECENT_ATTEMPTS + 2));
        assert_eq!(recent[RECENT_ATTEMPTS - 1].event_id, "evt_3");
    }
}
