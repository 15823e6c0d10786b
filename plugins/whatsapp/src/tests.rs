//! The plugin run natively against the SDK's fake host, with the payloads in `fixtures/`.

use omnigate_sdk::testing::{Harness, fixture, request};
use omnigate_sdk::{
    Channel, Choice, DeliveryStatus, Direction, EventBody, FetchError, FetchRequest, FetchResponse,
    Handle, HandleKind, InboundEvent, Interactive, InteractiveKind, InteractiveStyle, Media,
    MediaKind, Message, OutboundMessage, Pair, Part, ProviderError, Reaction, ReferralSource,
    SendError, SendReceipt, SignatureScheme, Template, WebhookError, host,
};
use serde_json::{Value, json};

use crate::WhatsApp;

const APP_SECRET: &str = "6a1b0c5e2f9d4e7a8b3c1d0e9f8a7b6c";
const PNID: &str = "106540352242922";
const WA_ID: &str = "16505551234";

fn harness() -> Harness {
    Harness::new()
        .secret("app_secret", APP_SECRET)
        .secret("verify_token", "meatyhamhock")
        .secret("access_token", "EAAG-test-token")
        .config("api_base", "https://graph.facebook.com/v21.0")
        .config("phone_number_id", PNID)
        .allow_host("graph.facebook.com")
}

/// A POST of `body` signed like Meta signs it.
fn signed(h: &Harness, body: &[u8]) -> omnigate_sdk::HttpRequest {
    let signature = h
        .run(|| host::sign(SignatureScheme::HmacSha256Prefixed, "app_secret", body))
        .expect("sign");
    request(
        "POST",
        "/webhooks/wa-main",
        "",
        &[
            ("content-type", "application/json"),
            ("X-Hub-Signature-256", &signature),
        ],
        body,
    )
}

