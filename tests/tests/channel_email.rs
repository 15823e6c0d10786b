//! E-mail end to end: a conversation started on web chat continues by e-mail (the
//! customer writes to the `support+<link token>@…` address the business gave them: one
//! contact, one conversation), the business's reply goes out through Postmark threaded
//! under the customer's mail, and Mailgun/SendGrid inbound through the real gateway.

use omnigate_signature::Scheme;
use omnigate_tests::{
    FakeApi, Gateway, Receiver, api_auth, common_config, json_answer, plugin_path, post,
    site_and_receiver, standard_webhooks_headers, toml_path,
};
use serde_json::{Value, json};

const SITE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WEBHOOK_PASSWORD: &str = "pm-inbound-0f9e8d7c";
const SIGNING_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
const API_KEY: &str = "server-token-5b4a3c2d";

/// Web chat `web`, and e-mail channel `mail` on `provider` sending to `api`.
fn config(site: &FakeApi, api: &FakeApi, receiver: &Receiver, provider: &str) -> String {
    format!(
        r#"
        [identity]
        email_address = "support@shop.example"
        [[channels]]
        id = "web"
        plugin = {webchat}
        allowed_hosts = ["http://{site}"]
        config = {{ callback_url = "{site_url}/omnigate/replies" }}
        secrets = {{ signing_secret = "{SITE_SECRET}" }}
        [[channels]]
        id = "mail"
        plugin = {email}
        allowed_hosts = ["http://{api}"]
        config = {{ provider = "{provider}", from = "support@shop.example", api_base = "{api_url}", webhook_user = "inbound", mailgun_domain = "mg.shop.example" }}
        secrets = {{ webhook_password = "{WEBHOOK_PASSWORD}", signing_key = "{SIGNING_KEY}", api_key = "{API_KEY}" }}
        # The fake provider is not one of the plugin's declared hosts, the key's default scope.
        secrets_hosts = {{ api_key = ["http://{api}"] }}
        {common}"#,
        webchat = toml_path(&plugin_path("webchat")),
        email = toml_path(&plugin_path("email")),
        site = site.authority,
        site_url = site.url,
        api = api.authority,
        api_url = api.url,
        common = common_config(receiver),
    )
}

