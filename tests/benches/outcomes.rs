//! The outcome loop's costs, run by `cargo xtask bench`:
//!
//! 1. `GET /v1/reports/funnel` over one year of hourly rollups for 1 000 campaigns
//!    (each hour 40 campaigns with conversations, answers, stages, wins, value and losses),
//!    by campaign in `Europe/Madrid`: latency percentiles over many requests, on the memory
//!    store and on Redis (target p99 ≤ 100 ms).
//! 2. Ingest throughput with outcome tracking on vs off, in the same run, alternating
//!    rounds (distinct signed web chat messages; each batch from 5 000 new visitors, so a
//!    quarter of the messages open a conversation), on the memory store and on Redis
//!    (target ≥ 0.95×).

use std::time::Instant;

use omnigate::ops::telemetry::LogFormat;
use omnigate::outcome::rollup::{Bucket, SEP, response_bucket};
use omnigate::store::RollupWrite;
use omnigate_tests::bench::{SECRET, median, prepared_webchat_from, quantile, rounds_arg, size};
use omnigate_tests::load::{self, Prepared};
use omnigate_tests::redis::RedisServer;
use omnigate_tests::{Gateway, api_auth, plugin_path, toml_path};
use rand::{Rng, SeedableRng};

const CONNECTIONS: usize = 32;
const CAMPAIGNS: usize = 1_000;
const ACTIVE_PER_HOUR: usize = 40;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let _telemetry = omnigate::ops::telemetry::init(LogFormat::Text, false).expect("telemetry");
    let rounds = rounds_arg();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let redis = RedisServer::start().expect("redis-server");
    println!(
        "\n## Funnel report over one year of hourly rollups, {CAMPAIGNS} campaigns ({ACTIVE_PER_HOUR} active per hour), by campaign, Europe/Madrid\n"
    );
    println!("| store | requests | p50 ms | p90 ms | p99 ms | rows |\n|---|---|---|---|---|---|");
    for (name, url) in [("redis", redis.url()), ("memory", "memory://".to_owned())] {
        runtime.block_on(report_latency(name, &url));
    }
    println!(
        "\n## Ingest with outcome tracking on vs off (webhooks/s, {CONNECTIONS} connections, median of {rounds} alternated rounds)\n"
    );
    println!(
        "| store | tracking on | tracking off | ratio on/off (median of per-round ratios) |\n|---|---|---|---|"
    );
    tracking_cost(&runtime, "memory", "memory://", None, rounds);
    tracking_cost(&runtime, "redis", &redis.url(), Some(&redis), rounds);
}