fn receive_all(name: &str) -> Vec<InboundEvent> {
    let h = harness();
    let req = signed(&h, &fixture(name));
    let outcome = h.run(|| WhatsApp::handle_webhook(req)).expect("accepted");
    assert_eq!(outcome.response.status, 200);
    for event in &outcome.events {
        assert_eq!(event.account.as_deref(), Some(PNID), "{name}");
        let raw: Value =
            serde_json::from_str(event.raw.as_deref().expect("raw")).expect("raw json");
        assert!(
            raw.get("id").is_some(),
            "{name}: raw is the message or status"
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

fn only_part(event: &InboundEvent) -> &Part {
    let m = message(event);
    assert_eq!(m.parts.len(), 1, "{m:?}");
    &m.parts[0]
}

fn unsupported_type(event: &InboundEvent) -> String {
    match only_part(event) {
        Part::Unsupported(u) => u.provider_type.clone(),
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[test]
fn describe() {
    let info = WhatsApp::describe();
    assert_eq!(info.id, "whatsapp");
    let names = |s: &[omnigate_sdk::Setting]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&info.config), ["api_base", "phone_number_id"]);
    assert_eq!(
        names(&info.secrets),
        ["app_secret", "access_token", "verify_token"]
    );
    assert_eq!(info.outbound_hosts, ["graph.facebook.com"]);
    assert!(
        info.capabilities
            .contains(&omnigate_sdk::Capability::Templates)
    );
}

#[test]
fn text_with_profile_and_verified_phone() {
    let event = receive("fixtures/text.json");
    assert_eq!(
        event.external_id,
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    );
    assert_eq!(event.occurred_at, Some(1_749_416_383_000));
    assert_eq!(event.contact.id, WA_ID);
    assert_eq!(event.contact.name.as_deref(), Some("Sheena Nelson"));
    assert_eq!(
        event.contact.handles,
        vec![Handle {
            kind: HandleKind::Phone,
            value: WA_ID.into(),
            verified: true
        }]
    );
    let m = message(&event);
    assert_eq!(m.direction, Direction::Inbound);
    assert_eq!(m.text.as_deref(), Some("Does it come in another color?"));
    assert!(m.parts.is_empty() && m.reply_to.is_none() && !m.forwarded && m.referral.is_none());
}

#[test]
fn media_messages() {
    let media = |name: &str| match only_part(&receive(name)) {
        Part::Media(m) => m.clone(),
        other => panic!("{name}: {other:?}"),
    };
    let image = media("fixtures/image.json");
    assert_eq!(
        image,
        Media {
            kind: MediaKind::Image,
            id: Some("1003383421387256".into()),
            url: None,
            mime_type: Some("image/jpeg".into()),
            caption: Some("Here's the one I want".into()),
            filename: None,
            size: None,
            sha256: Some("SfInY0gF2Yjn1ZqN6s4EdOyqL3yIQbMLP/Yt1zdsTzI=".into()),
        }
    );
    assert_eq!(media("fixtures/audio_voice.json").kind, MediaKind::Voice);
    assert_eq!(media("fixtures/audio.json").kind, MediaKind::Audio);
    let video = media("fixtures/video.json");
    assert_eq!(
        (video.kind, video.caption.as_deref()),
        (MediaKind::Video, Some("It broke like this"))
    );
    let document = media("fixtures/document.json");
    assert_eq!(document.kind, MediaKind::Document);
    assert_eq!(document.filename.as_deref(), Some("invoice-2041.pdf"));
    assert_eq!(media("fixtures/sticker.json").kind, MediaKind::Sticker);
}

#[test]
fn location_and_contacts() {
    let Part::Location(l) = only_part(&receive("fixtures/location.json")).clone() else {
        panic!("location")
    };
    assert_eq!((l.latitude, l.longitude), (37.483253479, -122.148422241));
    assert_eq!(l.name.as_deref(), Some("Meta Headquarters"));
    let Part::Contact(card) = only_part(&receive("fixtures/contacts.json")).clone() else {
        panic!("contact")
    };
    assert_eq!(card.name, "Barbara J. Johnson");
    assert_eq!(card.phones, ["+1 (415) 555-0123"]);
    assert_eq!(card.emails, ["bjohnson@example.com"]);
    assert_eq!(card.user_id.as_deref(), Some("14155550123"));
}

#[test]
fn interactive_replies_and_template_buttons() {
    let reply = |name: &str| {
        let event = receive(name);
        let m = message(&event);
        assert!(
            m.reply_to.is_some(),
            "{name}: replies carry the business message"
        );
        m.interactive_reply.clone().expect("interactive reply")
    };
    let button = reply("fixtures/interactive_button_reply.json");
    assert_eq!(
        (button.kind, button.id.as_str(), button.title.as_deref()),
        (
            InteractiveKind::Button,
            "track-order",
            Some("Track my order")
        )
    );
    let list = reply("fixtures/interactive_list_reply.json");
    assert_eq!(
        (list.kind, list.id.as_str()),
        (InteractiveKind::List, "priority-express")
    );
    let quick = reply("fixtures/button.json");
    assert_eq!(
        (quick.kind, quick.id.as_str(), quick.title.as_deref()),
        (
            InteractiveKind::Button,
            "unsubscribe-promos",
            Some("Stop promotions")
        )
    );
}

#[test]
fn reactions_added_and_removed_count_separately() {
    let added = receive("fixtures/reaction.json");
    let removed = receive("fixtures/reaction_removed.json");
    let target = "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA";
    assert_eq!(
        added.body,
        EventBody::Reaction(Reaction {
            message_id: target.into(),
            emoji: Some("👍".into())
        })
    );
    assert_eq!(
        removed.body,
        EventBody::Reaction(Reaction {
            message_id: target.into(),
            emoji: None
        })
    );
    assert!(
        added.external_id.contains(":reaction:👍:1744344496"),
        "{}",
        added.external_id
    );
    assert!(
        removed.external_id.contains(":reaction:removed:"),
        "{}",
        removed.external_id
    );
    assert_ne!(added.external_id, removed.external_id);
}

#[test]
fn context_reply_and_forwarded() {
    let reply = receive("fixtures/reply_context.json");
    assert_eq!(
        message(&reply).reply_to.as_deref(),
        Some("wamid.HBgLMTY0NjcwNDM1OTUVAgARGBJBRjM4RTBFQkVEQjkwMzA0NzUA")
    );
    let forwarded = receive("fixtures/forwarded.json");
    assert!(message(&forwarded).forwarded);
}

#[test]
fn click_to_whatsapp_ad_referral() {
    let event = receive("fixtures/referral_ctwa.json");
    let m = message(&event);
    assert_eq!(
        m.text.as_deref(),
        Some("Hi, is the blue dress still available?")
    );
    let r = m.referral.as_ref().expect("referral");
    assert_eq!(r.source, ReferralSource::Ad);
    assert_eq!(r.ad_id.as_deref(), Some("120226305854810726"));
    assert_eq!(
        r.click_ids,
        vec![Pair {
            name: "ctwa_clid".into(),
            value: "Afe5tbK2dPEV9S7ZyYYbQlTyyPPL7nTtAq7oYTrF1JlkHpmkyWJb0TPQHWdh4p9oq".into()
        }]
    );
    assert_eq!(r.url.as_deref(), Some("https://fb.me/3cr4Wqqkv"));
    assert_eq!(r.headline.as_deref(), Some("Summer sale: 30% off"));
    assert_eq!(
        r.body.as_deref(),
        Some("Chat with us about our summer collection")
    );
    assert_eq!(
        r.media_url.as_deref(),
        Some("https://scontent.xx.fbcdn.net/v/t45.1600-4/518515818_n.png")
    );
}

#[test]
fn statuses_keep_pricing_in_raw() {
    let out = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJERjM2NkJCRkFDNzQzQjRBQjgA";
    for (name, status, tag) in [
        ("fixtures/status_sent.json", DeliveryStatus::Sent, "sent"),
        (
            "fixtures/status_delivered.json",
            DeliveryStatus::Delivered,
            "delivered",
        ),
        ("fixtures/status_read.json", DeliveryStatus::Read, "read"),
    ] {
        let event = receive(name);
        let EventBody::Status(s) = &event.body else {
            panic!("{name}")
        };
        assert_eq!(
            (s.message_id.as_str(), s.status, s.error.as_ref()),
            (out, status, None)
        );
        assert_eq!(event.contact.id, WA_ID);
        assert_eq!(event.external_id, format!("{out}:{tag}"));
    }
    let sent = receive("fixtures/status_sent.json");
    let raw: Value = serde_json::from_str(sent.raw.as_deref().expect("raw")).expect("json");
    assert_eq!(raw["pricing"]["category"], "service");
    assert_eq!(raw["conversation"]["origin"]["type"], "service");
}

#[test]
fn failed_status_carries_the_error() {
    let event = receive("fixtures/status_failed.json");
    let EventBody::Status(s) = &event.body else {
        panic!()
    };
    assert_eq!(s.status, DeliveryStatus::Failed);
    let e = s.error.as_ref().expect("error");
    assert_eq!(
        (e.code.as_str(), e.title.as_str()),
        ("131047", "Re-engagement message")
    );
    assert!(e.detail.as_deref().is_some_and(|d| d.contains("24 hours")));
    assert!(event.external_id.ends_with(":failed"));
}

#[test]
fn edits_and_deletions() {
    let edit = receive("fixtures/edit.json");
    let EventBody::Edit(e) = &edit.body else {
        panic!("{:?}", edit.body)
    };
    assert_eq!(
        e.message_id,
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUMxNTQ0OTg2MzAyN0NDQjQ4MQA="
    );
    assert_eq!(e.text.as_deref(), Some("Yes, that one, in size M"));
    let revoke = receive("fixtures/revoke.json");
    assert_eq!(
        revoke.body,
        EventBody::Deletion(
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTg2RjBDNEI0QjQwRjU2MzNCMgA=".into()
        )
    );
}

#[test]
fn shapes_without_a_contract_field_are_unsupported_parts_with_raw() {
    let order = receive("fixtures/order.json");
    assert_eq!(unsupported_type(&order), "order");
    assert_eq!(message(&order).text.as_deref(), Some("Gift wrap, please"));
    let raw: Value = serde_json::from_str(order.raw.as_deref().expect("raw")).expect("json");
    assert_eq!(
        raw["order"]["product_items"][0]["product_retailer_id"],
        "di9ozbzfi4"
    );

    let system = receive("fixtures/system_user_changed_number.json");
    assert_eq!(unsupported_type(&system), "system.user_changed_number");
    // Both numbers are the same verified person.
    let phones: Vec<&str> = system
        .contact
        .handles
        .iter()
        .map(|h| h.value.as_str())
        .collect();
    assert_eq!(phones, [WA_ID, "16505559876"]);

    let unsupported = receive("fixtures/unsupported.json");
    assert_eq!(unsupported_type(&unsupported), "unsupported");
    let Part::Unsupported(u) = only_part(&unsupported) else {
        panic!()
    };
    assert!(u.reason.contains("131051"), "{}", u.reason);

    let errors = receive("fixtures/errors.json");
    assert_eq!(unsupported_type(&errors), "interactive");
    let Part::Unsupported(u) = only_part(&errors) else {
        panic!()
    };
    assert!(
        u.reason.contains("Unsupported webhook payload"),
        "{}",
        u.reason
    );

    let unknown = receive("fixtures/unknown_type.json");
    assert_eq!(unsupported_type(&unknown), "request_welcome");
    assert_eq!(message(&unknown).direction, Direction::Inbound);
    assert!(
        unknown
            .raw
            .as_deref()
            .is_some_and(|r| r.contains("request_welcome"))
    );
}

#[test]
fn malformed_message_is_unsupported_not_an_error() {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": PNID}, "messages": [
            {"from": WA_ID, "id": "wamid.X", "timestamp": 1750000000, "type": "text", "text": {"body": "hi"}}]}}]}]});
    let h = harness();
    let req = signed(&h, body.to_string().as_bytes());
    let outcome = h.run(|| WhatsApp::handle_webhook(req)).expect("accepted");
    assert_eq!(outcome.events.len(), 1);
    assert_eq!(unsupported_type(&outcome.events[0]), "text");
    assert!(
        outcome.events[0]
            .raw
            .as_deref()
            .is_some_and(|r| r.contains("1750000000"))
    );
}

