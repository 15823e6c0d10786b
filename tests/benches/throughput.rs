//! End-to-end webhooks/s on the memory store vs a plain axum handler doing the same
//! signature check, JSON parse and in-memory dedupe, in the same run; then latency at half
//! of the gateway's maximum rate. Run by `cargo xtask bench`.
//!
//! Every request is a distinct, signed web chat message (5 000 visitors); each round gets
//! fresh messages, so dedupe never short-circuits. Servers and load generator share the
//! machine's cores, as they would in a loopback test anywhere.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use omnigate_tests::bench::{SECRET, median, quantile, rounds_arg, signed_webchat_messages, size};
use omnigate_tests::load::{self, Prepared};
use omnigate_tests::{Gateway, plugin_path, toml_path};
use parking_lot::Mutex;
use serde::Deserialize;

const CONNECTIONS: usize = 32;

// The same allocator as the `omnigate` binary, for gateway and baseline alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let rounds = rounds_arg();
    let requests = size(30_000, 300);
    let warmup = size(5_000, 50);
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let generator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let config = format!(
        "[[channels]]\nid = \"web\"\nplugin = {}\nconfig = {{ callback_url = \"http://127.0.0.1:9/x\" }}\nsecrets = {{ signing_secret = \"{SECRET}\" }}\n",
        toml_path(&plugin_path("webchat"))
    );
    let gateway = servers.block_on(Gateway::start(&config)).expect("gateway");
    let gateway_addr: SocketAddr = gateway
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let baseline_addr = servers.block_on(start_baseline());

    let mut gateway_rates = Vec::new();
    let mut baseline_rates = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        // Warm-up on the first round only (connections, instance pool, allocator).
        if round == 0 {
            generator.block_on(load::closed_loop(
                gateway_addr,
                prepared("warm-g", warmup),
                CONNECTIONS,
            ));
            generator.block_on(load::closed_loop(
                baseline_addr,
                prepared("warm-b", warmup),
                CONNECTIONS,
            ));
        }
        let g = generator.block_on(load::closed_loop(
            gateway_addr,
            prepared(&format!("g{round}"), requests),
            CONNECTIONS,
        ));
        let b = generator.block_on(load::closed_loop(
            baseline_addr,
            prepared(&format!("b{round}"), requests),
            CONNECTIONS,
        ));
        assert_eq!(
            g.failed + b.failed,
            0,
            "requests failed: gateway {}, baseline {}",
            g.failed,
            b.failed
        );
        gateway_rates.push(g.rate());
        baseline_rates.push(b.rate());
        ratios.push(g.rate() / b.rate());
        eprintln!(
            "round {}: gateway {:.0}/s, baseline {:.0}/s",
            round + 1,
            g.rate(),
            b.rate()
        );
    }
    let max_rate = median(&gateway_rates);
    println!(
        "\n## Inbound webhooks/s, memory store ({requests} distinct signed messages per round, {CONNECTIONS} connections, median of {rounds} rounds)\n"
    );
    println!("| server | median req/s | min | max |\n|---|---|---|---|");
    for (name, values) in [
        ("omnigate (web chat plugin, full pipeline)", &gateway_rates),
        (
            "plain axum: same signature check + JSON parse + dedupe",
            &baseline_rates,
        ),
    ] {
        let (min, max) = values
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        println!("| {name} | {:.0} | {min:.0} | {max:.0} |", median(values));
    }
    println!(
        "\nratio omnigate / baseline (median of per-round ratios): {:.2} (target ≥ 0.80)",
        median(&ratios)
    );

    let half = max_rate / 2.0;
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut p999s = Vec::new();
    let mut maxes = Vec::new();
    for round in 0..rounds {
        let count = size((half * 3.0) as usize, 100); // ~3 s of traffic
        let mut report = generator.block_on(load::open_loop(
            gateway_addr,
            prepared(&format!("l{round}"), count),
            64,
            half,
        ));
        assert_eq!(report.failed, 0, "requests failed at half rate");
        p50s.push(quantile(&mut report.latencies, 0.50) * 1e3);
        p99s.push(quantile(&mut report.latencies, 0.99) * 1e3);
        p999s.push(quantile(&mut report.latencies, 0.999) * 1e3);
        maxes.push(quantile(&mut report.latencies, 1.0) * 1e3);
    }
    println!(
        "\n## Latency at half the max rate ({half:.0} req/s open loop, ~3 s per round, median of {rounds} rounds)\n\n\
         | p50 | p99 | p99.9 | max |\n|---|---|---|---|\n| {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |\n\ntarget: p99 < 10 ms",
        median(&p50s),
        median(&p99s),
        median(&p999s),
        median(&maxes)
    );
    servers.block_on(gateway.stop());
}

fn prepared(tag: &str, count: usize) -> Vec<Prepared> {
    signed_webchat_messages(count, tag)
        .into_iter()
        .map(|request| Prepared {
            path: request.path,
            headers: request
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: Bytes::from(request.body),
        })
        .collect()
}

/// The baseline: what a hand-written handler for one channel would do.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Message {
    r#type: String,
    id: String,
    visitor: Visitor,
    text: Option<String>,
    page: Option<Page>,
    sent_at: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Visitor {
    id: String,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Page {
    url: Option<String>,
    referrer: Option<String>,
}

struct Dedupe {
    hasher: RandomState,
    shards: Vec<Mutex<HashSet<String>>>,
}

async fn start_baseline() -> SocketAddr {
    let dedupe = Arc::new(Dedupe {
        hasher: RandomState::new(),
        shards: (0..64).map(|_| Mutex::new(HashSet::new())).collect(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/webhooks/web", post(baseline))
        .with_state(dedupe);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn baseline(
    State(dedupe): State<Arc<Dedupe>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()),
        header("webhook-signature"),
    ) else {
        return (StatusCode::UNAUTHORIZED, "missing headers");
    };
    if (jiff::Timestamp::now().as_second() - timestamp).abs() > 300 {
        return (StatusCode::UNAUTHORIZED, "stale");
    }
    let content = omnigate_signature::standard_webhooks::signed_content(id, timestamp, &body);
    if omnigate_signature::verify(
        omnigate_signature::Scheme::StandardWebhooks,
        SECRET.as_bytes(),
        &content,
        signature,
    ) != Ok(true)
    {
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    let Ok(message) = serde_json::from_slice::<Message>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad body");
    };
    let shard = dedupe.hasher.hash_one(&message.id) as usize % dedupe.shards.len();
    dedupe.shards[shard].lock().insert(message.id);
    (StatusCode::OK, "{\"ok\":true}")
}
