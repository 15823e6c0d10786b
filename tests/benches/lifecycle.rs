//! What the plugin lifecycle costs, run by `cargo xtask bench`:
//! 1. activation → first request served by the new version, on one instance, and across
//!    three instances on one Redis (each with its own compiled cache, as separate machines
//!    would have);
//! 2. restart → ready (`/readyz` 200) of the release binary with a warm compiled cache and
//!    five channels, against starting the same binary for `--version` (process spawn and
//!    exit: the floor);
//! 3. requests/s while versions are swapped every 100 ms vs steady state, in the same run.
//!
//! Every probe is a distinct signed web chat message. The two versions answer
//! differently (the web chat plugin `{"ok":true}`, the hostile test guest in mode `ok`
//! `ok`), which tells which one served a request.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use omnigate_tests::bench::{SECRET, median, rounds_arg, size, webchat_body};
use omnigate_tests::load::{self, Prepared};
use omnigate_tests::redis::{RedisServer, free_port};
use omnigate_tests::{
    Gateway, get, guest_path, omnigate_bin, omnigate_release_bin, plugin_path, post,
    standard_webhooks_headers, toml_path,
};
use serde_json::Value;

const ADMIN_KEY: &str = "bench-admin-key-0123456";
const WEBCHAT_ANSWER: &str = r#"{"ok":true}"#;
const HOSTILE_ANSWER: &str = "ok";
const CONNECTIONS: usize = 32;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let rounds = rounds_arg();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(activation_latency(rounds));
    restart_to_ready(rounds);
    runtime.block_on(throughput_during_swaps(rounds));
}

/// Gateway config: web chat on channel `web`, admin key, store `store`, compiled cache
/// `cache` (a fresh one per instance in the fleet case).
fn config(store: &str, cache: &std::path::Path) -> String {
    format!(
        r#"
        [store]
        url = "{store}"
        [admin]
        keys = ["{ADMIN_KEY}"]
        [plugins]
        cache_dir = {cache}
        reconcile_interval = "1h"
        [[channels]]
        id = "web"
        plugin = {plugin}
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SECRET}" }}
        "#,
        cache = toml_path(cache),
        plugin = toml_path(&plugin_path("webchat")),
    )
}

fn admin() -> Vec<(String, String)> {
    vec![
        ("authorization".into(), format!("Bearer {ADMIN_KEY}")),
        ("content-type".into(), "application/json".into()),
    ]
}

static PROBE: AtomicUsize = AtomicUsize::new(0);

/// One distinct signed message; the answer's body.
async fn probe(gateway: &Gateway) -> String {
    let n = PROBE.fetch_add(1, Ordering::Relaxed);
    let body = webchat_body("probe", n);
    let id = format!("probe-{n}");
    let headers = standard_webhooks_headers(SECRET, &format!("wh_{id}"), &body).expect("sign");
    let url = gateway.url(&format!("/webhooks/web?mode=ok&id={id}"));
    match post(&url, &headers, body).await {
        Ok((200, body)) => body,
        Ok((status, body)) => panic!("probe answered {status}: {body}"),
        Err(error) => panic!("probe failed: {error}"),
    }
}

/// Probe `gateway` back to back until `answer` comes back; the time since `since`.
async fn first_served(gateway: Arc<Gateway>, answer: &'static str, since: Instant) -> Duration {
    loop {
        if probe(&gateway).await == answer {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{} never served the new version",
            gateway.base
        );
    }
}

async fn admin_post(gateway: &Gateway, path: &str, body: Vec<u8>) -> Value {
    let (status, body) = post(&gateway.url(path), &admin(), body)
        .await
        .expect("admin request");
    assert!((200..300).contains(&status), "{path}: {status} {body}");
    serde_json::from_str(&body).expect("json")
}

