//! `GET /metrics`: the Prometheus counters match what the test sent, by channel and
//! outcome; plugin, pipeline and store series are present.

use std::time::{Duration, Instant};

use omnigate_tests::{
    Gateway, LOOPBACK, Receiver, SUBSCRIPTION_SECRET, get, plugin_path, post,
    standard_webhooks_headers, toml_path,
};
use serde_json::json;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A channel id no other test in this binary uses: the recorder is process-wide.
const CHANNEL: &str = "metrics-web";

fn config(receiver: &Receiver) -> String {
    format!(
        r#"
        [metrics]
        stage_sample = 1
        [delivery]
        allow_networks = {LOOPBACK}
        [[subscriptions]]
        id = "metrics-sub"
        url = "{url}"
        secret = "{SUBSCRIPTION_SECRET}"
        events = ["message.*"]
        [[channels]]
        id = "{CHANNEL}"
        plugin = {plugin}
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SECRET}" }}
        "#,
        plugin = toml_path(&plugin_path("webchat")),
        url = receiver.url,
    )
}

fn message(id: &str) -> Vec<u8> {
    json!({"type": "message", "id": id, "visitor": {"id": "v-1"}, "text": "hola"})
        .to_string()
        .into_bytes()
}

async fn send(gateway: &Gateway, channel: &str, body: &[u8], secret: &str) -> u16 {
    let headers =
        standard_webhooks_headers(secret, &format!("wh_{}", ulid::Ulid::generate()), body)
            .expect("sign");
    post(
        &gateway.url(&format!("/webhooks/{channel}")),
        &headers,
        body.to_vec(),
    )
    .await
    .expect("post")
    .0
}

/// The value of the sample line `name{labels}` (labels exactly as rendered), or 0.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_match_the_traffic_sent() {
    let receiver = Receiver::start(SUBSCRIPTION_SECRET)
        .await
        .expect("receiver");
    let gateway = Gateway::start(&config(&receiver)).await.expect("gateway");
    for id in ["m-1", "m-2", "m-3"] {
        assert_eq!(send(&gateway, CHANNEL, &message(id), SECRET).await, 200);
    }
    // A provider retry of m-1: accepted again (200), deduped into no new event.
    assert_eq!(send(&gateway, CHANNEL, &message("m-1"), SECRET).await, 200);
    let forged = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for id in ["x-1", "x-2"] {
        assert_eq!(send(&gateway, CHANNEL, &message(id), forged).await, 401);
    }
    assert_eq!(
        send(&gateway, "no-such-channel", &message("n-1"), SECRET).await,
        404
    );

    // Every store operation is measured, not only the hot path's.
    let (status, _) = get(&gateway.url("/readyz"), &[]).await.expect("readyz");
    assert_eq!(status, 200);

    // The three messages reach the receiver; then delivery's numbers say so too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (status, text) = get(&gateway.url("/metrics"), &[]).await.expect("metrics");
        assert_eq!(status, 200);
        if sample(
            &text,
            r#"omnigate_delivery_delivered_total{subscription="metrics-sub"}"#,
        ) >= 3.0
        {
            break text;
        }
        assert!(Instant::now() < deadline, "deliveries not counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sample(
            &text,
            r#"omnigate_delivery_delivered_total{subscription="metrics-sub"}"#
        ),
        3.0,
        "{text}"
    );
    assert_eq!(receiver.requests().len(), 3);
    assert_eq!(
        sample(
            &text,
            r#"omnigate_delivery_latency_seconds_count{subscription="metrics-sub"}"#
        ),
        3.0,
        "{text}"
    );
    assert!(
        text.contains(r#"omnigate_delivery_backlog{subscription="metrics-sub"} 0"#),
        "{text}"
    );
    let webhooks = |outcome: &str| {
        sample(
            &text,
            &format!(r#"omnigate_webhooks_total{{channel="{CHANNEL}",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(webhooks("accepted"), 4.0, "{text}");
    // Loading a plugin asks it to describe itself: no series of a channel named so.
    assert!(!text.contains("(describe)"), "{text}");
    assert_eq!(webhooks("unauthorized"), 2.0, "{text}");
    let events = |fate: &str| {
        sample(
            &text,
            &format!(r#"omnigate_events_total{{channel="{CHANNEL}",fate="{fate}"}}"#),
        )
    };
    assert_eq!(events("accepted"), 3.0, "{text}");
    assert_eq!(events("duplicate"), 1.0, "{text}");
    assert!(
        sample(
            &text,
            r#"omnigate_webhooks_total{channel="unknown",outcome="unknown_channel"}"#
        ) >= 1.0,
        "{text}"
    );
    // Every handle-webhook call was timed (the refused ones too: the plugin refused them).
    let plugin = "webchat@";
    let calls = text
        .lines()
        .filter(|line| {
            line.starts_with("omnigate_plugin_call_duration_seconds_count")
                && line.contains(plugin)
                && line.contains(r#"function="handle-webhook""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(calls >= 6.0, "{text}");
    for series in [
        r#"omnigate_pipeline_stage_duration_seconds_count{stage="normalize"}"#,
        r#"omnigate_store_operation_duration_seconds_count{backend="memory",operation="ingest"}"#,
    ] {
        assert!(sample(&text, series) >= 3.0, "{series} missing in\n{text}");
    }
    let pings =
        r#"omnigate_store_operation_duration_seconds_count{backend="memory",operation="ping"}"#;
    assert!(sample(&text, pings) >= 1.0, "{pings} missing in\n{text}");
    assert!(
        text.lines()
            .any(|line| line.starts_with("omnigate_plugin_active{")
                && line.contains(&format!(r#"channel="{CHANNEL}""#))
                && line.ends_with(" 1")),
        "{text}"
    );
    gateway.stop().await;
}
