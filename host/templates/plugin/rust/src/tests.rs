//! The plugin, natively: the SDK's harness plays the host.

use omnigate_sdk::testing::{Harness, fixture, request, response};
use omnigate_sdk::{Channel, EventBody, SignatureScheme, WebhookError, host};

use crate::Plugin;

fn harness() -> Harness {
    Harness::new()
        .config("api_base", "https://api.provider.example")
        .secret("webhook_secret", "__WEBHOOK_SECRET__")
        .secret("api_token", "t0k3n")
        .allow_host("api.provider.example")
}

fn signed(harness: &Harness, body: &[u8]) -> omnigate_sdk::HttpRequest {
    let signature = harness.run(|| {
        host::sign(SignatureScheme::HmacSha256Prefixed, "webhook_secret", body).expect("sign")
    });
    request(
        "POST",
        "/webhooks/__NAME__",
        "",
        &[("X-Hub-Signature-256", &signature)],
        body,
    )
}

#[test]
fn a_signed_message_becomes_an_event() {
    let h = harness();
    let webhook = signed(&h, &fixture("fixtures/message.json"));
    let outcome = h.run(|| Plugin::handle_webhook(webhook)).expect("accepted");
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(outcome.events[0].external_id, "m-1");
    assert_eq!(outcome.events[0].contact.id, "u-1");
    let EventBody::Message(message) = &outcome.events[0].body else {
        panic!("a message");
    };
    assert_eq!(message.text.as_deref(), Some("Hello"));
}

#[test]
fn a_wrong_signature_is_refused() {
    let h = harness();
    let mut webhook = signed(&h, &fixture("fixtures/message.json"));
    webhook.body.push(b' ');
    let refused = h.run(|| Plugin::handle_webhook(webhook));
    assert!(matches!(refused, Err(WebhookError::Unauthorized(_))));
}

#[test]
fn a_reply_is_posted_with_the_token() {
    let h = harness().on_fetch(|_| Ok(response(200, &[], r#"{"id": "out-1"}"#)));
    let message = omnigate_sdk::OutboundMessage {
        id: "msg-1".into(),
        recipient: "u-1".into(),
        conversation_id: "conv-1".into(),
        text: Some("Hi!".into()),
        parts: vec![],
        reply_to: None,
        interactive: None,
        template: None,
        reaction: None,
        options: vec![],
    };
    let receipt = h.run(|| Plugin::send(message)).expect("sent");
    assert_eq!(receipt.external_id, "out-1");
    let sent = h.sent();
    assert_eq!(sent[0].url, "https://api.provider.example/messages");
}
