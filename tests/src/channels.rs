//! Pieces shared by the channel end-to-end tests (`channel_*.rs`, `webchat.rs`,
//! `sandbox.rs`): common constants and configuration, plugin fixtures, Meta-signed
//! deliveries, and the usual "wait for the conversation, then reply through `/v1`" steps.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Answer, FakeApi, Gateway, Receiver, Recorded, hub_signature, post, root};

/// The Standard Webhooks secret of the test subscription (`[[subscriptions]]`); the
/// [`Receiver`] verifies deliveries with it.
pub const SUBSCRIPTION_SECRET: &str = "whsec_c3Vic2NyaXB0aW9uLXNlY3JldC1mb3ItdGVzdHM=";

/// The API key configured in `[api] keys` (keys must be at least 16 characters).
pub const API_KEY: &str = "test-api-key-0123456789";

/// How long a test waits for deliveries before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// Headers of an authenticated JSON call to `/v1`: `Authorization: Bearer <API_KEY>` and
/// `Content-Type: application/json`.
pub fn api_auth() -> Vec<(String, String)> {
    vec![
        ("authorization".to_owned(), format!("Bearer {API_KEY}")),
        ("content-type".to_owned(), "application/json".to_owned()),
    ]
}

/// The `[[subscriptions]]` table: `receiver` subscribed with [`SUBSCRIPTION_SECRET`].
/// It ends inside that table, so keys appended right after it belong to the subscription.
pub fn subscription_config(receiver: &Receiver) -> String {
    format!(
        r#"
        [[subscriptions]]
        url = "{url}"
        secret = "{SUBSCRIPTION_SECRET}"
        "#,
        url = receiver.url,
    )
}

/// `allow_networks` value for tests: receivers, fake providers and sites all listen on
/// loopback, which the gateway refuses to reach unless allowed.
pub const LOOPBACK: &str = r#"["127.0.0.0/8"]"#;

/// The configuration every channel test shares: `[api]` with [`API_KEY`], `[plugins]`
/// and `[delivery]` allowing [`LOOPBACK`], `[delivery]` with a short retry schedule, and
/// [`subscription_config`] (last, so keys appended right after it belong to the
/// subscription).
pub fn common_config(receiver: &Receiver) -> String {
    format!(
        r#"
        [api]
        keys = ["{API_KEY}"]
        [plugins]
        allow_networks = {LOOPBACK}
        [delivery]
        retry_schedule = ["100ms", "200ms"]
        allow_networks = {LOOPBACK}
        {subscription}"#,
        subscription = subscription_config(receiver),
    )
}

/// The web chat channel `web` served by the plugin at `plugin`, its site signing with
/// `secret` and taking replies at `site`, then [`common_config`] (its subscription last,
/// so a caller may append keys to it).
pub fn webchat_channel_config(
    plugin: &std::path::Path,
    secret: &str,
    site: &FakeApi,
    receiver: &Receiver,
) -> String {
    format!(
        r#"
        [[channels]]
        id = "web"
        plugin = {plugin}
        allowed_hosts = ["http://{site}"]
        config = {{ callback_url = "{site_url}/omnigate/replies" }}
        secrets = {{ signing_secret = "{secret}" }}
        {common}
        "#,
        plugin = crate::toml_path(plugin),
        site = site.authority,
        site_url = site.url,
        common = common_config(receiver),
    )
}

/// Start a channel test: a fake provider answering with `provider`, a [`Receiver`] for
/// [`SUBSCRIPTION_SECRET`], and a gateway configured with `config(&provider, &receiver)`.
pub async fn start_channel(
    provider: impl Fn(&Recorded) -> Answer + Send + Sync + 'static,
    config: impl FnOnce(&FakeApi, &Receiver) -> String,
) -> (Gateway, Receiver, FakeApi) {
    let provider = FakeApi::start(provider).await.expect("provider");
    let receiver = Receiver::start(SUBSCRIPTION_SECRET)
        .await
        .expect("receiver");
    let gateway = Gateway::start(&config(&provider, &receiver))
        .await
        .expect("gateway");
    (gateway, receiver, provider)
}

fn fixtures_dir(plugin: &str) -> std::path::PathBuf {
    root().join("plugins").join(plugin).join("fixtures")
}

/// The fixture `name` of `plugin` (`plugins/<plugin>/fixtures/<name>`).
pub fn fixture(plugin: &str, name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir(plugin).join(name)).expect("fixture")
}

/// The names of all `*.json` fixtures of `plugin`, sorted.
pub fn fixture_names(plugin: &str) -> Vec<String> {
    fixture_names_ending(plugin, ".json")
}

