//! The e-mail plugin, natively, for each provider: payloads shaped like the providers'
//! documented inbound webhooks, their authentication, and their send APIs.

use omnigate_sdk::testing::{DEFAULT_NOW_MS, Harness, fixture, request, response};
use omnigate_sdk::{
    Channel, EventBody, HttpRequest, InboundEvent, MediaKind, Message, OutboundMessage, Pair, Part,
    ReferralSource, SendError, SignatureScheme, WebhookError, WebhookOutcome, host,
};

use crate::Email;

const WEBHOOK_PASSWORD: &str = "pm-inbound-0f9e8d7c";
const SIGNING_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
const API_KEY: &str = "server-token-5b4a3c2d";
const NOW_SECS: i64 = DEFAULT_NOW_MS / 1000;
const MAILGUN_BOUNDARY: &str = "f5c0e5b4f0f94b6f8b2b5d2a0e1c9e77";
const SENDGRID_BOUNDARY: &str = "xYzZY";

fn harness(provider: &str) -> Harness {
    Harness::new()
        .config("provider", provider)
        .config("from", "support@shop.example")
        .config("from_name", "Shop Support")
        .config("mailgun_domain", "mg.shop.example")
        .config("webhook_user", "postmark")
        .config("api_base", "https://mail.example")
        .secret("webhook_password", WEBHOOK_PASSWORD)
        .secret("signing_key", SIGNING_KEY)
        .secret("api_key", API_KEY)
        .allow_host("mail.example")
}

/// `Basic base64(user:password)` computed independently of the SDK.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn post(content_type: &str, authorization: Option<&str>, body: &[u8]) -> HttpRequest {
    let mut headers = vec![("content-type", content_type)];
    headers.extend(authorization.map(|value| ("authorization", value)));
    request("POST", "/webhooks/mail", "", &headers, body)
}

fn postmark_request(name: &str) -> HttpRequest {
    let auth = basic("postmark", WEBHOOK_PASSWORD);
    post(
        "application/json",
        Some(&auth),
        &fixture(&format!("fixtures/{name}")),
    )
}

/// The Mailgun fixture with its signature fields filled in at `ts`.
fn mailgun_body(h: &Harness, ts: i64, token: &str) -> Vec<u8> {
    let signature = h
        .run(|| {
            host::sign(
                SignatureScheme::HmacSha256Hex,
                "signing_key",
                format!("{ts}{token}").as_bytes(),
            )
        })
        .expect("sign");
    String::from_utf8_lossy(&fixture("fixtures/mailgun_inbound.multipart"))
        .replace("{{timestamp}}", &ts.to_string())
        .replace("{{token}}", token)
        .replace("{{signature}}", &signature)
        .into_bytes()
}

fn mailgun_request(body: &[u8]) -> HttpRequest {
    post(
        &format!("multipart/form-data; boundary={MAILGUN_BOUNDARY}"),
        None,
        body,
    )
}

fn sendgrid_request(authorization: Option<&str>) -> HttpRequest {
    post(
        &format!("multipart/form-data; boundary={SENDGRID_BOUNDARY}"),
        authorization,
        &fixture("fixtures/sendgrid_inbound.multipart"),
    )
}

fn one_event(h: &Harness, request: HttpRequest) -> InboundEvent {
    let mut outcome = h
        .run(|| Email::handle_webhook(request))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(outcome.response.status, 200);
    assert_eq!(outcome.events.len(), 1);
    outcome.events.remove(0)
}

fn message(event: &InboundEvent) -> &Message {
    match &event.body {
        EventBody::Message(message) => message,
        other => panic!("{other:?}"),
    }
}

