//! `omnigate channel setup twilio|telegram` against fake provider APIs: the calls the
//! providers document, with the credentials where they belong.

use std::process::Command;

use omnigate_tests::{FakeApi, json_answer, omnigate_bin};
use serde_json::json;

const ACCOUNT: &str = "AC9f2c1d0b7a6e5f4c3b2a1908f7e6d5c4";
const AUTH_TOKEN: &str = "9b3c5d7e1f2a4b6c8d0e1f3a5b7c9d1e";
const PN: &str = "PN2a0747eba6abf96b7e3c3ff0b4530f6e";

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(omnigate_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn twilio_setup_points_the_number_at_the_webhook() {
    let api = FakeApi::start(|request| {
        if request.method == "GET" {
            json_answer(
                200,
                json!({"incoming_phone_numbers": [{"sid": PN, "phone_number": "+15017250604",
                        "sms_url": "https://old.example/sms", "sms_method": "POST"}],
                       "page": 0, "page_size": 50}),
            )
        } else {
            json_answer(
                200,
                json!({"sid": PN, "phone_number": "+15017250604",
                       "sms_url": "https://hooks.example.com/webhooks/tw", "sms_method": "POST"}),
            )
        }
    })
    .await
    .expect("fake twilio");
    let url = api.url.clone();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(
            &[
                "channel",
                "setup",
                "twilio",
                "--url",
                "https://hooks.example.com/webhooks/tw",
                "--number",
                "+15017250604",
                "--account-sid",
                ACCOUNT,
                "--api-base",
                &url,
            ],
            &[("TWILIO_AUTH_TOKEN", AUTH_TOKEN)],
        )
    })
    .await
    .expect("join");
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("now posts incoming messages to https://hooks.example.com/webhooks/tw"),
        "{stdout}"
    );
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].uri,
        format!(
            "/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json?PhoneNumber=%2B15017250604"
        )
    );
    assert_eq!(
        requests[1].uri,
        format!("/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{PN}.json")
    );
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{AUTH_TOKEN}"))
    );
    assert_eq!(requests[1].header("authorization"), Some(basic.as_str()));
    assert_eq!(
        omnigate_sdk::form(&requests[1].body),
        vec![
            (
                "SmsUrl".to_owned(),
                "https://hooks.example.com/webhooks/tw".to_owned()
            ),
            ("SmsMethod".to_owned(), "POST".to_owned()),
        ]
    );
}

#[tokio::test]
async fn twilio_setup_names_a_missing_number() {
    let api = FakeApi::start(|_| json_answer(200, json!({"incoming_phone_numbers": []})))
        .await
        .expect("fake twilio");
    let url = api.url.clone();
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || {
        run(
            &[
                "channel",
                "setup",
                "twilio",
                "--url",
                "https://h.example/webhooks/tw",
                "--number",
                "+15550000000",
                "--account-sid",
                ACCOUNT,
                "--api-base",
                &url,
            ],
            &[("TWILIO_AUTH_TOKEN", AUTH_TOKEN)],
        )
    })
    .await
    .expect("join");
    assert!(!ok);
    assert!(
        stderr.contains("the Twilio account has no incoming phone number +15550000000"),
        "{stderr}"
    );
}

#[tokio::test]
async fn telegram_setup_sets_the_webhook_with_the_secret_token() {
    let api = FakeApi::start(|_| {
        json_answer(
            200,
            json!({"ok": true, "result": true, "description": "Webhook was set"}),
        )
    })
    .await
    .expect("fake bot api");
    let url = api.url.clone();
    let token = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(
            &[
                "channel",
                "setup",
                "telegram",
                "--url",
                "https://hooks.example.com/webhooks/tg",
                "--api-base",
                &url,
            ],
            &[
                ("TELEGRAM_BOT_TOKEN", token),
                ("TELEGRAM_SECRET_TOKEN", "s3cr3t-T0ken_for-webhooks"),
            ],
        )
    })
    .await
    .expect("join");
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("Webhook was set"), "{stdout}");
    let requests = api.requests();
    assert_eq!(requests[0].uri, format!("/bot{token}/setWebhook"));
    let form = omnigate_sdk::form(&requests[0].body);
    assert!(form.contains(&(
        "secret_token".to_owned(),
        "s3cr3t-T0ken_for-webhooks".to_owned()
    )));
    assert!(form.contains(&(
        "url".to_owned(),
        "https://hooks.example.com/webhooks/tg".to_owned()
    )));
    assert!(
        form.iter()
            .any(|(name, value)| name == "allowed_updates" && value.contains("message_reaction"))
    );
}
