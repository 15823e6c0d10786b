//! End-to-end webhooks/s on the memory store, three servers in the same run:
//! - the gateway with the web chat plugin in its WebAssembly sandbox (as deployed);
//! - the same gateway with the plugin's own code linked natively
//!   (`omnigate_tests::native`: ingress, limits, metrics, pipeline and store are the same
//!   code, only the plugin call differs), so `wasm / native` is the cost of the sandbox
//!   (target ≥ 0.85);
//! - a plain axum handler doing the same signature check, JSON parse and in-memory dedupe
//!   (`wasm / plain`, target ≥ 0.65).
//!
//! - the sandboxed gateway again with its webhooks on the async path (on a fiber), as
//!   before fiberless calls (`wasm / fibered`: what calling without a fiber gains).
//!
//! Then latency at half of the sandboxed gateway's maximum rate; then the Redis store vs
//! the memory store vs a plain axum handler storing in Redis with one script (and Redis
//! round trips per message). Run by `cargo xtask bench`.
//!
//! Every request is a distinct, signed web chat message (5 000 visitors); each round gets
//! fresh messages, so dedupe never short-circuits. Each round measures all three servers
//! one after the other, starting with a different one each round; ratios are taken within
//! a round, then their median is reported. Servers and load generator share the machine's
//! cores, as they would in a loopback test anywhere.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use omnigate::ops::telemetry::LogFormat;
use omnigate_tests::bench::{SECRET, median, prepared_webchat, quantile, rounds_arg, size};
use omnigate_tests::load;
use omnigate_tests::native::link_webchat_natively;
use omnigate_tests::redis::RedisServer;
use omnigate_tests::{Gateway, toml_path};
use parking_lot::Mutex;
use serde::Deserialize;

const CONNECTIONS: usize = 32;

