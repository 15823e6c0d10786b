//! Messenger and Instagram end to end (the two Meta page channels share the Send API
//! shape): every fixture signed through the real gateway and the built plugin, handshake,
//! refusals, dedupe, and replies against a fake Send API. The scenarios are written once
//! against a [`Page`]; `mod messenger` and `mod instagram` run them.

use std::time::{Duration, Instant};

use omnigate_tests::{
    FakeApi, Gateway, Receiver, Recorded, WAIT, common_config, deliver_meta, first_received,
    fixture, fixture_names, get, json_answer, meta_handshake_url, meta_signature_header,
    plugin_path, post, reply_url, send_reply, start_channel, toml_path,
};
use serde_json::{Value, json};

const APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const VERIFY_TOKEN: &str = "verify-me-e2e";
const PAGE_TOKEN: &str = "EAAB-e2e-page-token";
const SENT_ID: &str = "m_sent_e2e_1";

/// One Meta page channel under test.
struct Page {
    /// The plugin (and its fixtures directory).
    plugin: &'static str,
    /// The channel id (`/webhooks/<channel>`).
    channel: &'static str,
    /// The config key naming the account (`page_id`, `account_id`).
    account_key: &'static str,
    /// The account id (page or Instagram account).
    account: &'static str,
    /// The user the fixtures come from and replies go to.
    user: &'static str,
}

impl Page {
    fn config(&self, graph: &FakeApi, receiver: &Receiver) -> String {
        format!(
            r#"
            [[channels]]
            id = "{channel}"
            plugin = {plugin}
            allowed_hosts = ["http://{graph_host}"]
            config = {{ api_base = "{graph_url}/v21.0", {account_key} = "{account}" }}
            secrets = {{ app_secret = "{APP_SECRET}", page_access_token = "{PAGE_TOKEN}", verify_token = "{VERIFY_TOKEN}" }}
            # The fake Graph API is not the plugin's declared host, the token's default scope.
            secrets_hosts = {{ page_access_token = ["http://{graph_host}"] }}
            {common}"#,
            channel = self.channel,
            plugin = toml_path(&plugin_path(self.plugin)),
            account_key = self.account_key,
            account = self.account,
            graph_host = graph.authority,
            graph_url = graph.url,
            common = common_config(receiver),
        )
    }

    async fn setup(&self) -> (Gateway, Receiver, FakeApi) {
        let user = self.user;
        start_channel(
            move |_| json_answer(200, json!({"recipient_id": user, "message_id": SENT_ID})),
            |graph, receiver| self.config(graph, receiver),
        )
        .await
    }

    fn fixture(&self, name: &str) -> Vec<u8> {
        fixture(self.plugin, name)
    }

    fn webhook(&self, gateway: &Gateway) -> String {
        gateway.url(&format!("/webhooks/{}", self.channel))
    }