#[test]
fn batch_brings_every_event() {
    let events = receive_all("fixtures/batch.json");
    let ids: Vec<&str> = events.iter().map(|e| e.external_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQkFUQ0gxAA==",
            "wamid.HBgMNDQ3NzAwOTAwMTIzFQIAEhgUM0JBVENIMgA=",
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJERjM2NkJCRkFDNzQzQjRBQjgA:delivered",
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJERjM2NkJCRkFDNzQzQjRBQjgA:read",
        ]
    );
    // Each message is matched with its own sender's profile.
    assert_eq!(events[0].contact.name.as_deref(), Some("Sheena Nelson"));
    assert_eq!(
        (
            events[1].contact.id.as_str(),
            events[1].contact.name.as_deref()
        ),
        ("447700900123", Some("Ana García"))
    );
}

#[test]
fn account_fields_are_acknowledged_without_events() {
    assert!(receive_all("fixtures/template_status_update.json").is_empty());
}

#[test]
fn wrong_or_missing_signature_is_unauthorized() {
    let h = harness();
    let mut req = signed(&h, &fixture("fixtures/text.json"));
    req.body.push(b' ');
    assert_eq!(
        h.run(|| WhatsApp::handle_webhook(req)),
        Err(WebhookError::Unauthorized(
            "signature does not match".into()
        ))
    );
    let other = Harness::new().secret("app_secret", "another secret");
    let req = signed(&other, &fixture("fixtures/text.json"));
    assert!(matches!(
        h.run(|| WhatsApp::handle_webhook(req)),
        Err(WebhookError::Unauthorized(_))
    ));
    let unsigned = request("POST", "/webhooks/wa-main", "", &[], b"not json");
    assert_eq!(
        h.run(|| WhatsApp::handle_webhook(unsigned)),
        Err(WebhookError::Unauthorized(
            "missing x-hub-signature-256 header".into()
        ))
    );
}

