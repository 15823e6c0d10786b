//! The Twilio plugin, natively: fixtures shaped like Twilio's documented webhook
//! requests, signed like Twilio signs them (by the harness, with the auth token).

use omnigate_sdk::testing::{Harness, fixture, request};
use omnigate_sdk::{
    Channel, DeliveryStatus, EventBody, FetchResponse, Header, HttpRequest, InboundEvent,
    InteractiveKind, MediaKind, OutboundMessage, Part, ReferralSource, SendError, SignatureScheme,
    Template, WebhookError, form, host,
};

use crate::Twilio;

const AUTH_TOKEN: &str = "9b3c5d7e1f2a4b6c8d0e1f3a5b7c9d1e";
const ACCOUNT: &str = "AC9f2c1d0b7a6e5f4c3b2a1908f7e6d5c4";
const PUBLIC_URL: &str = "https://hooks.example.com/webhooks/twilio-main";

fn harness() -> Harness {
    Harness::new()
        .config("account_sid", ACCOUNT)
        .config("from", "+15017250604")
        .config("api_base", "https://api.twilio.example")
        .secret("auth_token", AUTH_TOKEN)
        .allow_host("api.twilio.example")
}

/// What Twilio signs: the URL, then each parameter's name and value, sorted by name.
fn signed_text(url: &str, body: &[u8]) -> String {
    let mut params = form(body);
    params.sort();
    params
        .iter()
        .fold(url.to_owned(), |text, (name, value)| text + name + value)
}

/// `body` POSTed by Twilio to [`PUBLIC_URL`], signed with the auth token.
fn webhook(h: &Harness, body: &[u8]) -> HttpRequest {
    let signature = h
        .run(|| {
            host::sign(
                SignatureScheme::HmacSha1Base64,
                "auth_token",
                signed_text(PUBLIC_URL, body).as_bytes(),
            )
        })
        .expect("sign");
    with_headers(body, &[("X-Twilio-Signature", &signature)])
}

fn with_headers(body: &[u8], extra: &[(&str, &str)]) -> HttpRequest {
    let mut headers = vec![
        ("content-type", "application/x-www-form-urlencoded"),
        ("x-omnigate-public-url", PUBLIC_URL),
    ];
    headers.extend_from_slice(extra);
    request("POST", "/webhooks/twilio-main", "", &headers, body)
}

fn one_event(name: &str) -> InboundEvent {
    let h = harness();
    let body = fixture(&format!("fixtures/{name}"));
    let outcome = h
        .run(|| Twilio::handle_webhook(webhook(&h, &body)))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(outcome.response.status, 200);
    assert!(String::from_utf8_lossy(&outcome.response.body).contains("<Response>"));
    let mut events = outcome.events;
    assert_eq!(events.len(), 1, "{name}");
    events.remove(0)
}

