//! Delivery latency, from webhook accepted to the receiver's 2xx, memory outbox vs Redis
//! Streams outbox: first the maximum inbound rate and how fast the outbox drains at that
//! load, then p50/p99 of the delivery latency at half that rate. Run by
//! `cargo xtask bench`.
//!
//! The latency of an event is the receiver's arrival time minus the event's `received_at`
//! (set when the gateway took the webhook); both clocks are this machine's. The receiver
//! answers 204 at once. Only `message.received` is subscribed, one delivery per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use omnigate_tests::bench::{SECRET, median, prepared_webchat, quantile, rounds_arg, size};
use omnigate_tests::load::{self, Prepared};
use omnigate_tests::redis::RedisServer;
use omnigate_tests::{Gateway, SUBSCRIPTION_SECRET, plugin_path, toml_path};
use parking_lot::Mutex;

const CONNECTIONS: usize = 32;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Latencies (seconds) of deliveries seen by the receiver.
type Seen = Arc<Mutex<Vec<f64>>>;

fn main() {
    let rounds = rounds_arg();
    let requests = size(20_000, 200);
    let servers = runtime();
    let generator = runtime();
    let redis = RedisServer::start().expect("redis-server");
    let seen: Seen = Arc::default();
    let receiver = servers.block_on(start_receiver(seen.clone()));
    let mut table = Vec::new();
    for (name, outbox) in [("memory", "memory://".to_owned()), ("redis", redis.url())] {
        let config = format!(
            "[delivery]\noutbox_url = \"{outbox}\"\nallow_networks = [\"127.0.0.0/8\"]\n[[channels]]\nid = \"web\"\nplugin = {}\nconfig = {{ callback_url = \"http://127.0.0.1:9/x\" }}\nsecrets = {{ signing_secret = \"{SECRET}\" }}\n[[subscriptions]]\nid = \"bench\"\nurl = \"http://{receiver}/hook\"\nsecret = \"{SUBSCRIPTION_SECRET}\"\nevents = [\"message.received\"]\n",
            toml_path(&plugin_path("webchat"))
        );
        let gateway = servers.block_on(Gateway::start(&config)).expect("gateway");
        let addr = gateway.addr;
        // Warm-up: connections, instance pool, Redis.
        run_and_drain(
            &generator,
            addr,
            &seen,
            prepared_webchat(&format!("{name}-w"), size(2_000, 20)),
            None,
        );
        let mut inbound = Vec::new();
        let mut drained = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for round in 0..rounds {
            let burst = prepared_webchat(&format!("{name}-max{round}"), requests);
            let (report, drain) = run_and_drain(&generator, addr, &seen, burst, None);
            inbound.push(report.rate());
            drained.push(requests as f64 / drain.as_secs_f64());
            let half = median(&inbound) / 2.0;
            let count = size((half * 3.0) as usize, 100);
            let steady = prepared_webchat(&format!("{name}-half{round}"), count);
            run_and_drain(&generator, addr, &seen, steady, Some(half));
            let mut latencies = seen.lock().clone();
            p50.push(quantile(&mut latencies, 0.50) * 1e3);
            p99.push(quantile(&mut latencies, 0.99) * 1e3);
            eprintln!(
                "{name} round {}: inbound {:.0}/s, drained {:.0}/s, p50 {:.2} ms, p99 {:.2} ms at {half:.0}/s",
                round + 1,
                report.rate(),
                drained[round],
                p50[round],
                p99[round]
            );
        }
        table.push((
            name,
            median(&inbound),
            median(&drained),
            median(&p50),
            median(&p99),
        ));
        servers.block_on(gateway.stop());
    }
    println!(
        "\n## Delivery: webhook accepted → receiver 2xx (median of {rounds} rounds; {requests} requests at max rate, then ~3 s at half of it)\n"
    );
    println!(
        "| outbox | max inbound req/s | delivered/s during the burst | p50 at half rate | p99 at half rate |\n|---|---|---|---|---|"
    );
    for (name, inbound, drained, p50, p99) in table {
        println!("| {name} | {inbound:.0} | {drained:.0} | {p50:.2} ms | {p99:.2} ms |");
    }
    println!("\ntargets: p50 ≤ 5 ms, p99 ≤ 50 ms on loopback");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

/// Sends `requests` (open loop at `rate`, or closed loop) and waits until the receiver
/// has all of them; the load report and the time from the first request to the last
/// delivery.
fn run_and_drain(
    generator: &tokio::runtime::Runtime,
    addr: SocketAddr,
    seen: &Seen,
    requests: Vec<Prepared>,
    rate: Option<f64>,
) -> (load::LoadReport, Duration) {
    seen.lock().clear();
    let count = requests.len();
    let started = Instant::now();
    let report = generator.block_on(async {
        match rate {
            Some(rate) => load::open_loop(addr, requests, 64, rate).await,
            None => load::closed_loop(addr, requests, CONNECTIONS).await,
        }
    });
    assert_eq!(report.failed, 0, "webhooks failed");
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().len() < count {
        assert!(
            Instant::now() < deadline,
            "deliveries did not drain: {} of {count}",
            seen.lock().len()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    (report, started.elapsed())
}

async fn start_receiver(seen: Seen) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/hook", post(receive)).with_state(seen);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn receive(State(seen): State<Seen>, body: Bytes) -> StatusCode {
    let arrived = jiff::Timestamp::now();
    let received_at = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|event| {
            event["data"]["received_at"]
                .as_str()?
                .parse::<jiff::Timestamp>()
                .ok()
        });
    if let Some(received_at) = received_at {
        let latency = arrived.duration_since(received_at).as_secs_f64();
        seen.lock().push(latency);
    }
    StatusCode::NO_CONTENT
}