#[test]
fn handshake() {
    let h = harness();
    let ok = request(
        "GET",
        "/webhooks/wa-main",
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
        &[],
        b"",
    );
    let outcome = h.run(|| WhatsApp::handle_webhook(ok)).expect("handshake");
    assert_eq!(
        (outcome.response.status, outcome.response.body.as_slice()),
        (200, b"1158201444".as_slice())
    );
    assert!(outcome.events.is_empty());
    let wrong = request(
        "GET",
        "/webhooks/wa-main",
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=nope",
        &[],
        b"",
    );
    assert!(matches!(
        h.run(|| WhatsApp::handle_webhook(wrong)),
        Err(WebhookError::Forbidden(_))
    ));
}

// ---- outbound ----

fn reply() -> OutboundMessage {
    OutboundMessage {
        id: "msg_01".into(),
        recipient: WA_ID.into(),
        conversation_id: "cv_1".into(),
        text: Some("Yes, we have it in blue.".into()),
        parts: vec![],
        reply_to: None,
        interactive: None,
        template: None,
        reaction: None,
        options: vec![],
    }
}

fn answer(status: u16, body: &str) -> FetchResponse {
    omnigate_sdk::testing::response(status, &[("content-type", "application/json")], body)
}

const ACCEPTED: &str = r#"{"messaging_product":"whatsapp","contacts":[{"input":"16505551234","wa_id":"16505551234"}],"messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA","message_status":"accepted"}]}"#;

