//! Telegram end to end: every fixture update through the real gateway and the built
//! plugin, the secret token check, dedupe on `update_id`, and replies against a fake
//! Bot API (the bot token only ever appears in what the host sent).

use std::time::Duration;

use omnigate_tests::{
    FakeApi, Gateway, Receiver, common_config, fixture_names, json_answer, plugin_path, post,
    reply_url, send_reply, start_channel, toml_path, wait_for_external_ids,
};
use serde_json::{Value, json};

const SECRET_TOKEN: &str = "s3cr3t-T0ken_for-webhooks";
const BOT_TOKEN: &str = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

fn config(bot_api: &FakeApi, receiver: &Receiver) -> String {
    // The fake Bot API is not the plugin's declared host, the token's default scope.
    let scope = format!(
        "secrets_hosts = {{ bot_token = [\"http://{}\"] }}",
        bot_api.authority
    );
    config_with(bot_api, receiver, &scope)
}

/// The channel, with `scope` (a `secrets_hosts` line or nothing).
fn config_with(bot_api: &FakeApi, receiver: &Receiver, scope: &str) -> String {
    format!(
        r#"
        [[channels]]
        id = "tg"
        plugin = {plugin}
        allowed_hosts = ["http://{host}"]
        config = {{ api_base = "{url}", bot_id = "7012345678" }}
        secrets = {{ bot_token = "{BOT_TOKEN}", secret_token = "{SECRET_TOKEN}" }}
        {scope}
        {common}"#,
        plugin = toml_path(&plugin_path("telegram")),
        host = bot_api.authority,
        url = bot_api.url,
        common = common_config(receiver),
    )
}

async fn setup() -> (Gateway, Receiver, FakeApi) {
    start_channel(
        |_| {
            json_answer(200, json!({"ok": true, "result": {"message_id": 57, "chat": {"id": 111222333, "type": "private"}, "date": 1764000800, "text": "ok"}}))
        },
        config,
    )
    .await
}

fn fixture(name: &str) -> Vec<u8> {
    omnigate_tests::fixture("telegram", name)
}

async fn deliver(gateway: &Gateway, body: &[u8], secret: &str) -> (u16, String) {
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "x-telegram-bot-api-secret-token".to_owned(),
            secret.to_owned(),
        ),
    ];
    post(&gateway.url("/webhooks/tg"), &headers, body.to_vec())
        .await
        .expect("post")
}

/// Wait until every update id in `expected` was published as an external id.
async fn wait_for_ids(receiver: &Receiver, expected: &[String]) {
    wait_for_external_ids(receiver, expected, |delivered, id| delivered == id).await;
}

#[tokio::test]
async fn every_fixture_through_the_gateway() {
    let (gateway, receiver, _api) = setup().await;
    let mut expected = Vec::new();
    for name in fixture_names("telegram") {
        let body = fixture(&name);
        let (status, text) = deliver(&gateway, &body, SECRET_TOKEN).await;
        assert_eq!(status, 200, "{name}: {text}");
        let update: Value = serde_json::from_slice(&body).expect("json");
        expected.push(update["update_id"].to_string());
    }
    wait_for_ids(&receiver, &expected).await;
    let received = receiver.of_type("message.received");
    let start = received
        .iter()
        .find(|d| d["external_id"] == "874561200")
        .expect("/start");
    assert_eq!(start["referral"]["source"], "link");
    assert_eq!(
        start["contact"]["id"].as_str().map(str::is_empty),
        Some(false)
    );
    assert_eq!(start["channel"]["account"], "7012345678");
    gateway.stop().await;
}

#[tokio::test]
async fn secret_token_and_dedupe() {
    let (gateway, receiver, _api) = setup().await;
    let body = fixture("text.json");
    assert_eq!(deliver(&gateway, &body, "wrong").await.0, 401);
    assert_eq!(
        post(&gateway.url("/webhooks/tg"), &[], body.clone())
            .await
            .expect("post")
            .0,
        401
    );
    assert!(receiver.events().is_empty());

    assert_eq!(deliver(&gateway, &body, SECRET_TOKEN).await.0, 200);
    assert_eq!(deliver(&gateway, &body, SECRET_TOKEN).await.0, 200);
    assert_eq!(
        deliver(&gateway, &fixture("reply.json"), SECRET_TOKEN)
            .await
            .0,
        200
    );
    wait_for_ids(&receiver, &["874561201".into(), "874561209".into()]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.of_type("message.received").len(), 2);
    gateway.stop().await;
}

async fn conversation_url(gateway: &Gateway, receiver: &Receiver) -> String {
    assert_eq!(
        deliver(gateway, &fixture("text.json"), SECRET_TOKEN)
            .await
            .0,
        200
    );
    wait_for_ids(receiver, &["874561201".into()]).await;
    reply_url(gateway, &receiver.of_type("message.received")[0])
}

/// The bot token travels in the URL path as `{{secret:bot_token}}`: the host fills it in
/// after the allow-list check (the plugin never holds the token).
#[tokio::test]
async fn reply_reaches_the_bot_api_with_the_token_in_the_path() {
    let (gateway, receiver, api) = setup().await;
    let reply_url = conversation_url(&gateway, &receiver).await;
    let (status, body) = send_reply(&reply_url, "¡Sí!").await;
    assert_eq!(status, 201, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["external_id"], "57");
    let sent = api.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].uri, format!("/bot{BOT_TOKEN}/sendMessage"));
    assert_eq!(
        sent[0].json(),
        json!({"chat_id": 111222333, "text": "¡Sí!"})
    );
    gateway.stop().await;
}

/// Without a `secrets_hosts` entry the token's scope is the plugin's declared host
/// (`api.telegram.org`): allowed as the fake API is, it gets no token, and nothing is sent.
#[tokio::test]
async fn the_token_goes_only_to_the_plugins_declared_host_by_default() {
    let (gateway, receiver, api) = start_channel(
        |_| json_answer(200, json!({"ok": true})),
        |api, receiver| config_with(api, receiver, ""),
    )
    .await;
    let reply_url = conversation_url(&gateway, &receiver).await;
    let (status, body) = send_reply(&reply_url, "¡Sí!").await;
    assert!(status >= 400, "{status}: {body}");
    assert!(!body.contains(BOT_TOKEN), "{body}");
    assert!(api.requests().is_empty(), "sent: {:?}", api.requests());
    gateway.stop().await;
}

#[tokio::test]
async fn reply_body_and_error_classes() {
    let (gateway, receiver, api) = setup().await;
    let reply_url = conversation_url(&gateway, &receiver).await;
    let (status, body) = send_reply(&reply_url, "¡Sí!").await;
    assert_eq!(status, 201, "{body}");
    let sent = api.requests();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].uri.ends_with("/sendMessage"), "{}", sent[0].uri);
    assert_eq!(
        sent[0].json(),
        json!({"chat_id": 111222333, "text": "¡Sí!"})
    );

    for (answer, expected) in [
        (
            json_answer(
                429,
                json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 35", "parameters": {"retry_after": 35}}),
            ),
            429,
        ),
        (
            json_answer(
                403,
                json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
            ),
            422,
        ),
        (
            json_answer(
                401,
                json!({"ok": false, "error_code": 401, "description": "Unauthorized"}),
            ),
            502,
        ),
        (
            json_answer(
                502,
                json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
            ),
            503,
        ),
    ] {
        let expected_body = String::from_utf8_lossy(&answer.2).into_owned();
        api.respond(move |_| answer.clone());
        let (status, body) = send_reply(&reply_url, "again").await;
        assert_eq!(status, expected, "{expected_body}: {body}");
    }
    gateway.stop().await;
}
