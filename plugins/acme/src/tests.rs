//! The acme plugin, natively: the harness plays the host (secrets, allow-list, fetch).

use omnigate_sdk::testing::{Harness, fixture, request, response};
use omnigate_sdk::{
    Channel, EventBody, OutboundMessage, SendError, SignatureScheme, WebhookError, host,
};

use crate::Acme;

// ANCHOR: harness
const WEBHOOK_SECRET: &str = "acme-webhook-secret-value";

fn harness() -> Harness {
    Harness::new()
        .config("api_base", "https://api.acme.example/v1")
        .secret("webhook_secret", WEBHOOK_SECRET)
        .secret("api_token", "t0k3n")
        .allow_host("api.acme.example")
}

/// `body` as Acme sends it, signed with the webhook secret (or `signature` as given).
fn webhook(harness: &Harness, body: &[u8], signature: Option<&str>) -> omnigate_sdk::HttpRequest {
    let signed = harness.run(|| {
        host::sign(SignatureScheme::HmacSha256Prefixed, "webhook_secret", body).expect("sign")
    });
    let signature = signature.unwrap_or(&signed);
    request(
        "POST",
        "/webhooks/acme-main",
        "",
        &[("X-Hub-Signature-256", signature)],
        body,
    )
}
// ANCHOR_END: harness

#[test]
fn a_signed_batch_becomes_one_event_per_message() {
    let h = harness();
    let outcome = h
        .run(|| Acme::handle_webhook(webhook(&h, &fixture("fixtures/messages.json"), None)))
        .expect("accepted");
    assert_eq!(outcome.response.status, 200);
    assert_eq!(outcome.events.len(), 2);
    let first = &outcome.events[0];
    assert_eq!(first.external_id, "am-1001");
    assert_eq!(first.occurred_at, Some(1_795_514_400_000));
    assert_eq!(first.contact.id, "u-42");
    assert_eq!(first.contact.handles[0].value, "+34600111222");
    assert!(first.contact.handles[0].verified);
    let EventBody::Message(message) = &first.body else {
        panic!("a message: {first:?}");
    };
    assert_eq!(message.text.as_deref(), Some("Hola, ¿tenéis la talla 38?"));
    let referral = message.referral.as_ref().expect("landing URL → referral");
    assert_eq!(referral.campaign.as_deref(), Some("bf25"));
    assert!(
        referral
            .click_ids
            .iter()
            .any(|pair| pair.name == "gclid" && pair.value == "g-123")
    );
    let EventBody::Message(second) = &outcome.events[1].body else {
        panic!("a message");
    };
    assert!(second.referral.is_none());
}

#[test]
fn a_wrong_or_missing_signature_is_unauthorized() {
    let h = harness();
    let body = fixture("fixtures/messages.json");
    let forged = webhook(&h, &body, Some("sha256=00"));
    assert!(matches!(
        h.run(|| Acme::handle_webhook(forged)),
        Err(WebhookError::Unauthorized(_))
    ));
    let unsigned = request("POST", "/webhooks/acme-main", "", &[], &body);
    assert!(matches!(
        h.run(|| Acme::handle_webhook(unsigned)),
        Err(WebhookError::Unauthorized(_))
    ));
}

#[test]
fn a_malformed_body_is_a_bad_request_naming_the_field() {
    let h = harness();
    let body = br#"{"messages": [{"id": "am-1", "from": {"id": "u"}}]}"#;
    let Err(WebhookError::BadRequest(reason)) =
        h.run(|| Acme::handle_webhook(webhook(&h, body, None)))
    else {
        panic!("a bad request");
    };
    assert!(reason.contains("text"), "{reason}");
    let body = br#"{"messages": [{"id": "am-1", "from": {"id": "u"}, "text": "x", "sent_at": "yesterday"}]}"#;
    let Err(WebhookError::BadRequest(reason)) =
        h.run(|| Acme::handle_webhook(webhook(&h, body, None)))
    else {
        panic!("a bad request");
    };
    assert!(reason.contains("sent_at"), "{reason}");
}

fn reply() -> OutboundMessage {
    OutboundMessage {
        id: "omni-msg-1".into(),
        recipient: "u-42".into(),
        conversation_id: "cv_1".into(),
        text: Some("¡Sí, en rojo también!".into()),
        parts: Vec::new(),
        reply_to: None,
        interactive: None,
        template: None,
        reaction: None,
        options: Vec::new(),
    }
}

// ANCHOR: send_tests
#[test]
fn a_reply_is_posted_with_the_token_the_host_fills_in() {
    let h = harness().on_fetch(|_| Ok(response(200, &[], r#"{"id":"am-out-9"}"#)));
    let receipt = h.run(|| Acme::send(reply())).expect("sent");
    assert_eq!(receipt.external_id, "am-out-9");
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].url, "https://api.acme.example/v1/messages");
    let authorization = sent[0]
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("authorization"))
        .expect("authorization");
    assert_eq!(authorization.value, "Bearer t0k3n", "what Acme receives");
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"to": "u-42", "text": "¡Sí, en rojo también!"})
    );
}

#[test]
fn provider_errors_map_to_send_errors() {
    let h = harness().on_fetch(|_| Ok(response(429, &[("Retry-After", "30")], "")));
    assert_eq!(
        h.run(|| Acme::send(reply())),
        Err(SendError::RateLimited(Some(30)))
    );
    let h = harness().on_fetch(|_| Ok(response(400, &[], "unknown recipient")));
    assert!(matches!(
        h.run(|| Acme::send(reply())),
        Err(SendError::Rejected(_))
    ));
    let mut no_text = reply();
    no_text.text = None;
    assert!(matches!(
        harness().run(|| Acme::send(no_text)),
        Err(SendError::Invalid(_))
    ));
}
// ANCHOR_END: send_tests
