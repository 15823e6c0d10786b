use omnigate_destination_sdk::Identifier;
use omnigate_destination_sdk::conversion::{ConversionEvent, Verdict};
use serde_json::{Value, json};

use crate::ingest::{HOLD_MS, Plan, Settings, answer, plan};

/// 2026-11-22T12:00:00Z.
const NOW_MS: i64 = 1_795_348_800_000;

fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut config = vec![
        ("customer_id", "123-456-7890"),
        ("conversion_action_id", "555"),
    ];
    config.extend_from_slice(extra);
    Settings::from_config(|key| {
        config
            .iter()
            .rev()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| (*value).to_owned())
    })
    .expect("valid settings")
}

fn hash(identifier: Identifier, value: &str) -> Option<String> {
    let kind = match identifier {
        Identifier::Email => "Email",
        Identifier::Phone => "Phone",
    };
    Some(format!("{kind}:{value}"))
}

fn event(touch: Value, conversion: Value) -> ConversionEvent {
    let document = json!({
        "type": "dev.omnigate.conversion.recorded",
        "data": {
            "id": "evt_1",
            "type": "conversion.recorded",
            "channel": {"id": "web", "kind": "webchat"},
            "contact": {"id": "ct_1", "handles": [
                {"kind": "email", "value": "ana.lopez@gmail.com", "verified": false},
                {"kind": "channel_user", "value": "web:v-42", "verified": true}
            ]},
            "conversation": {"id": "cv_1", "attribution": {"first_touch": touch}},
            "conversion": conversion,
        }
    });
    ConversionEvent::read(document.to_string().as_bytes()).expect("event")
}

fn gclid_visit(at: &str) -> Value {
    json!({"source": "link", "channel": "web", "at": at,
           "click_id": {"gclid": "Cj0KCQiA-gclid"}, "utm": {"source": "google"}})
}

fn purchase() -> Value {
    json!({"id": "ord-9", "name": "purchase", "value": "49.5", "currency": "USD",
           "occurred_at": "2026-11-22T10:00:00Z",
           "consent": {"ad_user_data": true, "ad_personalization": false}})
}