/// Digest of the version serving `web`.
async fn active_digest(gateway: &Gateway) -> String {
    let (_, body) = get(&gateway.url("/admin/plugins"), &admin())
        .await
        .expect("list");
    let list: Value = serde_json::from_str(&body).expect("json");
    list["channels"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Activate `digest` on `fleet[0]`; how long until each instance served it.
async fn activate_and_wait(
    fleet: &[Arc<Gateway>],
    digest: &str,
    answer: &'static str,
) -> Vec<Duration> {
    let started = Instant::now();
    let waits: Vec<_> = fleet
        .iter()
        .map(|gateway| tokio::spawn(first_served(gateway.clone(), answer, started)))
        .collect();
    let body = serde_json::json!({ "digest": digest })
        .to_string()
        .into_bytes();
    admin_post(&fleet[0], "/admin/channels/web/activate", body).await;
    let mut took = Vec::new();
    for wait in waits {
        took.push(wait.await.expect("probe task"));
    }
    took
}

/// Activation → first request served by the new version.
async fn activation_latency(rounds: usize) {
    let redis = RedisServer::start().expect("redis-server");
    let caches: Vec<tempfile::TempDir> =
        (0..3).map(|_| tempfile::tempdir().expect("tmp")).collect();
    let hostile = std::fs::read(guest_path("hostile")).expect("hostile guest");

    // One instance, memory store.
    let single = Arc::new(
        Gateway::start(&config("memory://", caches[0].path()))
            .await
            .expect("gateway"),
    );
    let original = active_digest(&single).await;
    let added = admin_post(&single, "/admin/plugins", hostile.clone()).await;
    let new = added["plugin"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut single_times = Vec::new();
    for _ in 0..rounds.max(1) * 2 {
        single_times
            .extend(activate_and_wait(std::slice::from_ref(&single), &new, HOSTILE_ANSWER).await);
        single_times.extend(
            activate_and_wait(std::slice::from_ref(&single), &original, WEBCHAT_ANSWER).await,
        );
    }

    // Three instances on one Redis, separate compiled caches.
    let mut fleet = Vec::new();
    for cache in &caches {
        let gateway = Gateway::start(&config(&redis.url(), cache.path()))
            .await
            .expect("gateway");
        fleet.push(Arc::new(gateway));
    }
    let added = admin_post(&fleet[0], "/admin/plugins", hostile).await;
    let new = added["plugin"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The first activation: the other two fetch the wasm from Redis and compile it.
    let cold = activate_and_wait(&fleet, &new, HOSTILE_ANSWER).await;
    let mut warm = Vec::new();
    activate_and_wait(&fleet, &original, WEBCHAT_ANSWER).await;
    for _ in 0..rounds.max(1) * 2 {
        let a = activate_and_wait(&fleet, &new, HOSTILE_ANSWER).await;
        let b = activate_and_wait(&fleet, &original, WEBCHAT_ANSWER).await;
        // The fleet figure is the slowest instance's.
        warm.extend(
            [a, b]
                .iter()
                .filter_map(|times| times.iter().max().copied()),
        );
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let single_ms: Vec<f64> = single_times.iter().map(ms).collect();
    let warm_ms: Vec<f64> = warm.iter().map(ms).collect();
    let cold_ms = cold.iter().map(ms).fold(0.0, f64::max);
    println!(
        "\n## Activation → first request served by the new version ({} activations each, medians)\n",
        single_ms.len()
    );
    println!("| setup | median | max | target |\n|---|---|---|---|");
    println!(
        "| one instance (memory store) | {:.1} ms | {:.1} ms | ≤ 1 s |",
        median(&single_ms),
        single_ms.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "| three instances on one Redis, slowest instance | {:.1} ms | {:.1} ms | ≤ 3 s |",
        median(&warm_ms),
        warm_ms.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "| three instances, first activation (two fetch the wasm from Redis and compile it) | {cold_ms:.1} ms | | ≤ 3 s |"
    );
    for gateway in fleet.into_iter().chain([single]) {
        if let Ok(gateway) = Arc::try_unwrap(gateway) {
            gateway.stop().await;
        }
    }
}

/// Restart → ready of the release binary with a warm compiled cache (the debug binary in
/// the smoke run `cargo test` makes, and the heading says so).
fn restart_to_ready(rounds: usize) {
    let (bin, build) = if omnigate_tests::bench::measuring() {
        (omnigate_release_bin(), "release")
    } else {
        (omnigate_bin(), "debug")
    };
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port().expect("port");
    let path = dir.path().join("omnigate.toml");
    std::fs::write(&path, five_channels(port, &dir.path().join("cache"))).expect("config");
    // The first start compiles and fills the cache.
    let cold = start_until_ready(&bin, &path, port);
    let mut ready_ms = Vec::new();
    let mut spawn_ms = Vec::new();
    for _ in 0..size(rounds * 4, 2) {
        ready_ms.push(start_until_ready(&bin, &path, port).as_secs_f64() * 1e3);
        spawn_ms.push(spawn_and_exit(&bin).as_secs_f64() * 1e3);
    }
    println!(
        "\n## Restart → ready (`/readyz` 200), {build} binary, five channels, memory store ({} starts, medians)\n",
        ready_ms.len()
    );
    println!("| | median | min | max |\n|---|---|---|---|");
    for (name, values) in [
        ("warm compiled cache", &ready_ms),
        ("floor: `omnigate --version` (spawn + exit)", &spawn_ms),
    ] {
        let (min, max) = values
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        println!(
            "| {name} | {:.1} ms | {min:.1} ms | {max:.1} ms |",
            median(values)
        );
    }
    println!(
        "\nfirst start (empty cache, five plugins compiled): {:.0} ms; target with a warm cache: ≤ 100 ms",
        cold.as_secs_f64() * 1e3
    );
}

/// Five channels, one per plugin, as a small production config would have.
fn five_channels(port: u16, cache: &std::path::Path) -> String {
    let meta_secrets =
        r#"secrets = { app_secret = "s", page_access_token = "t", verify_token = "v" }"#;
    format!(
        r#"
        [server]
        listen = "127.0.0.1:{port}"
        [store]
        url = "memory://"
        [plugins]
        cache_dir = {cache}
        [[channels]]
        id = "web"
        plugin = {webchat}
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SECRET}" }}
        [[channels]]
        id = "wa"
        plugin = {whatsapp}
        config = {{ phone_number_id = "1" }}
        secrets = {{ app_secret = "s", access_token = "t", verify_token = "v" }}
        [[channels]]
        id = "fb"
        plugin = {messenger}
        config = {{ page_id = "1" }}
        {meta_secrets}
        [[channels]]
        id = "ig"
        plugin = {instagram}
        config = {{ account_id = "1" }}
        {meta_secrets}
        [[channels]]
        id = "tg"
        plugin = {telegram}
        config = {{ bot_id = "1" }}
        secrets = {{ bot_token = "t", secret_token = "s" }}
        "#,
        cache = toml_path(cache),
        webchat = toml_path(&plugin_path("webchat")),
        whatsapp = toml_path(&plugin_path("whatsapp")),
        messenger = toml_path(&plugin_path("messenger")),
        instagram = toml_path(&plugin_path("instagram")),
        telegram = toml_path(&plugin_path("telegram")),
    )
}

/// Kills the gateway when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the binary; the time until `/readyz` answers 200.
fn start_until_ready(bin: &std::path::Path, config: &std::path::Path, port: u16) -> Duration {
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn omnigate");
    let _running = Running(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if ready(addr) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "gateway never became ready"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One blocking `GET /readyz`: whether it answered 200.
fn ready(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /readyz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

fn spawn_and_exit(bin: &std::path::Path) -> Duration {
    let started = Instant::now();
    let status = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .expect("spawn");
    assert!(status.success());
    started.elapsed()
}

/// Requests/s with a swap every 100 ms vs without, same gateway, same run. The two
/// versions run the same code (the web chat plugin, and the same wasm with a custom
/// section appended: another digest), so only the swaps differ.
async fn throughput_during_swaps(rounds: usize) {
    let cache = tempfile::tempdir().expect("tmp");
    let gateway = Arc::new(
        Gateway::start(&config("memory://", cache.path()))
            .await
            .expect("gateway"),
    );
    let addr = gateway.addr;
    let original = active_digest(&gateway).await;
    let webchat = std::fs::read(plugin_path("webchat")).expect("web chat plugin");
    let added = admin_post(&gateway, "/admin/plugins", with_custom_section(webchat)).await;
    let new = added["plugin"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(new, original);
    let count = size(20_000, 200);
    load::closed_loop(addr, requests("warm", size(3_000, 30)), CONNECTIONS).await;
    let (mut steady, mut swapping, mut ratios, mut swaps) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        let s = load::closed_loop(addr, requests(&format!("s{round}"), count), CONNECTIONS).await;
        let running = Arc::new(AtomicBool::new(true));
        let swapper = tokio::spawn(swap_until_stopped(
            gateway.clone(),
            [original.clone(), new.clone()],
            running.clone(),
        ));
        let w = load::closed_loop(addr, requests(&format!("w{round}"), count), CONNECTIONS).await;
        running.store(false, Ordering::Relaxed);
        swaps += swapper.await.expect("swapper");
        assert_eq!(
            s.failed + w.failed,
            0,
            "requests failed: steady {}, swapping {}",
            s.failed,
            w.failed
        );
        steady.push(s.rate());
        swapping.push(w.rate());
        ratios.push(w.rate() / s.rate());
    }
    println!(
        "\n## Requests/s while swapping versions every 100 ms ({count} distinct signed messages per run, {CONNECTIONS} connections, median of {rounds} rounds, {swaps} swaps in all)\n"
    );
    println!(
        "| steady | during swaps | ratio |\n|---|---|---|\n| {:.0}/s | {:.0}/s | {:.2} |",
        median(&steady),
        median(&swapping),
        median(&ratios)
    );
    if let Ok(gateway) = Arc::try_unwrap(gateway) {
        gateway.stop().await;
    }
}

/// Alternate between `versions` every 100 ms until told to stop; how many swaps.
async fn swap_until_stopped(
    gateway: Arc<Gateway>,
    versions: [String; 2],
    running: Arc<AtomicBool>,
) -> usize {
    let mut swaps = 0;
    while running.load(Ordering::Relaxed) {
        let digest = &versions[(swaps + 1) % 2];
        let body = serde_json::json!({ "digest": digest })
            .to_string()
            .into_bytes();
        admin_post(&gateway, "/admin/channels/web/activate", body).await;
        swaps += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Leave the original serving for the next round.
    if swaps % 2 == 1 {
        let body = serde_json::json!({ "digest": versions[0] })
            .to_string()
            .into_bytes();
        admin_post(&gateway, "/admin/channels/web/activate", body).await;
    }
    swaps
}

/// `wasm` with a custom section appended: the same component under another digest.
fn with_custom_section(mut wasm: Vec<u8>) -> Vec<u8> {
    let name = b"omnigate-bench";
    let payload = b"same code, another digest";
    let size = 1 + name.len() + payload.len();
    // Section id 0 (custom), then sizes as one-byte LEB128s (all under 128).
    wasm.extend_from_slice(&[0, size as u8, name.len() as u8]);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(payload);
    wasm
}

/// `count` distinct signed messages, routed so both versions accept them.
fn requests(tag: &str, count: usize) -> Vec<Prepared> {
    (0..count)
        .map(|i| {
            let body = webchat_body(tag, i);
            let id = format!("{tag}-{i}");
            let headers = standard_webhooks_headers(SECRET, &format!("wh_{id}"), &body)
                .expect("sign")
                .into_iter()
                .chain([("content-type".to_owned(), "application/json".to_owned())])
                .collect();
            Prepared {
                path: format!("/webhooks/web?mode=ok&id={id}"),
                headers,
                body: Bytes::from(body),
            }
        })
        .collect()
}
