//! Twilio end to end: every fixture (SMS, MMS, WhatsApp, status callbacks) signed like
//! Twilio signs it, over the public URL the gateway is configured with; a click-to-WhatsApp
//! referral reaching `first_touch`; a `WaId` libphonenumber does not list kept as a phone;
//! refusals; and a reply against a fake Twilio API with Basic auth filled in by the host.

use omnigate_signature::Scheme;
use omnigate_tests::{
    FakeApi, Gateway, Receiver, common_config, fixture_names_ending, json_answer, plugin_path,
    post, reply_url, send_reply, start_channel, toml_path, wait_for_external_ids,
};
use serde_json::json;

const AUTH_TOKEN: &str = "9b3c5d7e1f2a4b6c8d0e1f3a5b7c9d1e";
const ACCOUNT: &str = "AC9f2c1d0b7a6e5f4c3b2a1908f7e6d5c4";
const PUBLIC_BASE: &str = "https://hooks.example.com";

/// The channel `tw`; `server` is a `[server]` table or nothing.
fn config_with(api: &FakeApi, receiver: &Receiver, server: &str) -> String {
    format!(
        r#"
        {server}
        [[channels]]
        id = "tw"
        plugin = {plugin}
        allowed_hosts = ["http://{host}"]
        config = {{ account_sid = "{ACCOUNT}", from = "+15017250604", api_base = "{url}" }}
        secrets = {{ auth_token = "{AUTH_TOKEN}" }}
        # The fake Twilio API is not the plugin's declared host, the token's default scope.
        secrets_hosts = {{ auth_token = ["http://{host}"] }}
        {common}"#,
        plugin = toml_path(&plugin_path("twilio")),
        host = api.authority,
        url = api.url,
        common = common_config(receiver),
    )
}

fn created() -> omnigate_tests::Answer {
    json_answer(
        201,
        json!({"sid": "SMd4e5f60718293a4b5c6d7e8f90a1b2c3", "status": "queued"}),
    )
}

/// A gateway behind a proxy: `[server] public_url` names the URL Twilio calls.
async fn setup() -> (Gateway, Receiver, FakeApi) {
    let server = format!("[server]\npublic_url = \"{PUBLIC_BASE}\"");
    start_channel(
        |_| created(),
        |api, receiver| config_with(api, receiver, &server),
    )
    .await
}

fn fixture(name: &str) -> Vec<u8> {
    omnigate_tests::fixture("twilio", name)
}

/// `X-Twilio-Signature` of `body` POSTed to `url`: the URL, then every parameter's name
/// and value, sorted by name, HMAC-SHA1 with the auth token, base64.
fn twilio_signature(url: &str, body: &[u8]) -> String {
    let mut params = omnigate_sdk::form(body);
    params.sort();
    let text = params
        .iter()
        .fold(url.to_owned(), |text, (name, value)| text + name + value);
    omnigate_signature::sign(
        Scheme::HmacSha1Base64,
        AUTH_TOKEN.as_bytes(),
        text.as_bytes(),
    )
    .expect("sign")
}

async fn deliver(gateway: &Gateway, signed_for: &str, body: &[u8]) -> (u16, String) {
    deliver_with(gateway, &twilio_signature(signed_for, body), &[], body).await
}

async fn deliver_with(
    gateway: &Gateway,
    signature: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("x-twilio-signature".to_owned(), signature.to_owned()),
    ];
    headers.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    post(&gateway.url("/webhooks/tw"), &headers, body.to_vec())
        .await
        .expect("post")
}

/// The external id a fixture produces: the `MessageSid`, with `:<state>` for statuses.
fn expected_id(body: &[u8]) -> String {
    let params = omnigate_sdk::form(body);
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let sid = get("MessageSid").expect("MessageSid");
    match get("MessageStatus").as_deref() {
        Some("queued" | "sent") => format!("{sid}:sent"),
        Some("undelivered" | "failed") => format!("{sid}:failed"),
        Some(state) => format!("{sid}:{state}"),
        None => sid,
    }
}