fn media(message: &Message) -> Vec<(MediaKind, Option<String>, Option<String>)> {
    message
        .parts
        .iter()
        .map(|part| match part {
            Part::Media(m) => (m.kind, m.mime_type.clone(), m.filename.clone()),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn refused(result: Result<WebhookOutcome, WebhookError>) -> WebhookError {
    match result {
        Err(error) => error,
        Ok(outcome) => panic!("expected a refusal, got {outcome:?}"),
    }
}

#[test]
fn postmark_inbound_with_html_and_an_attachment() {
    let h = harness("postmark");
    let event = one_event(&h, postmark_request("postmark_inbound.json"));
    assert_eq!(
        event.external_id,
        "CAE6Kq2vz5S2Gs7Y3tW1hN0aQ@mail.example.com"
    );
    assert_eq!(event.contact.id, "ana.ruiz@example.com");
    assert_eq!(event.contact.name.as_deref(), Some("Ana Ruiz"));
    assert_eq!(event.account.as_deref(), Some("support@shop.example"));
    // Received-SPF: Pass → the provider vouches for the sender.
    assert!(event.contact.handles[0].verified);
    let message = message(&event);
    let text = message.text.as_deref().unwrap_or_default();
    assert!(text.starts_with("Order 7421: wrong size\n\nHi,"), "{text}");
    assert_eq!(
        media(message),
        vec![
            (
                MediaKind::Document,
                Some("text/html".into()),
                Some("body.html".into())
            ),
            (
                MediaKind::Image,
                Some("image/jpeg".into()),
                Some("label.jpg".into())
            ),
        ]
    );
    assert!(message.referral.is_none() && message.reply_to.is_none());
}

#[test]
fn html_only_mail_is_reduced_to_text_and_an_unauthenticated_sender_is_probable() {
    let h = harness("postmark");
    let event = one_event(&h, postmark_request("postmark_html_only_spf_softfail.json"));
    assert!(!event.contact.handles[0].verified, "SPF softfail");
    let text = message(&event).text.clone().unwrap_or_default();
    assert!(
        text.contains("the shoes in order 7421 are a 41, I ordered a 42"),
        "{text}"
    );
    assert!(!text.contains('<'), "{text}");
}

#[test]
fn a_reply_threads_and_a_plus_address_carries_the_link_token() {
    let h = harness("postmark");
    let event = one_event(&h, postmark_request("postmark_reply.json"));
    let message = message(&event);
    assert_eq!(
        message.reply_to.as_deref(),
        Some("msg_01jd2xk8q3v5r7t9w1y3a5c7e9@shop.example")
    );
    assert_eq!(
        message.text.as_deref(),
        Some("Re: your message\n\nYes, a 42 please. Thanks!"),
        "the reply without the quoted mail"
    );
    let referral = message.referral.clone().expect("link token");
    assert_eq!(referral.source, ReferralSource::Link);
    assert_eq!(referral.ref_payload.as_deref(), Some("lk-0000000000"));
}

#[test]
fn postmark_basic_auth_is_required() {
    let h = harness("postmark");
    let body = fixture("fixtures/postmark_inbound.json");
    for (authorization, reason) in [
        (None, "missing authorization header"),
        (Some(basic("postmark", "guess")), "signature does not match"),
        (
            Some(basic("someone", WEBHOOK_PASSWORD)),
            "wrong Basic user name",
        ),
    ] {
        let request = post("application/json", authorization.as_deref(), &body);
        assert_eq!(
            refused(h.run(|| Email::handle_webhook(request))),
            WebhookError::Unauthorized(reason.into())
        );
    }
}

#[test]
fn postmark_malformed_bodies_are_400() {
    let h = harness("postmark");
    let auth = basic("postmark", WEBHOOK_PASSWORD);
    let cases: [(&[u8], &str); 3] = [
        (b"{not json", "invalid JSON body"),
        (
            br#"{"Subject": "hi", "Headers": [{"Name": "Message-ID", "Value": "<a@b>"}]}"#,
            "the mail has no sender address",
        ),
        (
            br#"{"FromFull": {"Email": "a@b.example"}}"#,
            "the mail has no Message-ID",
        ),
    ];
    for (body, reason) in cases {
        match h.run(|| Email::handle_webhook(post("application/json", Some(&auth), body))) {
            Err(WebhookError::BadRequest(got)) => assert!(got.starts_with(reason), "{got}"),
            other => panic!("{reason}: {other:?}"),
        }
    }
}

#[test]
fn mailgun_signed_multipart_with_an_attachment() {
    let h = harness("mailgun");
    let body = mailgun_body(
        &h,
        NOW_SECS - 10,
        "b4f0f94b6f8b2b5d2a0e1c9e77f5c0e5a1b2c3d4e5f6a7b8c9",
    );
    let event = one_event(&h, mailgun_request(&body));
    assert_eq!(
        event.external_id,
        "CAE6Kq2xMg5nB1vC8dE2fG3hJ@mail.example.com"
    );
    assert_eq!(event.contact.id, "ana.ruiz@example.com");
    assert!(event.contact.handles[0].verified, "X-Mailgun-Spf: Pass");
    assert_eq!(event.account.as_deref(), Some("support@mg.shop.example"));
    let message = message(&event);
    assert!(
        message
            .text
            .as_deref()
            .is_some_and(|t| t.starts_with("Invoice for order 7421\n\nCould you send"))
    );
    assert_eq!(
        media(message)[1],
        (
            MediaKind::Document,
            Some("application/pdf".into()),
            Some("invoice-7421.pdf".into())
        )
    );
}

#[test]
fn mailgun_bad_missing_and_stale_signatures_are_401() {
    let h = harness("mailgun");
    let stale = mailgun_body(&h, NOW_SECS - 301, "tok");
    assert_eq!(
        refused(h.run(|| Email::handle_webhook(mailgun_request(&stale)))),
        WebhookError::Unauthorized("timestamp 301 s from now, tolerance 300 s".into())
    );
    let forged = String::from_utf8_lossy(&mailgun_body(&h, NOW_SECS, "tok"))
        .replace("Could you send", "Please wire")
        .replace("name=\"token\"\r\n\r\ntok", "name=\"token\"\r\n\r\ntok2")
        .into_bytes();
    assert_eq!(
        refused(h.run(|| Email::handle_webhook(mailgun_request(&forged)))),
        WebhookError::Unauthorized("signature does not match".into())
    );
    let unsigned = String::from_utf8_lossy(&fixture("fixtures/mailgun_inbound.multipart"))
        .replace("name=\"signature\"", "name=\"x-signature\"")
        .into_bytes();
    assert_eq!(
        refused(h.run(|| Email::handle_webhook(mailgun_request(&unsigned)))),
        WebhookError::Unauthorized("missing form field `signature`".into())
    );
    let not_a_form = post("application/json", None, b"{}");
    assert!(matches!(
        refused(h.run(|| Email::handle_webhook(not_a_form))),
        WebhookError::BadRequest(reason) if reason.contains("is not a form")
    ));
}

#[test]
fn sendgrid_inbound_parse_with_threading_headers() {
    let h = harness("sendgrid").config("webhook_user", "parse");
    let auth = basic("parse", WEBHOOK_PASSWORD);
    let event = one_event(&h, sendgrid_request(Some(&auth)));
    assert_eq!(
        event.external_id,
        "CAE6Kq2yRr7pW3xV9bN1mK4sT@mail.example.com"
    );
    assert!(event.contact.handles[0].verified, "SPF pass");
    let message = message(&event);
    assert_eq!(
        message.reply_to.as_deref(),
        Some("msg_01jd2xk8q3v5r7t9w1y3a5c7e9@shop.example")
    );
    assert_eq!(
        media(message)[1],
        (
            MediaKind::Image,
            Some("image/jpeg".into()),
            Some("box.jpg".into())
        )
    );
    assert_eq!(
        refused(h.run(|| Email::handle_webhook(sendgrid_request(None)))),
        WebhookError::Unauthorized("missing authorization header".into())
    );
    let truncated = post(
        &format!("multipart/form-data; boundary={SENDGRID_BOUNDARY}"),
        Some(&auth),
        b"--xYzZY\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nana@example.com",
    );
    assert!(matches!(
        refused(h.run(|| Email::handle_webhook(truncated))),
        WebhookError::BadRequest(reason) if reason.starts_with("malformed multipart body")
    ));
}

#[test]
fn an_unknown_provider_is_refused_with_the_reason() {
    let h = harness("pigeon");
    assert!(matches!(
        refused(h.run(|| Email::handle_webhook(postmark_request("postmark_inbound.json")))),
        WebhookError::Unauthorized(reason) if reason.contains("expected postmark, mailgun or sendgrid")
    ));
}

fn reply() -> OutboundMessage {
    OutboundMessage {
        id: "msg_01".into(),
        recipient: "ana.ruiz@example.com".into(),
        conversation_id: "cv_01".into(),
        text: Some("A 42 is on its way.".into()),
        parts: Vec::new(),
        reply_to: Some("CAE6Kq2vz5S2Gs7Y3tW1hN0aQ@mail.example.com".into()),
        interactive: None,
        template: None,
        reaction: None,
        options: vec![Pair {
            name: "in_reply_to_subject".into(),
            value: "Order 7421: wrong size".into(),
        }],
    }
}

fn header<'a>(request: &'a omnigate_sdk::FetchRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

#[test]
fn postmark_send_sets_threading_headers() {
    let h = harness("postmark").on_fetch(|_| {
        Ok(response(
            200,
            &[],
            r#"{"To": "ana.ruiz@example.com", "SubmittedAt": "2026-11-24T10:05:00Z", "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817", "ErrorCode": 0, "Message": "OK"}"#,
        ))
    });
    let receipt = h.run(|| Email::send(reply())).expect("sent");
    assert_eq!(receipt.external_id, "b7bc2f4a-e38e-4336-af7d-e6c392c2f817");
    let sent = &h.sent()[0];
    assert_eq!(sent.url, "https://mail.example/email");
    assert_eq!(header(sent, "x-postmark-server-token"), Some(API_KEY));
    let body: serde_json::Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(body["From"], "Shop Support <support@shop.example>");
    assert_eq!(body["Subject"], "Re: Order 7421: wrong size");
    assert_eq!(
        body["Headers"],
        serde_json::json!([
            {"Name": "In-Reply-To", "Value": "<CAE6Kq2vz5S2Gs7Y3tW1hN0aQ@mail.example.com>"},
            {"Name": "References", "Value": "<CAE6Kq2vz5S2Gs7Y3tW1hN0aQ@mail.example.com>"}
        ])
    );
}

#[test]
fn mailgun_and_sendgrid_sends() {
    let h = harness("mailgun").on_fetch(|_| {
        Ok(response(
            200,
            &[],
            r#"{"id": "<20261124100500.1.5D1C9B0F1A2E3D4C@mg.shop.example>", "message": "Queued. Thank you."}"#,
        ))
    });
    let receipt = h.run(|| Email::send(reply())).expect("sent");
    assert_eq!(
        receipt.external_id,
        "20261124100500.1.5D1C9B0F1A2E3D4C@mg.shop.example"
    );
    let sent = &h.sent()[0];
    assert_eq!(sent.url, "https://mail.example/v3/mg.shop.example/messages");
    let expected_auth = basic("api", API_KEY);
    assert_eq!(header(sent, "authorization"), Some(expected_auth.as_str()));
    let form = omnigate_sdk::form(&sent.body);
    assert!(form.contains(&(
        "h:In-Reply-To".to_owned(),
        "<CAE6Kq2vz5S2Gs7Y3tW1hN0aQ@mail.example.com>".to_owned()
    )));

    let h = harness("sendgrid").on_fetch(|_| {
        Ok(response(
            202,
            &[("X-Message-Id", "W4xq3CgXSvq7nTA0U4oU2g")],
            "",
        ))
    });
    let receipt = h.run(|| Email::send(reply())).expect("sent");
    assert_eq!(receipt.external_id, "W4xq3CgXSvq7nTA0U4oU2g");
    let sent = &h.sent()[0];
    assert_eq!(sent.url, "https://mail.example/v3/mail/send");
    let bearer = format!("Bearer {API_KEY}");
    assert_eq!(header(sent, "authorization"), Some(bearer.as_str()));
    let body: serde_json::Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(
        body["headers"]["In-Reply-To"],
        "<CAE6Kq2vz5S2Gs7Y3tW1hN0aQ@mail.example.com>"
    );
    assert_eq!(
        body["personalizations"][0]["to"][0]["email"],
        "ana.ruiz@example.com"
    );
}

#[test]
fn provider_errors_are_mapped() {
    let postmark = |status: u16, body: &'static str| {
        let h = harness("postmark").on_fetch(move |_| Ok(response(status, &[], body)));
        h.run(|| Email::send(reply()))
    };
    match postmark(
        422,
        r#"{"ErrorCode": 406, "Message": "You tried to send to a recipient that has been marked as inactive."}"#,
    ) {
        Err(SendError::Rejected(error)) => assert_eq!(error.code, "406"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        postmark(422, r#"{"ErrorCode": 300, "Message": "Invalid 'To' address"}"#),
        Err(SendError::Invalid(why)) if why.contains("300")
    ));
    assert!(matches!(
        postmark(
            401,
            r#"{"ErrorCode": 10, "Message": "Bad or missing API token"}"#
        ),
        Err(SendError::Unauthorized(_))
    ));
    let h = harness("sendgrid")
        .on_fetch(|_| Ok(response(429, &[("Retry-After", "12")], r#"{"errors": []}"#)));
    assert_eq!(
        h.run(|| Email::send(reply())),
        Err(SendError::RateLimited(Some(12)))
    );
    let mut with_media = reply();
    with_media.parts = vec![Part::Media(omnigate_sdk::Media {
        kind: MediaKind::Image,
        id: None,
        url: Some("https://shop.example/a.png".into()),
        mime_type: None,
        caption: None,
        filename: None,
        size: None,
        sha256: None,
    })];
    assert!(matches!(
        harness("postmark").run(|| Email::send(with_media)),
        Err(SendError::Invalid(_))
    ));
}
