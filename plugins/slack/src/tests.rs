//! The Slack plugin, natively: Events API payloads shaped like Slack's documentation,
//! signed the way Slack signs them (by the harness, with the signing secret).

use omnigate_sdk::testing::{DEFAULT_NOW_MS, Harness, fixture, request, response};
use omnigate_sdk::{
    Channel, EventBody, HttpRequest, InboundEvent, MediaKind, OutboundMessage, Part, SendError,
    SignatureScheme, WebhookError, WebhookOutcome, host,
};

use crate::Slack;
use crate::inbound::ts_millis;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const NOW_SECS: i64 = DEFAULT_NOW_MS / 1000;

fn harness() -> Harness {
    Harness::new()
        .config("api_base", "https://slack.example")
        .secret("signing_secret", SIGNING_SECRET)
        .secret(
            "bot_token",
            "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
        )
        .allow_host("slack.example")
}

/// `body` as Slack sends it at `ts` (Unix seconds), signed with the signing secret.
fn signed_at(h: &Harness, body: &[u8], ts: i64, extra: &[(&str, &str)]) -> HttpRequest {
    let mut base = format!("v0:{ts}:").into_bytes();
    base.extend_from_slice(body);
    let signature = h
        .run(|| host::sign(SignatureScheme::SlackV0, "signing_secret", &base))
        .expect("sign");
    let ts = ts.to_string();
    let mut headers = vec![
        ("content-type", "application/json"),
        ("X-Slack-Request-Timestamp", ts.as_str()),
        ("X-Slack-Signature", signature.as_str()),
    ];
    headers.extend_from_slice(extra);
    request("POST", "/webhooks/slack-main", "", &headers, body)
}