/// The names of all fixtures of `plugin` ending in `suffix` (e.g. `.form`), sorted.
pub fn fixture_names_ending(plugin: &str, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir(plugin))
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// The `X-Hub-Signature-256` header for `body`, signed with `app_secret`.
pub fn meta_signature_header(app_secret: &str, body: &[u8]) -> (String, String) {
    (
        "x-hub-signature-256".to_owned(),
        hub_signature(app_secret, body),
    )
}

/// Headers of a Meta webhook delivery of `body`: JSON content type and
/// [`meta_signature_header`].
pub fn meta_signed_headers(app_secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        meta_signature_header(app_secret, body),
    ]
}

/// POST `body` to the channel's webhook `/webhooks/<channel>` as Meta would (signed with
/// `app_secret`); returns status and body text.
pub async fn deliver_meta(
    gateway: &Gateway,
    channel: &str,
    app_secret: &str,
    body: &[u8],
) -> (u16, String) {
    post(
        &gateway.url(&format!("/webhooks/{channel}")),
        &meta_signed_headers(app_secret, body),
        body.to_vec(),
    )
    .await
    .expect("post")
}

/// The URL of Meta's subscription handshake (`hub.mode=subscribe`) for `channel`.
pub fn meta_handshake_url(
    gateway: &Gateway,
    channel: &str,
    challenge: &str,
    verify_token: &str,
) -> String {
    gateway.url(&format!(
        "/webhooks/{channel}?hub.mode=subscribe&hub.challenge={challenge}&hub.verify_token={verify_token}"
    ))
}

/// The `external_id` of every verified delivery so far, in arrival order.
pub fn external_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .events()
        .iter()
        .filter_map(|e| e["data"]["external_id"].as_str().map(str::to_owned))
        .collect()
}

/// Poll `probe` every 20 ms until it gives a value; after [`WAIT`], panic with what it
/// last said was missing.
pub async fn eventually<T>(mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(missing) => assert!(Instant::now() < deadline, "{missing}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for a probe that awaits (a browser, an HTTP call): polled every 100 ms
/// until it gives a value; after [`WAIT`], panic with what it last said was missing.
pub async fn eventually_async<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(missing) => assert!(Instant::now() < deadline, "{missing}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Post `body` to the web chat channel `channel` of `gateway`, signed (Standard
/// Webhooks) with the site's `secret`; panics unless it is accepted.
pub async fn send_webchat(gateway: &Gateway, channel: &str, secret: &str, body: &Value) {
    let body = body.to_string().into_bytes();
    let headers =
        crate::standard_webhooks_headers(secret, &format!("wh_{}", ulid::Ulid::generate()), &body)
            .expect("sign");
    let (status, answer) = post(
        &gateway.url(&format!("/webhooks/{channel}")),
        &headers,
        body,
    )
    .await
    .expect("post");
    assert!((200..300).contains(&status), "{status} {answer}");
}

/// Wait until, for every id in `expected`, some delivered external id `matches(delivered,
/// expected)`; fails after [`WAIT`] naming the ids never delivered.
pub async fn wait_for_external_ids(
    receiver: &Receiver,
    expected: &[String],
    matches: impl Fn(&str, &str) -> bool,
) {
    eventually(|| {
        let delivered = external_ids(receiver);
        let missing: Vec<&String> = expected
            .iter()
            .filter(|id| !delivered.iter().any(|d| matches(d, id)))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("never delivered: {missing:#?}"))
        }
    })
    .await
}

/// The first `message.received` event (its `data`), waiting for it up to [`WAIT`].
pub async fn first_received(receiver: &Receiver) -> Value {
    eventually(|| {
        let received = receiver.of_type("message.received");
        received
            .into_iter()
            .next()
            .ok_or_else(|| "no message.received delivered".to_owned())
    })
    .await
}

/// The `/v1` URL to reply in the conversation of `event` (a normalized event, the `data`
/// of a delivery): `/v1/conversations/<id>/messages`.
pub fn reply_url(gateway: &Gateway, event: &Value) -> String {
    let conversation = event["conversation"]["id"].as_str().expect("conversation");
    gateway.url(&format!("/v1/conversations/{conversation}/messages"))
}

/// POST the reply `{"text": text}` to `url` with [`api_auth`]; returns status and body text.
pub async fn send_reply(url: &str, text: &str) -> (u16, String) {
    post(url, &api_auth(), json!({ "text": text }).to_string())
        .await
        .expect("reply")
}

/// The `error.code` and `error.message` of a JSON error answer (empty when absent).
pub fn api_error(body: &str) -> (String, String) {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let field = |name: &str| value["error"][name].as_str().unwrap_or_default().to_owned();
    (field("code"), field("message"))
}
