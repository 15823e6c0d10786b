//! WhatsApp Cloud API end to end: every fixture signed through the real gateway and the
//! built plugin, handshake, refusals, dedupe, and replies against a fake Graph API.

use std::time::Duration;

use omnigate_tests::{
    FakeApi, Gateway, Receiver, WAIT, common_config, deliver_meta, first_received, fixture_names,
    get, json_answer, meta_handshake_url, meta_signature_header, plugin_path, post, reply_url,
    send_reply, start_channel, toml_path, wait_for_external_ids,
};
use serde_json::{Value, json};

const APP_SECRET: &str = "6a1b0c5e2f9d4e7a8b3c1d0e9f8a7b6c";
const VERIFY_TOKEN: &str = "verify-me-e2e";
const ACCESS_TOKEN: &str = "EAAG-e2e-access-token";
const PNID: &str = "106540352242922";

fn config(graph: &FakeApi, receiver: &Receiver) -> String {
    format!(
        r#"
        [[channels]]
        id = "wa"
        plugin = {plugin}
        allowed_hosts = ["http://{graph}"]
        config = {{ api_base = "{graph_url}/v21.0", phone_number_id = "{PNID}" }}
        secrets = {{ app_secret = "{APP_SECRET}", access_token = "{ACCESS_TOKEN}", verify_token = "{VERIFY_TOKEN}" }}
        # The fake Graph API is not the plugin's declared host, the token's default scope.
        secrets_hosts = {{ access_token = ["http://{graph}"] }}
        {common}"#,
        plugin = toml_path(&plugin_path("whatsapp")),
        graph = graph.authority,
        graph_url = graph.url,
        common = common_config(receiver),
    )
}

const ACCEPTED: &str = "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA";

async fn setup() -> (Gateway, Receiver, FakeApi) {
    start_channel(
        |_| {
            json_answer(
                200,
                json!({"messaging_product": "whatsapp",
                "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
                "messages": [{"id": ACCEPTED}]}),
            )
        },
        config,
    )
    .await
}

fn fixture(name: &str) -> Vec<u8> {
    omnigate_tests::fixture("whatsapp", name)
}

async fn deliver(gateway: &Gateway, body: &[u8]) -> (u16, String) {
    deliver_meta(gateway, "wa", APP_SECRET, body).await
}

