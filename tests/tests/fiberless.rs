//! `handle-webhook` without a fiber (host/src/runtime/fiberless.rs): served on the
//! caller's stack while the guest needs only synchronous imports, moved to the async path
//! when it reaches one that is not (and kept there), and a runaway guest still stopped
//! at its CPU deadline without holding the thread for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use omnigate::runtime::types::HttpRequest;
use omnigate::runtime::{
    AllowedHosts, CallError, ChannelEnv, ChannelRuntime, Limits, Runtime, RuntimeSettings,
};

fn request(query: &str) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path: "/webhooks/evil".into(),
        query: query.into(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// The hostile test guest bound to a channel with `cpu_deadline`.
async fn hostile(runtime: &Runtime, cpu_deadline: Duration) -> Arc<ChannelRuntime> {
    let plugin = runtime
        .load_file(&omnigate_tests::guest_path("hostile"))
        .await
        .expect("hostile guest");
    let env = ChannelEnv {
        channel_id: "evil".into(),
        config: Default::default(),
        secrets: Default::default(),
        tokens: Default::default(),
        allowed_hosts: AllowedHosts::default(),
        secrets_hosts: Default::default(),
        limits: Limits {
            cpu_deadline,
            ..Limits::default()
        },
        fetch: runtime.fetch_client(),
        fixed_now_ms: None,
    };
    Arc::new(runtime.bind(plugin, Arc::new(env)))
}

fn response_text(outcome: &omnigate::runtime::types::WebhookOutcome) -> String {
    String::from_utf8_lossy(&outcome.response.body).into_owned()
}

#[tokio::test]
async fn a_webhook_with_synchronous_imports_is_served_without_a_fiber() {
    let runtime = Runtime::new(&RuntimeSettings::default()).expect("runtime");
    let channel = hostile(&runtime, Duration::from_secs(1)).await;
    assert!(channel.plugin.serves_webhooks_fiberless());
    for id in ["a", "b", "c"] {
        let outcome = channel
            .handle_webhook(&request(&format!("mode=ok&id={id}")))
            .await
            .expect("call")
            .expect("outcome");
        assert_eq!(outcome.events[0].external_id, id);
    }
    assert!(
        channel.plugin.serves_webhooks_fiberless(),
        "an import-free webhook keeps the fiberless path"
    );
}

#[tokio::test]
async fn a_webhook_reaching_fetch_is_made_again_on_the_async_path_and_stays_there() {
    let runtime = Runtime::new(&RuntimeSettings::default()).expect("runtime");
    let channel = hostile(&runtime, Duration::from_secs(1)).await;
    let outcome = channel
        .handle_webhook(&request("mode=fetch-denied"))
        .await
        .expect("call")
        .expect("outcome");
    // The fetch ran on the async path and was refused there, as before.
    assert!(response_text(&outcome).contains("Denied"), "{outcome:?}");
    assert!(!channel.plugin.serves_webhooks_fiberless());
    let outcome = channel
        .handle_webhook(&request("mode=ok&id=after"))
        .await
        .expect("call")
        .expect("outcome");
    assert_eq!(outcome.events[0].external_id, "after");
}

// One thread: what a fiberless call blocks is everything else on it.
#[tokio::test(flavor = "current_thread")]
async fn a_runaway_guest_leaves_the_thread_after_a_slice_and_still_hits_its_deadline() {
    let runtime = Runtime::new(&RuntimeSettings::default()).expect("runtime");
    let deadline = Duration::from_millis(400);
    let channel = hostile(&runtime, deadline).await;
    let spin = request("mode=loop");
    let started = Instant::now();
    let looping = channel.handle_webhook(&spin);
    let other = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        started.elapsed()
    };
    let (outcome, other_done) = tokio::join!(looping, other);
    let took = started.elapsed();
    assert!(
        matches!(outcome, Err(CallError::Deadline { .. })),
        "{outcome:?}"
    );
    // Stopped near its deadline (the slice's ticks count against it), not twice it.
    assert!(took >= deadline - Duration::from_millis(50), "{took:?}");
    assert!(took < deadline * 2, "{took:?}");
    // The other task ran while the guest was still spinning: the fiberless call let go
    // of the thread after its slice (10–20 ms), the async one yields every tick.
    assert!(other_done < deadline / 2, "{other_done:?}");
    assert!(
        channel.plugin.serves_webhooks_fiberless(),
        "a slow call does not take the plugin off the fiberless path"
    );
}

#[tokio::test]
async fn a_panic_is_still_a_trap() {
    let runtime = Runtime::new(&RuntimeSettings::default()).expect("runtime");
    let channel = hostile(&runtime, Duration::from_secs(1)).await;
    let outcome = channel.handle_webhook(&request("mode=panic")).await;
    assert!(
        matches!(outcome, Err(CallError::Trap { .. })),
        "{outcome:?}"
    );
}
