//! The cross-channel journey: a web chat visitor from an ad URL (UTM + fbclid) gets a link
//! token, writes with it on a second channel → one contact, one conversation,
//! `channel_switched`, first touch kept; unmerge restores two contacts; erasure removes
//! everything and tells downstream tools. And a WhatsApp user and a known web visitor
//! who logs in with the same phone: merged on the shared verified phone, unmerged again.
//! Run on the memory store and on Redis.

use std::time::Duration;

use omnigate_tests::redis::RedisServer;
use omnigate_tests::{
    FakeApi, Gateway, Receiver, api_auth, common_config, deliver_meta, fixture, get, plugin_path,
    post, site_and_receiver, standard_webhooks_headers, toml_path,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(store_url: &str, site: &FakeApi, receiver: &Receiver) -> String {
    let channel = |id: &str| {
        format!(
            r#"
            [[channels]]
            id = "{id}"
            plugin = {plugin}
            allowed_hosts = ["http://{site}"]
            config = {{ callback_url = "{site_url}/omnigate/replies" }}
            secrets = {{ signing_secret = "{SITE_SECRET}" }}
            "#,
            plugin = toml_path(&plugin_path("webchat")),
            site = site.authority,
            site_url = site.url,
        )
    };
    format!(
        r#"
        [store]
        url = "{store_url}"
        [identity]
        link_token_ttl = "1h"
        whatsapp_number = "+34 600 000 111"
        telegram_bot = "shop_bot"
        email_address = "link@shop.example"
        {web}
        {web2}
        {common}
        "#,
        web = channel("web"),
        web2 = channel("web2"),
        common = common_config(receiver),
    )
}

async fn send(gateway: &Gateway, channel: &str, body: Value) {
    let body = body.to_string().into_bytes();
    let headers = standard_webhooks_headers(
        SITE_SECRET,
        &format!("wh_{}", ulid::Ulid::generate()),
        &body,
    )
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

async fn api(gateway: &Gateway, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = gateway.url(path);
    let (status, text) = match method {
        "GET" => get(&url, &api_auth()).await.expect("get"),
        "POST" => post(&url, &api_auth(), body.unwrap_or(Value::Null).to_string())
            .await
            .expect("post"),
        _ => {
            let mut request = reqwest::Client::new().delete(&url);
            for (name, value) in api_auth() {
                request = request.header(name, value);
            }
            let response = request.send().await.expect("delete");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        }
    };
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn journey(store_url: &str) {
    let (site, receiver) = site_and_receiver().await;
    let gateway = Gateway::start(&config(store_url, &site, &receiver))
        .await
        .expect("gateway");

    // 1. A visitor from an ad URL writes on the web chat.
    send(&gateway, "web", json!({
        "type": "message", "id": "w1",
        "visitor": {"id": "visitor-1", "name": "Ana"},
        "text": "Hola, ¿tenéis la talla M?",
        "page": {"url": "https://shop.example/p?utm_source=instagram&utm_campaign=bf25&fbclid=abc",
                 "referrer": "https://l.instagram.com/"},
    }))
    .await;
    let first = receiver.wait_of_type("message.received", 1).await.remove(0);
    let contact = first["contact"]["id"].as_str().expect("contact").to_owned();
    let conversation = first["conversation"]["id"].as_str().expect("cv").to_owned();
    let first_touch = first["conversation"]["attribution"]["first_touch"].clone();
    assert_eq!(first_touch["click_id"]["fbclid"], "abc");
    assert_eq!(first_touch["campaign"], "bf25");

    // 2. The business asks for a link token with deep links.
    let (status, token) = api(
        &gateway,
        "POST",
        &format!("/v1/contacts/{contact}/link-tokens"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{token}");
    let code = token["token"].as_str().expect("token").to_owned();
    assert_eq!(
        token["links"]["whatsapp"],
        format!("https://wa.me/34600000111?text={code}")
    );
    assert_eq!(
        token["links"]["telegram"],
        format!("https://t.me/shop_bot?start={code}")
    );
    assert_eq!(token["links"]["email"], format!("link+{code}@shop.example"));
    let (status, _) = api(&gateway, "POST", "/v1/contacts/ct_nobody/link-tokens", None).await;
    assert_eq!(status, 404);

    // 3. The customer writes on the second channel with the token.
    send(
        &gateway,
        "web2",
        json!({
            "type": "message", "id": "x1",
            "visitor": {"id": "visitor-2"},
            "text": format!("Hola! código {code}"),
        }),
    )
    .await;
    let merged = receiver.wait_of_type("contact.merged", 1).await.remove(0);
    assert_eq!(merged["contact"]["id"], contact.as_str());
    assert_eq!(merged["merge"]["survivor"], contact.as_str());
    let absorbed = merged["merge"]["absorbed"]
        .as_str()
        .expect("absorbed")
        .to_owned();
    assert_ne!(absorbed, contact);
    assert_eq!(
        merged["merge"]["evidence"],
        "link token redeemed on channel web2"
    );
    // The merge's own owed record (kept in case the message never made it) is settled
    // once the message carried its event: the relay will not publish it again.
    settled(&gateway, merged["merge"]["id"].as_str().expect("id")).await;
    let switched = receiver
        .wait_of_type("conversation.channel_switched", 1)
        .await
        .remove(0);
    assert_eq!(switched["conversation"]["id"], conversation.as_str());
    assert_eq!(switched["conversation"]["previous_channel"], "web");
    let received = receiver.wait_of_type("message.received", 2).await;
    let second = &received[1];
    assert_eq!(second["contact"]["id"], contact.as_str(), "one contact");
    assert_eq!(
        second["conversation"]["id"],
        conversation.as_str(),
        "one conversation"
    );
    assert_eq!(
        second["conversation"]["channels_used"],
        json!(["web", "web2"])
    );
    assert_eq!(
        second["conversation"]["attribution"]["first_touch"], first_touch,
        "first touch kept"
    );
    assert_eq!(receiver.of_type("conversation.started").len(), 1);

    let (status, details) = api(&gateway, "GET", &format!("/v1/contacts/{contact}"), None).await;
    assert_eq!(status, 200);
    let handles: Vec<&str> = details["handles"]
        .as_array()
        .expect("handles")
        .iter()
        .filter_map(|h| h["value"].as_str())
        .collect();
    assert!(
        handles.contains(&"web:visitor-1") && handles.contains(&"web2:visitor-2"),
        "{details}"
    );
    assert_eq!(details["merges"][0]["absorbed"], absorbed.as_str());
    assert_eq!(details["merges"][0]["strength"], "verified");
    assert_eq!(
        details["merges"][0]["evidence"],
        "link token redeemed on channel web2"
    );
    assert_eq!(details["conversations"], json!([conversation]));
    // The timeline shows both channels in order, paginated.
    let (status, page) = api(
        &gateway,
        "GET",
        &format!("/v1/conversations/{conversation}/timeline?limit=3"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let kinds: Vec<&str> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(kinds, vec!["conversation.started", "message", "referral"]);
    let next = page["next"].as_u64().expect("more");
    let (_, rest) = api(
        &gateway,
        "GET",
        &format!("/v1/conversations/{conversation}/timeline?from={next}"),
        None,
    )
    .await;
    let kinds: Vec<&str> = rest["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(kinds, vec!["conversation.channel_switched", "message"]);
    assert_eq!(rest["entries"][1]["message"]["channel"], "web2");
    assert!(rest["next"].is_null());
    let (status, _) = api(
        &gateway,
        "GET",
        "/v1/conversations/cv_nothing/timeline",
        None,
    )
    .await;
    assert_eq!(status, 404);
    // A token is redeemed once.
    let (status, _) = api(&gateway, "GET", &format!("/v1/contacts/{absorbed}"), None).await;
    assert_eq!(status, 200);

    // 4. Unmerge restores two contacts.
    let (status, undone) = api(
        &gateway,
        "POST",
        &format!("/v1/contacts/{contact}/unmerge"),
        Some(json!({"contact_id": absorbed})),
    )
    .await;
    assert_eq!(status, 200, "{undone}");
    assert!(undone["merge"]["undone_at"].is_string());
    let unmerged = receiver.wait_of_type("contact.unmerged", 1).await.remove(0);
    assert_eq!(unmerged["merge"]["absorbed"], absorbed.as_str());
    let (_, survivor) = api(&gateway, "GET", &format!("/v1/contacts/{contact}"), None).await;
    assert!(
        !survivor["handles"].to_string().contains("web2:visitor-2"),
        "the handle went back: {survivor}"
    );
    let (_, restored) = api(&gateway, "GET", &format!("/v1/contacts/{absorbed}"), None).await;
    assert!(
        restored["handles"].to_string().contains("web2:visitor-2"),
        "{restored}"
    );
    assert!(restored.get("merged_into").is_none(), "{restored}");
    let (status, _) = api(
        &gateway,
        "POST",
        &format!("/v1/contacts/{contact}/unmerge"),
        Some(json!({"contact_id": absorbed})),
    )
    .await;
    assert_eq!(status, 404, "nothing left to unmerge");
    // The second visitor is a contact of its own again.
    send(
        &gateway,
        "web2",
        json!({
            "type": "message", "id": "x2", "visitor": {"id": "visitor-2"}, "text": "¿y en azul?",
        }),
    )
    .await;
    let received = receiver.wait_of_type("message.received", 3).await;
    assert_eq!(received[2]["contact"]["id"], absorbed.as_str());

    // 5. Erasure.
    let (status, erased) = api(&gateway, "DELETE", &format!("/v1/contacts/{contact}"), None).await;
    assert_eq!(status, 200, "{erased}");
    let event = receiver.wait_of_type("contact.erased", 1).await.remove(0);
    assert_eq!(event["contact"]["id"], contact.as_str());
    assert_eq!(event["contact"]["handles"], json!([]));
    assert_eq!(event["conversation"]["id"], conversation.as_str());
    let (status, _) = api(&gateway, "GET", &format!("/v1/contacts/{contact}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = api(
        &gateway,
        "GET",
        &format!("/v1/conversations/{conversation}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = api(&gateway, "DELETE", &format!("/v1/contacts/{contact}"), None).await;
    assert_eq!(status, 404);
    // The web visitor writing again is a new contact.
    send(
        &gateway,
        "web",
        json!({
            "type": "message", "id": "w2", "visitor": {"id": "visitor-1"}, "text": "hola otra vez",
        }),
    )
    .await;
    let received = receiver.wait_of_type("message.received", 4).await;
    assert_ne!(received[3]["contact"]["id"], contact.as_str());
    gateway.stop().await;
}

/// Wait until merge `merge_id`'s owed `contact.merged` is settled (the event that carried
/// it is out); fails after 10 s.
async fn settled(gateway: &Gateway, merge_id: &str) {
    let key = omnigate::store::owed_merged_key(merge_id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let owed = gateway
            .app
            .pipeline
            .store()
            .stale_owed(jiff::Timestamp::MAX, 10_000)
            .await
            .expect("owed records");
        if !owed.iter().any(|owed| owed.key == key) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "still owed: {owed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WA_APP_SECRET: &str = "6a1b0c5e2f9d4e7a8b3c1d0e9f8a7b6c";

/// A WhatsApp channel `wa` and a web chat channel `web`.
fn whatsapp_and_web_config(store_url: &str, site: &FakeApi, receiver: &Receiver) -> String {
    format!(
        r#"
        [store]
        url = "{store_url}"
        [[channels]]
        id = "wa"
        plugin = {whatsapp}
        allowed_hosts = ["http://{site}"]
        config = {{ api_base = "{site_url}/v21.0", phone_number_id = "106540352242922" }}
        secrets = {{ app_secret = "{WA_APP_SECRET}", access_token = "token", verify_token = "verify" }}
        # The fake Graph API is not the plugin's declared host, the token's default scope.
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

/// The WhatsApp text fixture (from +1 650 555 1234, a verified phone), sent now.
fn whatsapp_text_now() -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&fixture("whatsapp", "text.json")).expect("fixture JSON");
    let now = jiff::Timestamp::now().as_second().to_string();
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = json!(now);
    body.to_string().into_bytes()
}

/// A WhatsApp user (verified phone) and an already-known web chat visitor are two
/// contacts until the visitor logs in on the site, which reports the same phone as
/// verified: the visitor's contact is merged into the WhatsApp user's (`contact.merged`
/// with the evidence), the message continues that conversation; unmerge restores two
/// contacts, and the shared phone does not merge them again.
async fn verified_phone_merges_known_contacts(store_url: &str) {
    let (site, receiver) = site_and_receiver().await;
    let gateway = Gateway::start(&whatsapp_and_web_config(store_url, &site, &receiver))
        .await
        .expect("gateway");

    // 1. A WhatsApp user writes: contact A, verified phone +16505551234.
    let (status, text) = deliver_meta(&gateway, "wa", WA_APP_SECRET, &whatsapp_text_now()).await;
    assert_eq!(status, 200, "{text}");
    let from_wa = receiver.wait_of_type("message.received", 1).await.remove(0);
    let whatsapp_user = from_wa["contact"]["id"]
        .as_str()
        .expect("contact")
        .to_owned();
    let conversation = from_wa["conversation"]["id"]
        .as_str()
        .expect("cv")
        .to_owned();

    // 2. An anonymous web visitor: contact B.
    send(
        &gateway,
        "web",
        json!({
            "type": "message", "id": "vm1",
            "visitor": {"id": "visitor-77", "name": "Sheena", "phone": "+1 650 555 1234"},
            "text": "¿Hacéis envíos?",
        }),
    )
    .await;
    let received = receiver.wait_of_type("message.received", 2).await;
    let visitor = received[1]["contact"]["id"]
        .as_str()
        .expect("contact")
        .to_owned();
    assert_ne!(visitor, whatsapp_user, "an unverified phone links nothing");

    // 3. The visitor logs in: the site vouches for the phone, now verified.
    send(&gateway, "web", json!({
        "type": "message", "id": "vm2",
        "visitor": {"id": "visitor-77", "name": "Sheena", "phone": "+1 650 555 1234", "authenticated": true},
        "text": "Ya he iniciado sesión",
    }))
    .await;
    let merged = receiver.wait_of_type("contact.merged", 1).await.remove(0);
    assert_eq!(merged["merge"]["survivor"], whatsapp_user.as_str());
    assert_eq!(merged["merge"]["absorbed"], visitor.as_str());
    assert_eq!(
        merged["merge"]["evidence"],
        "same verified phone +16505551234 reported on channel web"
    );
    assert_eq!(merged["contact"]["id"], whatsapp_user.as_str());
    settled(&gateway, merged["merge"]["id"].as_str().expect("id")).await;
    let received = receiver.wait_of_type("message.received", 3).await;
    assert_eq!(
        received[2]["contact"]["id"],
        whatsapp_user.as_str(),
        "one contact"
    );
    assert_eq!(received[2]["conversation"]["id"], conversation.as_str());
    assert_eq!(
        received[2]["conversation"]["channels_used"],
        json!(["wa", "web"])
    );
    let switched = receiver
        .wait_of_type("conversation.channel_switched", 1)
        .await
        .remove(0);
    assert_eq!(switched["conversation"]["previous_channel"], "wa");
    let (status, details) = api(
        &gateway,
        "GET",
        &format!("/v1/contacts/{whatsapp_user}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["merges"][0]["absorbed"], visitor.as_str());
    assert_eq!(details["merges"][0]["strength"], "verified");
    assert!(
        details["handles"].to_string().contains("web:visitor-77"),
        "{details}"
    );

    // 4. Unmerge restores two contacts; the shared phone does not merge them again.
    let (status, undone) = api(
        &gateway,
        "POST",
        &format!("/v1/contacts/{whatsapp_user}/unmerge"),
        Some(json!({"contact_id": visitor})),
    )
    .await;
    assert_eq!(status, 200, "{undone}");
    receiver.wait_of_type("contact.unmerged", 1).await;
    send(
        &gateway,
        "web",
        json!({
            "type": "message", "id": "vm3",
            "visitor": {"id": "visitor-77", "phone": "+1 650 555 1234", "authenticated": true},
            "text": "¿Sigo aquí?",
        }),
    )
    .await;
    let received = receiver.wait_of_type("message.received", 4).await;
    assert_eq!(
        received[3]["contact"]["id"],
        visitor.as_str(),
        "two contacts again"
    );
    let (_, restored) = api(&gateway, "GET", &format!("/v1/contacts/{visitor}"), None).await;
    assert!(
        restored["handles"].to_string().contains("web:visitor-77"),
        "{restored}"
    );
    assert!(restored.get("merged_into").is_none(), "{restored}");
    assert_eq!(receiver.of_type("contact.merged").len(), 1, "merged once");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_phone_merge_on_the_memory_store() {
    verified_phone_merges_known_contacts("memory://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_phone_merge_on_redis() {
    let redis = RedisServer::start().expect("redis-server");
    verified_phone_merges_known_contacts(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_on_the_memory_store() {
    journey("memory://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_on_redis() {
    let redis = RedisServer::start().expect("redis-server");
    journey(&redis.url()).await;
}
