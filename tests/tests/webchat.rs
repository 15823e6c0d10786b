//! Web chat end to end: a signed message in → a signed CloudEvent out at a real receiver;
//! a reply through `/v1` → the site backend, signed; duplicates; refusals.
//!
//! The same suite runs against every build of the web chat plugin: the Rust plugin, its
//! contract 0.1.0 build kept as a fixture (older plugins keep working), and the Python
//! and JavaScript examples (`plugins/examples/`), which must behave identically.

use std::path::{Path, PathBuf};

use omnigate_tests::{
    API_KEY, FakeApi, Gateway, Receiver, WAIT, api_auth, api_error, example_path, fixture_path,
    get, json_answer, plugin_path, post, reply_url, send_reply, standard_webhooks_headers,
    standard_webhooks_headers_at, start_channel, verify_delivery, webchat_channel_config,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The web chat channel, and the common configuration with the subscription sending the
/// last 5 messages of history.
fn config(plugin: &Path, site: &FakeApi, receiver: &Receiver) -> String {
    let channel = webchat_channel_config(plugin, SITE_SECRET, site, receiver);
    format!("{channel}\nhistory = 5\n")
}

fn message(id: &str, visitor: &str, text: &str) -> Vec<u8> {
    json!({
        "type": "message",
        "id": id,
        "visitor": {"id": visitor, "name": "Ana", "email": "Ana@Example.com", "phone": "+34600111222"},
        "text": text,
        "page": {
            "url": "https://shop.example/p?utm_source=instagram&utm_campaign=bf25&fbclid=abc",
            "referrer": "https://l.instagram.com/"
        },
        "sent_at": jiff::Timestamp::now().to_string()
    })
    .to_string()
    .into_bytes()
}

async fn send(gateway: &Gateway, body: &[u8]) -> (u16, String) {
    let headers =
        standard_webhooks_headers(SITE_SECRET, &format!("wh_{}", ulid::Ulid::generate()), body)
            .expect("sign");
    post(&gateway.url("/webhooks/web"), &headers, body.to_vec())
        .await
        .expect("post")
}

async fn setup(plugin: &Path) -> (Gateway, Receiver, FakeApi) {
    start_channel(
        |_| json_answer(200, json!({"id": "site-reply-1"})),
        |site, receiver| config(plugin, site, receiver),
    )
    .await
}

/// One module of tests per build of the plugin, each calling the suite's functions.
macro_rules! suite {
    ($($build:ident => $plugin:expr;)*) => {$(
        mod $build {
            use super::*;

            fn plugin() -> PathBuf {
                $plugin
            }

            #[tokio::test]
            async fn message_in_signed_cloudevent_out_and_reply_back() {
                super::message_in_signed_cloudevent_out_and_reply_back(&plugin()).await;
            }

            #[tokio::test]
            async fn duplicate_webhook_produces_one_event() {
                super::duplicate_webhook_produces_one_event(&plugin()).await;
            }

            #[tokio::test]
            async fn refusals_have_the_right_status_and_json_error() {
                super::refusals_have_the_right_status_and_json_error(&plugin()).await;
            }
        }
    )*};
}

suite! {
    rust => plugin_path("webchat");
    contract_0_1 => fixture_path("webchat-0.1.0.wasm");
    python => example_path("webchat-python");
    javascript => example_path("webchat-js");
}

async fn message_in_signed_cloudevent_out_and_reply_back(plugin: &Path) {
    let (gateway, receiver, site) = setup(plugin).await;
    let (status, _) = send(&gateway, &message("site-1", "v-42", "Hola")).await;
    assert_eq!(status, 200);

    let events = receiver.wait_for(2, WAIT).await.expect("deliveries");
    let started = &events[0];
    assert_eq!(started["type"], "dev.omnigate.conversation.started");
    let cloudevent = &events[1];
    assert_eq!(cloudevent["specversion"], "1.0");
    assert_eq!(cloudevent["type"], "dev.omnigate.message.received");
    assert_eq!(cloudevent["source"], "/channels/web");
    let data = &cloudevent["data"];
    assert_eq!(cloudevent["id"], data["id"]);
    assert_eq!(cloudevent["subject"], data["conversation"]["id"]);
    assert_eq!(data["message"]["text"], "Hola");
    assert_eq!(data["external_id"], "site-1");
    assert_eq!(data["channel"]["kind"], "webchat");
    assert_eq!(data["referral"]["utm"]["source"], "instagram");
    assert_eq!(data["referral"]["click_id"]["fbclid"], "abc");
    assert_eq!(
        data["conversation"]["attribution"]["first_touch"]["campaign"],
        "bf25"
    );
    let handles = data["contact"]["handles"].as_array().expect("handles");
    assert!(
        handles.contains(&json!({"kind": "email", "value": "ana@example.com", "verified": false}))
    );
    assert!(
        handles.contains(&json!({"kind": "phone", "value": "+34600111222", "verified": false}))
    );
    assert_eq!(data["history"].as_array().map(Vec::len), Some(1));

    // Reply through the API: reaches the site backend signed with the channel secret.
    let conversation = data["conversation"]["id"]
        .as_str()
        .expect("conversation id");
    let (status, body) = send_reply(&reply_url(&gateway, data), "¡Hola Ana!").await;
    assert_eq!(status, 201, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["external_id"], "site-reply-1");
    let replies = site.requests();
    assert_eq!(replies.len(), 1);
    assert!(
        verify_delivery(SITE_SECRET, &replies[0]),
        "reply signature must verify"
    );
    assert_eq!(replies[0].json()["text"], "¡Hola Ana!");
    assert_eq!(replies[0].json()["visitor_id"], "v-42");
    assert_eq!(replies[0].uri, "/omnigate/replies");

    let events = receiver.wait_for(3, WAIT).await.expect("message.sent");
    let sent = &events[2]["data"];
    assert_eq!(events[2]["type"], "dev.omnigate.message.sent");
    assert_eq!(sent["message"]["direction"], "outbound");
    assert_eq!(sent["conversation"]["messages"], 2);
    assert_eq!(sent["conversation"]["id"], conversation);

    let (status, body) = get(
        &gateway.url(&format!("/v1/conversations/{conversation}")),
        &api_auth(),
    )
    .await
    .expect("get");
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(view["history"].as_array().map(Vec::len), Some(2));
    gateway.stop().await;
}

async fn duplicate_webhook_produces_one_event(plugin: &Path) {
    let (gateway, receiver, _site) = setup(plugin).await;
    let body = message("dup-1", "v-7", "first");
    assert_eq!(send(&gateway, &body).await.0, 200);
    // The provider retries the same message (new delivery attempt, new signature).
    assert_eq!(send(&gateway, &body).await.0, 200);
    assert_eq!(
        send(&gateway, &message("dup-2", "v-7", "second")).await.0,
        200
    );
    // Events of one conversation arrive in order, so once "second" is in, any event the
    // duplicate produced would already be there too.
    let events = receiver.wait_for(3, WAIT).await.expect("deliveries");
    let received: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "dev.omnigate.message.received")
        .map(|e| &e["data"]["external_id"])
        .collect();
    assert_eq!(received, [&json!("dup-1"), &json!("dup-2")]);
    assert_eq!(events.len(), 3, "{events:#?}");
    gateway.stop().await;
}

