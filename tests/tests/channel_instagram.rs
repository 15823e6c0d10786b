//! Instagram end to end: every fixture signed through the real gateway and the built
//! plugin, handshake, refusals, dedupe, and replies against a fake Send API.

use std::time::Duration;

use omnigate_tests::{
    FakeApi, Gateway, Receiver, get, hub_signature, json_answer, plugin_path, post, root, toml_path,
};
use serde_json::{Value, json};

const APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const VERIFY_TOKEN: &str = "verify-me-e2e";
const PAGE_TOKEN: &str = "EAAB-e2e-page-token";
const ACCOUNT: &str = "17841405793187218";
const USER: &str = "1234567890123456";
const SUBSCRIPTION_SECRET: &str = "whsec_c3Vic2NyaXB0aW9uLXNlY3JldC1mb3ItdGVzdHM=";
const API_KEY: &str = "test-api-key";
const WAIT: Duration = Duration::from_secs(20);

fn config(graph: &FakeApi, receiver: &Receiver) -> String {
    format!(
        r#"
        [api]
        keys = ["{API_KEY}"]
        [delivery]
        retry_schedule = ["100ms", "200ms"]
        [[channels]]
        id = "ig"
        plugin = {plugin}
        allowed_hosts = ["http://{graph}"]
        config = {{ api_base = "{graph_url}/v21.0", account_id = "{ACCOUNT}" }}
        secrets = {{ app_secret = "{APP_SECRET}", page_access_token = "{PAGE_TOKEN}", verify_token = "{VERIFY_TOKEN}" }}
        [[subscriptions]]
        url = "{receiver}"
        secret = "{SUBSCRIPTION_SECRET}"
        "#,
        plugin = toml_path(&plugin_path("instagram")),
        graph = graph.authority,
        graph_url = graph.url,
        receiver = receiver.url,
    )
}

const SENT_ID: &str = "m_sent_e2e_1";

async fn setup() -> (Gateway, Receiver, FakeApi) {
    let graph =
        FakeApi::start(|_| json_answer(200, json!({"recipient_id": USER, "message_id": SENT_ID})))
            .await
            .expect("graph");
    let receiver = Receiver::start(SUBSCRIPTION_SECRET)
        .await
        .expect("receiver");
    let gateway = Gateway::start(&config(&graph, &receiver))
        .await
        .expect("gateway");
    (gateway, receiver, graph)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("plugins/instagram/fixtures").join(name)).expect("fixture")
}

fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("plugins/instagram/fixtures"))
        .expect("fixtures dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

async fn deliver(gateway: &Gateway, body: &[u8]) -> (u16, String) {
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (
            "x-hub-signature-256".to_owned(),
            hub_signature(APP_SECRET, body),
        ),
    ];
    post(&gateway.url("/webhooks/ig"), &headers, body.to_vec())
        .await
        .expect("post")
}

fn item_count(body: &[u8]) -> usize {
    let value: Value = serde_json::from_slice(body).expect("json");
    value["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["messaging"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["delivery"]["mids"].as_array().map_or(1, Vec::len))
                .sum::<usize>()
        })
        .sum()
}

#[tokio::test]
async fn every_fixture_through_the_gateway() {
    let (gateway, receiver, _graph) = setup().await;
    let mut expected = 0;
    for name in fixtures() {
        let body = fixture(&name);
        let (status, text) = deliver(&gateway, &body).await;
        assert_eq!(status, 200, "{name}: {text}");
        expected += item_count(&body);
    }
    // Every messaging item becomes one published event with its external id (deliveries
    // one per mid); the gateway's own `conversation.started` events have none.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let published = receiver
            .events()
            .iter()
            .filter(|e| e["data"]["external_id"].is_string())
            .count();
        if published >= expected {
            assert_eq!(published, expected);
            break;
        }
        let ids: Vec<String> = receiver
            .events()
            .iter()
            .map(|e| format!("{} {}", e["type"], e["data"]["external_id"]))
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "published {published} of {expected}: {ids:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = receiver.of_type("message.received");
    assert!(received.iter().all(|d| d["channel"]["account"] == ACCOUNT));
    let ad = receiver
        .events()
        .into_iter()
        .find(|e| e["data"]["referral"]["ad_id"].is_string());
    let ad = ad.expect("the ad referral fixture is published with its ad id");
    assert_eq!(ad["data"]["referral"]["source"], "ad");
    gateway.stop().await;
}

