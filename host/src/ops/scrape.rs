//! `GET /metrics`: the recorder's metrics (`crate::metrics`) followed by delivery's
//! numbers, read from [`crate::delivery::Delivery::metrics`] at scrape time (per
//! subscription: attempts, outcomes, failures by class, latency histograms, backlog).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;

use crate::app::App;
use crate::delivery::metrics::{HistogramSnapshot, MetricsSnapshot};

/// `GET /metrics` (Prometheus text format 0.0.4).
pub async fn metrics(
    State(app): State<Arc<App>>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let mut text = crate::metrics::render();
    render_delivery(&mut text, &app.delivery.metrics().await);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Append delivery's snapshot as Prometheus text.
pub fn render_delivery(out: &mut String, snapshot: &MetricsSnapshot) {
    let subs = &snapshot.subscriptions;
    let counter = |out: &mut String, name: &str, help: &str, value: &dyn Fn(usize) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (index, sub) in subs.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{subscription=\"{}\"}} {}",
                escape(&sub.subscription),
                value(index)
            );
        }
    };
    counter(
        out,
        "omnigate_delivery_attempts_total",
        "HTTP delivery attempts.",
        &|i| subs[i].attempts,
    );
    counter(
        out,
        "omnigate_delivery_delivered_total",
        "Events delivered (2xx).",
        &|i| subs[i].delivered,
    );
    counter(
        out,
        "omnigate_delivery_dead_lettered_total",
        "Events given up (dead letters).",
        &|i| subs[i].dead_lettered,
    );
    let _ = writeln!(
        out,
        "# HELP omnigate_delivery_failures_total Failed attempts by class.\n# TYPE omnigate_delivery_failures_total counter"
    );
    for sub in subs {
        for (class, count) in &sub.failures {
            let _ = writeln!(
                out,
                "omnigate_delivery_failures_total{{subscription=\"{}\",class=\"{}\"}} {count}",
                escape(&sub.subscription),
                escape(class)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP omnigate_delivery_backlog Events not yet finished (outbox `{}`).\n# TYPE omnigate_delivery_backlog gauge",
        snapshot.outbox
    );
    for sub in subs {
        if let Some(backlog) = sub.backlog {
            let _ = writeln!(
                out,
                "omnigate_delivery_backlog{{subscription=\"{}\"}} {backlog}",
                escape(&sub.subscription)
            );
        }
    }
    histogram(
        out,
        "omnigate_delivery_attempt_duration_seconds",
        "One delivery attempt.",
        subs.iter().map(|s| (&s.subscription, &s.attempt_latency)),
    );
    histogram(
        out,
        "omnigate_delivery_latency_seconds",
        "Webhook accepted to receiver 2xx.",
        subs.iter()
            .map(|s| (&s.subscription, &s.end_to_end_latency)),
    );
}

fn histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (&'a String, &'a HistogramSnapshot)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (subscription, histogram) in series {
        let subscription = escape(subscription);
        let mut cumulative = 0;
        for (bound, count) in histogram.bounds.iter().zip(&histogram.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{subscription=\"{subscription}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{subscription=\"{subscription}\",le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(
            out,
            "{name}_sum{{subscription=\"{subscription}\"}} {}",
            histogram.sum_seconds
        );
        let _ = writeln!(
            out,
            "{name}_count{{subscription=\"{subscription}\"}} {}",
            histogram.count
        );
    }
}

/// Label values escaped as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