fn handle(name: &str) -> WebhookOutcome {
    let h = harness();
    let body = fixture(&format!("fixtures/{name}"));
    h.run(|| Slack::handle_webhook(signed_at(&h, &body, NOW_SECS, &[])))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn one_event(name: &str) -> InboundEvent {
    let mut events = handle(name).events;
    assert_eq!(events.len(), 1, "{name}");
    events.remove(0)
}

fn unauthorized(result: Result<WebhookOutcome, WebhookError>) -> String {
    match result {
        Err(WebhookError::Unauthorized(reason)) => reason,
        other => panic!("expected 401, got {other:?}"),
    }
}

#[test]
fn slack_documented_signature_example() {
    // api.slack.com/authentication/verifying-requests-from-slack: this secret, timestamp
    // and body give this signature (checked within the five minutes).
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let request = request(
        "POST",
        "/webhooks/slack-main",
        "",
        &[
            ("X-Slack-Request-Timestamp", "1531420618"),
            (
                "X-Slack-Signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ],
        body.as_bytes(),
    );
    let h = harness().now(1_531_420_618_000 + 30_000);
    // Signed correctly; a slash command is not JSON, so it is then refused as such.
    match h.run(|| Slack::handle_webhook(request)) {
        Err(WebhookError::BadRequest(reason)) => {
            assert!(reason.starts_with("invalid JSON body"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn url_verification_echoes_the_challenge() {
    let outcome = handle("url_verification.json");
    assert!(outcome.events.is_empty());
    assert_eq!(
        outcome.response.body,
        b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
}

#[test]
fn channel_and_dm_messages() {
    let event = one_event("message_channel.json");
    assert_eq!(event.external_id, "C123ABC456:1355517523.000005");
    assert_eq!(event.contact.id, "C123ABC456/U123ABC456");
    assert_eq!(event.contact.handles[0].value, "U123ABC456");
    assert_eq!(event.account.as_deref(), Some("T123ABC456"));
    assert_eq!(event.occurred_at, Some(1_355_517_523_000));
    let EventBody::Message(message) = event.body else {
        panic!("message")
    };
    assert_eq!(message.text.as_deref(), Some("Live long and prospect."));
    assert_eq!(message.reply_to, None);

    let dm = one_event("message_im.json");
    assert_eq!(dm.contact.id, "D024BE91L/U2147483697");
}

#[test]
fn thread_replies_point_at_the_thread_root() {
    let event = one_event("message_thread.json");
    let EventBody::Message(message) = event.body else {
        panic!("message")
    };
    assert_eq!(
        message.reply_to.as_deref(),
        Some("C123ABC456:1482960130.003542")
    );
}

#[test]
fn edits_deletions_and_files() {
    let edit = one_event("message_changed.json");
    assert_eq!(
        edit.external_id,
        "C123ABC456:1355517523.000005:edited:1358878755.000001"
    );
    match edit.body {
        EventBody::Edit(edit) => {
            assert_eq!(edit.message_id, "C123ABC456:1355517523.000005");
            assert_eq!(edit.text.as_deref(), Some("Hello, world!"));
        }
        other => panic!("{other:?}"),
    }
    let deleted = one_event("message_deleted.json");
    assert_eq!(
        deleted.body,
        EventBody::Deletion("C123ABC456:1355517523.000005".into())
    );
    assert_eq!(deleted.contact.id, "C123ABC456/U123ABC456");
    let file = one_event("file_share.json");
    let EventBody::Message(message) = file.body else {
        panic!("message")
    };
    assert_eq!(message.text.as_deref(), Some("Here is the invoice"));
    match &message.parts[..] {
        [Part::Media(media)] => {
            assert_eq!(media.kind, MediaKind::Document);
            assert_eq!(media.id.as_deref(), Some("F0S43PZ9A"));
            assert_eq!(media.filename.as_deref(), Some("invoice-7421.pdf"));
            assert_eq!(media.caption.as_deref(), Some("Invoice 7421"));
            assert_eq!(media.size, Some(48213));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bots_housekeeping_and_other_events_are_acknowledged_only() {
    for name in [
        "bot_message.json",
        "channel_join.json",
        "reaction_added.json",
    ] {
        let outcome = handle(name);
        assert_eq!(outcome.response.status, 200, "{name}");
        assert!(outcome.events.is_empty(), "{name}");
    }
}

#[test]
fn a_retry_is_the_same_event() {
    let h = harness();
    let body = fixture("fixtures/message_channel.json");
    let first = h
        .run(|| Slack::handle_webhook(signed_at(&h, &body, NOW_SECS, &[])))
        .expect("first");
    let retry = signed_at(
        &h,
        &body,
        NOW_SECS + 60,
        &[
            ("X-Slack-Retry-Num", "1"),
            ("X-Slack-Retry-Reason", "http_timeout"),
        ],
    );
    h.set_now((NOW_SECS + 60) * 1000);
    let again = h.run(|| Slack::handle_webhook(retry)).expect("retry");
    // Same external id: the host drops the second as a duplicate.
    assert_eq!(first.events[0].external_id, again.events[0].external_id);
}

#[test]
fn bad_missing_and_stale_signatures_are_401() {
    let h = harness();
    let body = fixture("fixtures/message_channel.json");
    let stale = signed_at(&h, &body, NOW_SECS - 301, &[]);
    assert_eq!(
        unauthorized(h.run(|| Slack::handle_webhook(stale))),
        "timestamp 301 s old, tolerance 300 s"
    );
    let mut tampered = signed_at(&h, &body, NOW_SECS, &[]);
    tampered.body = String::from_utf8_lossy(&body)
        .replace("prospect", "prosper")
        .into_bytes();
    assert_eq!(
        unauthorized(h.run(|| Slack::handle_webhook(tampered))),
        "signature does not match"
    );
    let unsigned = request("POST", "/webhooks/slack-main", "", &[], &body);
    assert_eq!(
        unauthorized(h.run(|| Slack::handle_webhook(unsigned))),
        "missing x-slack-request-timestamp header"
    );
}

#[test]
fn malformed_bodies_are_400_with_the_reason() {
    let h = harness();
    let cases: [(&[u8], &str); 3] = [
        (b"{not json", "invalid JSON body"),
        (
            br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message","channel":"C1","user":"U1","ts":42}}"#,
            "invalid message event",
        ),
        (
            br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message","user":"U1","text":"hi"}}"#,
            "message event without `channel` or `ts`",
        ),
    ];
    for (body, reason) in cases {
        match h.run(|| Slack::handle_webhook(signed_at(&h, body, NOW_SECS, &[]))) {
            Err(WebhookError::BadRequest(got)) => assert!(got.starts_with(reason), "{got}"),
            other => panic!("{reason}: {other:?}"),
        }
    }
}

#[test]
fn ts_converts_to_millis() {
    assert_eq!(ts_millis("1355517523.000005"), Some(1_355_517_523_000));
    assert_eq!(ts_millis("1355517523.9"), Some(1_355_517_523_900));
    assert_eq!(ts_millis("soon"), None);
}

fn reply(reply_to: Option<&str>) -> OutboundMessage {
    OutboundMessage {
        id: "msg_01".into(),
        recipient: "C123ABC456/U123ABC456".into(),
        conversation_id: "cv_01".into(),
        text: Some("Looking into it now".into()),
        parts: Vec::new(),
        reply_to: reply_to.map(str::to_owned),
        interactive: None,
        template: None,
        reaction: None,
        options: Vec::new(),
    }
}

#[test]
fn replies_are_posted_in_the_thread_with_the_bot_token() {
    let h = harness().on_fetch(|_| {
        Ok(response(
            200,
            &[],
            r#"{"ok": true, "channel": "C123ABC456", "ts": "1503435956.000247", "message": {"text": "Looking into it now"}}"#,
        ))
    });
    let receipt = h
        .run(|| Slack::send(reply(Some("C123ABC456:1482960130.003542"))))
        .expect("sent");
    assert_eq!(receipt.external_id, "C123ABC456:1503435956.000247");
    let sent = h.sent();
    assert_eq!(sent[0].url, "https://slack.example/api/chat.postMessage");
    assert!(
        sent[0]
            .headers
            .iter()
            .any(|header| header.name == "authorization"
                && header.value == "Bearer xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy")
    );
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"channel": "C123ABC456", "text": "Looking into it now", "thread_ts": "1482960130.003542"})
    );
    assert!(matches!(
        harness().run(|| Slack::send(reply(Some("C999:1.2")))),
        Err(SendError::Invalid(_))
    ));
}

#[test]
fn slack_errors_are_mapped() {
    let send_with =
        |status: u16, headers: &'static [(&'static str, &'static str)], body: &'static str| {
            let h = harness().on_fetch(move |_| Ok(response(status, headers, body)));
            h.run(|| Slack::send(reply(None)))
        };
    assert_eq!(
        send_with(429, &[("Retry-After", "30")], ""),
        Err(SendError::RateLimited(Some(30)))
    );
    assert_eq!(
        send_with(200, &[], r#"{"ok": false, "error": "ratelimited"}"#),
        Err(SendError::RateLimited(None))
    );
    assert!(matches!(
        send_with(200, &[], r#"{"ok": false, "error": "invalid_auth"}"#),
        Err(SendError::Unauthorized(_))
    ));
    match send_with(200, &[], r#"{"ok": false, "error": "channel_not_found"}"#) {
        Err(SendError::Rejected(error)) => assert_eq!(error.code, "channel_not_found"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        send_with(503, &[], ""),
        Err(SendError::Transient(_))
    ));
    let mut no_text = reply(None);
    no_text.text = None;
    assert!(matches!(
        harness().run(|| Slack::send(no_text)),
        Err(SendError::Invalid(_))
    ));
}
