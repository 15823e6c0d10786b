//! The outcome loop end to end, on memory, one Redis and a 3-master Cluster: a web chat
//! visitor from an ad URL (UTM campaign + click id) opens a conversation, an agent
//! answers, the customer moves to WhatsApp (the same verified phone merges the
//! contacts), the shop posts a purchase by phone number: attributed to the first touch's
//! campaign, `conversion.recorded` delivered (Standard Webhooks verified), the funnel row
//! shows it; a second visitor left unanswered past the SLA is a lost opportunity. Then
//! unmerge and erasure: the counts stay, the erased contact leaves the export. And every
//! bad field of `/v1/conversions` and `/stage` is named.

use omnigate_tests::redis::{RedisCluster, RedisServer};
use omnigate_tests::{
    FakeApi, Gateway, Receiver, api_auth, api_call, common_config, deliver_meta, fixture, get,
    plugin_path, send_webchat, site_and_receiver, toml_path,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WA_APP_SECRET: &str = "6a1b0c5e2f9d4e7a8b3c1d0e9f8a7b6c";
/// The phone of the WhatsApp text fixture, which the web visitor also logs in with.
const PHONE: &str = "+16505551234";

fn config(store_url: &str, site: &FakeApi, receiver: &Receiver) -> String {
    format!(
        r#"
        [store]
        url = "{store_url}"
        sweep_interval = "100ms"
        [outcomes]
        response_sla = "10m"
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
        {common}
        "#,
        whatsapp = toml_path(&plugin_path("whatsapp")),
        webchat = toml_path(&plugin_path("webchat")),
        site = site.authority,
        site_url = site.url,
        common = common_config(receiver),
    )
}

async fn send_web(gateway: &Gateway, body: Value) {
    send_webchat(gateway, "web", SITE_SECRET, &body).await;
}

fn ago(seconds: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds))
        .round(jiff::Unit::Second)
        .expect("round")
        .to_string()
}

/// The funnel of today's hours (UTC) by `by`.
async fn funnel(gateway: &Gateway, by: &str) -> Value {
    let now = jiff::Timestamp::now().as_second();
    let hour = now - now.rem_euclid(3600);
    let from = jiff::Timestamp::from_second(hour - 3 * 3600).expect("from");
    let to = jiff::Timestamp::from_second(hour + 3600).expect("to");
    let (status, report) = api_call(
        gateway,
        "GET",
        &format!("/v1/reports/funnel?from={from}&to={to}&by={by}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    report
}

fn row<'a>(report: &'a Value, key: &str, value: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|row| row["key"][key] == value)
        .unwrap_or_else(|| panic!("no row {key} = {value} in {report:#}"))
}

/// The WhatsApp text fixture (from +1 650 555 1234, a verified phone), sent now.
fn whatsapp_text_now() -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&fixture("whatsapp", "text.json")).expect("fixture JSON");
    let now = jiff::Timestamp::now().as_second().to_string();
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = json!(now);
    body.to_string().into_bytes()
}