async fn start(provider: &str) -> (Gateway, Receiver, FakeApi) {
    let (site, receiver) = site_and_receiver().await;
    let api = FakeApi::start(|_| {
        json_answer(
            200,
            json!({"To": "ana.ruiz@example.com", "SubmittedAt": "2026-11-24T10:05:00Z",
                   "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817", "ErrorCode": 0, "Message": "OK"}),
        )
    })
    .await
    .expect("provider");
    let gateway = Gateway::start(&config(&site, &api, &receiver, provider))
        .await
        .expect("gateway");
    (gateway, receiver, api)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn post_mail(
    gateway: &Gateway,
    content_type: &str,
    auth: bool,
    body: Vec<u8>,
) -> (u16, String) {
    let mut headers = vec![("content-type".to_owned(), content_type.to_owned())];
    if auth {
        headers.push((
            "authorization".to_owned(),
            basic("inbound", WEBHOOK_PASSWORD),
        ));
    }
    post(&gateway.url("/webhooks/mail"), &headers, body)
        .await
        .expect("post")
}

#[tokio::test]
async fn an_email_reply_continues_the_web_chat_conversation() {
    let (gateway, receiver, api) = start("postmark").await;
    // 1. A visitor writes on the web chat.
    let body = json!({
        "type": "message", "id": "w1",
        "visitor": {"id": "visitor-1", "name": "Ana"},
        "text": "Hi, my order 7421 came in the wrong size",
    })
    .to_string()
    .into_bytes();
    let headers = standard_webhooks_headers(SITE_SECRET, "wh_1", &body).expect("sign");
    let (status, text) = post(&gateway.url("/webhooks/web"), &headers, body)
        .await
        .expect("post");
    assert!(status < 300, "{status} {text}");
    let first = receiver.wait_of_type("message.received", 1).await.remove(0);
    let contact = first["contact"]["id"].as_str().expect("contact").to_owned();
    let conversation = first["conversation"]["id"].as_str().expect("cv").to_owned();

    // 2. The business hands out its support address with a link token.
    let (status, token) = post(
        &gateway.url(&format!("/v1/contacts/{contact}/link-tokens")),
        &api_auth(),
        String::new(),
    )
    .await
    .expect("token");
    assert_eq!(status, 201, "{token}");
    let token: Value = serde_json::from_str(&token).expect("json");
    let code = token["token"].as_str().expect("token").to_owned();
    assert_eq!(
        token["links"]["email"],
        format!("support+{code}@shop.example")
    );

    // 3. The customer e-mails that address (Postmark inbound, Basic auth on the URL).
    let mail = String::from_utf8(omnigate_tests::fixture("email", "postmark_reply.json"))
        .expect("utf-8")
        .replace("lk-0000000000", &code)
        .into_bytes();
    let (status, text) = post_mail(&gateway, "application/json", false, mail.clone()).await;
    assert_eq!(status, 401, "{text}");
    let (status, text) = post_mail(&gateway, "application/json", true, mail).await;
    assert_eq!(status, 200, "{text}");
    let received = receiver.wait_of_type("message.received", 2).await;
    let second = &received[1];
    assert_eq!(second["channel"]["id"], "mail");
    assert_eq!(second["contact"]["id"], contact.as_str(), "one contact");
    assert_eq!(
        second["conversation"]["id"],
        conversation.as_str(),
        "the e-mail continues the web chat conversation"
    );
    assert_eq!(
        second["conversation"]["channels_used"],
        json!(["web", "mail"])
    );
    assert_eq!(
        second["message"]["reply_to"],
        "msg_01jd2xk8q3v5r7t9w1y3a5c7e9@shop.example"
    );
    let inbound_id = second["external_id"].as_str().expect("id").to_owned();

    // 4. The reply goes out by e-mail, threaded under the customer's mail.
    let (status, text) = post(
        &gateway.url(&format!("/v1/conversations/{conversation}/messages")),
        &api_auth(),
        json!({"text": "A 42 is on its way.", "reply_to": inbound_id}).to_string(),
    )
    .await
    .expect("reply");
    assert!(status < 300, "{status}: {text}");
    let sent = api.first_request("Postmark").await;
    assert_eq!(sent.uri, "/email");
    assert_eq!(sent.header("x-postmark-server-token"), Some(API_KEY));
    let mail = sent.json();
    assert_eq!(mail["To"], "ana.ruiz@example.com");
    assert_eq!(mail["Headers"][0]["Name"], "In-Reply-To");
    assert_eq!(mail["Headers"][0]["Value"], format!("<{inbound_id}>"));
    gateway.stop().await;
}

#[tokio::test]
async fn mailgun_and_sendgrid_inbound_through_the_gateway() {
    let (gateway, receiver, _api) = start("mailgun").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let token = "b4f0f94b6f8b2b5d2a0e1c9e77f5c0e5a1b2c3d4e5f6a7b8c9";
    let signature = omnigate_signature::sign(
        Scheme::HmacSha256Hex,
        SIGNING_KEY.as_bytes(),
        format!("{now}{token}").as_bytes(),
    )
    .expect("sign");
    let body = String::from_utf8_lossy(&omnigate_tests::fixture(
        "email",
        "mailgun_inbound.multipart",
    ))
    .replace("{{timestamp}}", &now.to_string())
    .replace("{{token}}", token)
    .replace("{{signature}}", &signature)
    .into_bytes();
    let content_type = "multipart/form-data; boundary=f5c0e5b4f0f94b6f8b2b5d2a0e1c9e77";
    let (status, text) = post_mail(&gateway, content_type, false, body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let stale = String::from_utf8_lossy(&body)
        .replace(&now.to_string(), &(now - 3600).to_string())
        .into_bytes();
    assert_eq!(post_mail(&gateway, content_type, false, stale).await.0, 401);
    let mailgun = receiver.wait_of_type("message.received", 1).await.remove(0);
    assert_eq!(
        mailgun["external_id"],
        "CAE6Kq2xMg5nB1vC8dE2fG3hJ@mail.example.com"
    );
    assert!(
        mailgun["contact"]["handles"]
            .as_array()
            .expect("handles")
            .contains(&json!({"kind": "email", "value": "ana.ruiz@example.com", "verified": true}))
    );
    gateway.stop().await;

    let (gateway, receiver, _api) = start("sendgrid").await;
    let body = omnigate_tests::fixture("email", "sendgrid_inbound.multipart");
    let content_type = "multipart/form-data; boundary=xYzZY";
    assert_eq!(
        post_mail(&gateway, content_type, false, body.clone())
            .await
            .0,
        401
    );
    let (status, text) = post_mail(&gateway, content_type, true, body).await;
    assert_eq!(status, 200, "{text}");
    let sendgrid = receiver.wait_of_type("message.received", 1).await.remove(0);
    assert_eq!(
        sendgrid["external_id"],
        "CAE6Kq2yRr7pW3xV9bN1mK4sT@mail.example.com"
    );
    gateway.stop().await;
}
