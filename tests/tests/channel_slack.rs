//! Slack end to end: the Events API handshake, a channel message and its retry (deduped),
//! a reply posted in the thread against a fake Slack Web API with the bot token filled in
//! by the host, and refused signatures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omnigate_signature::Scheme;
use omnigate_tests::{
    FakeApi, Gateway, Receiver, api_auth, common_config, json_answer, plugin_path, post, reply_url,
    start_channel, toml_path, wait_for_external_ids,
};
use serde_json::json;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";

fn config(api: &FakeApi, receiver: &Receiver) -> String {
    format!(
        r#"
        [[channels]]
        id = "sl"
        plugin = {plugin}
        allowed_hosts = ["http://{host}"]
        config = {{ api_base = "{url}" }}
        secrets = {{ signing_secret = "{SIGNING_SECRET}", bot_token = "{BOT_TOKEN}" }}
        # The fake Slack API is not the plugin's declared host, the token's default scope.
        secrets_hosts = {{ bot_token = ["http://{host}"] }}
        {common}"#,
        plugin = toml_path(&plugin_path("slack")),
        host = api.authority,
        url = api.url,
        common = common_config(receiver),
    )
}

async fn setup() -> (Gateway, Receiver, FakeApi) {
    start_channel(
        |_| {
            json_answer(
                200,
                json!({"ok": true, "channel": "C123ABC456", "ts": "1503435956.000247"}),
            )
        },
        config,
    )
    .await
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}

/// A fixture with the seconds of its `ts` values moved (`from` → `to`), so the messages
/// are fresh (the outcome rules would find years-old messages unanswered on arrival).
fn fixture_at(name: &str, moves: &[(&str, i64)]) -> Vec<u8> {
    let text = String::from_utf8(omnigate_tests::fixture("slack", name)).expect("utf-8");
    moves
        .iter()
        .fold(text, |text, (from, to)| text.replace(from, &to.to_string()))
        .into_bytes()
}

/// POST `body` signed at `ts` (or with `signature`), plus `extra` headers.
async fn deliver(
    gateway: &Gateway,
    body: &[u8],
    ts: i64,
    signature: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut base = format!("v0:{ts}:").into_bytes();
    base.extend_from_slice(body);
    let signed =
        omnigate_signature::sign(Scheme::SlackV0, SIGNING_SECRET.as_bytes(), &base).expect("sign");
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-slack-request-timestamp".to_owned(), ts.to_string()),
        (
            "x-slack-signature".to_owned(),
            signature.unwrap_or(&signed).to_owned(),
        ),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    post(&gateway.url("/webhooks/sl"), &headers, body.to_vec())
        .await
        .expect("post")
}

#[tokio::test]
async fn handshake_message_retry_deduped_and_threaded_reply() {
    let (gateway, receiver, api) = setup().await;
    let now = now_secs();
    let challenge = omnigate_tests::fixture("slack", "url_verification.json");
    assert_eq!(
        deliver(&gateway, &challenge, now, None, &[]).await,
        (
            200,
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".to_owned()
        )
    );

    // The reply's ts and its thread root's, seven seconds earlier.
    let root = now - 7;
    let body = fixture_at(
        "message_thread.json",
        &[("1482960137", now), ("1482960130", root)],
    );
    assert_eq!(deliver(&gateway, &body, now, None, &[]).await.0, 200);
    // Slack did not see the 200 in time and retries: same event, dropped as a duplicate.
    let retry = [
        ("x-slack-retry-num", "1"),
        ("x-slack-retry-reason", "http_timeout"),
    ];
    assert_eq!(deliver(&gateway, &body, now + 3, None, &retry).await.0, 200);
    let id = format!("C123ABC456:{now}.003543");
    wait_for_external_ids(&receiver, std::slice::from_ref(&id), |d, id| d == id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receiver.of_type("message.received");
    assert_eq!(received.len(), 1, "{received:#?}");
    let message = &received[0];
    assert_eq!(message["external_id"], id.as_str());
    assert_eq!(message["channel"]["account"], "T123ABC456");

    // The reply goes to the thread the customer wrote in.
    let thread = message["message"]["reply_to"]
        .as_str()
        .expect("threaded message")
        .to_owned();
    let (status, text) = post(
        &reply_url(&gateway, message),
        &api_auth(),
        json!({"text": "Yes, we answered there", "reply_to": thread}).to_string(),
    )
    .await
    .expect("reply");
    assert!(status < 300, "{status}: {text}");
    let sent = api.first_request("Slack").await;
    assert_eq!(sent.uri, "/api/chat.postMessage");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert_eq!(
        sent.json(),
        json!({"channel": "C123ABC456", "text": "Yes, we answered there", "thread_ts": format!("{root}.003542")})
    );
    gateway.stop().await;
}

#[tokio::test]
async fn stale_bad_and_missing_signatures_are_refused() {
    let (gateway, receiver, _api) = setup().await;
    let now = now_secs();
    let body = fixture_at("message_channel.json", &[("1355517523", now)]);
    let (status, text) = deliver(&gateway, &body, now - 600, None, &[]).await;
    assert_eq!(status, 401);
    assert!(text.contains("tolerance 300 s"), "{text}");
    let (status, text) = deliver(&gateway, &body, now, Some("v0=00ff"), &[]).await;
    assert_eq!(status, 401);
    assert!(text.contains("signature does not match"), "{text}");
    let (status, _) = post(&gateway.url("/webhooks/sl"), &[], body.clone())
        .await
        .expect("post");
    assert_eq!(status, 401);
    let (status, text) = deliver(&gateway, b"{not json", now, None, &[]).await;
    assert_eq!(status, 400);
    assert!(text.contains("invalid JSON body"), "{text}");
    assert!(receiver.events().is_empty());
    gateway.stop().await;
}
