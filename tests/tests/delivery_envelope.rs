//! What a downstream tool receives: signatures verified with the stock `standardwebhooks`
//! crate during a secret rotation (old and new both accepted in the grace period, only the
//! new one after), CloudEvents binary mode, and the W3C `traceparent`.

use std::time::Duration;

use omnigate_tests::downstream::{Downstream, Mode};
use omnigate_tests::{
    Gateway, LOOPBACK, SUBSCRIPTION_SECRET, plugin_path, post, standard_webhooks_headers, toml_path,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_cm90YXRlZC1zdWJzY3JpcHRpb24tc2VjcmV0LWtleSEh";
const WAIT: Duration = Duration::from_secs(20);

fn config(rotating: &Downstream, rotated: &Downstream, binary: &Downstream) -> String {
    format!(
        r#"
        [delivery]
        retry_schedule = ["100ms", "100ms", "100ms"]
        allow_networks = {LOOPBACK}
        [[channels]]
        id = "web"
        plugin = {plugin}
        allowed_hosts = ["http://127.0.0.1:9"]
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        [[subscriptions]]
        id = "rotating"
        url = "{rotating}"
        secret = "{NEW_SECRET}"
        previous_secret = "{SUBSCRIPTION_SECRET}"
        previous_secret_expires = "2099-01-01T00:00:00Z"
        events = ["message.received"]
        [[subscriptions]]
        id = "rotated"
        url = "{rotated}"
        secret = "{NEW_SECRET}"
        previous_secret = "{SUBSCRIPTION_SECRET}"
        previous_secret_expires = "2020-01-01T00:00:00Z"
        events = ["message.received"]
        [[subscriptions]]
        id = "binary"
        url = "{binary}"
        secret = "{NEW_SECRET}"
        mode = "binary"
        events = ["message.received"]
        "#,
        plugin = toml_path(&plugin_path("webchat")),
        rotating = rotating.url(),
        rotated = rotated.url(),
        binary = binary.url(),
    )
}

async fn send(gateway: &Gateway, id: &str) {
    let body = json!({
        "type": "message", "id": id, "visitor": {"id": "v1"}, "text": "Hola",
        "sent_at": jiff::Timestamp::now().to_string()
    })
    .to_string()
    .into_bytes();
    let headers = standard_webhooks_headers(SITE_SECRET, &format!("wh_{id}"), &body).expect("sign");
    let (status, _) = post(&gateway.url("/webhooks/web"), &headers, body)
        .await
        .expect("post");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_binary_mode_and_traceparent() {
    // Both secrets configured at the receivers: index 0 = new, 1 = old.
    let secrets = [NEW_SECRET, SUBSCRIPTION_SECRET];
    let rotating = Downstream::start(&secrets, Mode::Accept)
        .await
        .expect("receiver");
    let rotated = Downstream::start(&secrets, Mode::Accept)
        .await
        .expect("receiver");
    let binary = Downstream::start(&secrets, Mode::Fail(503, None))
        .await
        .expect("receiver");
    let gateway = Gateway::start(&config(&rotating, &rotated, &binary))
        .await
        .expect("gateway");
    send(&gateway, "m-1").await;

    // Grace period: the stock library accepts the delivery with either secret alone.
    let seen = rotating
        .wait_until("rotating delivery", WAIT, |a| !a.is_empty())
        .await
        .expect("delivered");
    assert_eq!(
        seen[0].verified_by,
        [0, 1],
        "verifiable with the new and the old secret"
    );
    let signatures = seen[0].headers["webhook-signature"]
        .to_str()
        .expect("ascii");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    // After the grace period: only the new secret.
    let seen = rotated
        .wait_until("rotated delivery", WAIT, |a| !a.is_empty())
        .await
        .expect("delivered");
    assert_eq!(
        seen[0].verified_by,
        [0],
        "the expired secret no longer signs"
    );

    // Binary mode: the event is the body, attributes in ce-* headers; one failed attempt
    // first, so the trace id can be compared across attempts.
    binary
        .wait_until("a refused attempt", WAIT, |_| !binary.seen().is_empty())
        .await
        .expect("first attempt");
    binary.set(Mode::Accept);
    let accepted = binary
        .wait_until("binary delivery", WAIT, |a| !a.is_empty())
        .await
        .expect("delivered");
    let delivery = &accepted[0];
    let header = |name: &str| {
        delivery
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(delivery.verified_by, [0]);
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("ce-specversion"), "1.0");
    assert_eq!(header("ce-type"), "dev.omnigate.message.received");
    assert_eq!(header("ce-source"), "/channels/web");
    let event: &Value = &delivery.body;
    assert_eq!(header("ce-id"), event["id"].as_str().expect("id"));
    assert_eq!(
        header("ce-subject"),
        event["conversation"]["id"].as_str().expect("conversation")
    );
    assert_eq!(event["external_id"], "m-1");
    assert!(
        event.get("specversion").is_none(),
        "no envelope in the body"
    );

    // traceparent: W3C version 00, one trace per event across attempts, new span each.
    let attempts = binary.seen();
    assert!(attempts.len() >= 2);
    let parents: Vec<String> = attempts
        .iter()
        .map(|a| a.headers["traceparent"].to_str().expect("ascii").to_owned())
        .collect();
    for parent in &parents {
        let parts: Vec<&str> = parent.split('-').collect();
        assert_eq!(parts.len(), 4, "{parent}");
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len()),
            ("00", 32, 16),
            "{parent}"
        );
    }
    assert_eq!(
        parents[0][..35],
        parents[1][..35],
        "same trace id across retries"
    );
    assert_ne!(
        parents[0][36..52],
        parents[1][36..52],
        "a new span per attempt"
    );
    gateway.stop().await;
}
