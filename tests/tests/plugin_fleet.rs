//! Many gateway instances on one Redis share the plugin registry: an activation or a
//! rollback on one instance is live on all of them within a bound, an instance that missed
//! the announcement catches up, a late instance starts on the fleet's version, and the
//! registry's compare-and-set refuses a stale activation. Destination plugins follow the
//! same registry.

use std::time::{Duration, Instant};

use futures::future::join_all;
use omnigate::store::StoreError;
use omnigate::store::open_plugins;
use omnigate::store::plugins::{Activation, Change, PluginRecord};
use omnigate_tests::redis::{RedisCluster, RedisServer};
use omnigate_tests::{
    Gateway, get, guest_path, plugin_path, post, standard_webhooks_headers, toml_path,
};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ADMIN_KEY: &str = "admin-fleet-key-0123456";
/// What each version answers a webhook with: tells which one served a request.
const WEBCHAT_ANSWER: &str = r#"{"ok":true}"#;
const HOSTILE_ANSWER: &str = "ok";
/// How long an activation may take to reach every instance through pub/sub.
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

/// A gateway on `redis_url` whose periodic reconcile is `reconcile` (long: only the
/// announcements can carry a change within the bound).
fn config(redis_url: &str, reconcile: &str) -> String {
    format!(
        r#"
        [store]
        url = "{redis_url}"
        [admin]
        keys = ["{ADMIN_KEY}"]
        [plugins]
        reconcile_interval = "{reconcile}"
        [[channels]]
        id = "web"
        plugin = {plugin}
        config = {{ callback_url = "http://127.0.0.1:9/replies" }}
        secrets = {{ signing_secret = "{SECRET}" }}
        "#,
        plugin = toml_path(&plugin_path("webchat")),
    )
}

fn admin() -> Vec<(String, String)> {
    vec![
        ("authorization".into(), format!("Bearer {ADMIN_KEY}")),
        ("content-type".into(), "application/json".into()),
    ]
}

/// The body of the answer to one distinct signed web chat message (routed so that the
/// hostile guest, mode `ok`, accepts it too).
async fn answer(gateway: &Gateway) -> String {
    let id = ulid::Ulid::generate().to_string();
    let body = json!({"type": "message", "id": id, "visitor": {"id": "v-fleet"}, "text": "hola"})
        .to_string()
        .into_bytes();
    let headers = standard_webhooks_headers(SECRET, &format!("wh_{id}"), &body).expect("sign");
    let (status, body) = post(
        &gateway.url(&format!("/webhooks/web?mode=ok&id={id}")),
        &headers,
        body,
    )
    .await
    .expect("webhook");
    assert_eq!(status, 200, "{body}");
    body
}

