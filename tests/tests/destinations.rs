//! Conversions back to the ad platforms through destination plugins, end to end: a
//! click-to-WhatsApp ad's conversation ends in a purchase → one Meta Conversions API
//! event with the `ctwa_clid` and the hashed phone; a web chat visit with a `gclid` ends
//! in a purchase → one Data Manager event, its access token minted once by the host from
//! an `oauth2` secret and reused; a click under six hours old is held, not failed; each
//! platform skips what is not its own, and every outcome is a receipt on the conversion.
//! A destination's plugin is swapped and rolled back on the running binary, and no secret
//! or token reaches its log.

use omnigate_tests::process::Process;
use omnigate_tests::redis::free_port;
use omnigate_tests::{
    FakeApi, Gateway, api_auth, call_at, common_config, deliver_meta, fixture, get, guest_path,
    json_answer, plugin_path, post, site_and_receiver, standard_webhooks_headers, toml_path,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WA_APP_SECRET: &str = "6a1b0c5e2f9d4e7a8b3c1d0e9f8a7b6c";
const META_TOKEN: &str = "EAAB-meta-system-user-token";
const GOOGLE_REFRESH: &str = "1//refresh-token-google";
const GOOGLE_CLIENT_SECRET: &str = "GOCSPX-client-secret";
/// SHA-256 of `16505551234`: the WhatsApp sender's phone in Meta's normal form.
const META_PHONE_HASH: &str = "6069d14bf122fdfd931dc7beb58e5dfbba395b1faf05bdcd42d12358d63d8599";
/// SHA-256 of `analopez@gmail.com`: `Ana.Lopez+shop@GMail.com` in Google's normal form.
const GOOGLE_EMAIL_HASH: &str = "40a7a591b586da8ea75d049e8a9dfb984c075840dd3e9fed2e91a31c0dc2c51c";

const ADMIN_KEY: &str = "admin-test-key-0123456";

fn config(
    site: &FakeApi,
    graph: &FakeApi,
    google: &FakeApi,
    receiver: &omnigate_tests::Receiver,
) -> String {
    format!(
        r#"
        [[channels]]
        id = "wa"
        plugin = {whatsapp}
        allowed_hosts = ["http://{site}"]
        config = {{ api_base = "{site_url}/v21.0", phone_number_id = "106540352242922" }}
        secrets = {{ app_secret = "{WA_APP_SECRET}", access_token = "token", verify_token = "verify" }}
        secrets_hosts = {{ access_token = ["http://{site}"] }}
        [[channels]]
        id = "web"
        plugin = {webchat}
        allowed_hosts = ["http://{site}"]
        config = {{ callback_url = "{site_url}/omnigate/replies" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        [[destinations]]
        id = "meta"
        plugin = {meta}
        allowed_hosts = ["http://{graph}"]
        config = {{ api_base = "{graph_url}", dataset_id = "998877", whatsapp_business_account_id = "102290129340398" }}
        secrets = {{ access_token = "{META_TOKEN}" }}
        secrets_hosts = {{ access_token = ["http://{graph}"] }}
        [[destinations]]
        id = "google"
        plugin = {google_ads}
        allowed_hosts = ["http://{google}"]
        config = {{ api_base = "{google_url}", customer_id = "123-456-7890", conversion_action_id = "555" }}
        secrets_hosts = {{ access_token = ["http://{google}"] }}
        [destinations.secrets.access_token.oauth2]
        token_url = "{google_url}/token"
        client_id = "1234.apps.googleusercontent.com"
        client_secret = "{GOOGLE_CLIENT_SECRET}"
        refresh_token = "{GOOGLE_REFRESH}"
        scopes = ["https://www.googleapis.com/auth/datamanager"]
        {common}
        "#,
        whatsapp = toml_path(&plugin_path("whatsapp")),
        webchat = toml_path(&plugin_path("webchat")),
        meta = toml_path(&plugin_path("meta-capi")),
        google_ads = toml_path(&plugin_path("google-ads")),
        site = site.authority,
        site_url = site.url,
        graph = graph.authority,
        graph_url = graph.url,
        google = google.authority,
        google_url = google.url,
        common = common_config(receiver),
    )
}

async fn api(base: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_at(base, method, path, body, &api_auth()).await
}

/// A fake Google: its token endpoint mints `google-access-1`, Data Manager answers
/// `req-42`.
async fn fake_google() -> FakeApi {
    FakeApi::start(|request| {
        if request.uri.starts_with("/token") {
            json_answer(200, json!({"access_token": "google-access-1", "token_type": "Bearer", "expires_in": 3599}))
        } else {
            json_answer(200, json!({"requestId": "req-42"}))
        }
    })
    .await
    .expect("fake google")
}

fn ago(seconds: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds))
        .round(jiff::Unit::Second)
        .expect("round")
        .to_string()
}

/// Now, to the second (a conversation's start is to the second too).
fn now() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .expect("now")
        .to_string()
}

