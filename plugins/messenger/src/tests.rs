//! The plugin run natively against the SDK's fake host, with the payloads in `fixtures/`.

use omnigate_sdk::testing::{Harness, fixture, request};
use omnigate_sdk::{
    Channel, Choice, DeliveryStatus, Direction, EventBody, FetchError, FetchResponse, Header,
    InboundEvent, Interactive, InteractiveKind, InteractiveStyle, Media, MediaKind, Message,
    OutboundMessage, Pair, Part, ProviderError, Reaction, ReferralSource, SendError, SendReceipt,
    SignatureScheme, WebhookError, host,
};
use serde_json::{Value, json};

use crate::Messenger;

const PAGE: &str = "104829381276543";
const PSID: &str = "6543217890123456";
const T: i64 = 1_764_000_000_123;

fn harness() -> Harness {
    Harness::new()
        .secret("app_secret", "0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        .secret("verify_token", "meatyhamhock")
        .secret("page_access_token", "EAAB-page-token")
        .config("page_id", PAGE)
        .allow_host("graph.facebook.com")
}

fn signed(h: &Harness, body: &[u8]) -> omnigate_sdk::HttpRequest {
    let signature = h
        .run(|| host::sign(SignatureScheme::HmacSha256Prefixed, "app_secret", body))
        .expect("sign");
    request(
        "POST",
        "/webhooks/fb",
        "",
        &[("X-Hub-Signature-256", &signature)],
        body,
    )
}

fn receive_all(name: &str) -> Vec<InboundEvent> {
    let h = harness();
    let req = signed(&h, &fixture(name));
    let outcome = h.run(|| Messenger::handle_webhook(req)).expect("accepted");
    assert_eq!(
        (outcome.response.status, outcome.response.body.as_slice()),
        (200, b"EVENT_RECEIVED".as_slice())
    );
    for event in &outcome.events {
        assert_eq!(event.account.as_deref(), Some(PAGE));
        let raw: Value = serde_json::from_str(event.raw.as_deref().expect("raw")).expect("json");
        assert!(
            raw.get("timestamp").is_some(),
            "{name}: raw is the messaging item"
        );
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
    let info = Messenger::describe();
    assert_eq!(
        (info.id.as_str(), info.kind),
        ("messenger", omnigate_sdk::ChannelKind::Messenger)
    );
    let names = |s: &[omnigate_sdk::Setting]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&info.config), ["api_base", "page_id"]);
    assert_eq!(
        names(&info.secrets),
        ["app_secret", "page_access_token", "verify_token"]
    );
    assert_eq!(info.outbound_hosts, ["graph.facebook.com"]);
}

#[test]
fn text_message() {
    let event = receive("fixtures/text.json");
    assert!(event.external_id.starts_with("m_AG5Hz2Uq7"));
    assert_eq!(
        (event.contact.id.as_str(), event.occurred_at),
        (PSID, Some(T))
    );
    let m = message(&event);
    assert_eq!(
        (m.direction, m.text.as_deref()),
        (Direction::Inbound, Some("Hi! Is the blue jacket in stock?"))
    );
}

#[test]
fn quick_reply_postback_and_reply_to() {
    let qr = receive("fixtures/quick_reply.json");
    let reply = message(&qr).interactive_reply.clone().expect("quick reply");
    assert_eq!(
        (reply.kind, reply.id.as_str()),
        (InteractiveKind::Button, "SIZE_M")
    );
    let pb = receive("fixtures/postback.json");
    assert_eq!(pb.external_id, "m_pb1Hz2Uq7tuwNEhXfYYKj8mJEM");
    let reply = message(&pb).interactive_reply.clone().expect("postback");
    assert_eq!(
        (reply.kind, reply.id.as_str(), reply.title.as_deref()),
        (
            InteractiveKind::Postback,
            "TRACK_ORDER",
            Some("Track my order")
        )
    );
    assert_eq!(
        message(&receive("fixtures/reply_to.json"))
            .reply_to
            .as_deref(),
        Some("m_page1Hz2Uq7tuwNEhXfYYKj8mJEM")
    );
}