// The same allocator as the `omnigate` binary, for gateway and baseline alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // The binary's log subscriber (fmt layer, RUST_LOG, default `info`; no OTLP endpoint
    // so no span export): spans on the hot path cost what they cost in production.
    let _telemetry = omnigate::ops::telemetry::init(LogFormat::Text, false).expect("telemetry");
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
        toml_path(&omnigate_tests::bench::webchat_wasm())
    );
    let gateway = servers.block_on(Gateway::start(&config)).expect("gateway");
    let gateway_addr = gateway.addr;
    // The same gateway again, its channel's `handle-webhook` served by the plugin's code
    // linked natively: only the plugin call differs.
    let linked = servers.block_on(Gateway::start(&config)).expect("gateway");
    link_webchat_natively(&linked.app, "web").expect("link natively");
    let linked_addr = linked.addr;
    let baseline_addr = servers.block_on(start_baseline());
    // The same gateway again, its plugin's webhooks on the async path (on a fiber), as
    // before fiberless calls: `wasm / fibered` is what calling without a fiber gains.
    let fibered = servers.block_on(Gateway::start(&config)).expect("gateway");
    fibered
        .app
        .registry
        .get("web")
        .expect("web channel")
        .plugin
        .send_webhooks_async();
    let fibered_addr = fibered.addr;

    let servers_measured = [
        ("wasm", gateway_addr),
        ("native", linked_addr),
        ("plain", baseline_addr),
        ("fibered", fibered_addr),
    ];
    // rates[i][round]: server i of `servers_measured`.
    let mut rates = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut wasm_vs_fibered = Vec::new();
    let mut fibered_vs_native = Vec::new();
    let mut wasm_vs_native = Vec::new();
    let mut wasm_vs_plain = Vec::new();
    let mut native_vs_plain = Vec::new();
    for round in 0..rounds {
        // Warm-up on the first round only (connections, instance pool, allocator).
        if round == 0 {
            for (name, addr) in servers_measured {
                generator.block_on(load::closed_loop(
                    addr,
                    prepared_webchat(&format!("warm-{name}"), warmup),
                    CONNECTIONS,
                ));
            }
        }
        // Each round starts with the next server, so none always runs first or last.
        let mut rate = [0.0; 4];
        for turn in 0..servers_measured.len() {
            let i = (round + turn) % servers_measured.len();
            let (name, addr) = servers_measured[i];
            let report = generator.block_on(load::closed_loop(
                addr,
                prepared_webchat(&format!("{name}{round}"), requests),
                CONNECTIONS,
            ));
            assert_eq!(
                report.failed, 0,
                "{name}: {} requests failed",
                report.failed
            );
            rate[i] = report.rate();
            rates[i].push(report.rate());
        }
        let [wasm, native, plain, fibered] = rate;
        wasm_vs_fibered.push(wasm / fibered);
        fibered_vs_native.push(fibered / native);
        wasm_vs_native.push(wasm / native);
        wasm_vs_plain.push(wasm / plain);
        native_vs_plain.push(native / plain);
        eprintln!(
            "round {}: gateway (wasm) {wasm:.0}/s, gateway (native-linked) {native:.0}/s, plain handler {plain:.0}/s, gateway (wasm, async path) {fibered:.0}/s",
            round + 1,
        );
    }
    servers.block_on(linked.stop());
    servers.block_on(fibered.stop());
    let max_rate = median(&rates[0]);
    println!(
        "\n## Inbound webhooks/s, memory store ({requests} distinct signed messages per round, {CONNECTIONS} connections, median of {rounds} rounds)\n"
    );
    println!("| server | median req/s | min | max |\n|---|---|---|---|");
    for (name, values) in [
        ("omnigate, web chat plugin in the sandbox (wasm)", &rates[0]),
        (
            "omnigate, web chat plugin's code linked natively (same gateway otherwise)",
            &rates[1],
        ),
        (
            "plain axum: same signature check + JSON parse + dedupe",
            &rates[2],
        ),
        (
            "omnigate, web chat plugin in the sandbox, webhooks on the async path (fiber)",
            &rates[3],
        ),
    ] {
        let (min, max) = values
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        println!("| {name} | {:.0} | {min:.0} | {max:.0} |", median(values));
    }
    println!(
        "\nratios (medians of per-round ratios): wasm / native {:.2} (target ≥ 0.85: the sandbox's cost); wasm / plain {:.2} (target ≥ 0.65); native / plain {:.2}",
        median(&wasm_vs_native),
        median(&wasm_vs_plain),
        median(&native_vs_plain),
    );
    println!(
        "fiberless: wasm / wasm on the async path {:.2}; wasm on the async path / native {:.2}",
        median(&wasm_vs_fibered),
        median(&fibered_vs_native),
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
            prepared_webchat(&format!("l{round}"), count),
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
    redis_comparison(&servers, &generator, gateway_addr, rounds, requests, warmup);
    servers.block_on(gateway.stop());
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
    let message = match verified_message(&headers, &body) {
        Ok(message) => message,
        Err(refusal) => return refusal,
    };
    let shard = dedupe.hasher.hash_one(&message.id) as usize % dedupe.shards.len();
    dedupe.shards[shard].lock().insert(message.id);
    (StatusCode::OK, "{\"ok\":true}")
}

/// The Standard Webhooks check and JSON parse every baseline does.
fn verified_message(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Message, (StatusCode, &'static str)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()),
        header("webhook-signature"),
    ) else {
        return Err((StatusCode::UNAUTHORIZED, "missing headers"));
    };
    if (jiff::Timestamp::now().as_second() - timestamp).abs() > 300 {
        return Err((StatusCode::UNAUTHORIZED, "stale"));
    }
    let content = omnigate_signature::standard_webhooks::signed_content(id, timestamp, body);
    if omnigate_signature::verify(
        omnigate_signature::Scheme::StandardWebhooks,
        SECRET.as_bytes(),
        &content,
        signature,
    ) != Ok(true)
    {
        return Err((StatusCode::UNAUTHORIZED, "bad signature"));
    }
    serde_json::from_slice::<Message>(body).map_err(|_| (StatusCode::BAD_REQUEST, "bad body"))
}

