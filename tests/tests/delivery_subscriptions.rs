//! `/v1/subscriptions` end to end on a shared Redis outbox with two gateway instances:
//! create on one instance and deliver from the other, test-send, rotate a secret, read-only
//! configured subscriptions, automatic disable of a failing subscription and re-enable
//! (its waiting events then arrive in order), delete.

use std::time::Duration;

use omnigate_tests::api_call as call;
use omnigate_tests::downstream::{Downstream, Mode};
use omnigate_tests::redis::RedisServer;
use omnigate_tests::{
    API_KEY, Gateway, LOOPBACK, SUBSCRIPTION_SECRET, api_auth, get, plugin_path, post,
    standard_webhooks_headers, toml_path,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_cm90YXRlZC1zdWJzY3JpcHRpb24tc2VjcmV0LWtleSEh";
const WAIT: Duration = Duration::from_secs(30);

fn config(redis: &RedisServer, flaky: &Downstream) -> String {
    format!(
        r#"
        [api]
        keys = ["{API_KEY}"]
        [store]
        url = "{redis}"
        [delivery]
        partitions = 2
        lease_ttl = "1500ms"
        poll_interval = "20ms"
        retry_schedule = ["100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]
        disable_after = "1s"
        allow_networks = {LOOPBACK}
        [[channels]]
        id = "web"
        plugin = {plugin}
        allowed_hosts = ["http://127.0.0.1:9"]
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        [[subscriptions]]
        id = "flaky"
        url = "{flaky}"
        secret = "{SUBSCRIPTION_SECRET}"
        events = ["message.received"]
        "#,
        redis = redis.url(),
        plugin = toml_path(&plugin_path("webchat")),
        flaky = flaky.url(),
    )
}

async fn send(gateway: &Gateway, id: &str) {
    let body = json!({
        "type": "message", "id": id, "visitor": {"id": "v1"}, "text": id,
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

/// Polls `GET path` on `gateway` until `check` holds.
async fn until(gateway: &Gateway, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, text) = get(&gateway.url(path), &api_auth()).await.expect("get");
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 && check(&value) {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(downstream: &Downstream, kind: &str) -> Vec<String> {
    downstream
        .accepted()
        .into_iter()
        .filter(|s| s.kind == kind)
        .filter_map(|s| s.external_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_api_across_instances() {
    let redis = RedisServer::start().expect("redis");
    let flaky = Downstream::start(&[SUBSCRIPTION_SECRET], Mode::Fail(503, None))
        .await
        .expect("receiver");
    let crm = Downstream::start(&[NEW_SECRET, SUBSCRIPTION_SECRET], Mode::Accept)
        .await
        .expect("receiver");
    let text = config(&redis, &flaky);
    let first = Gateway::start(&text).await.expect("gateway 1");
    let second = Gateway::start(&text).await.expect("gateway 2");

    // Create on the first instance; the second one learns about it.
    let (status, created) = call(
        &first,
        "POST",
        "/v1/subscriptions",
        Some(json!({"id": "crm", "url": crm.url(), "secret": SUBSCRIPTION_SECRET, "events": ["message.*"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["origin"].as_str(), created["enabled"].as_bool()),
        (Some("api"), Some(true))
    );
    assert!(created.get("secret").is_none(), "secrets are never shown");
    let (status, body) = call(
        &first,
        "POST",
        "/v1/subscriptions",
        Some(json!({"id": "crm", "url": crm.url(), "secret": SUBSCRIPTION_SECRET})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("subscription_exists"))
    );
    let (status, body) = call(
        &first,
        "POST",
        "/v1/subscriptions",
        Some(json!({"url": "ftp://x", "secret": SUBSCRIPTION_SECRET})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_subscription"))
    );
    until(
        &second,
        "/v1/subscriptions",
        "the second instance sees it",
        |v| {
            v["subscriptions"]
                .as_array()
                .is_some_and(|all| all.iter().any(|s| s["id"] == "crm"))
        },
    )
    .await;
    // Give the second instance's sync one more round so its workers run, then publish there.
    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&second, "m-001").await;
    crm.wait_until("m-001", WAIT, |a| {
        a.iter().any(|s| s.external_id.as_deref() == Some("m-001"))
    })
    .await
    .expect("delivered to the API subscription");

    // Test send: one signed ping, answered by the receiver.
    let (status, result) = call(&second, "POST", "/v1/subscriptions/crm/test", None).await;
    assert_eq!(
        (status, result["delivered"].as_bool()),
        (200, Some(true)),
        "{result}"
    );
    assert!(
        crm.accepted()
            .iter()
            .any(|s| s.kind == "ping" && s.verified_by == [1])
    );

    // Rotation: a new secret; the old one keeps signing during the grace period.
    let (status, updated) = call(
        &first,
        "PATCH",
        "/v1/subscriptions/crm",
        Some(json!({"secret": NEW_SECRET, "rotation_grace": "1h"})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert!(updated["previous_secret_expires"].is_string());
    tokio::time::sleep(Duration::from_millis(600)).await;
    send(&first, "m-002").await;
    let rotated = crm
        .wait_until("m-002", WAIT, |a| {
            a.iter().any(|s| s.external_id.as_deref() == Some("m-002"))
        })
        .await
        .expect("delivered after rotation");
    let m2 = rotated
        .iter()
        .find(|s| s.external_id.as_deref() == Some("m-002"))
        .expect("m-002");
    assert_eq!(m2.verified_by, [0, 1], "new and old secret both verify");

    // Configured subscriptions are read-only here.
    let (status, body) = call(
        &first,
        "PATCH",
        "/v1/subscriptions/flaky",
        Some(json!({"history": 3})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("config_subscription"))
    );
    let (status, _) = call(&first, "DELETE", "/v1/subscriptions/flaky", None).await;
    assert_eq!(status, 409);

    // `flaky` has been failing since m-001: disabled automatically after `disable_after`.
    let flaky_view = until(&first, "/v1/subscriptions/flaky", "flaky disabled", |v| {
        v["enabled"] == false
    })
    .await;
    assert!(
        flaky_view["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("failed")),
        "{flaky_view}"
    );
    send(&first, "m-003").await;
    // Fixed and re-enabled: everything it missed arrives, in order.
    flaky.set(Mode::Accept);
    let (status, enabled) = call(&second, "POST", "/v1/subscriptions/flaky/enable", None).await;
    assert_eq!(
        (status, enabled["enabled"].as_bool()),
        (200, Some(true)),
        "{enabled}"
    );
    flaky
        .wait_until("everything after re-enable", WAIT, |_| {
            ids(&flaky, "message.received").len() >= 3
        })
        .await
        .expect("waiting events delivered");
    // Each instance has its own memory context store: m-001 (second instance) is another
    // conversation than m-002 and m-003 (first instance), which must stay in order.
    let (per_conversation, _) = flaky.accepted_by_conversation();
    let mut all: Vec<String> = Vec::new();
    for seen in per_conversation.values() {
        let ids: Vec<String> = seen.iter().filter_map(|s| s.external_id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "order within a conversation");
        all.extend(ids);
    }
    all.sort();
    assert_eq!(all, ["m-001", "m-002", "m-003"]);

    // Delete: gone everywhere, nothing more delivered to it.
    let (status, _) = call(&second, "DELETE", "/v1/subscriptions/crm", None).await;
    assert_eq!(status, 204);
    let (status, body) = call(&first, "GET", "/v1/subscriptions/crm", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_subscription"))
    );
    until(&second, "/v1/subscriptions", "deleted everywhere", |v| {
        v["subscriptions"]
            .as_array()
            .is_some_and(|all| all.iter().all(|s| s["id"] != "crm"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = crm.seen().len();
    send(&first, "m-004").await;
    flaky
        .wait_until("m-004 at flaky", WAIT, |a| {
            a.iter().any(|s| s.external_id.as_deref() == Some("m-004"))
        })
        .await
        .expect("the remaining subscription still gets events");
    assert_eq!(
        crm.seen().len(),
        before,
        "a deleted subscription gets nothing"
    );
    first.stop().await;
    second.stop().await;
}
