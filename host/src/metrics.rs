//! Prometheus metrics at `GET /metrics`, through the `metrics` facade.
//!
//! Every metric omnigate records is named here, once, with the function that records
//! it: the rest of the code calls these functions, so names and labels cannot drift and
//! `docs/metrics.md` has one place to be checked against. Durations are histograms in
//! seconds with fixed buckets (Prometheus can aggregate them across instances; summaries
//! cannot be).

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for durations, in seconds: 50 µs (a plugin call) to 10 s (a slow receiver).
const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// First response times: 10 s to a week, the outcome rollups' buckets.
const FIRST_RESPONSE_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0,
    28_800.0, 86_400.0, 172_800.0, 604_800.0,
];
/// Conversion values (in the conversion's currency).
const VALUE_BUCKETS: &[f64] = &[
    10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10_000.0, 100_000.0,
];
const FIRST_RESPONSE: &str = "omnigate_first_response_seconds";
const CONVERSION_VALUE: &str = "omnigate_conversion_value";

/// `[metrics] stage_sample` when unset: one webhook in 16 has its pipeline stages timed.
pub const DEFAULT_STAGE_SAMPLE: u32 = 16;

/// One webhook in this many has its pipeline stages (and its store ingest) timed.
static STAGE_SAMPLE: AtomicU32 = AtomicU32::new(DEFAULT_STAGE_SAMPLE);

/// Time the pipeline stages of one webhook in `every` (`[metrics] stage_sample`; 0 is
/// taken as 1: every webhook).
pub fn set_stage_sample(every: u32) {
    STAGE_SAMPLE.store(every.max(1), Ordering::Relaxed);
}

/// How often histogram buffers are folded into their buckets between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the process-wide recorder (once; later calls return the same handle). `None`
/// when another recorder was installed first: metrics then go there, `/metrics` is empty.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // A full name's buckets win over the suffix's (the exporter tries full names first).
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(FIRST_RESPONSE.into()),
                        FIRST_RESPONSE_BUCKETS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(CONVERSION_VALUE.into()),
                        VALUE_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(builder) => builder.build_recorder(),
                Err(error) => {
                    tracing::error!(%error, "metrics disabled: invalid histogram buckets");
                    return None;
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder already installed; /metrics stays empty");
                    None
                }
            }
        })
        .clone()
}

/// The Prometheus text of every metric recorded so far.
pub fn render() -> String {
    install().map(|handle| handle.render()).unwrap_or_default()
}