#[tokio::test]
async fn handshake_refusals_and_dedupe() {
    let (gateway, receiver, _graph) = setup().await;
    let ok = gateway.url(&format!("/webhooks/ig?hub.mode=subscribe&hub.challenge=CHALLENGE_ACCEPTED&hub.verify_token={VERIFY_TOKEN}"));
    assert_eq!(
        get(&ok, &[]).await.expect("get"),
        (200, "CHALLENGE_ACCEPTED".to_owned())
    );
    let wrong =
        gateway.url("/webhooks/ig?hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope");
    assert_eq!(get(&wrong, &[]).await.expect("get").0, 403);
    let body = fixture("text.json");
    let bad = vec![(
        "x-hub-signature-256".to_owned(),
        hub_signature("wrong secret", &body),
    )];
    assert_eq!(
        post(&gateway.url("/webhooks/ig"), &bad, body.clone())
            .await
            .expect("post")
            .0,
        401
    );
    assert!(receiver.events().is_empty());

    assert_eq!(deliver(&gateway, &body).await.0, 200);
    assert_eq!(deliver(&gateway, &body).await.0, 200);
    assert_eq!(deliver(&gateway, &fixture("quick_reply.json")).await.0, 200);
    let deadline = std::time::Instant::now() + WAIT;
    while receiver.of_type("message.received").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "deliveries missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.of_type("message.received").len(), 2);
    gateway.stop().await;
}

#[tokio::test]
async fn replies_and_error_classes() {
    let (gateway, receiver, graph) = setup().await;
    assert_eq!(deliver(&gateway, &fixture("text.json")).await.0, 200);
    let received = loop {
        if let Some(first) = receiver.of_type("message.received").first() {
            break first.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let conversation = received["conversation"]["id"]
        .as_str()
        .expect("conversation")
        .to_owned();
    let reply_url = gateway.url(&format!("/v1/conversations/{conversation}/messages"));
    let auth = vec![
        ("authorization".to_owned(), format!("Bearer {API_KEY}")),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let (status, body) = post(&reply_url, &auth, json!({"text": "Hello!"}).to_string())
        .await
        .expect("reply");
    assert_eq!(status, 201, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["external_id"], SENT_ID);
    let sent = graph.requests();
    assert_eq!(sent[0].uri, format!("/v21.0/{ACCOUNT}/messages"));
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {PAGE_TOKEN}").as_str())
    );
    assert_eq!(
        sent[0].json(),
        json!({"recipient": {"id": USER}, "messaging_type": "RESPONSE", "message": {"text": "Hello!"}})
    );

    let graph_error = |status: u16, code: i64, subcode: Option<i64>| {
        move |_: &omnigate_tests::Recorded| {
            let mut error = json!({"message": format!("(#{code}) error"), "type": "OAuthException", "code": code, "fbtrace_id": "A"});
            if let Some(sub) = subcode {
                error["error_subcode"] = json!(sub);
            }
            json_answer(status, json!({"error": error}))
        }
    };
    for (http, code, subcode, expected) in [
        (400, 613, None, 429),
        (400, 10, Some(2_018_278), 422),
        (400, 551, Some(1_545_041), 422),
        (401, 190, Some(463), 502),
        (500, 2, None, 503),
    ] {
        graph.respond(graph_error(http, code, subcode));
        let (status, body) = post(
            &reply_url,
            &auth,
            json!({"text": format!("try {code}")}).to_string(),
        )
        .await
        .expect("reply");
        assert_eq!(status, expected, "Graph error {code}: {body}");
    }
    gateway.stop().await;
}