    async fn deliver(&self, gateway: &Gateway, body: &[u8]) -> (u16, String) {
        deliver_meta(gateway, self.channel, APP_SECRET, body).await
    }
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

async fn every_fixture_through_the_gateway(page: &Page) {
    let (gateway, receiver, _graph) = page.setup().await;
    let mut expected = 0;
    for name in fixture_names(page.plugin) {
        let body = page.fixture(&name);
        let (status, text) = page.deliver(&gateway, &body).await;
        assert_eq!(status, 200, "{name}: {text}");
        expected += item_count(&body);
    }
    // Every messaging item becomes one published event with its external id (deliveries
    // one per mid); the gateway's own `conversation.started` events have none.
    let deadline = Instant::now() + WAIT;
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
            Instant::now() < deadline,
            "published {published} of {expected}: {ids:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = receiver.of_type("message.received");
    assert!(
        received
            .iter()
            .all(|d| d["channel"]["account"] == page.account)
    );
    let ad = receiver
        .events()
        .into_iter()
        .find(|e| e["data"]["referral"]["ad_id"].is_string());
    let ad = ad.expect("the ad referral fixture is published with its ad id");
    assert_eq!(ad["data"]["referral"]["source"], "ad");
    gateway.stop().await;
}

async fn handshake_refusals_and_dedupe(page: &Page) {
    let (gateway, receiver, _graph) = page.setup().await;
    let ok = meta_handshake_url(&gateway, page.channel, "CHALLENGE_ACCEPTED", VERIFY_TOKEN);
    assert_eq!(
        get(&ok, &[]).await.expect("get"),
        (200, "CHALLENGE_ACCEPTED".to_owned())
    );
    let wrong = meta_handshake_url(&gateway, page.channel, "1", "nope");
    assert_eq!(get(&wrong, &[]).await.expect("get").0, 403);
    let body = page.fixture("text.json");
    let bad = vec![meta_signature_header("wrong secret", &body)];
    assert_eq!(
        post(&page.webhook(&gateway), &bad, body.clone())
            .await
            .expect("post")
            .0,
        401
    );
    assert!(receiver.events().is_empty());

    assert_eq!(page.deliver(&gateway, &body).await.0, 200);
    assert_eq!(page.deliver(&gateway, &body).await.0, 200);
    let quick_reply = page.fixture("quick_reply.json");
    assert_eq!(page.deliver(&gateway, &quick_reply).await.0, 200);
    let deadline = Instant::now() + WAIT;
    while receiver.of_type("message.received").len() < 2 {
        assert!(Instant::now() < deadline, "deliveries missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.of_type("message.received").len(), 2);
    gateway.stop().await;
}

async fn replies_and_error_classes(page: &Page) {
    let (gateway, receiver, graph) = page.setup().await;
    assert_eq!(
        page.deliver(&gateway, &page.fixture("text.json")).await.0,
        200
    );
    let received = first_received(&receiver).await;
    let reply_url = reply_url(&gateway, &received);
    let (status, body) = send_reply(&reply_url, "Hello!").await;
    assert_eq!(status, 201, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["external_id"], SENT_ID);
    let sent = graph.requests();
    assert_eq!(sent[0].uri, format!("/v21.0/{}/messages", page.account));
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {PAGE_TOKEN}").as_str())
    );
    assert_eq!(
        sent[0].json(),
        json!({"recipient": {"id": page.user}, "messaging_type": "RESPONSE", "message": {"text": "Hello!"}})
    );

    let graph_error = |status: u16, code: i64, subcode: Option<i64>| {
        move |_: &Recorded| {
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
        let (status, body) = send_reply(&reply_url, &format!("try {code}")).await;
        assert_eq!(status, expected, "Graph error {code}: {body}");
    }
    gateway.stop().await;
}

mod messenger {
    use super::Page;

    const MESSENGER: Page = Page {
        plugin: "messenger",
        channel: "fb",
        account_key: "page_id",
        account: "104829381276543",
        user: "6543217890123456",
    };

    #[tokio::test]
    async fn every_fixture_through_the_gateway() {
        super::every_fixture_through_the_gateway(&MESSENGER).await;
    }

    #[tokio::test]
    async fn handshake_refusals_and_dedupe() {
        super::handshake_refusals_and_dedupe(&MESSENGER).await;
    }

    #[tokio::test]
    async fn replies_and_error_classes() {
        super::replies_and_error_classes(&MESSENGER).await;
    }
}

mod instagram {
    use super::Page;

    const INSTAGRAM: Page = Page {
        plugin: "instagram",
        channel: "ig",
        account_key: "account_id",
        account: "17841405793187218",
        user: "1234567890123456",
    };

    #[tokio::test]
    async fn every_fixture_through_the_gateway() {
        super::every_fixture_through_the_gateway(&INSTAGRAM).await;
    }

    #[tokio::test]
    async fn handshake_refusals_and_dedupe() {
        super::handshake_refusals_and_dedupe(&INSTAGRAM).await;
    }

    #[tokio::test]
    async fn replies_and_error_classes() {
        super::replies_and_error_classes(&INSTAGRAM).await;
    }
}
