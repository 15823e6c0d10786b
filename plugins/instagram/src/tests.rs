//! The plugin run natively against the SDK's fake host, with the payloads in `fixtures/`.
//! The mapping is shared with Messenger (`omnigate_meta::messaging`, tested there and in
//! the Messenger plugin); these tests cover Instagram's own shapes and names.

use omnigate_sdk::testing::{Harness, fixture, request};
use omnigate_sdk::{
    Channel, DeliveryStatus, Direction, EventBody, FetchResponse, InboundEvent, InteractiveKind,
    MediaKind, Message, OutboundMessage, Part, Reaction, ReferralSource, SendError,
    SignatureScheme, WebhookError, host,
};
use serde_json::{Value, json};

use crate::Instagram;

const IG: &str = "17841405793187218";
const IGSID: &str = "1234567890123456";

fn harness() -> Harness {
    Harness::new()
        .secret("app_secret", "0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        .secret("verify_token", "meatyhamhock")
        .secret("page_access_token", "EAAB-page-token")
        .config("account_id", IG)
        .allow_host("graph.facebook.com")
}

fn receive_all(name: &str) -> Vec<InboundEvent> {
    let h = harness();
    let body = fixture(name);
    let signature = h
        .run(|| host::sign(SignatureScheme::HmacSha256Prefixed, "app_secret", &body))
        .expect("sign");
    let req = request(
        "POST",
        "/webhooks/ig",
        "",
        &[("X-Hub-Signature-256", &signature)],
        &body,
    );
    let outcome = h.run(|| Instagram::handle_webhook(req)).expect("accepted");
    assert_eq!(outcome.response.status, 200);
    for event in &outcome.events {
        assert_eq!(event.account.as_deref(), Some(IG));
        assert!(event.raw.is_some());
    }
    outcome.events
}

fn receive(name: &str) -> InboundEvent {
    let mut events = receive_all(name);
    assert_eq!(events.len(), 1, "{name}");
    events.remove(0)
}

fn message(event: &InboundEvent) -> &Message {
    match &event.body {
        EventBody::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn describe() {
    let info = Instagram::describe();
    assert_eq!(
        (info.id.as_str(), info.kind),
        ("instagram", omnigate_sdk::ChannelKind::Instagram)
    );
    assert_eq!(info.config[1].name, "account_id");
}

#[test]
fn text_and_media() {
    let text = receive("fixtures/text.json");
    assert_eq!(text.contact.id, IGSID);
    assert_eq!(
        message(&text).text.as_deref(),
        Some("Hola! Do you ship to Spain?")
    );
    for (name, kind) in [
        ("fixtures/attachment_image.json", MediaKind::Image),
        ("fixtures/ig_reel.json", MediaKind::Video),
    ] {
        let event = receive(name);
        let [Part::Media(m)] = message(&event).parts.as_slice() else {
            panic!("{name}")
        };
        assert_eq!(m.kind, kind, "{name}");
        assert!(m.url.is_some());
    }
}

#[test]
fn stories() {
    let mention = receive("fixtures/story_mention.json");
    let [Part::Media(m)] = message(&mention).parts.as_slice() else {
        panic!()
    };
    assert_eq!(m.caption.as_deref(), Some("story_mention"));
    let reply = receive("fixtures/story_reply.json");
    let m = message(&reply);
    assert_eq!(m.text.as_deref(), Some("Love this color!"));
    assert_eq!(m.reply_to.as_deref(), Some("17934567890123456"));
    assert!(matches!(m.parts.as_slice(), [Part::Media(story)] if story.url.is_some()));
}

#[test]
fn ad_referral_inside_the_message() {
    let event = receive("fixtures/referral_ad.json");
    let m = message(&event);
    assert_eq!(m.text.as_deref(), Some("Is this still available?"));
    let r = m.referral.clone().expect("referral");
    assert_eq!(
        (r.source, r.ad_id.as_deref(), r.headline.as_deref()),
        (
            ReferralSource::Ad,
            Some("120219876543210987"),
            Some("Summer drop")
        )
    );
    assert_eq!(r.ref_payload.as_deref(), Some("ig-summer"));
}

#[test]
fn reactions_unsend_echo_read_postback_quick_reply() {
    assert_eq!(
        receive("fixtures/reaction.json").body,
        EventBody::Reaction(Reaction {
            message_id: "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjEchoAA==".into(),
            emoji: Some("❤️".into())
        })
    );
    let unsend = receive("fixtures/unsend.json");
    assert_eq!(
        unsend.body,
        EventBody::Deletion("aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjStoryReplyAA==".into())
    );
    assert!(unsend.external_id.ends_with(":deleted"));
    let echo = receive("fixtures/echo.json");
    assert_eq!(
        (echo.contact.id.as_str(), message(&echo).direction),
        (IGSID, Direction::Outbound)
    );
    let read = receive("fixtures/read.json");
    let EventBody::Status(s) = &read.body else {
        panic!()
    };
    assert_eq!(
        (s.message_id.as_str(), s.status),
        (
            "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjEchoAA==",
            DeliveryStatus::Read
        )
    );
    let postback = receive("fixtures/postback.json");
    assert_eq!(
        message(&postback)
            .interactive_reply
            .as_ref()
            .map(|r| (r.kind, r.id.as_str())),
        Some((InteractiveKind::Postback, "PRICES"))
    );
    let quick = receive("fixtures/quick_reply.json");
    assert_eq!(
        message(&quick)
            .interactive_reply
            .as_ref()
            .map(|r| r.id.as_str()),
        Some("COUNTRY_ES")
    );
}

#[test]
fn unsupported_content_keeps_raw() {
    let event = receive("fixtures/unsupported.json");
    assert!(matches!(
        message(&event).parts.as_slice(),
        [Part::Unsupported(_)]
    ));
    assert!(
        event
            .raw
            .as_deref()
            .is_some_and(|r| r.contains("is_unsupported"))
    );
}

#[test]
fn batch_and_auth() {
    let events = receive_all("fixtures/batch.json");
    assert_eq!(events.len(), 3);
    assert!(matches!(events[1].body, EventBody::Status(_)));
    let h = harness();
    let req = request(
        "POST",
        "/webhooks/ig",
        "",
        &[("X-Hub-Signature-256", "sha256=00")],
        &fixture("fixtures/text.json"),
    );
    assert!(matches!(
        h.run(|| Instagram::handle_webhook(req)),
        Err(WebhookError::Unauthorized(_))
    ));
    let bad = request(
        "GET",
        "/webhooks/ig",
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=no",
        &[],
        b"",
    );
    assert!(matches!(
        h.run(|| Instagram::handle_webhook(bad)),
        Err(WebhookError::Forbidden(_))
    ));
    // A page notification is not for this channel: acknowledged, no events.
    let page = br#"{"object":"page","entry":[]}"#;
    let sig = h
        .run(|| host::sign(SignatureScheme::HmacSha256Prefixed, "app_secret", page))
        .expect("sign");
    let req = request(
        "POST",
        "/webhooks/ig",
        "",
        &[("X-Hub-Signature-256", &sig)],
        page,
    );
    assert!(
        h.run(|| Instagram::handle_webhook(req))
            .expect("ok")
            .events
            .is_empty()
    );
}

#[test]
fn send_goes_to_the_account() {
    let h = harness().on_fetch(|_| {
        Ok(FetchResponse {
            status: 200,
            headers: vec![],
            body: br#"{"recipient_id":"1234567890123456","message_id":"aWdfZAG1faXRlbTpSentAA=="}"#
                .to_vec(),
        })
    });
    let message = OutboundMessage {
        id: "msg_01".into(),
        recipient: IGSID.into(),
        conversation_id: "cv_1".into(),
        text: Some("Yes, 3-5 days.".into()),
        parts: vec![],
        reply_to: None,
        interactive: None,
        template: None,
        reaction: None,
        options: vec![],
    };
    assert_eq!(
        h.run(|| Instagram::send(message.clone()))
            .expect("sent")
            .external_id,
        "aWdfZAG1faXRlbTpSentAA=="
    );
    let sent = &h.sent()[0];
    assert_eq!(
        sent.url,
        format!("https://graph.facebook.com/v21.0/{IG}/messages")
    );
    let body: Value = serde_json::from_slice(&sent.body).expect("json");
    assert_eq!(
        body,
        json!({"recipient": {"id": IGSID}, "messaging_type": "RESPONSE", "message": {"text": "Yes, 3-5 days."}})
    );
    let limited = harness().on_fetch(|_| {
        Ok(FetchResponse { status: 400, headers: vec![], body: br#"{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","code":4,"is_transient":true}}"#.to_vec() })
    });
    assert_eq!(
        limited.run(|| Instagram::send(message.clone())),
        Err(SendError::RateLimited(None))
    );
    // Instagram reacts only with ❤️, sent as the named reaction `love`.
    let mut heart = message.clone();
    heart.reaction = Some(Reaction {
        message_id: "m".into(),
        emoji: Some("❤️".into()),
    });
    let _ = h.run(|| Instagram::send(heart));
    let sent: Value = serde_json::from_slice(&h.sent()[1].body).expect("json");
    assert_eq!(
        sent["payload"],
        json!({"message_id": "m", "reaction": "love"})
    );
    let mut thumbs = message;
    thumbs.reaction = Some(Reaction {
        message_id: "m".into(),
        emoji: Some("👍".into()),
    });
    assert!(matches!(
        h.run(|| Instagram::send(thumbs)),
        Err(SendError::Invalid(_))
    ));
    assert_eq!(h.sent().len(), 2);
}