fn message(event: &InboundEvent) -> &omnigate_sdk::Message {
    match &event.body {
        EventBody::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn unauthorized(result: Result<omnigate_sdk::WebhookOutcome, WebhookError>) -> String {
    match result {
        Err(WebhookError::Unauthorized(reason)) => reason,
        other => panic!("expected 401, got {other:?}"),
    }
}

fn bad_request(result: Result<omnigate_sdk::WebhookOutcome, WebhookError>) -> String {
    match result {
        Err(WebhookError::BadRequest(reason)) => reason,
        other => panic!("expected 400, got {other:?}"),
    }
}

#[test]
fn twilio_documented_signature_example_passes_the_check() {
    // twilio.com/docs/usage/security: auth token 12345, this URL and these parameters
    // give 0/KCTR6DLpKmkAf8muzZqo1nDgQ=. The signature is accepted; the body is a voice
    // call, not a message, so it is then refused as such.
    let h = Harness::new().secret("auth_token", "12345");
    let body = b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
    let request = request(
        "POST",
        "/webhooks/t",
        "",
        &[
            (
                "x-omnigate-public-url",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
            ),
            ("X-Twilio-Signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        ],
        body,
    );
    assert_eq!(
        bad_request(h.run(|| Twilio::handle_webhook(request))),
        "missing parameter `MessageSid`"
    );
}

#[test]
fn sms_carries_text_and_a_verified_phone() {
    let event = one_event("sms.form");
    assert_eq!(event.external_id, "SM1f0e8c2d7a4b4c6e9f3a2b1c0d9e8f70");
    assert_eq!(event.contact.id, "+14017122661");
    assert_eq!(event.account.as_deref(), Some("+15017250604"));
    assert_eq!(event.contact.handles.len(), 1);
    assert_eq!(event.contact.handles[0].value, "+14017122661");
    assert!(event.contact.handles[0].verified);
    let message = message(&event);
    assert_eq!(
        message.text.as_deref(),
        Some("Hi, do you ship to Rhode Island?")
    );
    assert!(message.parts.is_empty() && message.referral.is_none());
}

#[test]
fn mms_media_become_parts_by_url() {
    let event = one_event("mms.form");
    let message = message(&event);
    assert_eq!(message.text.as_deref(), Some("The box arrived like this"));
    let kinds: Vec<(MediaKind, Option<String>)> = message
        .parts
        .iter()
        .map(|part| match part {
            Part::Media(media) => {
                assert!(
                    media
                        .url
                        .as_deref()
                        .is_some_and(|u| u.starts_with("https://api.twilio.com/"))
                );
                (media.kind, media.mime_type.clone())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (MediaKind::Image, Some("image/jpeg".into())),
            (MediaKind::Video, Some("video/mp4".into()))
        ]
    );
}

#[test]
fn whatsapp_messages_keep_profile_name_and_wa_id() {
    let event = one_event("whatsapp_text.form");
    assert_eq!(event.contact.id, "whatsapp:+14155552671");
    assert_eq!(event.contact.name.as_deref(), Some("Sheena Nelson"));
    assert_eq!(event.contact.handles[0].value, "14155552671");
    assert!(event.contact.handles[0].verified);
    assert_eq!(event.account.as_deref(), Some("whatsapp:+14155238886"));
    assert_eq!(
        message(&event).text.as_deref(),
        Some("Hola, ¿tenéis la talla 42?")
    );
    let image = one_event("whatsapp_image.form");
    assert!(matches!(&message(&image).parts[..], [Part::Media(m)] if m.kind == MediaKind::Image));
    let unlisted = one_event("whatsapp_unlisted_wa_id.form");
    assert_eq!(unlisted.contact.handles[0].value, "972987654321");
}

#[test]
fn a_ctwa_referral_carries_the_click_id_and_the_ad() {
    let event = one_event("whatsapp_referral_ctwa.form");
    let referral = message(&event).referral.clone().expect("referral");
    assert_eq!(referral.source, ReferralSource::Ad);
    assert_eq!(referral.ad_id.as_deref(), Some("120211234567890123"));
    assert_eq!(referral.click_ids.len(), 1);
    assert_eq!(referral.click_ids[0].name, "ctwa_clid");
    assert!(referral.click_ids[0].value.starts_with("ARAkLkA8rmlF"));
    assert_eq!(referral.url.as_deref(), Some("https://fb.me/3cr4Wq9Xy"));
    assert_eq!(referral.headline.as_deref(), Some("Running shoes, 30% off"));
    assert_eq!(
        referral.body.as_deref(),
        Some("Only this week: every trail model")
    );
    assert!(
        referral
            .media_url
            .is_some_and(|u| u.ends_with("running_ad.jpg"))
    );
}

#[test]
fn buttons_locations_and_replies() {
    let button = one_event("whatsapp_button.form");
    let reply = message(&button).interactive_reply.clone().expect("button");
    assert_eq!(reply.kind, InteractiveKind::Button);
    assert_eq!(reply.id, "track_order_7421");
    assert_eq!(reply.title.as_deref(), Some("Track my order"));

    let location = one_event("whatsapp_location.form");
    let message_of_location = message(&location);
    assert_eq!(message_of_location.text, None);
    match &message_of_location.parts[..] {
        [Part::Location(place)] => {
            assert!((place.latitude - 37.7886).abs() < 1e-9);
            assert!((place.longitude + 122.41).abs() < 1e-9);
            assert_eq!(place.name.as_deref(), Some("Twilio HQ"));
        }
        other => panic!("{other:?}"),
    }

    let quoted = one_event("whatsapp_reply.form");
    assert_eq!(
        message(&quoted).reply_to.as_deref(),
        Some("SM0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b")
    );
}

#[test]
fn status_callbacks_become_statuses_once_per_state() {
    let status = |name: &str| {
        let event = one_event(name);
        match event.body {
            EventBody::Status(update) => (event.external_id, event.contact.id, update),
            other => panic!("{name}: {other:?}"),
        }
    };
    let (queued_id, to, queued) = status("status_queued.form");
    let (sent_id, _, sent) = status("status_sent.form");
    assert_eq!(queued.status, DeliveryStatus::Sent);
    assert_eq!(sent.status, DeliveryStatus::Sent);
    assert_eq!(queued_id, sent_id, "queued then sent is one `sent` event");
    assert_eq!(to, "+14017122661");
    let (delivered_id, _, delivered) = status("status_delivered.form");
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered_id, "SMb1a2c3d4e5f60718293a4b5c6d7e8f90:delivered");
    let (_, _, undelivered) = status("status_undelivered.form");
    assert_eq!(undelivered.status, DeliveryStatus::Failed);
    assert_eq!(undelivered.error.expect("error").code, "30003");
    let (_, wa_to, read) = status("status_whatsapp_read.form");
    assert_eq!(read.status, DeliveryStatus::Read);
    assert_eq!(wa_to, "whatsapp:+14155552671");
    let (_, _, failed) = status("status_whatsapp_failed.form");
    assert_eq!(failed.error.expect("error").code, "63016");
}

#[test]
fn bad_or_missing_signatures_are_401() {
    let h = harness();
    let body = fixture("fixtures/sms.form");
    let missing = with_headers(&body, &[]);
    assert_eq!(
        unauthorized(h.run(|| Twilio::handle_webhook(missing))),
        "missing x-twilio-signature header"
    );
    let wrong = with_headers(
        &body,
        &[("X-Twilio-Signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")],
    );
    assert_eq!(
        unauthorized(h.run(|| Twilio::handle_webhook(wrong))),
        "signature does not match"
    );
    // A replay to another URL (another channel) does not verify: the URL is signed.
    let mut elsewhere = webhook(&h, &body);
    for header in &mut elsewhere.headers {
        if header.name == "x-omnigate-public-url" {
            header.value = "https://hooks.example.com/webhooks/other".into();
        }
    }
    assert_eq!(
        unauthorized(h.run(|| Twilio::handle_webhook(elsewhere))),
        "signature does not match"
    );
    // A tampered parameter does not verify either.
    let mut tampered = webhook(&h, &body);
    tampered.body = String::from_utf8_lossy(&body)
        .replace("Rhode+Island", "Texas")
        .into_bytes();
    assert_eq!(
        unauthorized(h.run(|| Twilio::handle_webhook(tampered))),
        "signature does not match"
    );
    let mut no_url = webhook(&h, &body);
    no_url
        .headers
        .retain(|header: &Header| header.name != "x-omnigate-public-url");
    assert!(unauthorized(h.run(|| Twilio::handle_webhook(no_url))).contains("public URL"));
}

#[test]
fn malformed_requests_are_400_with_the_reason() {
    let h = harness();
    let cases: [(&[u8], &str); 4] = [
        (
            b"MessageSid=SM1&From=%2B14017122661&NumMedia=two",
            "parameter `NumMedia` is not a count: \"two\"",
        ),
        (
            b"MessageSid=SM1&From=%2B14017122661&NumMedia=1",
            "missing parameter `MediaUrl0`",
        ),
        (b"MessageSid=SM1&Body=hi", "missing parameter `From`"),
        (
            b"MessageSid=SM1&From=whatsapp%3A%2B1&Latitude=north&Longitude=1",
            "parameter `Latitude` is not a number: \"north\"",
        ),
    ];
    for (body, reason) in cases {
        assert_eq!(
            bad_request(h.run(|| Twilio::handle_webhook(webhook(&h, body)))),
            reason
        );
    }
    let mut get = webhook(&h, b"MessageSid=SM1&From=%2B1");
    get.method = "GET".into();
    assert!(bad_request(h.run(|| Twilio::handle_webhook(get))).contains("method GET"));
}

fn reply(recipient: &str) -> OutboundMessage {
    OutboundMessage {
        id: "msg_01".into(),
        recipient: recipient.into(),
        conversation_id: "cv_01".into(),
        text: Some("We ship to every state, yes".into()),
        parts: Vec::new(),
        reply_to: None,
        interactive: None,
        template: None,
        reaction: None,
        options: Vec::new(),
    }
}

fn answer(status: u16, body: &str) -> FetchResponse {
    omnigate_sdk::testing::response(status, &[("retry-after", "7")], body)
}

#[test]
fn a_reply_is_posted_with_basic_auth_the_host_fills_in() {
    let h = harness().on_fetch(|_| {
        Ok(answer(
            201,
            r#"{"sid": "SMd4e5f60718293a4b5c6d7e8f90a1b2c3", "status": "queued"}"#,
        ))
    });
    let receipt = h.run(|| Twilio::send(reply("+14017122661"))).expect("sent");
    assert_eq!(receipt.external_id, "SMd4e5f60718293a4b5c6d7e8f90a1b2c3");
    let sent = h.sent();
    assert_eq!(
        sent[0].url,
        format!("https://api.twilio.example/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    );
    let authorization = sent[0]
        .headers
        .iter()
        .find(|header| header.name == "authorization")
        .expect("authorization");
    let expected = omnigate_signature_basic(ACCOUNT, AUTH_TOKEN);
    assert_eq!(authorization.value, format!("Basic {expected}"));
    assert_eq!(
        form(&sent[0].body),
        vec![
            ("To".to_owned(), "+14017122661".to_owned()),
            ("From".to_owned(), "+15017250604".to_owned()),
            ("Body".to_owned(), "We ship to every state, yes".to_owned()),
        ]
    );
}

/// Basic credentials computed independently of the plugin and the harness (RFC 7617:
/// base64 of `user:password`).
fn omnigate_signature_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[test]
fn whatsapp_templates_and_media_use_the_right_fields() {
    let h = harness().on_fetch(|_| Ok(answer(201, r#"{"sid": "SM1"}"#)));
    let mut templated = reply("whatsapp:+14155552671");
    templated.text = None;
    templated.template = Some(Template {
        name: "HXb5b62575e6e4ff6129ad7c8efe1f983e".into(),
        language: "en".into(),
        components: Some(r#"{"1":"12/1","2":"3pm"}"#.into()),
    });
    h.run(|| Twilio::send(templated)).expect("sent");
    let mut media = reply("+14017122661");
    media.parts = vec![Part::Media(omnigate_sdk::Media {
        kind: MediaKind::Image,
        id: None,
        url: Some("https://shop.example/label.png".into()),
        mime_type: None,
        caption: None,
        filename: None,
        size: None,
        sha256: None,
    })];
    h.run(|| Twilio::send(media)).expect("sent");
    let sent = h.sent();
    assert_eq!(
        form(&sent[0].body),
        vec![
            ("To".to_owned(), "whatsapp:+14155552671".to_owned()),
            ("From".to_owned(), "whatsapp:+15017250604".to_owned()),
            (
                "ContentSid".to_owned(),
                "HXb5b62575e6e4ff6129ad7c8efe1f983e".to_owned()
            ),
            (
                "ContentVariables".to_owned(),
                r#"{"1":"12/1","2":"3pm"}"#.to_owned()
            ),
        ]
    );
    assert!(form(&sent[1].body).contains(&(
        "MediaUrl".to_owned(),
        "https://shop.example/label.png".to_owned()
    )));
    // A Messaging Service sends instead of a number.
    let service = harness()
        .config("from", "MG1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d")
        .on_fetch(|_| Ok(answer(201, r#"{"sid": "SM2"}"#)));
    service
        .run(|| Twilio::send(reply("+14017122661")))
        .expect("sent");
    assert!(form(&service.sent()[0].body).contains(&(
        "MessagingServiceSid".to_owned(),
        "MG1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d".to_owned()
    )));
}

#[test]
fn twilio_error_codes_are_mapped() {
    let error = |status: u16, code: u32| {
        let body = format!(
            r#"{{"code": {code}, "message": "Twilio says no ({code})", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
        );
        let h = harness().on_fetch(move |_| Ok(answer(status, &body)));
        h.run(|| Twilio::send(reply("whatsapp:+14155552671")))
    };
    let code_of = |result: Result<omnigate_sdk::SendReceipt, SendError>| match result {
        Err(SendError::Rejected(e)) => e.code,
        other => panic!("expected rejected, got {other:?}"),
    };
    assert_eq!(code_of(error(400, 21610)), "21610");
    assert_eq!(code_of(error(400, 63016)), "63016");
    assert!(matches!(error(400, 21211), Err(SendError::Invalid(why)) if why.contains("21211")));
    assert_eq!(error(429, 20429), Err(SendError::RateLimited(Some(7))));
    assert_eq!(error(400, 20429), Err(SendError::RateLimited(Some(7))));
    assert!(matches!(error(401, 20003), Err(SendError::Unauthorized(_))));
    assert!(matches!(error(503, 20500), Err(SendError::Transient(_))));
    let mut reaction = reply("+14017122661");
    reaction.reaction = Some(omnigate_sdk::Reaction {
        message_id: "SM1".into(),
        emoji: Some("👍".into()),
    });
    assert!(matches!(
        harness().run(|| Twilio::send(reaction)),
        Err(SendError::Invalid(_))
    ));
    let unconfigured = Harness::new().secret("auth_token", AUTH_TOKEN);
    assert_eq!(
        unconfigured.run(|| Twilio::send(reply("+1"))),
        Err(SendError::Invalid("config `account_sid` is not set".into()))
    );
}