fn send(
    message: OutboundMessage,
    status: u16,
    body: &'static str,
) -> (Harness, Result<SendReceipt, SendError>) {
    let h = harness().on_fetch(move |_| Ok(answer(status, body)));
    let result = h.run(|| WhatsApp::send(message));
    (h, result)
}

fn sent_body(h: &Harness) -> (FetchRequest, Value) {
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let body = serde_json::from_slice(&sent[0].body).expect("json body");
    (sent[0].clone(), body)
}

#[test]
fn send_text_posts_to_the_phone_number() {
    let mut message = reply();
    message.reply_to = Some("wamid.IN".into());
    let (h, result) = send(message, 200, ACCEPTED);
    let receipt = result.expect("sent");
    assert_eq!(
        receipt.external_id,
        "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    );
    let (req, body) = sent_body(&h);
    assert_eq!(
        (req.method.as_str(), req.url.as_str()),
        (
            "POST",
            "https://graph.facebook.com/v21.0/106540352242922/messages"
        )
    );
    // The harness filled the placeholder the plugin wrote; the URL and body never hold it.
    let auth = req
        .headers
        .iter()
        .find(|h| h.name == "authorization")
        .expect("auth");
    assert_eq!(auth.value, "Bearer EAAG-test-token");
    assert!(!req.url.contains("EAAG") && !String::from_utf8_lossy(&req.body).contains("EAAG"));
    assert_eq!(
        body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID, "type": "text",
               "text": {"body": "Yes, we have it in blue.", "preview_url": false},
               "context": {"message_id": "wamid.IN"}})
    );
}

#[test]
fn send_uses_a_placeholder_not_the_token() {
    // Without the secret configured, the host refuses the placeholder: nothing is sent.
    let h = Harness::new()
        .config("phone_number_id", PNID)
        .allow_host("graph.facebook.com");
    let result = h.run(|| WhatsApp::send(reply()));
    assert!(
        matches!(result, Err(SendError::Invalid(ref why)) if why.contains("access_token")),
        "{result:?}"
    );
    assert!(h.sent().is_empty());
}

#[test]
fn send_media_template_interactive_reaction_and_mark_read() {
    let mut media = reply();
    media.parts = vec![Part::Media(Media {
        kind: MediaKind::Document,
        id: None,
        url: Some("https://shop.example/i.pdf".into()),
        mime_type: None,
        caption: None,
        filename: Some("i.pdf".into()),
        size: None,
        sha256: None,
    })];
    let (h, _) = send(media, 200, ACCEPTED);
    let (_, body) = sent_body(&h);
    assert_eq!(body["type"], "document");
    assert_eq!(
        body["document"],
        json!({"link": "https://shop.example/i.pdf", "caption": "Yes, we have it in blue.", "filename": "i.pdf"})
    );

    let mut by_id = reply();
    by_id.text = None;
    by_id.parts = vec![Part::Media(Media {
        kind: MediaKind::Image,
        id: Some("1003383421387256".into()),
        url: None,
        mime_type: None,
        caption: None,
        filename: None,
        size: None,
        sha256: None,
    })];
    let (h, _) = send(by_id, 200, ACCEPTED);
    assert_eq!(sent_body(&h).1["image"], json!({"id": "1003383421387256"}));

    let mut template = reply();
    template.text = None;
    template.template = Some(Template {
        name: "order_shipped".into(),
        language: "en_US".into(),
        components: Some(
            r##"[{"type":"body","parameters":[{"type":"text","text":"#2041"}]}]"##.into(),
        ),
    });
    let (h, _) = send(template, 200, ACCEPTED);
    let (_, body) = sent_body(&h);
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["language"]["code"], "en_US");
    assert_eq!(
        body["template"]["components"][0]["parameters"][0]["text"],
        "#2041"
    );

    let choices = vec![
        Choice {
            id: "yes".into(),
            title: "Yes".into(),
            description: None,
        },
        Choice {
            id: "no".into(),
            title: "No".into(),
            description: Some("maybe later".into()),
        },
    ];
    let mut buttons = reply();
    buttons.interactive = Some(Interactive {
        style: InteractiveStyle::Buttons,
        body: "Want it?".into(),
        action_label: None,
        choices: choices.clone(),
    });
    let (h, _) = send(buttons, 200, ACCEPTED);
    let (_, body) = sent_body(&h);
    assert_eq!(body["interactive"]["type"], "button");
    assert_eq!(
        body["interactive"]["action"]["buttons"][1],
        json!({"type": "reply", "reply": {"id": "no", "title": "No"}})
    );

    let mut list = reply();
    list.interactive = Some(Interactive {
        style: InteractiveStyle::List,
        body: "Pick one".into(),
        action_label: Some("Shipping".into()),
        choices,
    });
    let (h, _) = send(list, 200, ACCEPTED);
    let (_, body) = sent_body(&h);
    assert_eq!(body["interactive"]["action"]["button"], "Shipping");
    assert_eq!(
        body["interactive"]["action"]["sections"][0]["rows"][1]["description"],
        "maybe later"
    );

    let mut reaction = reply();
    reaction.reaction = Some(Reaction {
        message_id: "wamid.IN".into(),
        emoji: Some("❤️".into()),
    });
    let (h, _) = send(reaction, 200, ACCEPTED);
    assert_eq!(
        sent_body(&h).1["reaction"],
        json!({"message_id": "wamid.IN", "emoji": "❤️"})
    );

    let mut read = reply();
    read.options = vec![Pair {
        name: "mark_read".into(),
        value: "wamid.IN".into(),
    }];
    let (h, result) = send(read, 200, r#"{"success":true}"#);
    assert_eq!(result.expect("marked").external_id, "wamid.IN:read");
    assert_eq!(
        sent_body(&h).1,
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"})
    );
}

