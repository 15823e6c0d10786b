use omnigate_destination_sdk::Identifier;
use omnigate_destination_sdk::conversion::{ConversionEvent, Verdict};
use serde_json::{Value, json};

use crate::capi::{Plan, Settings, answer, plan};

/// 2026-11-22T12:00:00Z.
const NOW_MS: i64 = 1_795_348_800_000;

fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut config = vec![
        ("dataset_id", "998877"),
        ("whatsapp_business_account_id", "102290129340398"),
    ];
    config.extend_from_slice(extra);
    Settings::from_config(|key| {
        config
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| (*value).to_owned())
    })
    .expect("valid settings")
}

/// Stands in for the host's hashing: visible, so the tests see what was hashed.
fn hash(identifier: Identifier, value: &str) -> Option<String> {
    let kind = match identifier {
        Identifier::Email => "Email",
        Identifier::Phone => "Phone",
    };
    Some(format!("{kind}:{value}"))
}

fn event(touch: Value, channel: Value, conversion: Value) -> ConversionEvent {
    let document = json!({
        "type": "dev.omnigate.conversion.recorded",
        "data": {
            "id": "evt_1",
            "type": "conversion.recorded",
            "channel": channel,
            "contact": {"id": "ct_1", "handles": [
                {"kind": "phone", "value": "+16505551234", "verified": true},
                {"kind": "email", "value": "ana@example.com", "verified": false},
                {"kind": "channel_user", "value": "fb:PSID-7", "verified": true},
                {"kind": "channel_user", "value": "ig:IGSID-9", "verified": true}
            ]},
            "conversation": {"id": "cv_1", "attribution": {"first_touch": touch}},
            "conversion": conversion,
        }
    });
    ConversionEvent::read(document.to_string().as_bytes()).expect("event")
}

fn purchase() -> Value {
    json!({"id": "ord-1", "name": "purchase", "value": "129.90", "currency": "EUR",
           "occurred_at": "2026-11-22T10:00:00Z", "consent": {"ad_user_data": true}})
}

fn ctwa() -> Value {
    json!({"source": "ad", "channel": "wa", "at": "2026-11-21T09:00:00Z", "ad_id": "120",
           "click_id": {"ctwa_clid": "ARAkLkA8rmlFeiCktEJQ"}})
}

fn whatsapp() -> Value {
    json!({"id": "wa", "kind": "whatsapp", "account": "106540352242922"})
}

#[test]
fn whatsapp_purchase_is_one_event_with_the_click_and_hashed_ids() {
    let planned = plan(
        &event(ctwa(), whatsapp(), purchase()),
        &settings(&[]),
        NOW_MS,
        &hash,
    );
    let Ok(Plan::Send(body)) = planned else {
        panic!("not sent: {planned:?}");
    };
    assert_eq!(
        body,
        json!({
            "data": [{
                "event_name": "Purchase",
                "event_time": 1_795_341_600,
                "event_id": "ord-1",
                "action_source": "business_messaging",
                "messaging_channel": "whatsapp",
                "user_data": {
                    "whatsapp_business_account_id": "102290129340398",
                    "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ",
                    "em": ["Email:ana@example.com"],
                    "ph": ["Phone:+16505551234"],
                },
                "custom_data": {"value": 129.90, "currency": "EUR"},
            }],
            "partner_agent": "omnigate",
        })
    );
    assert_eq!(
        settings(&[]).url(),
        "https://graph.facebook.com/v24.0/998877/events"
    );
}

#[test]
fn messenger_and_instagram_use_the_channel_user_ids() {
    let messenger_ad =
        json!({"source": "ad", "channel": "fb", "at": "2026-11-21T09:00:00Z", "ad_id": "5"});
    let page = json!({"id": "fb", "kind": "messenger", "account": "PAGE-1"});
    let Ok(Plan::Send(body)) = plan(
        &event(messenger_ad, page, purchase()),
        &settings(&[]),
        NOW_MS,
        &hash,
    ) else {
        panic!("messenger not sent");
    };
    assert_eq!(body["data"][0]["messaging_channel"], "messenger");
    assert_eq!(body["data"][0]["user_data"]["page_id"], "PAGE-1");
    assert_eq!(
        body["data"][0]["user_data"]["page_scoped_user_id"],
        "PSID-7"
    );

    let instagram_ad =
        json!({"source": "ad", "channel": "ig", "at": "2026-11-21T09:00:00Z", "ad_id": "6"});
    let account = json!({"id": "ig", "kind": "instagram"});
    let configured = settings(&[("ig_account_id", "IG-ACC"), ("test_event_code", "TEST123")]);
    let Ok(Plan::Send(body)) = plan(
        &event(instagram_ad, account, purchase()),
        &configured,
        NOW_MS,
        &hash,
    ) else {
        panic!("instagram not sent");
    };
    assert_eq!(body["data"][0]["user_data"]["ig_account_id"], "IG-ACC");
    assert_eq!(body["data"][0]["user_data"]["ig_sid"], "IGSID-9");
    assert_eq!(body["test_event_code"], "TEST123");
}