#[test]
fn attachments() {
    let event = receive("fixtures/attachment_image.json");
    let [Part::Media(m)] = message(&event).parts.as_slice() else {
        panic!()
    };
    assert_eq!(
        (m.kind, m.url.as_deref()),
        (
            MediaKind::Image,
            Some("https://scontent.xx.fbcdn.net/v/t1.15752-9/471234567_n.jpg")
        )
    );
    let fallback = receive("fixtures/attachment_fallback.json");
    let [Part::Unsupported(u)] = message(&fallback).parts.as_slice() else {
        panic!()
    };
    assert_eq!(u.provider_type, "fallback");
}

#[test]
fn echo_is_outbound_to_the_customer() {
    let event = receive("fixtures/echo.json");
    assert_eq!(event.contact.id, PSID);
    assert_eq!(message(&event).direction, Direction::Outbound);
}

#[test]
fn reactions_reads_deliveries_edits() {
    let react = receive("fixtures/reaction.json");
    let unreact = receive("fixtures/unreaction.json");
    assert_eq!(
        react.body,
        EventBody::Reaction(Reaction {
            message_id: "m_echo1Hz2Uq7tuwNEhXfYYKj8mJEM".into(),
            emoji: Some("❤️".into())
        })
    );
    assert_eq!(
        unreact.body,
        EventBody::Reaction(Reaction {
            message_id: "m_echo1Hz2Uq7tuwNEhXfYYKj8mJEM".into(),
            emoji: None
        })
    );
    assert_ne!(react.external_id, unreact.external_id);

    let read = receive("fixtures/read.json");
    let EventBody::Status(s) = &read.body else {
        panic!()
    };
    assert_eq!(
        (s.message_id.clone(), s.status),
        (format!("watermark:{}", T + 4500), DeliveryStatus::Read)
    );

    let deliveries = receive_all("fixtures/delivery.json");
    assert_eq!(deliveries.len(), 2, "one status per delivered mid");
    assert_eq!(
        deliveries[1].external_id,
        "m_echo2Hz2Uq7tuwNEhXfYYKj8mJEM:delivered"
    );

    let edit = receive("fixtures/message_edit.json");
    let EventBody::Edit(e) = &edit.body else {
        panic!()
    };
    assert_eq!(
        e.text.as_deref(),
        Some("Hi! Is the blue jacket in stock in M?")
    );
    assert!(edit.external_id.ends_with(":edit:1"));
}

#[test]
fn referrals_from_ads_links_and_optins() {
    let ad = receive("fixtures/referral_ad.json");
    let EventBody::Referral(r) = &ad.body else {
        panic!("{:?}", ad.body)
    };
    assert_eq!(r.source, ReferralSource::Ad);
    assert_eq!(r.ad_id.as_deref(), Some("120210987654321098"));
    assert_eq!(r.ref_payload.as_deref(), Some("summer-sale"));
    assert_eq!(r.headline.as_deref(), Some("Summer sale: 30% off jackets"));
    assert_eq!(
        r.media_url.as_deref(),
        Some("https://scontent.xx.fbcdn.net/v/t45.1600-4/ad_photo.jpg")
    );

    let link = receive("fixtures/referral_mme.json");
    let EventBody::Referral(r) = &link.body else {
        panic!()
    };
    assert_eq!(
        (r.source, r.ref_payload.as_deref()),
        (ReferralSource::Link, Some("qr-store-madrid"))
    );

    let optin = receive("fixtures/optin.json");
    let EventBody::Referral(r) = &optin.body else {
        panic!()
    };
    assert_eq!(r.ref_payload.as_deref(), Some("checkout-page"));
}

#[test]
fn unknown_item_is_unsupported_with_raw() {
    let event = receive("fixtures/pass_thread_control.json");
    let [Part::Unsupported(u)] = message(&event).parts.as_slice() else {
        panic!()
    };
    assert_eq!(u.provider_type, "pass_thread_control");
    assert!(
        event
            .raw
            .as_deref()
            .is_some_and(|r| r.contains("new_owner_app_id"))
    );
    assert_eq!(event.contact.id, PSID);
}