#[test]
fn web_chat_visit_with_gclid_is_one_ingest_request() {
    let planned = plan(
        &event(gclid_visit("2026-11-21T09:00:00Z"), purchase()),
        &settings(&[("login_customer_id", "999")]),
        NOW_MS,
        &hash,
    );
    let Ok(Plan::Send(body)) = planned else {
        panic!("not sent: {planned:?}");
    };
    assert_eq!(
        body,
        json!({
            "destinations": [{
                "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                "loginAccount": {"accountType": "GOOGLE_ADS", "accountId": "999"},
                "productDestinationId": "555",
            }],
            "events": [{
                "eventTimestamp": "2026-11-22T10:00:00Z",
                "transactionId": "ord-9",
                "eventSource": "OTHER",
                "adIdentifiers": {"gclid": "Cj0KCQiA-gclid"},
                "conversionValue": 49.5,
                "currency": "USD",
                "userData": {"userIdentifiers": [{"emailAddress": "Email:ana.lopez@gmail.com"}]},
                "consent": {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_DENIED"},
            }],
            "encoding": "HEX",
            "validateOnly": false,
        })
    );
    assert_eq!(
        settings(&[]).url(),
        "https://datamanager.googleapis.com/v1/events:ingest"
    );
}

#[test]
fn a_click_under_six_hours_old_is_held_until_then() {
    let clicked = "2026-11-22T09:00:00Z";
    let mut conversion = purchase();
    conversion["occurred_at"] = json!("2026-11-22T11:00:00Z");
    let planned = plan(
        &event(gclid_visit(clicked), conversion.clone()),
        &settings(&[]),
        NOW_MS,
        &hash,
    );
    let clicked_ms = NOW_MS - 3 * 3600 * 1000;
    assert_eq!(planned, Ok(Plan::Hold(clicked_ms + HOLD_MS)));
    // Once the six hours have passed it goes.
    let later = clicked_ms + HOLD_MS;
    assert!(matches!(
        plan(
            &event(gclid_visit(clicked), conversion),
            &settings(&[]),
            later,
            &hash
        ),
        Ok(Plan::Send(_))
    ));
}

#[test]
fn no_click_old_click_and_refused_consent_are_skipped() {
    let skipped = |touch: Value, conversion: Value| match plan(
        &event(touch, conversion),
        &settings(&[]),
        NOW_MS,
        &hash,
    ) {
        Ok(Plan::Skip(reason)) => reason,
        other => panic!("not skipped: {other:?}"),
    };
    let organic = json!({"source": "link", "channel": "web", "at": "2026-11-21T09:00:00Z"});
    assert_eq!(skipped(organic, purchase()), "no_google_click");
    assert_eq!(
        skipped(gclid_visit("2026-08-01T09:00:00Z"), purchase()),
        "click_older_than_90_days"
    );
    let mut refused = purchase();
    refused["consent"] = json!({"ad_user_data": false});
    assert_eq!(
        skipped(gclid_visit("2026-11-21T09:00:00Z"), refused),
        "no_ad_user_data_consent"
    );
}

#[test]
fn app_click_ids_are_used_when_there_is_no_gclid() {
    let touch = json!({"source": "ad", "channel": "web", "at": "2026-11-21T09:00:00Z",
                       "click_id": {"wbraid": "WB-1"}});
    let Ok(Plan::Send(body)) = plan(
        &event(touch, purchase()),
        &settings(&[("validate_only", "true")]),
        NOW_MS,
        &hash,
    ) else {
        panic!("not sent");
    };
    assert_eq!(
        body["events"][0]["adIdentifiers"],
        json!({"wbraid": "WB-1"})
    );
    assert_eq!(body["validateOnly"], true);
}

#[test]
fn configuration_errors_name_the_key() {
    let error = |pairs: &[(&str, &str)]| {
        let pairs = pairs.to_vec();
        Settings::from_config(move |key| {
            pairs
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect_err("invalid")
    };
    assert!(error(&[("conversion_action_id", "1")]).contains("customer_id"));
    assert!(
        error(&[("customer_id", "12x"), ("conversion_action_id", "1")]).contains("customer_id")
    );
    assert!(error(&[("customer_id", "1")]).contains("conversion_action_id"));
    assert!(
        error(&[
            ("customer_id", "1"),
            ("conversion_action_id", "1"),
            ("event_source", "CHAT")
        ])
        .contains("event_source")
    );
}

#[test]
fn google_answers_are_mapped() {
    assert_eq!(
        answer(200, br#"{"requestId": "req-77"}"#, None),
        Verdict::Sent("req-77".into())
    );
    let status = |code: u16, name: &str| {
        json!({"error": {"code": code, "message": format!("{name} happened"), "status": name}})
            .to_string()
    };
    assert_eq!(
        answer(
            429,
            status(429, "RESOURCE_EXHAUSTED").as_bytes(),
            Some(30_000)
        ),
        Verdict::Retry {
            reason: "429 RESOURCE_EXHAUSTED: RESOURCE_EXHAUSTED happened".into(),
            after_ms: Some(30_000)
        }
    );
    assert!(matches!(answer(503, b"", None), Verdict::Retry { .. }));
    assert!(matches!(
        answer(401, status(401, "UNAUTHENTICATED").as_bytes(), None),
        Verdict::Retry { .. }
    ));
    assert!(matches!(
        answer(403, status(403, "PERMISSION_DENIED").as_bytes(), None),
        Verdict::Disable(_)
    ));
    let Verdict::Permanent(reason) = answer(400, status(400, "INVALID_ARGUMENT").as_bytes(), None)
    else {
        panic!("400 is permanent");
    };
    assert!(reason.contains("INVALID_ARGUMENT"), "{reason}");
}