async fn send_web(base: &str, body: Value) {
    let body = body.to_string().into_bytes();
    let id = format!("wh_{}", ulid::Ulid::generate());
    let headers = standard_webhooks_headers(SITE_SECRET, &id, &body).expect("sign");
    let (status, answer) = post(&format!("{base}/webhooks/web"), &headers, body)
        .await
        .expect("post");
    assert!((200..300).contains(&status), "{status} {answer}");
}

/// A purchase posted by the shop for `contact`.
async fn purchase(base: &str, id: &str, contact: Value) -> Value {
    let (status, answer) = api(
        base,
        "POST",
        "/v1/conversions",
        Some(
            json!({"id": id, "name": "purchase", "value": "129.90", "currency": "EUR",
                    "occurred_at": now(), "contact": contact,
                    "consent": {"ad_user_data": true, "ad_personalization": false}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["attributed"], true, "{answer}");
    answer
}

/// The conversion's receipts once every destination has one in a final state.
async fn receipts(base: &str, id: &str, settled: &[(&str, &str)]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, answer) = api(base, "GET", &format!("/v1/conversions/{id}"), None).await;
        assert_eq!(status, 200, "{answer}");
        let receipts = answer["destinations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let done = settled.iter().all(|(destination, state)| {
            receipts
                .iter()
                .any(|r| r["destination"] == *destination && r["status"] == *state)
        });
        if done {
            let text = answer.to_string();
            for secret in [
                META_TOKEN,
                GOOGLE_REFRESH,
                GOOGLE_CLIENT_SECRET,
                "google-access-1",
            ] {
                assert!(!text.contains(secret), "a secret in the receipts: {text}");
            }
            return receipts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "receipts of {id} never reached {settled:?}: {answer:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn receipt<'a>(receipts: &'a [Value], destination: &str) -> &'a Value {
    receipts
        .iter()
        .find(|r| r["destination"] == destination)
        .unwrap_or_else(|| panic!("no {destination} receipt in {receipts:?}"))
}

#[tokio::test]
async fn conversions_reach_the_platform_whose_click_started_them() {
    let (site, receiver) = site_and_receiver().await;
    let graph = FakeApi::start(|_| {
        json_answer(
            200,
            json!({"events_received": 1, "messages": [], "fbtrace_id": "AbC-trace-1"}),
        )
    })
    .await
    .expect("fake graph");
    let google = fake_google().await;
    let gateway = Gateway::start(&config(&site, &graph, &google, &receiver))
        .await
        .expect("gateway");

    // 1. A click-to-WhatsApp ad opens a conversation; the shop records the purchase.
    let mut ctwa: Value =
        serde_json::from_slice(&fixture("whatsapp", "referral_ctwa.json")).expect("fixture");
    ctwa["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] =
        json!(jiff::Timestamp::now().as_second().to_string());
    deliver_meta(&gateway, "wa", WA_APP_SECRET, ctwa.to_string().as_bytes()).await;
    receiver.wait_of_type("message.received", 1).await;
    purchase(
        &gateway.base,
        "ord-wa-1",
        json!({"phone": "+1 650 555 1234"}),
    )
    .await;

    let sent = receipts(
        &gateway.base,
        "ord-wa-1",
        &[("meta", "sent"), ("google", "skipped")],
    )
    .await;
    assert_eq!(receipt(&sent, "meta")["receipt"], "AbC-trace-1");
    assert_eq!(receipt(&sent, "google")["reason"], "no_google_click");
    let requests = graph.requests();
    assert_eq!(requests.len(), 1, "one Meta event");
    let request = &requests[0];
    assert_eq!(request.uri, "/v24.0/998877/events");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {META_TOKEN}").as_str())
    );
    let event = &request.json()["data"][0];
    assert_eq!(event["event_name"], "Purchase");
    assert_eq!(event["event_id"], "ord-wa-1");
    assert_eq!(event["action_source"], "business_messaging");
    assert_eq!(event["messaging_channel"], "whatsapp");
    assert_eq!(
        event["custom_data"],
        json!({"value": 129.90, "currency": "EUR"})
    );
    assert_eq!(
        event["user_data"],
        json!({
            "whatsapp_business_account_id": "102290129340398",
            "ctwa_clid": "Afe5tbK2dPEV9S7ZyYYbQlTyyPPL7nTtAq7oYTrF1JlkHpmkyWJb0TPQHWdh4p9oq",
            "ph": [META_PHONE_HASH],
        })
    );

    // A revoked token (Graph code 190): dead-lettered, and the destination disabled.
    graph.respond(|_| {
        json_answer(401, json!({"error": {"message": "Error validating access token: Session has expired",
                                          "type": "OAuthException", "code": 190, "fbtrace_id": "X"}}))
    });
    purchase(
        &gateway.base,
        "ord-wa-2",
        json!({"phone": "+1 650 555 1234"}),
    )
    .await;
    let refused = receipts(&gateway.base, "ord-wa-2", &[("meta", "dead_lettered")]).await;
    let reason = receipt(&refused, "meta")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("190"), "{reason}");
    let (status, meta) = api(&gateway.base, "GET", "/v1/subscriptions/meta", None).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["enabled"], false, "{meta}");
    assert!(
        meta["disabled_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("190"),
        "{meta}"
    );

    // Fixed and re-enabled: it delivers what waited.
    graph.respond(|_| {
        json_answer(
            200,
            json!({"events_received": 1, "messages": [], "fbtrace_id": "AbC-trace-2"}),
        )
    });
    let (status, enabled) = api(&gateway.base, "POST", "/v1/subscriptions/meta/enable", None).await;
    assert_eq!(status, 200, "{enabled}");

    // 2. A web chat visit from a Google ad, seven hours ago; two purchases later: two
    //    Data Manager events, one access token minted for both.
    send_web(
        &gateway.base,
        json!({
            "type": "message", "id": "g1", "sent_at": ago(7 * 3600),
            "visitor": {"id": "visitor-9", "name": "Ana", "email": "Ana.Lopez+shop@GMail.com"},
            "text": "¿Hacéis envíos a Canarias?",
            "page": {"url": "https://shop.example/p?utm_source=google&gclid=Cj0KCQ-gclid-77"},
        }),
    )
    .await;
    receiver.wait_of_type("message.received", 2).await;
    let visitor = json!({"channel": "web", "user": "visitor-9"});
    purchase(&gateway.base, "ord-web-1", visitor.clone()).await;
    purchase(&gateway.base, "ord-web-2", visitor).await;
    for id in ["ord-web-1", "ord-web-2"] {
        let done = receipts(
            &gateway.base,
            id,
            &[("google", "sent"), ("meta", "skipped")],
        )
        .await;
        assert_eq!(receipt(&done, "google")["receipt"], "req-42");
        assert_eq!(receipt(&done, "meta")["reason"], "no_meta_click");
    }
    let requests = google.requests();
    let tokens: Vec<_> = requests
        .iter()
        .filter(|r| r.uri.starts_with("/token"))
        .collect();
    assert_eq!(tokens.len(), 1, "one token for both events");
    let form = String::from_utf8_lossy(&tokens[0].body).into_owned();
    assert!(form.contains("grant_type=refresh_token"), "{form}");
    let ingests: Vec<_> = requests
        .iter()
        .filter(|r| r.uri == "/v1/events:ingest")
        .collect();
    assert_eq!(ingests.len(), 2);
    for ingest in &ingests {
        assert_eq!(
            ingest.header("authorization"),
            Some("Bearer google-access-1")
        );
    }
    let body = ingests[0].json();
    assert_eq!(
        body["destinations"],
        json!([{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                "productDestinationId": "555"}])
    );
    let event = &body["events"][0];
    assert_eq!(event["adIdentifiers"], json!({"gclid": "Cj0KCQ-gclid-77"}));
    assert_eq!(event["conversionValue"], json!(129.90));
    assert_eq!(
        event["userData"]["userIdentifiers"],
        json!([{"emailAddress": GOOGLE_EMAIL_HASH}])
    );
    assert_eq!(
        event["consent"],
        json!({"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_DENIED"})
    );
    let transactions: Vec<_> = ingests
        .iter()
        .map(|r| r.json()["events"][0]["transactionId"].clone())
        .collect();
    assert!(
        transactions.contains(&json!("ord-web-1")) && transactions.contains(&json!("ord-web-2"))
    );

    // 3. A click a minute old: Google takes it only after six hours, so it is held.
    send_web(
        &gateway.base,
        json!({
            "type": "message", "id": "g2", "sent_at": ago(60),
            "visitor": {"id": "visitor-10", "name": "Luis"},
            "text": "Hola",
            "page": {"url": "https://shop.example/?gclid=fresh-click"},
        }),
    )
    .await;
    receiver.wait_of_type("message.received", 3).await;
    purchase(
        &gateway.base,
        "ord-web-3",
        json!({"channel": "web", "user": "visitor-10"}),
    )
    .await;
    let held = receipts(&gateway.base, "ord-web-3", &[("google", "scheduled")]).await;
    let not_before: jiff::Timestamp = receipt(&held, "google")["not_before"]
        .as_str()
        .expect("not_before")
        .parse()
        .expect("time");
    let wait = not_before.duration_since(jiff::Timestamp::now()).as_secs();
    assert!(
        (5 * 3600..6 * 3600 + 1).contains(&wait),
        "held for {wait} s"
    );
    assert_eq!(
        google
            .requests()
            .iter()
            .filter(|r| r.uri == "/v1/events:ingest")
            .count(),
        2,
        "nothing sent for the held click"
    );

    // 4. The counts per destination and outcome.
    let (status, metrics) = get(&gateway.url("/metrics"), &[]).await.expect("metrics");
    assert_eq!(status, 200);
    let count = |destination: &str, outcome: &str, reason: &str| -> u64 {
        metrics
            .lines()
            .filter(|line| line.starts_with("omnigate_destination_events_total{"))
            .filter(|line| {
                line.contains(&format!("destination=\"{destination}\""))
                    && line.contains(&format!("outcome=\"{outcome}\""))
                    && line.contains(&format!("reason=\"{reason}\""))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let events: Vec<String> = graph
        .requests()
        .iter()
        .map(|r| r.json()["data"][0]["event_id"].to_string())
        .collect();
    assert_eq!(count("meta", "sent", ""), 1, "{events:?}");
    assert!(
        !metrics.contains(r#"channel="meta""#),
        "destinations are not channels"
    );
    assert_eq!(count("meta", "rejected", ""), 1);
    assert_eq!(count("meta", "skipped", "no_meta_click"), 3);
    assert_eq!(count("google", "sent", ""), 2);
    assert_eq!(count("google", "skipped", "no_google_click"), 2);
    assert_eq!(count("google", "held", ""), 1);
}

/// `POST` of an admin action on the gateway at `base`; the status and JSON answer.
async fn admin(base: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let headers = vec![("authorization".to_owned(), format!("Bearer {ADMIN_KEY}"))];
    let (status, answer) = post(&format!("{base}{path}"), &headers, body)
        .await
        .expect("admin call");
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_plugin_is_swapped_live_and_no_secret_reaches_the_log() {
    let (site, receiver) = site_and_receiver().await;
    let graph = FakeApi::start(|request| {
        if request.uri == "/recorded" {
            json_answer(200, json!({}))
        } else {
            json_answer(
                200,
                json!({"events_received": 1, "fbtrace_id": "AbC-trace-1"}),
            )
        }
    })
    .await
    .expect("fake graph");
    let google = fake_google().await;
    let text = format!(
        "[admin]\nkeys = [\"{ADMIN_KEY}\"]\n{}",
        config(&site, &graph, &google, &receiver)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // Everything the gateway and its HTTP clients log, bar the compiler's own chatter.
    let level = "debug,cranelift=warn,regalloc2=warn,wasmtime=info,wasmtime_cranelift=warn";
    let mut gateway = Process::start_logged(&text, dir.path(), free_port().expect("port"), level);
    gateway.wait_ready().await;
    let base = gateway.base.clone();

    // A visit from a Google ad seven hours ago, and a purchase: the Data Manager event
    // goes out with a token the host minted from the `oauth2` secret.
    send_web(
        &base,
        json!({
            "type": "message", "id": "s1", "sent_at": ago(7 * 3600),
            "visitor": {"id": "visitor-s", "name": "Ana"},
            "text": "Hola",
            "page": {"url": "https://shop.example/?gclid=Cj0-swap-click"},
        }),
    )
    .await;
    receiver.wait_of_type("message.received", 1).await;
    let visitor = json!({"channel": "web", "user": "visitor-s"});
    purchase(&base, "ord-s-1", visitor.clone()).await;
    let first = receipts(&base, "ord-s-1", &[("google", "sent"), ("meta", "skipped")]).await;
    assert_eq!(receipt(&first, "meta")["reason"], "no_meta_click");

    // The `meta` destination's plugin replaced on the running gateway: the next
    // conversion goes through the new version, on the same subscription.
    let recorder = std::fs::read(guest_path("recorder")).expect("recorder guest");
    let (status, answer) = admin(&base, "/admin/plugins?activate=destination:meta", recorder).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["activated"]["channel"], "destination:meta",
        "{answer}"
    );
    assert_eq!(answer["activated"]["plugin"], "recorder@0.1.0", "{answer}");
    purchase(&base, "ord-s-2", visitor.clone()).await;
    let second = receipts(&base, "ord-s-2", &[("google", "sent"), ("meta", "sent")]).await;
    let recorded = receipt(&second, "meta")["receipt"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(recorded.starts_with("recorded-"), "{second:?}");
    let posted: Vec<_> = graph
        .requests()
        .into_iter()
        .filter(|r| r.uri == "/recorded")
        .collect();
    assert_eq!(posted.len(), 1, "one event through the new version");
    assert_eq!(
        posted[0].header("authorization"),
        Some(format!("Bearer {META_TOKEN}").as_str()),
        "the destination's secrets serve the new version"
    );
    let (status, listing) = get(
        &format!("{base}/admin/plugins"),
        &[("authorization".to_owned(), format!("Bearer {ADMIN_KEY}"))],
    )
    .await
    .expect("listing");
    assert_eq!(status, 200);
    let listing: Value = serde_json::from_str(&listing).expect("json");
    let active = listing["channels"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["channel"] == "destination:meta"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(active["plugin"], "recorder@0.1.0", "{listing:#}");
    assert_eq!(
        active["previous"].as_array().map(Vec::len),
        Some(1),
        "{listing:#}"
    );

    // Rolled back: the Meta plugin serves again.
    let (status, answer) = admin(&base, "/admin/destinations/meta/rollback", Vec::new()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["activated"]["plugin"], "meta-capi@0.1.0", "{answer}");
    purchase(&base, "ord-s-3", visitor).await;
    let third = receipts(&base, "ord-s-3", &[("google", "sent"), ("meta", "skipped")]).await;
    assert_eq!(receipt(&third, "meta")["reason"], "no_meta_click");
    assert_eq!(
        graph
            .requests()
            .iter()
            .filter(|r| r.uri == "/recorded")
            .count(),
        1,
        "nothing more through the old version"
    );

    // Refused: a channel plugin for a destination, and a destination nobody configured.
    let webchat = std::fs::read(plugin_path("webchat")).expect("webchat plugin");
    let (status, answer) = admin(&base, "/admin/plugins?activate=destination:meta", webchat).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "channel_requirements", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot be a destination"), "{answer}");
    let digest = active["digest"].as_str().unwrap_or_default();
    let (status, answer) = call_at(
        &base,
        "POST",
        "/admin/destinations/nope/activate",
        Some(json!({ "digest": digest })),
        &[
            ("authorization".to_owned(), format!("Bearer {ADMIN_KEY}")),
            ("content-type".to_owned(), "application/json".to_owned()),
        ],
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_destination", "{answer}");

    // The log, read after the process has ended: it tells of the swap and has no secret.
    gateway.terminate().await;
    let log = std::fs::read_to_string(Process::log(dir.path())).expect("log");
    for told in [
        "destination ready",
        "plugin version active",
        "destination:meta",
    ] {
        assert!(log.contains(told), "the log lacks {told:?}:\n{log}");
    }
    for secret in [
        META_TOKEN,
        GOOGLE_REFRESH,
        GOOGLE_CLIENT_SECRET,
        "google-access-1",
        SITE_SECRET,
        WA_APP_SECRET,
    ] {
        assert!(!log.contains(secret), "a secret in the log: {secret}");
    }
}