/// Send messages until `gateway` answers with `expected`; the time it took.
async fn served_within(gateway: &Gateway, expected: &str, bound: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if answer(gateway).await == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "{} still not served by the expected version after {bound:?}",
            gateway.base
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_post(gateway: &Gateway, path: &str, body: Vec<u8>) -> (u16, Value) {
    let (status, body) = post(&gateway.url(path), &admin(), body)
        .await
        .expect("admin");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn listing(gateway: &Gateway) -> Value {
    let (status, body) = get(&gateway.url("/admin/plugins"), &admin())
        .await
        .expect("list");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_and_rollback_on_one_instance_reach_all_three() {
    let redis = RedisServer::start().expect("redis");
    let config = config(&redis.url(), "1h");
    let fleet = join_all((0..3).map(|_| Gateway::start(&config))).await;
    let fleet: Vec<Gateway> = fleet.into_iter().map(|g| g.expect("gateway")).collect();
    for gateway in &fleet {
        assert_eq!(answer(gateway).await, WEBCHAT_ANSWER);
    }

    // Upload and activate on the first instance only.
    let hostile = std::fs::read(guest_path("hostile")).expect("hostile guest built");
    let (status, reply) = admin_post(&fleet[0], "/admin/plugins?activate=web", hostile).await;
    assert_eq!(status, 201, "{reply}");
    let new_digest = reply["plugin"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for gateway in &fleet {
        served_within(gateway, HOSTILE_ANSWER, PROPAGATION_BOUND).await;
    }
    // The others fetched the version from the shared registry and list it as active, with
    // the configured version as what a rollback returns to.
    let list = listing(&fleet[2]).await;
    let web = &list["channels"][0];
    assert_eq!(web["digest"], new_digest.as_str(), "{list}");
    assert_eq!(web["plugin"], "hostile@0.1.0", "{list}");
    assert_eq!(web["previous"].as_array().map(Vec::len), Some(1), "{list}");

    // Roll back from another instance.
    let (status, reply) = admin_post(&fleet[1], "/admin/channels/web/rollback", Vec::new()).await;
    assert_eq!(status, 200, "{reply}");
    for gateway in &fleet {
        served_within(gateway, WEBCHAT_ANSWER, PROPAGATION_BOUND).await;
    }
    // Nothing earlier is left to roll back to, on any instance.
    let (status, reply) = admin_post(&fleet[2], "/admin/channels/web/rollback", Vec::new()).await;
    assert_eq!(status, 409, "{reply}");

    // Activate by digest on an instance that never received the upload, then start a
    // fourth instance: it serves the fleet's version, not its configured file.
    let body = json!({ "digest": new_digest }).to_string().into_bytes();
    let (status, reply) = admin_post(&fleet[2], "/admin/channels/web/activate", body).await;
    assert_eq!(status, 200, "{reply}");
    let late = Gateway::start(&config).await.expect("late gateway");
    assert_eq!(answer(&late).await, HOSTILE_ANSWER);
    for gateway in fleet.iter().chain([&late]) {
        served_within(gateway, HOSTILE_ANSWER, PROPAGATION_BOUND).await;
    }
    for gateway in fleet.into_iter().chain([late]) {
        gateway.stop().await;
    }
}

/// The plugin serving `destination:<id>` on `gateway`, per its listing.
async fn destination_plugin(gateway: &Gateway, id: &str) -> String {
    let list = listing(gateway).await;
    let key = format!("destination:{id}");
    list["channels"]
        .as_array()
        .and_then(|all| all.iter().find(|active| active["channel"] == key.as_str()))
        .and_then(|active| active["plugin"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_activation_reaches_the_fleet_and_a_late_instance() {
    let redis = RedisServer::start().expect("redis");
    let config = format!(
        r#"{channels}
        [[destinations]]
        id = "meta"
        plugin = {meta}
        config = {{ api_base = "http://127.0.0.1:9", dataset_id = "998877" }}
        secrets = {{ access_token = "EAAB-meta-system-user-token" }}
        "#,
        channels = config(&redis.url(), "1h"),
        meta = toml_path(&plugin_path("meta-capi")),
    );
    let fleet = join_all((0..2).map(|_| Gateway::start(&config))).await;
    let fleet: Vec<Gateway> = fleet.into_iter().map(|g| g.expect("gateway")).collect();
    for gateway in &fleet {
        assert_eq!(destination_plugin(gateway, "meta").await, "meta-capi@0.1.0");
    }
    let recorder = std::fs::read(guest_path("recorder")).expect("recorder guest built");
    let (status, reply) = admin_post(
        &fleet[0],
        "/admin/plugins?activate=destination:meta",
        recorder,
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let started = Instant::now();
    while destination_plugin(&fleet[1], "meta").await != "recorder@0.1.0" {
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "the other instance still serves {}",
            destination_plugin(&fleet[1], "meta").await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A late instance starts on the fleet's version, not its configured file.
    let late = Gateway::start(&config).await.expect("late gateway");
    assert_eq!(destination_plugin(&late, "meta").await, "recorder@0.1.0");
    // The channel's activation is its own: still the configured web chat plugin.
    assert_eq!(answer(&late).await, WEBCHAT_ANSWER);
    for gateway in fleet.into_iter().chain([late]) {
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_missed_the_announcement_catches_up() {
    let redis = RedisServer::start().expect("redis");
    let config = config(&redis.url(), "1h");
    let first = Gateway::start(&config).await.expect("gateway");
    let second = Gateway::start(&config).await.expect("gateway");
    assert_eq!(answer(&second).await, WEBCHAT_ANSWER);

    // Drop every subscriber's connection, then activate at once: the announcement goes
    // out while nobody listens. The feed resubscribes and reconciles.
    let killed = redis
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("client kill");
    assert!(
        killed.trim() != "0",
        "no subscriber was connected: {killed}"
    );
    let hostile = std::fs::read(guest_path("hostile")).expect("hostile guest built");
    let (status, reply) = admin_post(&first, "/admin/plugins?activate=web", hostile).await;
    assert_eq!(status, 201, "{reply}");
    served_within(&second, HOSTILE_ANSWER, PROPAGATION_BOUND).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_reconcile_applies_changes_made_behind_the_gateways_back() {
    let redis = RedisServer::start().expect("redis");
    let gateway = Gateway::start(&config(&redis.url(), "300ms"))
        .await
        .expect("gateway");
    // Another instance's registry writes, with the announcement feed of this test only.
    let registry = open_plugins(&redis.url()).expect("registry");
    let wasm = std::fs::read(guest_path("hostile")).expect("hostile guest built");
    let digest = sha256_hex(&wasm);
    registry
        .put_version(&record(&digest, wasm.len()), &wasm)
        .await
        .expect("put");
    registry
        .activate("web", None, &activation(&digest, Vec::new()))
        .await
        .expect("activate");
    served_within(&gateway, HOSTILE_ANSWER, PROPAGATION_BOUND).await;
    gateway.stop().await;
}

/// The registry contract on one server and on a 3-master cluster: versions kept once,
/// compare-and-set activations, announcements heard by a subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_compare_and_set_and_announcements_on_redis_and_cluster() {
    let server = RedisServer::start().expect("redis");
    registry_contract(&server.url()).await;
    let cluster = RedisCluster::start().expect("cluster");
    registry_contract(&cluster.urls().join(",")).await;
}

async fn registry_contract(url: &str) {
    let registry = open_plugins(url).expect("registry");
    let mut changes = registry.changes();
    let first = next_change(&mut changes).await;
    assert_eq!(first, Change::Resubscribed, "{url}");

    let record = record("d1", 3);
    registry.put_version(&record, b"abc").await.expect("put");
    let again = PluginRecord {
        source: "elsewhere".into(),
        ..record.clone()
    };
    registry
        .put_version(&again, b"xyz")
        .await
        .expect("put again");
    assert_eq!(registry.versions().await.expect("versions"), vec![record]);
    assert_eq!(
        registry.wasm("d1").await.expect("wasm").as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(registry.wasm("d2").await.expect("wasm"), None);

    let revision = registry
        .activate("web", None, &activation("d1", Vec::new()))
        .await
        .expect("first activation");
    assert_eq!(
        next_change(&mut changes).await,
        Change::Announced(revision),
        "{url}"
    );
    // A writer that read before the first activation loses; one that read after wins.
    let stale = registry
        .activate("web", None, &activation("d2", Vec::new()))
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let next = registry
        .activate("web", Some("d1"), &activation("d2", vec!["d1".into()]))
        .await
        .expect("second activation");
    assert_eq!(next, revision + 1);
    assert_eq!(
        next_change(&mut changes).await,
        Change::Announced(next),
        "{url}"
    );
    let all = registry.activations().await.expect("activations");
    assert_eq!(all.revision, next);
    assert_eq!(all.channels["web"].digest, "d2");
    assert_eq!(all.channels["web"].history, vec!["d1".to_owned()]);
}

async fn next_change(changes: &mut tokio::sync::mpsc::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("a change within 10 s")
        .expect("feed open")
}

fn record(digest: &str, size: usize) -> PluginRecord {
    PluginRecord {
        digest: digest.to_owned(),
        name: "hostile".into(),
        version: "0.1.0".into(),
        world: "omnigate:channel/channel@0.1.0".into(),
        size,
        source: "test".into(),
        added_at: jiff::Timestamp::now(),
        signature: None,
    }
}

fn activation(digest: &str, history: Vec<String>) -> Activation {
    Activation {
        digest: digest.to_owned(),
        since: jiff::Timestamp::now(),
        history,
        by: "test".into(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
