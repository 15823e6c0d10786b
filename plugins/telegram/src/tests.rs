//! The plugin run natively against the SDK's fake host, with the updates in `fixtures/`.

use omnigate_sdk::testing::{Harness, fixture, request};
use omnigate_sdk::{
    Channel, Choice, Direction, EventBody, FetchError, FetchRequest, FetchResponse, Handle,
    HandleKind, InboundEvent, Interactive, InteractiveKind, InteractiveStyle, Media, MediaKind,
    Message, OutboundMessage, Pair, Part, ProviderError, Reaction, ReferralSource, SendError,
    SendReceipt, WebhookError,
};
use serde_json::{Value, json};

use crate::Telegram;

const SECRET: &str = "s3cr3t-T0ken_for-webhooks";
const TOKEN: &str = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const ANA: &str = "111222333";

fn harness() -> Harness {
    Harness::new()
        .secret("secret_token", SECRET)
        .secret("bot_token", TOKEN)
        .config("bot_id", "7012345678")
        .allow_host("api.telegram.org")
}

fn post(body: &[u8], secret: Option<&str>) -> omnigate_sdk::HttpRequest {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(s) = secret {
        headers.push(("X-Telegram-Bot-Api-Secret-Token", s));
    }
    request("POST", "/webhooks/tg", "", &headers, body)
}

fn receive(name: &str) -> InboundEvent {
    let body = fixture(name);
    let h = harness();
    let mut outcome = h
        .run(|| Telegram::handle_webhook(post(&body, Some(SECRET))))
        .expect("accepted");
    assert_eq!(outcome.response.status, 200);
    assert_eq!(outcome.events.len(), 1, "{name}");
    let event = outcome.events.remove(0);
    let update: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        event.external_id,
        update["update_id"].to_string(),
        "{name}: update_id dedupes"
    );
    assert_eq!(event.account.as_deref(), Some("7012345678"));
    let raw: Value = serde_json::from_str(event.raw.as_deref().expect("raw")).expect("raw json");
    assert_eq!(raw, update, "{name}: raw is the update");
    event
}