/// The Redis store against the memory store and against a plain axum handler that checks
/// the same signature and stores with one atomic script (SET NX, then HSET + XADD only for
/// a new id), in one round trip — all on one redis-server started here.
fn redis_comparison(
    servers: &tokio::runtime::Runtime,
    generator: &tokio::runtime::Runtime,
    memory_addr: SocketAddr,
    rounds: usize,
    requests: usize,
    warmup: usize,
) {
    let redis = RedisServer::start().expect("redis-server");
    let config = format!(
        "[store]\nurl = \"{}\"\n[[channels]]\nid = \"web\"\nplugin = {}\nconfig = {{ callback_url = \"http://127.0.0.1:9/x\" }}\nsecrets = {{ signing_secret = \"{SECRET}\" }}\n",
        redis.url(),
        toml_path(&omnigate_tests::bench::webchat_wasm())
    );
    let gateway = servers.block_on(Gateway::start(&config)).expect("gateway");
    let gateway_addr = gateway.addr;
    let baseline_addr = servers.block_on(start_redis_baseline(&redis.url()));
    let store = gateway.app.pipeline.store().clone();
    let mut redis_rates = Vec::new();
    let mut memory_rates = Vec::new();
    let mut baseline_rates = Vec::new();
    let mut vs_memory = Vec::new();
    let mut vs_baseline = Vec::new();
    let mut trips_per_message = Vec::new();
    // redis-server CPU per message: on 2 cores the server competes with the gateway.
    let mut redis_cpu_us = Vec::new();
    let mut baseline_cpu_us = Vec::new();
    // Per-command calls and µs during the Redis store's rounds, and their messages.
    let mut commands: HashMap<String, (u64, u64)> = HashMap::new();
    let mut messages = 0;
    for round in 0..rounds {
        if round == 0 {
            for addr in [gateway_addr, baseline_addr] {
                generator.block_on(load::closed_loop(
                    addr,
                    prepared_webchat(&format!("rwarm-{addr}"), warmup),
                    CONNECTIONS,
                ));
            }
        }
        let before = store.round_trips().unwrap_or(0);
        let commands_before = command_stats(&redis);
        let cpu_before = redis_cpu(&redis);
        let r = generator.block_on(load::closed_loop(
            gateway_addr,
            prepared_webchat(&format!("r{round}"), requests),
            CONNECTIONS,
        ));
        let trips = store.round_trips().unwrap_or(0) - before;
        let cpu_r = redis_cpu(&redis) - cpu_before;
        for (name, (calls, usec)) in command_stats(&redis) {
            let (calls_before, usec_before) =
                commands_before.get(&name).copied().unwrap_or_default();
            let total = commands.entry(name).or_default();
            total.0 += calls - calls_before;
            total.1 += usec - usec_before;
        }
        messages += r.ok;
        let m = generator.block_on(load::closed_loop(
            memory_addr,
            prepared_webchat(&format!("rm{round}"), requests),
            CONNECTIONS,
        ));
        let cpu_before = redis_cpu(&redis);
        let b = generator.block_on(load::closed_loop(
            baseline_addr,
            prepared_webchat(&format!("rb{round}"), requests),
            CONNECTIONS,
        ));
        let cpu_b = redis_cpu(&redis) - cpu_before;
        assert_eq!(
            r.failed + m.failed + b.failed,
            0,
            "requests failed: redis store {}, memory store {}, redis baseline {}",
            r.failed,
            m.failed,
            b.failed
        );
        redis_rates.push(r.rate());
        memory_rates.push(m.rate());
        baseline_rates.push(b.rate());
        vs_memory.push(r.rate() / m.rate());
        vs_baseline.push(r.rate() / b.rate());
        trips_per_message.push(trips as f64 / r.ok.max(1) as f64);
        redis_cpu_us.push(cpu_r * 1e6 / r.ok.max(1) as f64);
        baseline_cpu_us.push(cpu_b * 1e6 / b.ok.max(1) as f64);
        eprintln!(
            "round {}: redis store {:.0}/s, memory store {:.0}/s, redis baseline {:.0}/s, {:.2} round trips/message",
            round + 1,
            r.rate(),
            m.rate(),
            b.rate(),
            trips as f64 / r.ok.max(1) as f64
        );
    }
    println!(
        "\n## Inbound webhooks/s, Redis store ({requests} distinct signed messages per round, {CONNECTIONS} connections, median of {rounds} rounds, one local redis-server)\n"
    );
    println!("| server | median req/s | min | max |\n|---|---|---|---|");
    for (name, values) in [
        ("omnigate, Redis store", &redis_rates),
        ("omnigate, memory store (same run)", &memory_rates),
        (
            "plain axum: same signature check + JSON parse + one-round-trip dedupe-and-store script",
            &baseline_rates,
        ),
    ] {
        let (min, max) = values
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        println!("| {name} | {:.0} | {min:.0} | {max:.0} |", median(values));
    }
    println!(
        "\nratio Redis store / memory store: {:.2}; Redis store / Redis baseline: {:.2} (target ≥ 0.70); Redis round trips per message: {:.2} (one for a known sender in an open conversation, plus a share of a batched settle)",
        median(&vs_memory),
        median(&vs_baseline),
        median(&trips_per_message)
    );
    println!(
        "redis-server CPU per message (median): omnigate {:.1} µs (target ≤ 30 µs), Redis baseline {:.1} µs",
        median(&redis_cpu_us),
        median(&baseline_cpu_us)
    );
    print_command_profile(&commands, messages);
    servers.block_on(gateway.stop());
}