#[tokio::test]
async fn every_fixture_through_the_gateway_behind_a_proxy() {
    let (gateway, receiver, _api) = setup().await;
    let public = format!("{PUBLIC_BASE}/webhooks/tw");
    let mut expected = Vec::new();
    for name in fixture_names_ending("twilio", ".form") {
        let body = fixture(&name);
        let (status, text) = deliver(&gateway, &public, &body).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert!(
            text.contains("<Response>"),
            "{name}: TwiML answer, got {text}"
        );
        expected.push(expected_id(&body));
    }
    expected.dedup();
    wait_for_external_ids(&receiver, &expected, |delivered, id| delivered == id).await;
    let received = receiver.of_type("message.received");
    let by_text = |text: &str| {
        received
            .iter()
            .find(|d| d["message"]["text"] == text)
            .cloned()
            .unwrap_or_else(|| panic!("no message {text:?}"))
    };

    // A click-to-WhatsApp ad: the click id reaches the conversation's first touch.
    let ad = by_text("Hi! I saw your ad, is it still on?");
    assert_eq!(ad["referral"]["source"], "ad");
    let first_touch = &ad["conversation"]["attribution"]["first_touch"];
    assert_eq!(first_touch["source"], "ad", "{ad:#}");
    assert!(
        first_touch["click_id"]["ctwa_clid"]
            .as_str()
            .is_some_and(|clid| clid.starts_with("ARAkLkA8rmlF")),
        "{first_touch:#}"
    );
    let handles = ad["contact"]["handles"].as_array().expect("handles");
    assert!(
        handles.contains(&json!({"kind": "phone", "value": "+14155552671", "verified": true})),
        "{handles:?}"
    );

    // WhatsApp vouches for this number although libphonenumber does not list it: kept.
    let unlisted = by_text("Shalom");
    let handles = unlisted["contact"]["handles"].as_array().expect("handles");
    assert!(
        handles.contains(&json!({"kind": "phone", "value": "+972987654321", "verified": true})),
        "{handles:?}"
    );

    let sms = by_text("Hi, do you ship to Rhode Island?");
    assert_eq!(sms["channel"]["account"], "+15017250604");
    let statuses = receiver.of_type("message.status");
    assert!(
        statuses.iter().any(|s| s["status"]["status"] == "failed"),
        "{statuses:#?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn refusals_and_the_public_url() {
    let (gateway, receiver, _api) = setup().await;
    let body = fixture("sms.form");
    // Signed for the URL the gateway listens on, not the public one Twilio calls.
    let (status, text) = deliver(&gateway, &gateway.url("/webhooks/tw"), &body).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature does not match"), "{text}");
    // A caller cannot name the URL itself: the host replaces the header.
    let evil = "https://evil.example/webhooks/tw";
    let (status, _) = deliver_with(
        &gateway,
        &twilio_signature(evil, &body),
        &[("x-omnigate-public-url", evil)],
        &body,
    )
    .await;
    assert_eq!(status, 401);
    let (status, text) = post(&gateway.url("/webhooks/tw"), &[], body.clone())
        .await
        .expect("post");
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("missing x-twilio-signature header"), "{text}");
    // Malformed but signed: 400 naming the parameter.
    let public = format!("{PUBLIC_BASE}/webhooks/tw");
    let broken = b"MessageSid=SM1&From=%2B14017122661&NumMedia=two";
    let (status, text) = deliver(&gateway, &public, broken).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("NumMedia"), "{text}");
    assert!(receiver.events().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn without_public_url_the_request_host_counts() {
    let (gateway, receiver, _api) = start_channel(
        |_| created(),
        |api, receiver| config_with(api, receiver, ""),
    )
    .await;
    let body = fixture("sms.form");
    let (status, text) = deliver(&gateway, &gateway.url("/webhooks/tw"), &body).await;
    assert_eq!(status, 200, "{text}");
    // `X-Forwarded-*` are ignored unless `[server] trust_forwarded`.
    let forwarded = "https://hooks.example.com/webhooks/tw";
    let (status, _) = deliver_with(
        &gateway,
        &twilio_signature(forwarded, &fixture("mms.form")),
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "hooks.example.com"),
        ],
        &fixture("mms.form"),
    )
    .await;
    assert_eq!(status, 401);
    wait_for_external_ids(&receiver, &[expected_id(&body)], |d, id| d == id).await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_whatsapp_reply_goes_out_with_basic_auth() {
    let (gateway, receiver, api) = setup().await;
    let public = format!("{PUBLIC_BASE}/webhooks/tw");
    let (status, _) = deliver(&gateway, &public, &fixture("whatsapp_text.form")).await;
    assert_eq!(status, 200);
    let first = omnigate_tests::first_received(&receiver).await;
    let (status, text) = send_reply(&reply_url(&gateway, &first), "Sí, la tenemos").await;
    assert!(status < 300, "{status}: {text}");
    let request = api.first_request("Twilio").await;
    assert_eq!(
        request.uri,
        format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    );
    use base64::Engine as _;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{AUTH_TOKEN}"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
    let form: Vec<(String, String)> = omnigate_sdk::form(&request.body);
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("To"), Some("whatsapp:+14155552671"));
    assert_eq!(field("From"), Some("whatsapp:+15017250604"));
    assert_eq!(field("Body"), Some("Sí, la tenemos"));
    gateway.stop().await;
}