#[test]
fn batch_brings_every_event() {
    let events = receive_all("fixtures/batch.json");
    let ids: Vec<&str> = events.iter().map(|e| e.external_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "m_b1Hz2Uq7tuwNEhXfYYKj8mJEM",
            "m_b2Hz2Uq7tuwNEhXfYYKj8mJEM",
            "m_b3Hz2Uq7tuwNEhXfYYKj8mJEM"
        ]
    );
    assert_eq!(events[2].contact.id, "7654321098765432");
}

#[test]
fn signature_and_handshake() {
    let h = harness();
    let mut req = signed(&h, &fixture("fixtures/text.json"));
    req.body.push(b'\n');
    assert_eq!(
        h.run(|| Messenger::handle_webhook(req)),
        Err(WebhookError::Unauthorized(
            "signature does not match".into()
        ))
    );
    let ok = request(
        "GET",
        "/webhooks/fb",
        "hub.mode=subscribe&hub.challenge=CHALLENGE_ACCEPTED&hub.verify_token=meatyhamhock",
        &[],
        b"",
    );
    assert_eq!(
        h.run(|| Messenger::handle_webhook(ok))
            .expect("ok")
            .response
            .body,
        b"CHALLENGE_ACCEPTED"
    );
    let bad = request(
        "GET",
        "/webhooks/fb",
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=x",
        &[],
        b"",
    );
    assert!(matches!(
        h.run(|| Messenger::handle_webhook(bad)),
        Err(WebhookError::Forbidden(_))
    ));
}

// ---- outbound ----

fn reply() -> OutboundMessage {
    OutboundMessage {
        id: "msg_01".into(),
        recipient: PSID.into(),
        conversation_id: "cv_1".into(),
        text: Some("Yes! M and L.".into()),
        parts: vec![],
        reply_to: None,
        interactive: None,
        template: None,
        reaction: None,
        options: vec![],
    }
}

const SENT: &str =
    r#"{"recipient_id":"6543217890123456","message_id":"m_sent1Hz2Uq7tuwNEhXfYYKj8mJEM"}"#;

fn send(
    message: OutboundMessage,
    status: u16,
    body: &'static str,
) -> (Harness, Result<SendReceipt, SendError>) {
    let h = harness().on_fetch(move |_| {
        Ok(FetchResponse {
            status,
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: body.as_bytes().to_vec(),
        })
    });
    let result = h.run(|| Messenger::send(message));
    (h, result)
}

fn body(h: &Harness) -> Value {
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    serde_json::from_slice(&sent[0].body).expect("json")
}

#[test]
fn send_text_with_quick_replies() {
    let mut message = reply();
    message.interactive = Some(Interactive {
        style: InteractiveStyle::Buttons,
        body: "Which size?".into(),
        action_label: None,
        choices: vec![Choice {
            id: "SIZE_M".into(),
            title: "M".into(),
            description: None,
        }],
    });
    let (h, result) = send(message, 200, SENT);
    assert_eq!(
        result.expect("sent").external_id,
        "m_sent1Hz2Uq7tuwNEhXfYYKj8mJEM"
    );
    let req = &h.sent()[0];
    assert_eq!(
        req.url,
        format!("https://graph.facebook.com/v21.0/{PAGE}/messages")
    );
    let auth = req
        .headers
        .iter()
        .find(|h| h.name == "authorization")
        .expect("auth");
    assert_eq!(
        auth.value, "Bearer EAAB-page-token",
        "the host filled the placeholder"
    );
    assert!(!req.url.contains("EAAB"));
    assert_eq!(
        body(&h),
        json!({"recipient": {"id": PSID}, "messaging_type": "RESPONSE",
               "message": {"text": "Yes! M and L.\n\nWhich size?",
                           "quick_replies": [{"content_type": "text", "title": "M", "payload": "SIZE_M"}]}})
    );
}