#[test]
fn names_map_to_business_messaging_events_never_lead() {
    let names = [
        ("lead", "LeadSubmitted"),
        ("qualified_lead", "QualifiedLead"),
    ];
    for (ours, theirs) in names {
        let mut conversion = purchase();
        conversion["name"] = json!(ours);
        let Ok(Plan::Send(body)) = plan(
            &event(ctwa(), whatsapp(), conversion),
            &settings(&[]),
            NOW_MS,
            &hash,
        ) else {
            panic!("{ours} not sent");
        };
        assert_eq!(body["data"][0]["event_name"], theirs);
    }
    let custom = settings(&[("event_names", "booking=Schedule, lead=QualifiedLead")]);
    let mut booking = purchase();
    booking["name"] = json!("booking");
    let Ok(Plan::Send(body)) = plan(&event(ctwa(), whatsapp(), booking), &custom, NOW_MS, &hash)
    else {
        panic!("booking not sent");
    };
    assert_eq!(body["data"][0]["event_name"], "Schedule");
    let refused = Settings::from_config(|key| match key {
        "dataset_id" => Some("1".into()),
        "event_names" => Some("lead=Lead".into()),
        _ => None,
    });
    assert!(refused.expect_err("Lead refused").contains("LeadSubmitted"));
}

#[test]
fn organic_old_unconsented_and_unmapped_are_skipped_with_reasons() {
    let skipped = |touch: Value, conversion: Value| match plan(
        &event(touch, whatsapp(), conversion),
        &settings(&[]),
        NOW_MS,
        &hash,
    ) {
        Ok(Plan::Skip(reason)) => reason,
        other => panic!("not skipped: {other:?}"),
    };
    let organic = json!({"source": "link", "channel": "wa", "at": "2026-11-21T09:00:00Z"});
    assert_eq!(skipped(organic, purchase()), "no_meta_click");
    let mut old = purchase();
    old["occurred_at"] = json!("2026-11-14T10:00:00Z");
    assert_eq!(skipped(ctwa(), old), "older_than_7_days");
    let mut refused = purchase();
    refused["consent"] = json!({"ad_user_data": false});
    assert_eq!(skipped(ctwa(), refused), "no_ad_user_data_consent");
    let mut signup = purchase();
    signup["name"] = json!("signup");
    assert_eq!(skipped(ctwa(), signup), "unmapped_conversion_name");
}

#[test]
fn whatsapp_without_the_business_account_id_is_a_configuration_error() {
    let bare = Settings::from_config(|key| (key == "dataset_id").then(|| "1".to_owned()))
        .expect("settings");
    let error = plan(&event(ctwa(), whatsapp(), purchase()), &bare, NOW_MS, &hash)
        .expect_err("cannot send");
    assert!(error.contains("whatsapp_business_account_id"), "{error}");
    assert!(
        Settings::from_config(|_| None)
            .expect_err("no dataset")
            .contains("dataset_id")
    );
}

#[test]
fn graph_answers_are_mapped() {
    assert_eq!(
        answer(
            200,
            br#"{"events_received":1,"messages":[],"fbtrace_id":"AbC123"}"#
        ),
        Verdict::Sent("AbC123".into())
    );
    let error = |code: i64, message: &str| {
        json!({"error": {"message": message, "type": "OAuthException", "code": code,
                         "fbtrace_id": "X"}})
        .to_string()
    };
    for code in [4, 17, 32, 613, 80004] {
        assert!(
            matches!(
                answer(400, error(code, "throttled").as_bytes()),
                Verdict::Retry { .. }
            ),
            "{code}"
        );
    }
    let Verdict::Disable(reason) =
        answer(401, error(190, "Error validating access token").as_bytes())
    else {
        panic!("190 disables");
    };
    assert!(
        reason.contains("190") && reason.contains("access token"),
        "{reason}"
    );
    let Verdict::Permanent(reason) = answer(400, error(100, "Invalid parameter").as_bytes()) else {
        panic!("100 is permanent");
    };
    assert!(reason.contains("Invalid parameter"), "{reason}");
    assert!(matches!(
        answer(503, b"upstream down"),
        Verdict::Retry { .. }
    ));
}