fn error_code(body: &str) -> String {
    api_error(body).0
}

async fn refusals_have_the_right_status_and_json_error(plugin: &Path) {
    let (gateway, receiver, _site) = setup(plugin).await;
    let url = gateway.url("/webhooks/web");
    let body = message("bad-1", "v-1", "x");

    let wrong = standard_webhooks_headers(
        "whsec_d3JvbmctZ2F0ZXdheS1zZWNyZXQtZm9yLXRlc3Q=",
        "wh_1",
        &body,
    )
    .expect("sign");
    let (status, text) = post(&url, &wrong, body.clone()).await.expect("post");
    assert_eq!(
        (status, error_code(&text).as_str()),
        (401, "unauthorized"),
        "{text}"
    );

    let (status, text) = post(&url, &[], body.clone()).await.expect("post");
    assert_eq!(status, 401, "{text}");

    let stale = jiff::Timestamp::now().as_second() - 6 * 60;
    let old = standard_webhooks_headers_at(SITE_SECRET, "wh_2", &body, stale).expect("sign");
    let (status, text) = post(&url, &old, body.clone()).await.expect("post");
    assert_eq!(status, 401, "{text}");

    let malformed = br#"{"type":"message","id":"m","text":"no visitor"}"#.to_vec();
    let (status, text) = send(&gateway, &malformed).await;
    assert_eq!(
        (status, error_code(&text).as_str()),
        (400, "bad_request"),
        "{text}"
    );
    assert!(
        text.contains("visitor"),
        "the reason names the problem: {text}"
    );

    let (status, text) = post(&gateway.url("/webhooks/nope"), &[], body.clone())
        .await
        .expect("post");
    assert_eq!(
        (status, error_code(&text).as_str()),
        (404, "unknown_channel"),
        "{text}"
    );

    let huge = vec![b'x'; (1 << 20) + 1];
    let (status, text) = post(&url, &[], huge).await.expect("post");
    assert_eq!(
        (status, error_code(&text).as_str()),
        (413, "payload_too_large"),
        "{text}"
    );

    let (status, text) = get(&gateway.url("/v1/conversations/cv_x"), &[])
        .await
        .expect("get");
    assert_eq!(
        (status, error_code(&text).as_str()),
        (401, "unauthorized"),
        "{text}"
    );
    let auth = [("authorization".to_owned(), format!("Bearer {API_KEY}"))];
    let (status, text) = get(&gateway.url("/v1/conversations/cv_x"), &auth)
        .await
        .expect("get");
    assert_eq!(
        (status, error_code(&text).as_str()),
        (404, "unknown_conversation"),
        "{text}"
    );

    assert!(
        receiver.events().is_empty(),
        "nothing refused may be delivered"
    );
    let (status, _) = get(&gateway.url("/healthz"), &[]).await.expect("healthz");
    assert_eq!(status, 200);
    let (status, text) = get(&gateway.url("/readyz"), &[]).await.expect("readyz");
    assert_eq!(status, 200, "{text}");
    gateway.stop().await;
}
