//! Per-call cost of `handle-webhook` through the runtime vs the same plugin code called
//! natively, on one thread and on two. Run by `cargo xtask bench`.
//!
//! Workload: distinct signed web chat messages (Standard Webhooks, many visitors). The
//! native side runs the web chat plugin's own code with the SDK test harness, whose host
//! imports compute HMACs natively exactly like the gateway does.

use std::sync::Arc;
use std::time::Instant;

use omnigate::runtime::types::HttpRequest;
use omnigate::runtime::{
    AllowedHosts, ChannelEnv, ChannelRuntime, Limits, Runtime, RuntimeSettings,
};
use omnigate::secret::Secret;
use omnigate_sdk::Channel;
use omnigate_tests::bench::{SECRET, median, rounds_arg, signed_webchat_messages, size};
use omnigate_tests::native::sdk_request;

fn main() {
    let rounds = rounds_arg();
    let calls = size(20_000, 200);
    let runtime = Runtime::new(&RuntimeSettings::default()).expect("runtime");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let plugin = tokio
        .block_on(runtime.load_file(&omnigate_tests::bench::webchat_wasm()))
        .expect("webchat plugin");
    assert!(plugin.serves_webhooks_fiberless());
    // The same plugin loaded again with every `handle-webhook` on the async path (on a
    // fiber), as before fiberless calls: both are measured in each round.
    let fibered_plugin = tokio
        .block_on(runtime.load_file(&omnigate_tests::bench::webchat_wasm()))
        .expect("webchat plugin");
    fibered_plugin.send_webhooks_async();
    let channel = |plugin: &Arc<omnigate::runtime::Plugin>, reuse: u32| {
        let env = ChannelEnv {
            channel_id: "web".into(),
            config: [("callback_url".to_owned(), "http://127.0.0.1:9/x".to_owned())].into(),
            secrets: [("signing_secret".to_owned(), Secret::new(SECRET))].into(),
            tokens: Default::default(),
            allowed_hosts: AllowedHosts::default(),
            secrets_hosts: Default::default(),
            limits: Limits {
                instance_reuse: reuse,
                ..Limits::default()
            },
            fetch: runtime.fetch_client(),
            fixed_now_ms: None,
        };
        Arc::new(runtime.bind(plugin.clone(), Arc::new(env)))
    };
    let reused = channel(&plugin, 128);
    let fresh = channel(&plugin, 1);
    let fibered = channel(&fibered_plugin, 128);

    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("native (same plugin code, SDK harness)", vec![]),
        ("runtime, instance reused (1 thread)", vec![]),
        ("runtime, fresh instance per call (1 thread)", vec![]),
        ("native, 2 threads (calls/s)", vec![]),
        ("runtime reused, 2 threads (calls/s)", vec![]),
        ("runtime reused, 1 thread (calls/s)", vec![]),
        (
            "runtime, instance reused, async path on a fiber (1 thread)",
            vec![],
        ),
    ];
    for round in 0..rounds {
        let messages = signed_webchat_messages(calls, &format!("r{round}"));
        rows[0].1.push(native(&messages) * 1e6 / calls as f64);
        // Fiberless and fibered alternate which goes first, round by round.
        let (first, second) = if round % 2 == 0 {
            ((1, &reused), (6, &fibered))
        } else {
            ((6, &fibered), (1, &reused))
        };
        for (row, channel) in [first, second] {
            rows[row]
                .1
                .push(hosted(&tokio, channel, &messages) * 1e6 / calls as f64);
        }
        rows[2]
            .1
            .push(hosted(&tokio, &fresh, &messages) * 1e6 / calls as f64);
        let (left, right) = messages.split_at(calls / 2);
        rows[3]
            .1
            .push(calls as f64 / two_threads(native, left, right));
        let reused = &reused;
        rows[4]
            .1
            .push(calls as f64 / two_threads(|part| hosted_own_runtime(reused, part), left, right));
        rows[5]
            .1
            .push(calls as f64 / hosted(&tokio, reused, &messages));
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!(
        "\n## handle-webhook per call ({calls} distinct signed web chat messages, median of {rounds} rounds)\n"
    );
    println!("| measurement | median | min | max |\n|---|---|---|---|");
    for (name, values) in &rows {
        let unit = if name.contains("calls/s") { "" } else { " µs" };
        let (min, max) = values
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        println!(
            "| {name} | {:.1}{unit} | {min:.1}{unit} | {max:.1}{unit} |",
            median(values)
        );
    }
    let native_us = median(&rows[0].1);
    println!(
        "\noverhead vs native: reused {:.1} µs/call, fresh {:.1} µs/call (target ≤ 10 µs)",
        median(&rows[1].1) - native_us,
        median(&rows[2].1) - native_us
    );
    println!(
        "two threads vs one (runtime, reused): ×{:.2}",
        median(&rows[4].1) / median(&rows[5].1)
    );
    let saved: Vec<f64> = rows[6]
        .1
        .iter()
        .zip(&rows[1].1)
        .map(|(a, b)| a - b)
        .collect();
    println!(
        "fiberless vs async path on a fiber (reused): {:.2} µs/call saved (median of per-round differences)",
        median(&saved)
    );
}

/// Seconds for all `messages` natively (requests converted before timing).
fn native(messages: &[HttpRequest]) -> f64 {
    let requests: Vec<omnigate_sdk::HttpRequest> = messages.iter().map(sdk_request).collect();
    let harness = omnigate_sdk::testing::Harness::new()
        .secret("signing_secret", SECRET)
        .config("callback_url", "http://127.0.0.1:9/x")
        .now(jiff::Timestamp::now().as_millisecond());
    harness.run(|| {
        let started = Instant::now();
        for request in requests {
            let outcome = omnigate_plugin_webchat::WebChat::handle_webhook(request);
            assert!(outcome.is_ok_and(|o| o.events.len() == 1));
        }
        started.elapsed().as_secs_f64()
    })
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
            assert!(matches!(outcome, Ok(Ok(ref o)) if o.events.len() == 1));
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

/// Wall seconds for two threads each doing one half.
fn two_threads(
    work: impl Fn(&[HttpRequest]) -> f64 + Sync,
    left: &[HttpRequest],
    right: &[HttpRequest],
) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let a = scope.spawn(|| work(left));
        let b = scope.spawn(|| work(right));
        let _ = (a.join(), b.join());
    });
    started.elapsed().as_secs_f64()
}