/// The Redis store's rounds by command (`INFO commandstats`), the costliest first.
fn print_command_profile(commands: &HashMap<String, (u64, u64)>, messages: usize) {
    let messages = messages.max(1) as f64;
    let mut rows: Vec<(&String, &(u64, u64))> = commands
        .iter()
        .filter(|(_, (calls, _))| *calls > 0)
        .collect();
    rows.sort_by_key(|(_, (_, usec))| std::cmp::Reverse(*usec));
    println!(
        "\n## Where redis-server's time goes, Redis store rounds (`INFO commandstats`; a command a script runs counts in the script's time too)\n"
    );
    println!("| command | calls per message | µs per message |\n|---|---|---|");
    for (name, (calls, usec)) in rows.into_iter().take(14) {
        println!(
            "| {name} | {:.2} | {:.2} |",
            *calls as f64 / messages,
            *usec as f64 / messages
        );
    }
}

/// The Redis baseline's script: dedupe, then store only a new message.
const BASELINE_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 259200) then
  redis.call('HSET', KEYS[2], 'name', ARGV[1], 'last_message', ARGV[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'id', ARGV[2], 'body', ARGV[3])
  return 1
end
return 0
";

#[derive(Clone)]
struct RedisBaseline {
    conn: redis::aio::ConnectionManager,
    script: Arc<redis::Script>,
}

async fn start_redis_baseline(url: &str) -> SocketAddr {
    let client = redis::Client::open(url).expect("redis url");
    let conn = redis::aio::ConnectionManager::new(client)
        .await
        .expect("redis connection");
    let state = RedisBaseline {
        conn,
        script: Arc::new(redis::Script::new(BASELINE_SCRIPT)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/webhooks/web", post(redis_baseline))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn redis_baseline(
    State(state): State<RedisBaseline>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let message = match verified_message(&headers, &body) {
        Ok(message) => message,
        Err(refusal) => return refusal,
    };
    let visitor = &message.visitor.id;
    let mut conn = state.conn.clone();
    let stored: redis::RedisResult<i64> = state
        .script
        .key(format!("bl:{{{visitor}}}:seen:{}", message.id))
        .key(format!("bl:{{{visitor}}}:contact"))
        .key(format!("bl:{{{visitor}}}:messages"))
        .arg(message.visitor.name.as_deref().unwrap_or(""))
        .arg(&message.id)
        .arg(&body[..])
        .invoke_async(&mut conn)
        .await;
    match stored {
        Ok(_) => (StatusCode::OK, "{\"ok\":true}"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "redis"),
    }
}

/// redis-server's counters per command so far (`INFO commandstats`): calls and µs.
fn command_stats(redis: &RedisServer) -> HashMap<String, (u64, u64)> {
    let info = redis.cli(&["INFO", "commandstats"]).unwrap_or_default();
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_")?.split_once(':'))
        .map(|(name, fields)| {
            let field = |key: &str| {
                fields
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| *name == key)
                    .and_then(|(_, value)| value.parse::<u64>().ok())
                    .unwrap_or_default()
            };
            (name.to_owned(), (field("calls"), field("usec")))
        })
        .collect()
}

/// CPU seconds the redis-server used so far (user + system).
fn redis_cpu(redis: &RedisServer) -> f64 {
    let info = redis.cli(&["INFO", "cpu"]).unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| *key == "used_cpu_sys" || *key == "used_cpu_user")
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}