fn graph_error(code: i64, details: &str) -> &'static str {
    Box::leak(
        json!({"error": {"message": format!("(#{code}) error"), "type": "OAuthException", "code": code,
                         "error_data": {"messaging_product": "whatsapp", "details": details},
                         "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}})
        .to_string()
        .into_boxed_str(),
    )
}

#[test]
fn send_maps_cloud_api_errors() {
    let (_, r) = send(
        reply(),
        400,
        graph_error(
            131047,
            "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
        ),
    );
    assert_eq!(
        r,
        Err(SendError::Rejected(ProviderError {
            code: "131047".into(),
            title: "outside the 24 h window".into(),
            detail: Some("Message failed to send because more than 24 hours have passed since the customer last replied to this number.".into()),
        }))
    );
    for code in [130429, 131056, 80007] {
        let (_, r) = send(reply(), 400, graph_error(code, "rate"));
        assert_eq!(r, Err(SendError::RateLimited(None)), "{code}");
    }
    let (_, r) = send(reply(), 401, graph_error(190, "expired"));
    assert!(matches!(r, Err(SendError::Unauthorized(_))), "{r:?}");
    let (_, r) = send(reply(), 400, graph_error(131026, "undeliverable"));
    assert!(
        matches!(r, Err(SendError::Rejected(ref e)) if e.code == "131026"),
        "{r:?}"
    );
    let (_, r) = send(reply(), 500, graph_error(131000, "something went wrong"));
    assert!(matches!(r, Err(SendError::Transient(_))), "{r:?}");
    let (_, r) = send(reply(), 503, "");
    assert!(matches!(r, Err(SendError::Transient(_))), "{r:?}");
    let h = harness().on_fetch(|_| Err(FetchError::Timeout));
    assert!(matches!(
        h.run(|| WhatsApp::send(reply())),
        Err(SendError::Transient(_))
    ));
}

#[test]
fn send_refuses_what_whatsapp_cannot_carry() {
    let h = harness();
    let mut two = reply();
    let loc = Part::Location(omnigate_sdk::Location {
        latitude: 1.0,
        longitude: 2.0,
        name: None,
        address: None,
        url: None,
    });
    two.parts = vec![loc.clone(), loc];
    assert!(matches!(
        h.run(|| WhatsApp::send(two)),
        Err(SendError::Invalid(_))
    ));
    let mut empty = reply();
    empty.text = None;
    assert!(matches!(
        h.run(|| WhatsApp::send(empty)),
        Err(SendError::Invalid(_))
    ));
    let no_config = Harness::new().secret("access_token", "t");
    assert_eq!(
        no_config.run(|| WhatsApp::send(reply())),
        Err(SendError::Invalid(
            "config `phone_number_id` is not set".into()
        ))
    );
    assert!(h.sent().is_empty());
}