/// Fold histogram buffers into buckets every [`UPKEEP_INTERVAL`] (bounded memory between
/// scrapes). Runs until the runtime stops.
pub fn spawn_upkeep() {
    let Some(handle) = install() else { return };
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

/// One channel's hot-path handles, registered once: looking a labelled metric up per
/// request (hashing its key, allocating its labels) cost more than the recording itself.
#[derive(Clone)]
pub struct ChannelMetrics {
    accepted: Counter,
    events_accepted: Counter,
    events_duplicate: Counter,
    handle_webhook: Histogram,
}

impl ChannelMetrics {
    /// Handles for `channel` served by `plugin` (its `id@version` label).
    pub fn new(channel: &str, plugin: &str) -> Self {
        let events = |fate: &'static str| counter!("omnigate_events_total", "channel" => channel.to_owned(), "fate" => fate);
        Self {
            accepted: counter!("omnigate_webhooks_total", "channel" => channel.to_owned(), "outcome" => "accepted"),
            events_accepted: events("accepted"),
            events_duplicate: events("duplicate"),
            handle_webhook: histogram!("omnigate_plugin_call_duration_seconds", "plugin" => plugin.to_owned(), "function" => "handle-webhook"),
        }
    }

    /// Handles that record nothing: for the binding that only asks a plugin to
    /// `describe()` itself while it loads, so no series of a channel that does not exist
    /// appears at `/metrics`.
    pub fn none() -> Self {
        Self {
            accepted: Counter::noop(),
            events_accepted: Counter::noop(),
            events_duplicate: Counter::noop(),
            handle_webhook: Histogram::noop(),
        }
    }

    /// A webhook answered 2xx with `accepted` new events and `duplicates` seen before.
    pub fn accepted(&self, accepted: usize, duplicates: usize) {
        self.accepted.increment(1);
        self.events_accepted.increment(accepted as u64);
        self.events_duplicate.increment(duplicates as u64);
    }

    /// One `handle-webhook` call.
    pub fn handle_webhook(&self, took: Duration) {
        self.handle_webhook.record(took.as_secs_f64());
    }
}

/// Pipeline stage and store handles, registered once per pipeline.
#[derive(Clone)]
pub struct PipelineMetrics {
    /// `normalize` stage.
    pub normalize: Histogram,
    /// `reserve` stage (waiting for room in delivery).
    pub reserve: Histogram,
    /// `enrich` stage.
    pub enrich: Histogram,
    /// `publish` stage.
    pub publish: Histogram,
    /// Store `ingest` operation latency.
    pub store_ingest: Histogram,
    backend: &'static str,
}

impl PipelineMetrics {
    /// Handles for a pipeline over the store `backend`.
    pub fn new(backend: &'static str) -> Self {
        let stage = |stage: &'static str| histogram!("omnigate_pipeline_stage_duration_seconds", "stage" => stage);
        Self {
            normalize: stage("normalize"),
            reserve: stage("reserve"),
            enrich: stage("enrich"),
            publish: stage("publish"),
            store_ingest: histogram!("omnigate_store_operation_duration_seconds", "backend" => backend, "operation" => "ingest"),
            backend,
        }
    }

    /// Whether this webhook's stages are timed: one in `[metrics] stage_sample`. A
    /// webhook that is not takes no clock reading and records no histogram in the
    /// pipeline (its one record is the plugin call's). Counted per thread: no counter
    /// shared between cores on the hot path; each thread times its first webhook.
    pub fn sampled(&self) -> bool {
        thread_local!(static SEEN: Cell<u32> = const { Cell::new(0) });
        let every = STAGE_SAMPLE.load(Ordering::Relaxed);
        SEEN.with(|seen| {
            let count = seen.get();
            seen.set(count.wrapping_add(1) % every);
            count == 0
        })
    }

    /// The start of a stage, when the webhook is `sampled`.
    pub fn start(sampled: bool) -> Option<Instant> {
        sampled.then(Instant::now)
    }

    /// Record the stage `stage` begun at `started`, if it was timed.
    pub fn stop(stage: &Histogram, started: Option<Instant>) {
        if let Some(started) = started {
            stage.record(started.elapsed().as_secs_f64());
        }
    }

    /// One store `ingest` (timed when `started`) and whether it failed. It is the
    /// pipeline's `store` stage too, recorded once, under the store operation; a failure
    /// is always counted.
    pub fn ingest(&self, started: Option<Instant>, ok: bool) {
        Self::stop(&self.store_ingest, started);
        if !ok {
            counter!("omnigate_store_errors_total", "backend" => self.backend, "operation" => "ingest")
                .increment(1);
        }
    }
}

/// A webhook answered: `outcome` is `accepted` or the error code returned.
pub fn webhook(channel: &str, outcome: &'static str) {
    counter!("omnigate_webhooks_total", "channel" => channel.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// One plugin export call (`handle-webhook`, `send`, `describe`) and how long it took.
pub fn plugin_call(plugin: &str, function: &'static str, took: Duration) {
    histogram!("omnigate_plugin_call_duration_seconds", "plugin" => plugin.to_owned(), "function" => function)
        .record(took.as_secs_f64());
}

/// A plugin call that trapped, hit a limit or timed out (`kind` from `CallError::kind`).
pub fn plugin_failure(plugin: &str, kind: &'static str) {
    counter!("omnigate_plugin_failures_total", "plugin" => plugin.to_owned(), "kind" => kind)
        .increment(1);
}

/// One context store operation and whether it failed.
pub fn store_operation(backend: &'static str, operation: &'static str, took: Duration, ok: bool) {
    histogram!("omnigate_store_operation_duration_seconds", "backend" => backend, "operation" => operation)
        .record(took.as_secs_f64());
    if !ok {
        counter!("omnigate_store_errors_total", "backend" => backend, "operation" => operation)
            .increment(1);
    }
}

/// Owed records published by `path`: `retry` (a provider retried an event whose first
/// attempt committed without publishing) or `relay` (found stale by the sweeper).
pub fn owed_republished(path: &'static str) {
    counter!("omnigate_owed_republished_total", "path" => path).increment(1);
}

/// A conversation's first response, `seconds` after the customer's first message, on
/// `channel` (`omnigate_first_response_seconds`).
pub fn first_response(channel: &str, seconds: u64) {
    histogram!(FIRST_RESPONSE, "channel" => channel.to_owned()).record(seconds as f64);
}

/// A lost opportunity found on `channel` (`omnigate_opportunities_lost_total`).
pub fn opportunity_lost(channel: &str, reason: &str) {
    counter!("omnigate_opportunities_lost_total", "channel" => channel.to_owned(), "reason" => reason.to_owned())
        .increment(1);
}

/// A conversion recorded (attributed to a conversation on `channel`, or not: empty):
/// `omnigate_conversions_total`, and `omnigate_conversion_value` (its `_sum` is the
/// value per currency).
pub fn conversion_recorded(channel: &str, conversion: &crate::event::ConversionInfo) {
    counter!("omnigate_conversions_total", "channel" => channel.to_owned(), "name" => conversion.name.clone())
        .increment(1);
    let value = conversion
        .value
        .as_deref()
        .and_then(|value| value.parse::<f64>().ok());
    if let (Some(value), Some(currency)) = (value, &conversion.currency) {
        histogram!(CONVERSION_VALUE, "channel" => channel.to_owned(), "currency" => currency.clone())
            .record(value);
    }
}

/// What a destination did with an event: `omnigate_destination_events_total` by
/// destination and `outcome` (`sent`, `skipped`, `retried`, `held`, `rejected`), with the
/// skip reason when it is a short code (a plugin cannot mint unbounded labels: anything
/// else counts as `other`).
pub fn destination_outcome(destination: &str, outcome: &'static str, reason: Option<&str>) {
    let reason = reason.map_or("", |reason| {
        let code = (1..=40).contains(&reason.len())
            && reason
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if code { reason } else { "other" }
    });
    counter!(
        "omnigate_destination_events_total",
        "destination" => destination.to_owned(),
        "outcome" => outcome,
        "reason" => reason.to_owned()
    )
    .increment(1);
}

/// The plugin version serving a channel (1 while active, 0 once replaced).
pub fn plugin_active(channel: &str, plugin: &str, version: &str, digest: &str, active: bool) {
    gauge!(
        "omnigate_plugin_active",
        "channel" => channel.to_owned(),
        "plugin" => plugin.to_owned(),
        "version" => version.to_owned(),
        "digest" => digest.to_owned()
    )
    .set(if active { 1.0 } else { 0.0 });
}

/// A fleet activation this instance installed (`applied`) or could not (`failed`).
pub fn plugin_sync(outcome: &'static str) {
    counter!("omnigate_plugin_sync_total", "outcome" => outcome).increment(1);
}

/// A contact handle a plugin reported, by `kind` (`phone`, `email`) and what the
/// normalizer made of it: `kept`, `kept_unlisted` (a provider-verified phone number that
/// is possible but not in libphonenumber's metadata) or `dropped`.
pub fn handle_normalized(kind: &'static str, outcome: &'static str) {
    counter!("omnigate_handles_total", "kind" => kind, "outcome" => outcome).increment(1);
}

/// The shared plugin registry revision this instance has applied.
pub fn plugin_registry_revision(revision: u64) {
    gauge!("omnigate_plugin_registry_revision").set(revision as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_timed_for_one_webhook_in_stage_sample_per_thread() {
        // A thread of its own: the count is per thread, and the default is what other
        // tests run with.
        std::thread::spawn(|| {
            let metrics = PipelineMetrics::new("memory");
            let first: Vec<bool> = (0..2 * DEFAULT_STAGE_SAMPLE)
                .map(|_| metrics.sampled())
                .collect();
            let timed: Vec<usize> = (0..first.len()).filter(|i| first[*i]).collect();
            assert_eq!(timed, vec![0, DEFAULT_STAGE_SAMPLE as usize]);
            assert!(PipelineMetrics::start(false).is_none());
            assert!(PipelineMetrics::start(true).is_some());
        })
        .join()
        .expect("sampling thread");
    }

    #[test]
    fn recorded_values_are_rendered_with_labels() {
        if install().is_none() {
            return; // another test binary's recorder: nothing to check here
        }
        webhook("metrics-unit", "accepted");
        webhook("metrics-unit", "accepted");
        webhook("metrics-unit", "unauthorized");
        plugin_call("unit@1", "handle-webhook", Duration::from_micros(30));
        let text = render();
        assert!(
            text.contains(
                r#"omnigate_webhooks_total{channel="metrics-unit",outcome="accepted"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"omnigate_webhooks_total{channel="metrics-unit",outcome="unauthorized"} 1"#
        ));
        assert!(text.contains(
            r#"omnigate_plugin_call_duration_seconds_bucket{plugin="unit@1",function="handle-webhook",le="0.00005"} 1"#
        ));
    }
}