#[test]
fn send_tags_media_reactions_and_actions() {
    let mut tagged = reply();
    tagged.options = vec![Pair {
        name: "tag".into(),
        value: "HUMAN_AGENT".into(),
    }];
    let (h, _) = send(tagged, 200, SENT);
    let b = body(&h);
    assert_eq!(
        (b["messaging_type"].as_str(), b["tag"].as_str()),
        (Some("MESSAGE_TAG"), Some("HUMAN_AGENT"))
    );

    let mut image = reply();
    image.text = None;
    image.parts = vec![Part::Media(Media {
        kind: MediaKind::Image,
        id: None,
        url: Some("https://shop.example/j.jpg".into()),
        mime_type: None,
        caption: None,
        filename: None,
        size: None,
        sha256: None,
    })];
    let (h, _) = send(image, 200, SENT);
    assert_eq!(
        body(&h)["message"],
        json!({"attachment": {"type": "image", "payload": {"url": "https://shop.example/j.jpg"}}})
    );

    let mut react = reply();
    react.reaction = Some(Reaction {
        message_id: "m_AG5".into(),
        emoji: Some("❤️".into()),
    });
    let (h, _) = send(react, 200, SENT);
    assert_eq!(
        body(&h),
        json!({"recipient": {"id": PSID}, "sender_action": "react", "payload": {"message_id": "m_AG5", "reaction": "❤️"}})
    );

    let mut seen = reply();
    seen.options = vec![Pair {
        name: "sender_action".into(),
        value: "mark_seen".into(),
    }];
    let (h, result) = send(seen, 200, r#"{"recipient_id":"6543217890123456"}"#);
    assert_eq!(result.expect("ok").external_id, "msg_01");
    assert_eq!(
        body(&h),
        json!({"recipient": {"id": PSID}, "sender_action": "mark_seen"})
    );
}

fn graph_error(code: i64, subcode: Option<i64>, message: &str) -> &'static str {
    let mut error =
        json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf"});
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    Box::leak(json!({"error": error}).to_string().into_boxed_str())
}

#[test]
fn send_maps_graph_errors() {
    for code in [4, 32, 613] {
        let (_, r) = send(
            reply(),
            400,
            graph_error(
                code,
                None,
                "(#613) Calls to this api have exceeded the rate limit.",
            ),
        );
        assert_eq!(r, Err(SendError::RateLimited(None)), "{code}");
    }
    let (_, r) = send(
        reply(),
        400,
        graph_error(
            10,
            Some(2_018_278),
            "(#10) This message is sent outside of allowed window.",
        ),
    );
    assert_eq!(
        r,
        Err(SendError::Rejected(ProviderError {
            code: "10".into(),
            title: "outside the 24 h window".into(),
            detail: Some(
                "(#10) This message is sent outside of allowed window. (subcode 2018278)".into()
            ),
        }))
    );
    let (_, r) = send(
        reply(),
        400,
        graph_error(
            551,
            Some(1_545_041),
            "(#551) This person isn't available right now.",
        ),
    );
    assert!(
        matches!(r, Err(SendError::Rejected(ref e)) if e.code == "551"),
        "{r:?}"
    );
    let (_, r) = send(
        reply(),
        401,
        graph_error(
            190,
            Some(463),
            "Error validating access token: Session has expired",
        ),
    );
    assert!(matches!(r, Err(SendError::Unauthorized(_))), "{r:?}");
    let (_, r) = send(
        reply(),
        500,
        graph_error(
            2,
            None,
            "An unexpected error has occurred. Please retry your request later.",
        ),
    );
    assert!(matches!(r, Err(SendError::Transient(_))), "{r:?}");
    let h = harness().on_fetch(|_| Err(FetchError::Connection("reset".into())));
    assert!(matches!(
        h.run(|| Messenger::send(reply())),
        Err(SendError::Transient(_))
    ));
}

#[test]
fn send_refuses_what_the_send_api_cannot_carry() {
    let h = harness();
    let mut template = reply();
    template.template = Some(omnigate_sdk::Template {
        name: "x".into(),
        language: "en".into(),
        components: None,
    });
    assert!(matches!(
        h.run(|| Messenger::send(template)),
        Err(SendError::Invalid(_))
    ));
    let no_page = Harness::new();
    assert_eq!(
        no_page.run(|| Messenger::send(reply())),
        Err(SendError::Invalid("config `page_id` is not set".into()))
    );
    assert!(h.sent().is_empty());
}
