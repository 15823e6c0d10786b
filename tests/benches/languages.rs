//! The web chat plugin in each language through the same runtime: per-call cost and
//! throughput of `handle-webhook`, the compile on first load and the start from the
//! compile cache. Run by `cargo xtask bench` (the compile is only timed there: an
//! interpreter component takes long to compile; smoke runs load it from the tests'
//! compile cache).
//!
//! Workload: distinct signed web chat messages (Standard Webhooks, many visitors), as in
//! the `runtime` benchmark; one instance reused per channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use omnigate::runtime::types::HttpRequest;
use omnigate::runtime::{
    AllowedHosts, ChannelEnv, ChannelRuntime, Limits, Runtime, RuntimeSettings,
};
use omnigate::secret::Secret;
use omnigate_tests::bench::{SECRET, measuring, median, rounds_arg, signed_webchat_messages, size};

fn main() {
    let rounds = rounds_arg();
    let calls = size(2_000, 20);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let builds: Vec<(&str, PathBuf)> = vec![
        ("Rust", omnigate_tests::plugin_path("webchat")),
        ("Python", omnigate_tests::example_path("webchat-python")),
        ("JavaScript", omnigate_tests::example_path("webchat-js")),
    ];
    println!(
        "\n## web chat plugin by language ({calls} distinct signed messages per round, median of {rounds} rounds)\n"
    );
    println!(
        "| plugin | size | compile on load | cached start | per call (1 thread) | calls/s (1 thread) | calls/s (2 threads) |\n|---|---|---|---|---|---|---|"
    );
    for (language, path) in builds {
        let size_kib = std::fs::metadata(&path)
            .map(|m| m.len() / 1024)
            .unwrap_or_default();
        let compile = measuring().then(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            load_seconds(&tokio, &path, dir.path()).1
        });
        let cache = omnigate_tests::root()
            .join("target")
            .join("test-plugin-cache");
        // Once to fill the cache (if it was not), then timed from it.
        let _ = load_seconds(&tokio, &path, &cache);
        let (runtime, cached) = load_seconds(&tokio, &path, &cache);
        let plugin = tokio.block_on(runtime.load_file(&path)).expect("plugin");
        let env = ChannelEnv {
            channel_id: "web".into(),
            config: [("callback_url".to_owned(), "http://127.0.0.1:9/x".to_owned())].into(),
            secrets: [("signing_secret".to_owned(), Secret::new(SECRET))].into(),
            tokens: Default::default(),
            allowed_hosts: AllowedHosts::default(),
            secrets_hosts: Default::default(),
            limits: Limits {
                instance_reuse: 1_000_000,
                ..Limits::default()
            },
            fetch: runtime.fetch_client(),
            fixed_now_ms: None,
        };
        let channel = Arc::new(runtime.bind(plugin, Arc::new(env)));
        let (mut per_call, mut one, mut two) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            let messages = signed_webchat_messages(calls, &format!("{language}{round}"));
            let seconds = hosted(&tokio, &channel, &messages);
            per_call.push(seconds * 1e6 / calls as f64);
            one.push(calls as f64 / seconds);
            let (left, right) = messages.split_at(calls / 2);
            let started = Instant::now();
            std::thread::scope(|scope| {
                let channel = &channel;
                let a = scope.spawn(move || hosted_own_runtime(channel, left));
                let b = scope.spawn(move || hosted_own_runtime(channel, right));
                let _ = (a.join(), b.join());
            });
            two.push(calls as f64 / started.elapsed().as_secs_f64());
        }
        println!(
            "| {language} | {size_kib} KiB | {} | {cached:.2} s | {:.0} µs | {:.0} | {:.0} |",
            compile.map_or("(not timed)".to_owned(), |s| format!("{s:.1} s")),
            median(&per_call),
            median(&one),
            median(&two),
        );
    }
}

/// Load `path` in a fresh runtime caching in `cache`; the runtime and the seconds it took.
fn load_seconds(tokio: &tokio::runtime::Runtime, path: &Path, cache: &Path) -> (Runtime, f64) {
    let runtime = Runtime::new(&RuntimeSettings {
        cache_dir: Some(cache.to_path_buf()),
        ..RuntimeSettings::default()
    })
    .expect("runtime");
    let started = Instant::now();
    tokio
        .block_on(runtime.load_file(path))
        .expect("plugin loads");
    let seconds = started.elapsed().as_secs_f64();
    (runtime, seconds)
}

/// Seconds for all `messages` through the runtime.
fn hosted(
    tokio: &tokio::runtime::Runtime,
    channel: &ChannelRuntime,
    messages: &[HttpRequest],
) -> f64 {
    tokio.block_on(async {
        let started = Instant::now();
        for message in messages {
            let outcome = channel.handle_webhook(message).await;
            assert!(
                matches!(outcome, Ok(Ok(ref o)) if o.events.len() == 1),
                "{outcome:?}"
            );
        }
        started.elapsed().as_secs_f64()
    })
}

fn hosted_own_runtime(channel: &ChannelRuntime, messages: &[HttpRequest]) -> f64 {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    hosted(&tokio, channel, messages)
}
