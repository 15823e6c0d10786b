//! The plugin run natively against the SDK's fake host, with the fixtures in `fixtures/`.

use omnigate_sdk::testing::{Harness, fixture, request, response, standard_webhooks_request};
use omnigate_sdk::{
    Channel, Direction, EventBody, FetchError, FetchRequest, FetchResponse, Handle, HandleKind,
    InboundEvent, InteractiveKind, InteractiveStyle, Media, MediaKind, Message, OutboundMessage,
    Part, ProviderError, ReferralSource, SendError, WebhookError, header,
};

use crate::WebChat;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW_SECS: i64 = 1_795_514_400; // 2026-11-24T10:00:00Z

fn harness() -> Harness {
    Harness::new()
        .secret("signing_secret", SECRET)
        .config("callback_url", "https://shop.example/omnigate/replies")
        .allow_host("shop.example")
        .now(NOW_SECS * 1000 + 30_000)
}

fn receive(h: &Harness, name: &str) -> Result<InboundEvent, WebhookError> {
    let request = standard_webhooks_request(SECRET, &fixture(name), NOW_SECS);
    let mut outcome = h.run(|| WebChat::handle_webhook(request))?;
    assert_eq!(outcome.response.status, 200);
    assert_eq!(outcome.response.body, br#"{"ok":true}"#);
    assert_eq!(outcome.events.len(), 1);
    Ok(outcome.events.remove(0))
}

fn message(event: &InboundEvent) -> &Message {
    match &event.body {
        EventBody::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn describe() {
    let info = WebChat::describe();
    assert_eq!(info.id, "webchat");
    assert_eq!(info.config[0].name, "callback_url");
    assert_eq!(info.secrets[0].name, "signing_secret");
    assert!(info.outbound_hosts.is_empty());
}

#[test]
fn text_message_with_utm_page() {
    let event = receive(&harness(), "fixtures/message_utm.json").expect("accepted");
    assert_eq!(event.external_id, "site-msg-1001");
    assert_eq!(event.occurred_at, Some(NOW_SECS * 1000));
    assert_eq!(event.contact.id, "v-42");
    assert_eq!(event.contact.name.as_deref(), Some("Ana"));
    assert_eq!(
        event.contact.handles,
        vec![
            Handle {
                kind: HandleKind::Email,
                value: "ana@example.com".into(),
                verified: false
            },
            Handle {
                kind: HandleKind::Phone,
                value: "+34600111222".into(),
                verified: false
            },
        ]
    );
    let m = message(&event);
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.text.as_deref(), Some("Hola"));
    let referral = m.referral.as_ref().expect("referral from the page URL");
    assert_eq!(referral.source, ReferralSource::Link);
    assert_eq!(referral.campaign.as_deref(), Some("bf25"));
    assert_eq!(
        referral.referrer.as_deref(),
        Some("https://l.instagram.com/")
    );
    assert_eq!(
        (
            referral.click_ids[0].name.as_str(),
            referral.click_ids[0].value.as_str()
        ),
        ("fbclid", "abc")
    );
    assert_eq!(referral.utm.len(), 2);
}

#[test]
fn attachment_and_reply_to() {
    let event = receive(&harness(), "fixtures/message_attachment.json").expect("accepted");
    assert_eq!(
        event.occurred_at,
        Some(NOW_SECS * 1000 - 3_600_000 + 90_500)
    );
    let m = message(&event);
    assert_eq!(m.reply_to.as_deref(), Some("omni-msg-77"));
    assert_eq!(
        m.parts,
        vec![Part::Media(Media {
            kind: MediaKind::Image,
            id: None,
            url: Some("https://shop.example/uploads/v-42/shoe.jpg".into()),
            mime_type: Some("image/jpeg".into()),
            caption: None,
            filename: Some("shoe.jpg".into()),
            size: None,
            sha256: None,
        })]
    );
    // A page without UTM parameters, click ids or referrer carries no referral.
    assert_eq!(m.referral, None);
}

#[test]
fn authenticated_visitor_has_verified_handles() {
    let event = receive(&harness(), "fixtures/message_authenticated.json").expect("accepted");
    assert!(event.contact.handles.iter().all(|h| h.verified));
    assert_eq!(event.contact.handles.len(), 2);
    let reply = message(&event)
        .interactive_reply
        .as_ref()
        .expect("interactive reply");
    assert_eq!(
        (reply.kind, reply.id.as_str()),
        (InteractiveKind::Button, "track-order")
    );
}

#[test]
fn wrong_signature_is_unauthorized() {
    let mut request =
        standard_webhooks_request(SECRET, &fixture("fixtures/message_utm.json"), NOW_SECS);
    request.body.push(b' ');
    let result = harness().run(|| WebChat::handle_webhook(request));
    assert_eq!(
        result,
        Err(WebhookError::Unauthorized(
            "signature does not match".into()
        ))
    );

    let other_key = "whsec_b3RoZXIga2V5IGZvciB0ZXN0cw==";
    let request =
        standard_webhooks_request(other_key, &fixture("fixtures/message_utm.json"), NOW_SECS);
    let result = harness().run(|| WebChat::handle_webhook(request));
    assert_eq!(
        result,
        Err(WebhookError::Unauthorized(
            "signature does not match".into()
        ))
    );
}

#[test]
fn stale_timestamp_is_unauthorized() {
    let request = standard_webhooks_request(
        SECRET,
        &fixture("fixtures/message_utm.json"),
        NOW_SECS - 600,
    );
    let result = harness().run(|| WebChat::handle_webhook(request));
    assert_eq!(
        result,
        Err(WebhookError::Unauthorized(
            "timestamp 630 s old, tolerance 300 s".into()
        ))
    );
}

#[test]
fn unsigned_garbage_is_unauthorized_not_parsed() {
    let request = request("POST", "/webhooks/web", "", &[], b"not json");
    let result = harness().run(|| WebChat::handle_webhook(request));
    assert_eq!(
        result,
        Err(WebhookError::Unauthorized(
            "missing webhook-id header".into()
        ))
    );
}

#[test]
fn malformed_bodies_are_bad_requests_that_say_why() {
    let h = harness();
    let reason = |name: &str| match receive(&h, name) {
        Err(WebhookError::BadRequest(reason)) => reason,
        other => panic!("{name}: expected bad request, got {other:?}"),
    };
    let missing = reason("fixtures/malformed_missing_visitor_id.json");
    assert!(
        missing.starts_with("invalid JSON body: missing field `id`"),
        "{missing}"
    );
    assert_eq!(
        reason("fixtures/unknown_type.json"),
        "unknown type `typing`"
    );

    let bad = |body: &str| {
        let request = standard_webhooks_request(SECRET, body.as_bytes(), NOW_SECS);
        match h.run(|| WebChat::handle_webhook(request)) {
            Err(WebhookError::BadRequest(reason)) => reason,
            other => panic!("{body}: expected bad request, got {other:?}"),
        }
    };
    assert!(bad("{").starts_with("invalid JSON body: EOF while parsing"));
    assert_eq!(
        bad(r#"{"type":"message","id":"m","visitor":{"id":"v"}}"#),
        "message has no text, attachments or interactive_reply"
    );
    assert!(
        bad(r#"{"type":"message","id":"m","visitor":{"id":"v"},"text":"x","sent_at":"today"}"#)
            .starts_with("`sent_at` is not an RFC 3339 timestamp")
    );
    assert!(bad(r#"{"type":"message","id":"m","visitor":{"id":"v"},"attachments":[{"type":"gif","url":"u"}]}"#)
        .contains("unknown variant `gif`"));
}

#[test]
fn get_is_a_bad_request() {
    let request = request("GET", "/webhooks/web", "", &[], b"");
    let result = harness().run(|| WebChat::handle_webhook(request));
    assert_eq!(
        result,
        Err(WebhookError::BadRequest(
            "method GET not allowed, expected POST".into()
        ))
    );
}

fn reply() -> OutboundMessage {
    OutboundMessage {
        id: "omni-msg-1".into(),
        recipient: "v-42".into(),
        conversation_id: "cv_1".into(),
        text: Some("Yes, in stock!".into()),
        parts: vec![],
        reply_to: Some("site-msg-1002".into()),
        interactive: Some(omnigate_sdk::Interactive {
            style: InteractiveStyle::Buttons,
            body: "Want it?".into(),
            action_label: None,
            choices: vec![omnigate_sdk::Choice {
                id: "buy".into(),
                title: "Buy".into(),
                description: None,
            }],
        }),
        template: None,
        reaction: None,
        options: vec![],
    }
}

fn send_with(
    respond: impl FnMut(&FetchRequest) -> Result<FetchResponse, FetchError> + 'static,
) -> (Harness, Result<omnigate_sdk::SendReceipt, SendError>) {
    let h = harness().on_fetch(respond);
    let result = h.run(|| WebChat::send(reply()));
    (h, result)
}

#[test]
fn send_posts_a_signed_reply() {
    let (h, result) = send_with(|_| Ok(response(200, &[], r#"{"id":"site-77"}"#)));
    let receipt = result.expect("sent");
    assert_eq!(receipt.external_id, "site-77");

    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let req = &sent[0];
    assert_eq!(
        (req.method.as_str(), req.url.as_str()),
        ("POST", "https://shop.example/omnigate/replies")
    );
    let body: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
    assert_eq!(body["type"], "message");
    assert_eq!(body["id"], "omni-msg-1");
    assert_eq!(body["conversation_id"], "cv_1");
    assert_eq!(body["visitor_id"], "v-42");
    assert_eq!(body["text"], "Yes, in stock!");
    assert_eq!(body["reply_to"], "site-msg-1002");
    assert_eq!(body["interactive"]["choices"][0]["id"], "buy");
    assert_eq!(body["sent_at"], "2026-11-24T10:00:30Z");

    // The site can verify it exactly as the plugin verifies the site.
    let as_received = omnigate_sdk::HttpRequest {
        method: "POST".into(),
        path: "/omnigate/replies".into(),
        query: String::new(),
        headers: req.headers.clone(),
        body: req.body.clone(),
    };
    assert_eq!(header(&as_received, "webhook-id"), Some("omni-msg-1"));
    let verified = h.run(|| {
        omnigate_sdk::signature::verify_standard_webhooks(&as_received, "signing_secret", 300)
    });
    assert_eq!(verified, Ok(()));
}

#[test]
fn send_without_id_in_answer_uses_message_id() {
    let (_, result) = send_with(|_| Ok(response(204, &[], "")));
    assert_eq!(result.map(|r| r.external_id), Ok("omni-msg-1".to_owned()));
}

#[test]
fn send_maps_provider_errors() {
    let (_, r) = send_with(|_| Ok(response(429, &[("Retry-After", "120")], "")));
    assert_eq!(r, Err(SendError::RateLimited(Some(120))));
    let (_, r) = send_with(|_| Ok(response(401, &[], "bad signature")));
    assert_eq!(
        r,
        Err(SendError::Unauthorized("HTTP 401: bad signature".into()))
    );
    let (_, r) = send_with(|_| Ok(response(400, &[], "unknown visitor")));
    assert_eq!(
        r,
        Err(SendError::Rejected(ProviderError {
            code: "400".into(),
            title: "HTTP 400".into(),
            detail: Some("unknown visitor".into()),
        }))
    );
    let (_, r) = send_with(|_| Ok(response(500, &[], "")));
    assert_eq!(r, Err(SendError::Transient("HTTP 500".into())));
    let (_, r) = send_with(|_| Err(FetchError::Timeout));
    assert!(matches!(r, Err(SendError::Transient(_))), "{r:?}");
}

#[test]
fn send_refuses_what_it_cannot_do() {
    let no_config = Harness::new().secret("signing_secret", SECRET);
    assert_eq!(
        no_config.run(|| WebChat::send(reply())),
        Err(SendError::Invalid(
            "config `callback_url` is not set".into()
        ))
    );
    let not_allowed = Harness::new()
        .secret("signing_secret", SECRET)
        .config("callback_url", "https://elsewhere.example/hook");
    let result = not_allowed.run(|| WebChat::send(reply()));
    assert!(matches!(result, Err(SendError::Invalid(_))), "{result:?}");
    assert!(not_allowed.sent().is_empty());

    let mut located = reply();
    located.parts.push(Part::Location(omnigate_sdk::Location {
        latitude: 40.4,
        longitude: -3.7,
        name: None,
        address: None,
        url: None,
    }));
    let h = harness();
    assert_eq!(
        h.run(|| WebChat::send(located)),
        Err(SendError::Invalid("webchat cannot send locations".into()))
    );
    assert!(h.sent().is_empty());
}