/// What redis-server did so far: CPU seconds (user + system) and commands executed
/// (commands run by scripts included).
fn redis_work(redis: &RedisServer) -> (f64, u64) {
    let cpu = redis
        .cli(&["INFO", "cpu"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| *key == "used_cpu_sys" || *key == "used_cpu_user")
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum();
    let calls = redis
        .cli(&["INFO", "commandstats"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once("calls="))
        .filter_map(|(_, rest)| rest.split(',').next()?.parse::<u64>().ok())
        .sum();
    (cpu, calls)
}

fn gateway_config(store_url: &str, outcomes: bool) -> String {
    format!(
        "[store]\nurl = \"{store_url}\"\n[api]\nkeys = [\"{key}\"]\n[outcomes]\nenabled = {outcomes}\n[[channels]]\nid = \"web\"\nplugin = {plugin}\nconfig = {{ callback_url = \"http://127.0.0.1:9/x\" }}\nsecrets = {{ signing_secret = \"{SECRET}\" }}\n",
        key = omnigate_tests::API_KEY,
        plugin = toml_path(&plugin_path("webchat")),
    )
}

/// One year (2026) of rollups: per hour, `ACTIVE_PER_HOUR` campaigns drawn from
/// `CAMPAIGNS`, each with a few conversations and what became of them, added through the
/// store's own rollup writes (hour, day and month buckets, as the pipeline writes them).
async fn fill_year(store: &dyn omnigate::store::ContextStore) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let start: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
    let first_hour = start.as_second() / 3600;
    for hour in first_hour..first_hour + 365 * 24 {
        let mut writes = Vec::new();
        for _ in 0..ACTIVE_PER_HOUR {
            let campaign = format!("campaign-{:04}", rng.random_range(0..CAMPAIGNS));
            let conversations = rng.random_range(1..6_i64);
            let answered = rng.random_range(0..=conversations);
            let won = rng.random_range(0..=answered);
            let frt = response_bucket(rng.random_range(5..4000_u64));
            let metrics = [
                ("conversations".to_owned(), conversations),
                ("with_referral".to_owned(), conversations),
                ("answered".to_owned(), answered),
                ("answered_within_sla".to_owned(), answered),
                (format!("frt:{frt}"), answered),
                ("stage:lead".to_owned(), conversations),
                ("won".to_owned(), won),
                ("value:EUR".to_owned(), won * 1_299_000),
                ("lost:unanswered".to_owned(), conversations - answered),
            ];
            for bucket in Bucket::of_hour(hour) {
                for (metric, n) in &metrics {
                    if *n != 0 {
                        writes.push(RollupWrite {
                            bucket: bucket.name().into(),
                            table: "f.campaign".into(),
                            field: format!("{campaign}{SEP}{metric}").into(),
                            n: *n,
                        });
                    }
                }
            }
        }
        store
            .outcomes()
            .add_rollups(&[format!("bench-{hour}")], &writes)
            .await
            .expect("rollups");
    }
}

async fn report_latency(name: &str, store_url: &str) {
    let gateway = Gateway::start(&gateway_config(store_url, true))
        .await
        .expect("gateway");
    let filled = Instant::now();
    fill_year(gateway.app.pipeline.store().as_ref()).await;
    eprintln!(
        "{name}: a year of rollups written in {:.1?}",
        filled.elapsed()
    );
    let url = gateway
        .url("/v1/reports/funnel?from=2026-01-01&to=2027-01-01&tz=Europe/Madrid&by=campaign");
    let client = reqwest::Client::new();
    let requests = size(300, 3);
    let mut latencies = Vec::with_capacity(requests);
    let mut rows = 0;
    for i in 0..requests + 5 {
        let mut request = client.get(&url);
        for (header, value) in api_auth() {
            request = request.header(header, value);
        }
        let started = Instant::now();
        let response = request.send().await.expect("report");
        let status = response.status();
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(status, 200, "{body}");
        let took = started.elapsed().as_secs_f64() * 1e3;
        // The first few warm the connection and caches.
        if i >= 5 {
            latencies.push(took);
        }
        rows = body["rows"].as_array().map_or(0, Vec::len);
    }
    println!(
        "| {name} | {requests} | {:.1} | {:.1} | {:.1} | {rows} |",
        quantile(&mut latencies, 0.5),
        quantile(&mut latencies, 0.9),
        quantile(&mut latencies, 0.99),
    );
    gateway.stop().await;
}

/// New visitors per batch, 4 messages each: a quarter of the messages open a
/// conversation, the case tracking costs most in.
fn prepared(tag: &str, count: usize) -> Vec<Prepared> {
    prepared_webchat_from(tag, count, &format!("{tag}-v"))
}

/// Ingest rate with tracking on and off; on Redis also the redis-server CPU time and
/// commands per message of each (the profile of the difference).
fn tracking_cost(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    store_url: &str,
    redis: Option<&RedisServer>,
    rounds: usize,
) {
    let requests = size(20_000, 200);
    let warmup = size(3_000, 30);
    let on = runtime
        .block_on(Gateway::start(&gateway_config(store_url, true)))
        .expect("gateway");
    let off = runtime
        .block_on(Gateway::start(&gateway_config(store_url, false)))
        .expect("gateway");
    let generator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let (on_addr, off_addr) = (on.addr, off.addr);
    let mut on_rates = Vec::new();
    let mut off_rates = Vec::new();
    let mut ratios = Vec::new();
    let mut redis_cost: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        if round == 0 {
            for (tag, target) in [("won", on_addr), ("woff", off_addr)] {
                generator.block_on(load::closed_loop(
                    target,
                    prepared(&format!("{name}-{tag}"), warmup),
                    CONNECTIONS,
                ));
            }
        }
        // Alternate which goes first, so drift in the machine affects both alike.
        let order = if round % 2 == 0 {
            [(true, on_addr), (false, off_addr)]
        } else {
            [(false, off_addr), (true, on_addr)]
        };
        let mut rate = [0.0; 2];
        for (tracking, target) in order {
            let batch = prepared(&format!("{name}-{tracking}-{round}"), requests);
            let before = redis.map(redis_work);
            let report = generator.block_on(load::closed_loop(target, batch, CONNECTIONS));
            assert_eq!(report.failed, 0, "requests failed");
            rate[usize::from(!tracking)] = report.rate();
            if let (Some(redis), Some((cpu, calls))) = (redis, before) {
                let (cpu_after, calls_after) = redis_work(redis);
                let per_message = requests as f64;
                redis_cost[usize::from(!tracking)].push((
                    (cpu_after - cpu) * 1e6 / per_message,
                    (calls_after - calls) as f64 / per_message,
                ));
            }
        }
        eprintln!(
            "{name} round {}: tracking on {:.0}/s, off {:.0}/s",
            round + 1,
            rate[0],
            rate[1]
        );
        on_rates.push(rate[0]);
        off_rates.push(rate[1]);
        ratios.push(rate[0] / rate[1]);
    }
    println!(
        "| {name} | {:.0} | {:.0} | {:.2} (target ≥ 0.95) |",
        median(&on_rates),
        median(&off_rates),
        median(&ratios)
    );
    if redis.is_some() {
        let figure = |costs: &[(f64, f64)]| {
            let cpu: Vec<f64> = costs.iter().map(|cost| cost.0).collect();
            let calls: Vec<f64> = costs.iter().map(|cost| cost.1).collect();
            format!("{:.1} µs, {:.1} commands", median(&cpu), median(&calls))
        };
        println!(
            "\nredis-server per message (median of rounds; script-run commands included): tracking on {}, off {}\n",
            figure(&redis_cost[0]),
            figure(&redis_cost[1])
        );
    }
    runtime.block_on(on.stop());
    runtime.block_on(off.stop());
}