async fn journey(store_url: &str) {
    let (site, receiver) = site_and_receiver().await;
    let gateway = Gateway::start(&config(store_url, &site, &receiver))
        .await
        .expect("gateway");

    // 1. A visitor from an ad URL (campaign bf25, Google click id) writes on the web chat,
    //    logged in: the site vouches for the phone.
    send_web(&gateway, json!({
        "type": "message", "id": "w1", "sent_at": ago(60),
        "visitor": {"id": "visitor-1", "name": "Sheena", "phone": "+1 650 555 1234", "authenticated": true},
        "text": "Hola, ¿tenéis la talla M?",
        "page": {"url": "https://shop.example/p?utm_source=google&utm_campaign=bf25&gclid=g-77"},
    }))
    .await;
    let first = receiver.wait_of_type("message.received", 1).await.remove(0);
    let contact = first["contact"]["id"].as_str().expect("contact").to_owned();
    let conversation = first["conversation"]["id"].as_str().expect("cv").to_owned();
    assert_eq!(
        first["conversation"]["attribution"]["first_touch"]["campaign"],
        "bf25"
    );

    // 2. An agent answers through the API: the first response, within the SLA.
    let (status, sent) = api_call(
        &gateway,
        "POST",
        &format!("/v1/conversations/{conversation}/messages"),
        Some(json!({"text": "¡Sí! ¿En qué color?", "author": {"kind": "agent", "id": "ana"}})),
    )
    .await;
    assert_eq!(status, 201, "{sent}");
    let response = receiver
        .wait_of_type("conversation.first_response", 1)
        .await
        .remove(0);
    assert_eq!(response["conversation"]["id"], conversation.as_str());
    let seconds = response["first_response"]["seconds"]
        .as_u64()
        .expect("seconds");
    assert!((50..600).contains(&seconds), "{response}");
    assert_eq!(response["first_response"]["within_sla"], true);
    assert_eq!(response["first_response"]["author"]["id"], "ana");

    // 3. The customer moves to WhatsApp: the verified phone the visitor logged in with
    //    makes the WhatsApp sender the same contact, and the conversation continues.
    let (status, text) = deliver_meta(&gateway, "wa", WA_APP_SECRET, &whatsapp_text_now()).await;
    assert_eq!(status, 200, "{text}");
    let switched = receiver
        .wait_of_type("conversation.channel_switched", 1)
        .await
        .remove(0);
    assert_eq!(switched["conversation"]["id"], conversation.as_str());
    assert_eq!(switched["contact"]["id"], contact.as_str());

    // 4. The shop posts the purchase by phone number: attributed to the open
    //    conversation, whose first touch is the bf25 ad.
    let purchase = json!({"id": "order-1001", "name": "purchase", "value": "129.90",
        "currency": "EUR", "occurred_at": ago(5), "contact": {"phone": PHONE},
        "consent": {"ad_user_data": true, "ad_personalization": false},
        "properties": {"order_lines": 2}});
    let (status, recorded) =
        api_call(&gateway, "POST", "/v1/conversions", Some(purchase.clone())).await;
    assert_eq!(status, 201, "{recorded}");
    assert_eq!(recorded["attributed"], true);
    assert_eq!(recorded["conversation_id"], conversation.as_str());
    assert_eq!(recorded["contact_id"], contact.as_str());
    assert_eq!(recorded["first_touch"]["campaign"], "bf25");
    assert_eq!(recorded["first_touch"]["click_id"]["gclid"], "g-77");
    assert_eq!(recorded["stage"], "won");
    let conversion = receiver
        .wait_of_type("conversion.recorded", 1)
        .await
        .remove(0);
    assert_eq!(conversion["conversion"]["id"], "order-1001");
    assert_eq!(conversion["conversion"]["value"], "129.90");
    assert_eq!(conversion["conversion"]["attributed"], true);
    assert_eq!(conversion["conversion"]["consent"]["ad_user_data"], true);
    assert_eq!(
        conversion["conversation"]["attribution"]["first_touch"]["campaign"],
        "bf25"
    );
    let won = receiver
        .wait_of_type("conversation.stage_changed", 1)
        .await
        .remove(0);
    assert_eq!(won["stage"]["from"], "lead");
    assert_eq!(won["stage"]["to"], "won");
    assert_eq!(won["stage"]["by"], "conversion:order-1001");

    // The same conversion again: the same body, 200, nothing published.
    let (status, again) = api_call(&gateway, "POST", "/v1/conversions", Some(purchase)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, recorded);
    // Read back: the same body, and no destination receipts (none configured).
    let (status, kept) = api_call(&gateway, "GET", "/v1/conversions/order-1001", None).await;
    let mut expected = recorded.clone();
    expected["destinations"] = json!([]);
    assert_eq!((status, &kept), (200, &expected));

    // 5. A second visitor from the same campaign, never answered: past the SLA (10 min)
    //    by the payload's time, the sweeper finds the opportunity lost.
    send_web(&gateway, json!({
        "type": "message", "id": "w2", "sent_at": ago(1200),
        "visitor": {"id": "visitor-2"},
        "text": "¿Hacéis envíos a Canarias?",
        "page": {"url": "https://shop.example/p?utm_source=google&utm_campaign=bf25&gclid=g-78"},
    }))
    .await;
    let lost = receiver
        .wait_of_type("conversation.opportunity_lost", 1)
        .await
        .remove(0);
    assert_eq!(lost["lost"]["reason"], "unanswered");
    assert_ne!(lost["conversation"]["id"], conversation.as_str());

    // 6. The funnel row of the campaign.
    let report = funnel(&gateway, "campaign").await;
    let bf25 = row(&report, "campaign", "bf25");
    assert_eq!(bf25["conversations"], 2, "{report:#}");
    assert_eq!(bf25["with_referral"], 2);
    assert_eq!(bf25["answered"], 1);
    assert_eq!(bf25["answered_within_sla"], 1);
    assert_eq!(bf25["won"], 1);
    assert_eq!(bf25["value"]["EUR"], "129.90");
    assert_eq!(bf25["lost"]["unanswered"], 1);
    assert_eq!(bf25["stages"]["lead"], 2);
    assert_eq!(bf25["conversion_rate"], 0.5);
    assert!(
        bf25["first_response_seconds"]["median"].as_u64().is_some(),
        "{bf25}"
    );
    assert_eq!(report["totals"]["conversations"], 2);
    let by_channel = funnel(&gateway, "channel").await;
    assert_eq!(
        row(&by_channel, "channel", "web")["conversations"],
        2,
        "{by_channel:#}"
    );
    // The same rows as CSV.
    let now = jiff::Timestamp::now().as_second();
    let hour = now - now.rem_euclid(3600);
    let from = jiff::Timestamp::from_second(hour - 3 * 3600).expect("from");
    let to = jiff::Timestamp::from_second(hour + 3600).expect("to");
    let mut headers = api_auth();
    headers.push(("accept".into(), "text/csv".into()));
    let (status, csv) = get(
        &gateway.url(&format!(
            "/v1/reports/funnel?from={from}&to={to}&by=campaign"
        )),
        &headers,
    )
    .await
    .expect("csv");
    assert_eq!(status, 200, "{csv}");
    assert!(csv.starts_with("campaign,conversations,"), "{csv}");
    assert!(csv.contains("\nbf25,2,2,1,1,"), "{csv}");

    // 7. A stage move, and the export.
    let (status, moved) = api_call(
        &gateway,
        "POST",
        &format!(
            "/v1/conversations/{}/stage",
            lost["conversation"]["id"].as_str().expect("cv")
        ),
        Some(json!({"stage": "lost", "reason": "no_answer", "by": "crm"})),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["stage"], "lost");
    let rows = export(&gateway, &from.to_string(), &to.to_string()).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(
        rows[1]["conversation_id"],
        conversation.as_str(),
        "started last"
    );
    assert_eq!(rows[1]["stage"], "won");
    assert_eq!(rows[1]["value"]["EUR"], "129.90");
    assert_eq!(rows[0]["stage"], "lost");
    assert_eq!(rows[0]["lost"], json!(["unanswered", "no_answer"]));

    // 8. A merge and its unmerge: a third visitor redeems a link token of the contact
    //    (merged into it, writing into its conversation), then the merge is undone. The
    //    conversation keeps its outcome; the third visitor has no conversation of their
    //    own, so a conversion of theirs is not attributed.
    let (status, token) = api_call(
        &gateway,
        "POST",
        &format!("/v1/contacts/{contact}/link-tokens"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{token}");
    let code = token["token"].as_str().expect("token");
    send_web(
        &gateway,
        json!({
            "type": "message", "id": "w3", "visitor": {"id": "visitor-3"},
            "text": format!("Soy yo otra vez: {code}"),
        }),
    )
    .await;
    let merged = receiver.wait_of_type("contact.merged", 1).await.remove(0);
    assert_eq!(merged["merge"]["survivor"], contact.as_str());
    let absorbed = merged["merge"]["absorbed"]
        .as_str()
        .expect("absorbed")
        .to_owned();
    let (status, undone) = api_call(
        &gateway,
        "POST",
        &format!("/v1/contacts/{contact}/unmerge"),
        Some(json!({"contact_id": absorbed})),
    )
    .await;
    assert_eq!(status, 200, "{undone}");
    let (status, lead) = api_call(
        &gateway,
        "POST",
        "/v1/conversions",
        Some(json!({
        "id": "lead-7", "name": "lead", "contact": {"channel": "web", "user": "visitor-3"}})),
    )
    .await;
    assert_eq!(status, 201, "{lead}");
    assert_eq!(lead["contact_id"], absorbed.as_str());
    assert_eq!(lead["attributed"], false);
    assert_eq!(lead["reason"], "no_conversation");
    let unattributed = receiver
        .wait_of_type("conversion.recorded", 2)
        .await
        .remove(1);
    assert_eq!(unattributed["conversion"]["attributed"], false);
    assert_eq!(unattributed["contact"]["id"], absorbed.as_str());
    // The same unattributed conversion twice at once: one event id, whatever the race.
    let twice = |id: &'static str| {
        api_call(
            &gateway,
            "POST",
            "/v1/conversions",
            Some(json!({"id": id, "name": "lead", "contact": {"id": absorbed}})),
        )
    };
    let (first, second) = tokio::join!(twice("lead-8"), twice("lead-8"));
    for (status, answer) in [&first, &second] {
        assert!(*status == 201 || *status == 200, "{status} {answer}");
        assert_eq!(answer["attributed"], false);
    }
    // A later one on the same (conversation-less) lane: once it is in, any copy is too.
    assert_eq!(twice("lead-9").await.0, 201);
    let mut recorded = receiver.wait_of_type("conversion.recorded", 4).await;
    while !recorded
        .iter()
        .any(|event| event["conversion"]["id"] == "lead-9")
    {
        let seen = recorded.len();
        recorded = receiver.wait_of_type("conversion.recorded", seen + 1).await;
    }
    let lead_8: std::collections::BTreeSet<&str> = recorded
        .iter()
        .filter(|event| event["conversion"]["id"] == "lead-8")
        .filter_map(|event| event["id"].as_str())
        .collect();
    assert_eq!(lead_8.len(), 1, "{recorded:#?}");
    let report = funnel(&gateway, "campaign").await;
    assert_eq!(row(&report, "campaign", "bf25")["won"], 1, "{report:#}");

    // 9. Erasure: the contact leaves the export, the counts stay.
    let (status, _) = api_call(&gateway, "DELETE", &format!("/v1/contacts/{contact}"), None).await;
    assert_eq!(status, 200);
    let rows = export(&gateway, &from.to_string(), &to.to_string()).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_ne!(rows[0]["conversation_id"], conversation.as_str());
    let report = funnel(&gateway, "campaign").await;
    let bf25 = row(&report, "campaign", "bf25");
    assert_eq!(bf25["conversations"], 2, "{report:#}");
    assert_eq!(bf25["value"]["EUR"], "129.90");
    // purchase, lead-7, lead-8 and lead-9, each once (a copy would carry the same id).
    let recorded = receiver.of_type("conversion.recorded");
    let ids: std::collections::BTreeSet<&str> = recorded
        .iter()
        .filter_map(|event| event["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 4, "nothing twice: {recorded:#?}");
    gateway.stop().await;
}

/// Every export row of `[from, to)`, following the cursor two rows at a time.
async fn export(gateway: &Gateway, from: &str, to: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = gateway.url(&format!(
            "/v1/exports/conversations?from={from}&to={to}&limit=2{cursor}"
        ));
        let mut request = reqwest::Client::new().get(&url);
        for (name, value) in api_auth() {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("export");
        assert_eq!(response.status(), 200);
        let next = response
            .headers()
            .get("x-next-cursor")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body");
        rows.extend(
            text.lines()
                .map(|line| serde_json::from_str::<Value>(line).expect("row")),
        );
        match next {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return rows,
        }
    }
}

#[tokio::test]
async fn journey_on_memory() {
    journey("memory://").await;
}

#[tokio::test]
async fn journey_on_redis() {
    let redis = RedisServer::start().expect("redis");
    journey(&redis.url()).await;
}

#[tokio::test]
async fn journey_on_a_redis_cluster() {
    let cluster = RedisCluster::start().expect("redis cluster");
    journey(&cluster.urls().join(",")).await;
}

#[tokio::test]
async fn bad_fields_are_named() {
    let (site, receiver) = site_and_receiver().await;
    let gateway = Gateway::start(&config("memory://", &site, &receiver))
        .await
        .expect("gateway");
    send_web(
        &gateway,
        json!({
        "type": "message", "id": "b1", "visitor": {"id": "visitor-9"}, "text": "hola"}),
    )
    .await;
    let first = receiver.wait_of_type("message.received", 1).await.remove(0);
    let conversation = first["conversation"]["id"].as_str().expect("cv").to_owned();
    let valid = json!({"id": "o-1", "name": "purchase", "value": "10.00", "currency": "EUR",
        "conversation_id": conversation});
    let cases = [
        ("id", json!(12)),
        ("name", json!("sale")),
        ("value", json!(10.5)),
        ("value", json!("-3")),
        ("value", json!("1.23456")),
        ("currency", json!("XXXX")),
        ("occurred_at", json!("soon")),
        ("occurred_at", json!("2099-01-01T00:00:00Z")),
        ("consent", json!({"ad_user_data": 1})),
        ("properties", json!("none")),
    ];
    for (field, value) in cases {
        let mut body = valid.clone();
        body[field] = value.clone();
        let (status, error) = api_call(&gateway, "POST", "/v1/conversions", Some(body)).await;
        assert_eq!(status, 400, "{field} = {value}: {error}");
        assert!(
            error.to_string().contains(&format!("`{field}")),
            "{field} = {value}: {error}"
        );
    }
    let (status, error) = api_call(
        &gateway,
        "POST",
        "/v1/conversions",
        Some(json!({
        "id": "o-2", "name": "lead", "contact": {"phone": "+34 600 999 999"}})),
    )
    .await;
    assert_eq!(status, 404, "unknown contact: {error}");
    let stage = format!("/v1/conversations/{conversation}/stage");
    for (body, field) in [
        (json!({"stage": 3}), "stage"),
        (json!({"stage": "sold"}), "stage"),
        (json!({"stage": "lost"}), "reason"),
        (json!({"stage": "lost", "reason": "weather"}), "reason"),
        (json!({"stage": "won", "reopen": "yes"}), "reopen"),
        (json!({"stage": "won", "when": "now"}), "when"),
    ] {
        let (status, error) = api_call(&gateway, "POST", &stage, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error.to_string().contains(&format!("`{field}`")),
            "{body}: {error}"
        );
    }
    let (status, _) = api_call(&gateway, "POST", &stage, Some(json!({"stage": "won"}))).await;
    assert_eq!(status, 200);
    let (status, error) = api_call(
        &gateway,
        "POST",
        &stage,
        Some(json!({"stage": "qualified"})),
    )
    .await;
    assert_eq!(status, 409, "a final stage: {error}");
    let (status, moved) = api_call(
        &gateway,
        "POST",
        &stage,
        Some(json!({"stage": "qualified", "reopen": true})),
    )
    .await;
    assert_eq!(
        (status, &moved["stage"]),
        (200, &json!("qualified")),
        "{moved}"
    );
    let (status, _) = api_call(
        &gateway,
        "POST",
        "/v1/conversations/cv_none/stage",
        Some(json!({"stage": "won"})),
    )
    .await;
    assert_eq!(status, 404);
    for query in [
        "from=2026-11-01&to=2026-10-01",
        "from=2026-11-01T00:30:00Z&to=2026-12-01",
        "from=2026-11-01&to=2026-12-01&tz=Mars/Olympus",
        "from=2026-11-01&to=2026-12-01&by=color",
        "from=2026-11-01&to=2026-12-01&touch=middle",
        "to=2026-12-01",
        "from=2026-11-01&to=2026-12-01&color=red",
    ] {
        let (status, error) = api_call(
            &gateway,
            "GET",
            &format!("/v1/reports/funnel?{query}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}: {error}");
        assert!(error.to_string().contains('`'), "{query}: {error}");
    }
    gateway.stop().await;
}