fn message(event: &InboundEvent) -> &Message {
    match &event.body {
        EventBody::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn media(name: &str) -> Media {
    let event = receive(name);
    match message(&event).parts.as_slice() {
        [Part::Media(m)] => m.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

fn unsupported_type(event: &InboundEvent) -> String {
    match message(event).parts.as_slice() {
        [Part::Unsupported(u)] => u.provider_type.clone(),
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[test]
fn describe() {
    let info = Telegram::describe();
    assert_eq!(info.id, "telegram");
    let secrets: Vec<&str> = info.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(secrets, ["bot_token", "secret_token"]);
    assert_eq!(info.outbound_hosts, ["api.telegram.org"]);
}

#[test]
fn private_text_message() {
    let event = receive("fixtures/text.json");
    assert_eq!(event.occurred_at, Some(1_764_000_000_000));
    assert_eq!(event.contact.id, ANA);
    assert_eq!(event.contact.name.as_deref(), Some("Ana García"));
    assert_eq!(
        event.contact.handles,
        vec![Handle {
            kind: HandleKind::ChannelUser,
            value: "@anagarcia".into(),
            verified: false
        }]
    );
    let m = message(&event);
    assert_eq!(
        (m.direction, m.text.as_deref()),
        (Direction::Inbound, Some("Hola, ¿tenéis la talla M?"))
    );
    assert!(m.referral.is_none());
}

#[test]
fn start_deep_link_is_a_referral() {
    let event = receive("fixtures/start_deep_link.json");
    let r = message(&event).referral.clone().expect("referral");
    assert_eq!(r.source, ReferralSource::Link);
    assert_eq!(r.ref_payload.as_deref(), Some("summer25_ig"));
}

#[test]
fn media_kinds() {
    let photo = media("fixtures/photo.json");
    assert_eq!(
        (
            photo.kind,
            photo.id.as_deref(),
            photo.caption.as_deref(),
            photo.size
        ),
        (
            MediaKind::Image,
            Some("AgACAgQAAxkBAAIBZmVgAAH-large"),
            Some("Esta chaqueta"),
            Some(88301)
        )
    );
    let doc = media("fixtures/document.json");
    assert_eq!(
        (doc.kind, doc.filename.as_deref(), doc.mime_type.as_deref()),
        (
            MediaKind::Document,
            Some("factura-2041.pdf"),
            Some("application/pdf")
        )
    );
    assert_eq!(media("fixtures/voice.json").kind, MediaKind::Voice);
    assert_eq!(media("fixtures/video.json").kind, MediaKind::Video);
    let sticker = media("fixtures/sticker.json");
    assert_eq!(
        (sticker.kind, sticker.caption.as_deref()),
        (MediaKind::Sticker, Some("👍"))
    );
}

#[test]
fn location_and_own_contact() {
    let event = receive("fixtures/location.json");
    let [Part::Location(l)] = message(&event).parts.as_slice() else {
        panic!()
    };
    assert_eq!((l.latitude, l.longitude), (40.416775, -3.70379));

    let event = receive("fixtures/contact.json");
    let [Part::Contact(c)] = message(&event).parts.as_slice() else {
        panic!()
    };
    assert_eq!(
        (c.name.as_str(), c.phones.as_slice(), c.user_id.as_deref()),
        (
            "Ana García",
            ["34600111222".to_owned()].as_slice(),
            Some(ANA)
        )
    );
    // Her own number, shared by Telegram with her user id: a verified phone.
    assert!(event.contact.handles.contains(&Handle {
        kind: HandleKind::Phone,
        value: "34600111222".into(),
        verified: true
    }));
}

#[test]
fn reply_and_forward() {
    assert_eq!(
        message(&receive("fixtures/reply.json")).reply_to.as_deref(),
        Some("55")
    );
    assert!(message(&receive("fixtures/forwarded.json")).forwarded);
}

#[test]
fn edited_message_is_an_edit() {
    let event = receive("fixtures/edited_message.json");
    assert_eq!(event.occurred_at, Some(1_764_000_100_000));
    let EventBody::Edit(e) = &event.body else {
        panic!("{:?}", event.body)
    };
    assert_eq!(
        (e.message_id.as_str(), e.text.as_deref()),
        ("101", Some("Hola, ¿tenéis la talla L?"))
    );
}

#[test]
fn callback_query_is_an_interactive_reply() {
    let event = receive("fixtures/callback_query.json");
    assert_eq!(event.contact.id, ANA);
    let m = message(&event);
    let reply = m.interactive_reply.clone().expect("reply");
    assert_eq!(
        (reply.kind, reply.id.as_str(), reply.title.as_deref()),
        (
            InteractiveKind::Callback,
            "reserve:sku-991",
            Some("Sí, resérvala")
        )
    );
    assert_eq!(m.reply_to.as_deref(), Some("56"));
}

#[test]
fn channel_posts_and_groups_are_the_chat() {
    let post = receive("fixtures/channel_post.json");
    assert_eq!(
        (post.contact.id.as_str(), post.contact.name.as_deref()),
        ("-1001234567890", Some("Shop News"))
    );
    assert_eq!(message(&post).text.as_deref(), Some("Rebajas desde mañana"));
    let group = receive("fixtures/group_message.json");
    assert_eq!(
        (group.contact.id.as_str(), group.contact.name.as_deref()),
        ("-4012345678", Some("Pedidos Madrid"))
    );
}

#[test]
fn reaction_and_block() {
    let event = receive("fixtures/message_reaction.json");
    assert_eq!(
        event.body,
        EventBody::Reaction(Reaction {
            message_id: "56".into(),
            emoji: Some("❤".into())
        })
    );
    let blocked = receive("fixtures/my_chat_member_blocked.json");
    assert_eq!(unsupported_type(&blocked), "my_chat_member.kicked");
    assert_eq!(blocked.contact.id, ANA);
}

#[test]
fn unknown_shapes_are_unsupported_with_raw() {
    let dice = receive("fixtures/dice.json");
    assert_eq!(unsupported_type(&dice), "message");
    let join = receive("fixtures/unknown_update.json");
    assert_eq!(unsupported_type(&join), "chat_join_request");
    assert_eq!(join.contact.id, "-1001234567890");
    assert_eq!(join.occurred_at, Some(1_764_000_700_000));
    // A known field of an unexpected type: still one event, never an error.
    let h = harness();
    let body = br#"{"update_id": 9, "message": {"message_id": "x", "chat": {"id": 1, "type": "private"}}}"#;
    let outcome = h
        .run(|| Telegram::handle_webhook(post(body, Some(SECRET))))
        .expect("accepted");
    assert_eq!(outcome.events[0].external_id, "9");
    assert_eq!(unsupported_type(&outcome.events[0]), "message");
}

#[test]
fn wrong_or_missing_secret_is_unauthorized() {
    let h = harness();
    let body = fixture("fixtures/text.json");
    assert_eq!(
        h.run(|| Telegram::handle_webhook(post(&body, Some("wrong")))),
        Err(WebhookError::Unauthorized(
            "signature does not match".into()
        ))
    );
    assert_eq!(
        h.run(|| Telegram::handle_webhook(post(b"garbage", None))),
        Err(WebhookError::Unauthorized(
            "missing x-telegram-bot-api-secret-token header".into()
        ))
    );
}

// ---- outbound ----

fn reply() -> OutboundMessage {
    OutboundMessage {
        id: "msg_01".into(),
        recipient: ANA.into(),
        conversation_id: "cv_1".into(),
        text: Some("¡Sí, la tenemos!".into()),
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

const SENT: &str = r#"{"ok":true,"result":{"message_id":57,"from":{"id":7012345678,"is_bot":true,"first_name":"Shop Helper","username":"shop_helper_bot"},"chat":{"id":111222333,"first_name":"Ana","type":"private"},"date":1764000800,"text":"¡Sí, la tenemos!"}}"#;

fn send(
    message: OutboundMessage,
    status: u16,
    body: &'static str,
) -> (Harness, Result<SendReceipt, SendError>) {
    let h = harness().on_fetch(move |_| Ok(answer(status, body)));
    let result = h.run(|| Telegram::send(message));
    (h, result)
}

fn sent(h: &Harness) -> (FetchRequest, Value) {
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    (
        sent[0].clone(),
        serde_json::from_slice(&sent[0].body).expect("json"),
    )
}

#[test]
fn send_message_with_keyboard_and_reply() {
    let mut message = reply();
    message.reply_to = Some("109".into());
    message.interactive = Some(Interactive {
        style: InteractiveStyle::Buttons,
        body: "¿La reservamos?".into(),
        action_label: None,
        choices: vec![
            Choice {
                id: "reserve:sku-991".into(),
                title: "Sí".into(),
                description: None,
            },
            Choice {
                id: "no".into(),
                title: "No".into(),
                description: None,
            },
        ],
    });
    let (h, result) = send(message, 200, SENT);
    assert_eq!(result.expect("sent").external_id, "57");
    let (req, body) = sent(&h);
    // The harness filled the `{{secret:bot_token}}` the plugin wrote into the path.
    assert_eq!(
        req.url,
        format!("https://api.telegram.org/bot{TOKEN}/sendMessage")
    );
    assert_eq!(
        body,
        json!({"chat_id": 111222333, "text": "¡Sí, la tenemos!\n\n¿La reservamos?",
               "reply_parameters": {"message_id": 109},
               "reply_markup": {"inline_keyboard": [[{"text": "Sí", "callback_data": "reserve:sku-991"}, {"text": "No", "callback_data": "no"}]]}})
    );
}

#[test]
fn the_token_is_a_placeholder() {
    let mut seen = None;
    let h = Harness::new()
        .allow_host("api.telegram.org")
        .secret("bot_token", TOKEN);
    let result = h.run(|| {
        let (method, _) = crate::outbound::to_call(&reply()).expect("call");
        seen = Some(method);
        Telegram::send(reply())
    });
    assert_eq!(seen, Some("sendMessage"));
    // No on_fetch: the request still went out (and failed), and its URL had the token
    // only because the host filled it in.
    assert!(matches!(result, Err(SendError::Transient(_))));
    assert!(h.sent()[0].url.contains(TOKEN));
    let without = Harness::new().allow_host("api.telegram.org");
    assert!(matches!(
        without.run(|| Telegram::send(reply())),
        Err(SendError::Invalid(_))
    ));
    assert!(without.sent().is_empty());
}

#[test]
fn send_media_and_options() {
    let mut photo = reply();
    photo.parts = vec![Part::Media(Media {
        kind: MediaKind::Image,
        id: None,
        url: Some("https://shop.example/p.jpg".into()),
        mime_type: None,
        caption: None,
        filename: None,
        size: None,
        sha256: None,
    })];
    let (h, _) = send(photo, 200, SENT);
    let (req, body) = sent(&h);
    assert!(req.url.ends_with("/sendPhoto"));
    assert_eq!(
        body,
        json!({"chat_id": 111222333, "photo": "https://shop.example/p.jpg", "caption": "¡Sí, la tenemos!"})
    );

    let mut doc = reply();
    doc.text = None;
    doc.parts = vec![Part::Media(Media {
        kind: MediaKind::Document,
        id: Some("BQACAgQAAxkBAAIBZ2VgAAHdoc".into()),
        url: None,
        mime_type: None,
        caption: None,
        filename: None,
        size: None,
        sha256: None,
    })];
    let (h, _) = send(doc, 200, SENT);
    let (req, body) = sent(&h);
    assert!(req.url.ends_with("/sendDocument"));
    assert_eq!(
        body,
        json!({"chat_id": 111222333, "document": "BQACAgQAAxkBAAIBZ2VgAAHdoc"})
    );

    let mut answer_cb = reply();
    answer_cb.text = Some("Reservada".into());
    answer_cb.options = vec![Pair {
        name: "answer_callback_query".into(),
        value: "4382bfdwdsb323b2d9".into(),
    }];
    let (h, result) = send(answer_cb, 200, r#"{"ok":true,"result":true}"#);
    assert_eq!(
        result.expect("answered").external_id,
        "callback:4382bfdwdsb323b2d9"
    );
    let (req, body) = sent(&h);
    assert!(req.url.ends_with("/answerCallbackQuery"));
    assert_eq!(
        body,
        json!({"callback_query_id": "4382bfdwdsb323b2d9", "text": "Reservada"})
    );

    let mut edit = reply();
    edit.options = vec![
        Pair {
            name: "edit_message_id".into(),
            value: "56".into(),
        },
        Pair {
            name: "parse_mode".into(),
            value: "HTML".into(),
        },
    ];
    let (h, result) = send(edit, 200, SENT);
    assert_eq!(result.expect("edited").external_id, "57");
    let (req, body) = sent(&h);
    assert!(req.url.ends_with("/editMessageText"));
    assert_eq!(
        body,
        json!({"chat_id": 111222333, "message_id": 56, "text": "¡Sí, la tenemos!", "parse_mode": "HTML"})
    );

    let mut react = reply();
    react.reaction = Some(Reaction {
        message_id: "101".into(),
        emoji: Some("👍".into()),
    });
    let (h, _) = send(react, 200, r#"{"ok":true,"result":true}"#);
    let (req, body) = sent(&h);
    assert!(req.url.ends_with("/setMessageReaction"));
    assert_eq!(
        body,
        json!({"chat_id": 111222333, "message_id": 101, "reaction": [{"type": "emoji", "emoji": "👍"}]})
    );
}

#[test]
fn send_maps_bot_api_errors() {
    let (_, r) = send(
        reply(),
        429,
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 35","parameters":{"retry_after":35}}"#,
    );
    assert_eq!(r, Err(SendError::RateLimited(Some(35))));
    let (_, r) = send(
        reply(),
        403,
        r#"{"ok":false,"error_code":403,"description":"Forbidden: bot was blocked by the user"}"#,
    );
    assert_eq!(
        r,
        Err(SendError::Rejected(ProviderError {
            code: "403".into(),
            title: "Forbidden: bot was blocked by the user".into(),
            detail: None
        }))
    );
    let (_, r) = send(
        reply(),
        400,
        r#"{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}"#,
    );
    assert!(
        matches!(r, Err(SendError::Rejected(ref e)) if e.code == "400"),
        "{r:?}"
    );
    let (_, r) = send(
        reply(),
        401,
        r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
    );
    assert_eq!(r, Err(SendError::Unauthorized("Unauthorized".into())));
    let (_, r) = send(
        reply(),
        404,
        r#"{"ok":false,"error_code":404,"description":"Not Found"}"#,
    );
    assert!(matches!(r, Err(SendError::Unauthorized(_))), "{r:?}");
    let (_, r) = send(reply(), 502, "<html>Bad Gateway</html>");
    assert!(matches!(r, Err(SendError::Transient(_))), "{r:?}");
    let h = harness().on_fetch(|_| Err(FetchError::Timeout));
    assert!(matches!(
        h.run(|| Telegram::send(reply())),
        Err(SendError::Transient(_))
    ));
}

#[test]
fn send_refuses_what_telegram_cannot_carry() {
    let h = harness();
    let mut template = reply();
    template.template = Some(omnigate_sdk::Template {
        name: "x".into(),
        language: "es".into(),
        components: None,
    });
    assert!(matches!(
        h.run(|| Telegram::send(template)),
        Err(SendError::Invalid(_))
    ));
    let mut bad = reply();
    bad.recipient = "ana".into();
    assert!(matches!(
        h.run(|| Telegram::send(bad)),
        Err(SendError::Invalid(_))
    ));
    assert!(h.sent().is_empty());
}