/// Every external id the plugin should produce for a fixture (messages and statuses).
fn expected_ids(body: &[u8]) -> Vec<String> {
    let value: Value = serde_json::from_slice(body).expect("json");
    let mut ids = Vec::new();
    for entry in value["entry"].as_array().into_iter().flatten() {
        for change in entry["changes"].as_array().into_iter().flatten() {
            if change["field"] != "messages" {
                continue;
            }
            for m in change["value"]["messages"].as_array().into_iter().flatten() {
                ids.push(m["id"].as_str().unwrap_or_default().to_owned());
            }
            for s in change["value"]["statuses"].as_array().into_iter().flatten() {
                ids.push(format!(
                    "{}:{}",
                    s["id"].as_str().unwrap_or_default(),
                    s["status"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    ids
}

#[tokio::test]
async fn every_fixture_through_the_gateway() {
    let (gateway, receiver, _graph) = setup().await;
    let mut expected = Vec::new();
    for name in fixture_names("whatsapp") {
        let body = fixture(&name);
        let (status, text) = deliver(&gateway, &body).await;
        assert_eq!(status, 200, "{name}: {text}");
        expected.extend(expected_ids(&body));
    }
    // Give the pipeline time to publish everything, then compare.
    wait_for_external_ids(&receiver, &expected, |delivered, id| {
        delivered == id || delivered.starts_with(&format!("{id}:"))
    })
    .await;

    let received = receiver.of_type("message.received");
    let ad = received
        .iter()
        .find(|d| d["message"]["text"] == "Hi, is the blue dress still available?")
        .expect("ad message");
    assert_eq!(ad["referral"]["source"], "ad");
    assert_eq!(ad["referral"]["ad_id"], "120226305854810726");
    assert_eq!(
        ad["referral"]["click_id"]["ctwa_clid"],
        "Afe5tbK2dPEV9S7ZyYYbQlTyyPPL7nTtAq7oYTrF1JlkHpmkyWJb0TPQHWdh4p9oq"
    );
    assert_eq!(ad["channel"]["account"], PNID);
    let handles = ad["contact"]["handles"].as_array().expect("handles");
    assert!(
        handles.contains(&json!({"kind": "phone", "value": "+16505551234", "verified": true})),
        "{handles:?}"
    );
    let statuses = receiver.of_type("message.status");
    assert!(!statuses.is_empty(), "statuses are published");
    gateway.stop().await;
}

#[tokio::test]
async fn handshake_and_refusals() {
    let (gateway, receiver, _graph) = setup().await;
    let url = meta_handshake_url(&gateway, "wa", "1158201444", VERIFY_TOKEN);
    assert_eq!(
        get(&url, &[]).await.expect("get"),
        (200, "1158201444".to_owned())
    );
    let wrong = meta_handshake_url(&gateway, "wa", "1158201444", "nope");
    assert_eq!(get(&wrong, &[]).await.expect("get").0, 403);

    let body = fixture("text.json");
    let bad = vec![meta_signature_header("not the app secret", &body)];
    assert_eq!(
        post(&gateway.url("/webhooks/wa"), &bad, body.clone())
            .await
            .expect("post")
            .0,
        401
    );
    assert_eq!(
        post(&gateway.url("/webhooks/wa"), &[], body)
            .await
            .expect("post")
            .0,
        401
    );
    assert!(receiver.events().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn duplicate_post_is_one_event() {
    let (gateway, receiver, _graph) = setup().await;
    let body = fixture("text.json");
    assert_eq!(deliver(&gateway, &body).await.0, 200);
    assert_eq!(deliver(&gateway, &body).await.0, 200);
    assert_eq!(
        deliver(&gateway, &fixture("reply_context.json")).await.0,
        200
    );
    let events = receiver.wait_for(3, WAIT).await.expect("deliveries");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received: Vec<Value> = receiver
        .of_type("message.received")
        .iter()
        .map(|d| d["external_id"].clone())
        .collect();
    assert_eq!(received.len(), 2, "{events:#?}");
    gateway.stop().await;
}

#[tokio::test]
async fn replies_and_error_classes() {
    let (gateway, receiver, graph) = setup().await;
    assert_eq!(deliver(&gateway, &fixture("text.json")).await.0, 200);
    let received = first_received(&receiver).await;
    let reply_url = reply_url(&gateway, &received);
    let (status, body) = send_reply(&reply_url, "Yes, in blue too.").await;
    assert_eq!(status, 201, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["external_id"], ACCEPTED);
    let sent = graph.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].method.as_str(), sent[0].uri.as_str()),
        ("POST", "/v21.0/106540352242922/messages")
    );
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    assert_eq!(sent[0].json()["to"], "16505551234");
    assert_eq!(sent[0].json()["text"]["body"], "Yes, in blue too.");

    let graph_error = |status: u16, code: i64| {
        move |_: &omnigate_tests::Recorded| {
            json_answer(
                status,
                json!({"error": {"message": format!("(#{code}) error"), "type": "OAuthException",
                "code": code, "error_data": {"messaging_product": "whatsapp", "details": "details"}, "fbtrace_id": "A"}}),
            )
        }
    };
    for (http, code, expected) in [
        (400, 130429, 429),
        (400, 131047, 422),
        (401, 190, 502),
        (500, 131000, 503),
    ] {
        graph.respond(graph_error(http, code));
        let (status, body) = send_reply(&reply_url, &format!("try {code}")).await;
        assert_eq!(status, expected, "Graph error {code}: {body}");
    }
    gateway.stop().await;
}
