//! Webhook signature checks for common providers.
//!
//! Each helper reads what the provider sends, builds the signed message and asks the host
//! to check it with [`host::verify`]: the secret is named, never held by the plugin.
//! Failures are [`WebhookError::Unauthorized`] with a reason that says what was wrong
//! ("missing webhook-signature header", "timestamp 912 s old, tolerance 300 s",
//! "signature does not match"); the host returns it to the caller as HTTP 401.

use crate::http::header;
use crate::{Header, HttpRequest, SecretError, SignatureScheme, WebhookError, host};

/// Checks Meta's `X-Hub-Signature-256: sha256=<hex>` (WhatsApp, Messenger, Instagram;
/// GitHub uses the same) over the raw body with the secret named `secret_name`.
pub fn verify_hub_signature(request: &HttpRequest, secret_name: &str) -> Result<(), WebhookError> {
    let signature = required_header(request, "x-hub-signature-256")?;
    check(
        host::verify(
            SignatureScheme::HmacSha256Prefixed,
            secret_name,
            &request.body,
            signature,
        ),
        secret_name,
    )
}

/// Checks a [Standard Webhooks](https://www.standardwebhooks.com/) request: headers
/// `webhook-id`, `webhook-timestamp` (Unix seconds, at most `tolerance_secs` away from
/// [`host::now`]) and `webhook-signature` (`v1,<base64>` entries) over `id.timestamp.body`,
/// with the `whsec_` secret named `secret_name`.
pub fn verify_standard_webhooks(
    request: &HttpRequest,
    secret_name: &str,
    tolerance_secs: u64,
) -> Result<(), WebhookError> {
    let id = required_header(request, "webhook-id")?;
    let timestamp = required_header(request, "webhook-timestamp")?;
    let signature = required_header(request, "webhook-signature")?;
    let ts = parse_unix_secs("webhook-timestamp", timestamp)?;
    check_freshness(ts, tolerance_secs)?;
    let message = standard_webhooks_content(id, ts, &request.body);
    check(
        host::verify(
            SignatureScheme::StandardWebhooks,
            secret_name,
            &message,
            signature,
        ),
        secret_name,
    )
}

/// The three Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`) for sending `body`, signed by the host with the `whsec_` secret
/// named `secret_name`. `ts_secs` is Unix seconds, usually `host::now() / 1000`.
pub fn sign_standard_webhooks(
    secret_name: &str,
    id: &str,
    ts_secs: i64,
    body: &[u8],
) -> Result<Vec<Header>, SecretError> {
    let message = standard_webhooks_content(id, ts_secs, body);
    let signature = host::sign(SignatureScheme::StandardWebhooks, secret_name, &message)?;
    Ok(vec![
        Header {
            name: "webhook-id".into(),
            value: id.into(),
        },
        Header {
            name: "webhook-timestamp".into(),
            value: ts_secs.to_string(),
        },
        Header {
            name: "webhook-signature".into(),
            value: signature,
        },
    ])
}

/// Checks Slack's `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`
/// with the signing secret named `secret_name`; the timestamp must be at most
/// `tolerance_secs` away from [`host::now`] (Slack recommends 300).
pub fn verify_slack(
    request: &HttpRequest,
    secret_name: &str,
    tolerance_secs: u64,
) -> Result<(), WebhookError> {
    let timestamp = required_header(request, "x-slack-request-timestamp")?;
    let signature = required_header(request, "x-slack-signature")?;
    check_freshness(
        parse_unix_secs("x-slack-request-timestamp", timestamp)?,
        tolerance_secs,
    )?;
    let mut message = format!("v0:{timestamp}:").into_bytes();
    message.extend_from_slice(&request.body);
    check(
        host::verify(SignatureScheme::SlackV0, secret_name, &message, signature),
        secret_name,
    )
}

/// Checks Twilio's `X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the auth token named
/// `secret_name`, over the full public `url` Twilio called followed by every POST
/// parameter sorted by name, each name immediately followed by its value.
///
/// `url` must be exactly the URL configured at Twilio (scheme, host, port, path and
/// query), which a plugin usually takes from its config since proxies rewrite it.
pub fn verify_twilio(
    url: &str,
    form_params: &[(String, String)],
    signature: &str,
    secret_name: &str,
) -> Result<(), WebhookError> {
    let mut params: Vec<&(String, String)> = form_params.iter().collect();
    params.sort();
    let mut message = url.to_owned();
    for (name, value) in params {
        message.push_str(name);
        message.push_str(value);
    }
    check(
        host::verify(
            SignatureScheme::HmacSha1Base64,
            secret_name,
            message.as_bytes(),
            signature,
        ),
        secret_name,
    )
}

/// Checks HTTP Basic authentication on a webhook (Postmark, SendGrid Inbound Parse: the
/// credentials are part of the URL configured at the provider): the password must equal
/// the secret named `secret_name` (compared by the host in constant time) and, when
/// `user` is given, the user name must equal it.
pub fn verify_basic_auth(
    request: &HttpRequest,
    user: Option<&str>,
    secret_name: &str,
) -> Result<(), WebhookError> {
    use base64::Engine as _;
    let value = required_header(request, "authorization")?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(|| WebhookError::Unauthorized("authorization is not Basic".into()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| WebhookError::Unauthorized("Basic credentials are not base64".into()))?;
    let decoded = String::from_utf8_lossy(&decoded);
    let (presented_user, password) = decoded
        .split_once(':')
        .ok_or_else(|| WebhookError::Unauthorized("Basic credentials have no `:`".into()))?;
    if user.is_some_and(|expected| expected != presented_user) {
        return Err(WebhookError::Unauthorized("wrong Basic user name".into()));
    }
    verify_equals(password, secret_name)
}

/// Checks that `presented` equals the secret named `secret_name`, in constant time
/// (Telegram's `X-Telegram-Bot-Api-Secret-Token`). For Meta's `hub.verify_token`
/// handshake, map the error to [`WebhookError::Forbidden`] as the contract asks.
pub fn verify_equals(presented: &str, secret_name: &str) -> Result<(), WebhookError> {
    check(
        host::verify(SignatureScheme::Equals, secret_name, &[], presented),
        secret_name,
    )
}

fn standard_webhooks_content(id: &str, ts_secs: i64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{id}.{ts_secs}.").into_bytes();
    message.extend_from_slice(body);
    message
}

fn required_header<'a>(request: &'a HttpRequest, name: &str) -> Result<&'a str, WebhookError> {
    header(request, name)
        .ok_or_else(|| WebhookError::Unauthorized(format!("missing {name} header")))
}

fn parse_unix_secs(name: &str, value: &str) -> Result<i64, WebhookError> {
    value
        .trim()
        .parse()
        .map_err(|_| WebhookError::Unauthorized(format!("invalid {name} header {value:?}")))
}

/// Refuses a timestamp (Unix seconds) further than `tolerance_secs` from the host's clock.
fn check_freshness(ts_secs: i64, tolerance_secs: u64) -> Result<(), WebhookError> {
    let now_secs = host::now().div_euclid(1000);
    let age = i128::from(now_secs) - i128::from(ts_secs);
    let tolerance = i128::from(tolerance_secs);
    if age > tolerance {
        Err(WebhookError::Unauthorized(format!(
            "timestamp {age} s old, tolerance {tolerance_secs} s"
        )))
    } else if -age > tolerance {
        Err(WebhookError::Unauthorized(format!(
            "timestamp {} s in the future, tolerance {tolerance_secs} s",
            -age
        )))
    } else {
        Ok(())
    }
}

fn check(result: Result<bool, SecretError>, secret_name: &str) -> Result<(), WebhookError> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(WebhookError::Unauthorized(
            "signature does not match".into(),
        )),
        Err(e) => {
            // An operator's mistake, not the caller's: say so in the log, refuse the call.
            let reason = match e {
                SecretError::Unknown(_) => format!("secret `{secret_name}` is not configured"),
                SecretError::Malformed(why) => format!("secret `{secret_name}` is unusable: {why}"),
            };
            host::error(&reason);
            Err(WebhookError::Unauthorized(reason))
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::testing::{Harness, request, standard_webhooks_request};

    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW_SECS: i64 = 1_795_514_400;

    fn harness() -> Harness {
        Harness::new().secret("s", WHSEC).now(NOW_SECS * 1000)
    }

    fn unauthorized(result: Result<(), WebhookError>) -> String {
        match result {
            Err(WebhookError::Unauthorized(reason)) => reason,
            other => panic!("expected unauthorized, got {other:?}"),
        }
    }

    #[test]
    fn standard_webhooks_accepts_fresh_signed_request() {
        let req = standard_webhooks_request(WHSEC, br#"{"a":1}"#, NOW_SECS - 299);
        assert_eq!(
            harness().run(|| verify_standard_webhooks(&req, "s", 300)),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_refusals_say_why() {
        let h = harness();
        let stale = standard_webhooks_request(WHSEC, b"{}", NOW_SECS - 912);
        assert_eq!(
            unauthorized(h.run(|| verify_standard_webhooks(&stale, "s", 300))),
            "timestamp 912 s old, tolerance 300 s"
        );
        let future = standard_webhooks_request(WHSEC, b"{}", NOW_SECS + 400);
        assert_eq!(
            unauthorized(h.run(|| verify_standard_webhooks(&future, "s", 300))),
            "timestamp 400 s in the future, tolerance 300 s"
        );
        let mut tampered = standard_webhooks_request(WHSEC, b"{}", NOW_SECS);
        tampered.body = b"{ }".to_vec();
        assert_eq!(
            unauthorized(h.run(|| verify_standard_webhooks(&tampered, "s", 300))),
            "signature does not match"
        );
        let mut unsigned = standard_webhooks_request(WHSEC, b"{}", NOW_SECS);
        unsigned.headers.retain(|h| h.name != "webhook-signature");
        assert_eq!(
            unauthorized(h.run(|| verify_standard_webhooks(&unsigned, "s", 300))),
            "missing webhook-signature header"
        );
        let bad_ts = request(
            "POST",
            "/",
            "",
            &[
                ("webhook-id", "m"),
                ("webhook-timestamp", "soon"),
                ("webhook-signature", "v1,AAAA"),
            ],
            b"{}",
        );
        assert_eq!(
            unauthorized(h.run(|| verify_standard_webhooks(&bad_ts, "s", 300))),
            "invalid webhook-timestamp header \"soon\""
        );
    }

    #[test]
    fn unknown_secret_is_unauthorized_and_logged() {
        let h = harness();
        let req = standard_webhooks_request(WHSEC, b"{}", NOW_SECS);
        let reason = unauthorized(h.run(|| verify_standard_webhooks(&req, "nope", 300)));
        assert_eq!(reason, "secret `nope` is not configured");
        assert_eq!(h.logs(), vec![(crate::LogLevel::Error, reason)]);
    }

    #[test]
    fn sign_standard_webhooks_round_trips() {
        let h = harness();
        let headers = h
            .run(|| sign_standard_webhooks("s", "msg_1", NOW_SECS, b"hi"))
            .expect("sign");
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        let req = request("POST", "/", "", &pairs, b"hi");
        assert_eq!(h.run(|| verify_standard_webhooks(&req, "s", 300)), Ok(()));
    }

    #[test]
    fn hub_signature() {
        let h = Harness::new().secret("app_secret", "It's a Secret to Everybody");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let good = request(
            "POST",
            "/",
            "",
            &[("X-Hub-Signature-256", sig)],
            b"Hello, World!",
        );
        assert_eq!(h.run(|| verify_hub_signature(&good, "app_secret")), Ok(()));
        let bad = request(
            "POST",
            "/",
            "",
            &[("X-Hub-Signature-256", sig)],
            b"Hello, World?",
        );
        assert_eq!(
            unauthorized(h.run(|| verify_hub_signature(&bad, "app_secret"))),
            "signature does not match"
        );
        let none = request("POST", "/", "", &[], b"Hello, World!");
        assert_eq!(
            unauthorized(h.run(|| verify_hub_signature(&none, "app_secret"))),
            "missing x-hub-signature-256 header"
        );
    }

    #[test]
    fn slack_documented_example() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let req = request(
            "POST",
            "/",
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
        let at = |now_ms| {
            Harness::new()
                .secret("signing_secret", "8f742231b10e8888abcd99yyyzzz85a5")
                .now(now_ms)
        };
        assert_eq!(
            at(1_531_420_618_000 + 60_000).run(|| verify_slack(&req, "signing_secret", 300)),
            Ok(())
        );
        assert_eq!(
            unauthorized(at(1_531_420_618_000 + 600_000).run(|| verify_slack(
                &req,
                "signing_secret",
                300
            ))),
            "timestamp 600 s old, tolerance 300 s"
        );
    }

    #[test]
    fn twilio_documented_example() {
        let params: Vec<(String, String)> = [
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("From", "+12349013030"),
            ("Digits", "1234"),
            ("Caller", "+12349013030"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let h = Harness::new().secret("auth_token", "12345");
        assert_eq!(
            h.run(|| verify_twilio(url, &params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", "auth_token")),
            Ok(())
        );
        assert_eq!(
            unauthorized(h.run(|| verify_twilio(
                url,
                &params[1..],
                "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
                "auth_token"
            ))),
            "signature does not match"
        );
    }

    #[test]
    fn basic_auth() {
        let h = Harness::new().secret("webhook_password", "open sesame");
        // RFC 7617's example credentials: Aladdin / open sesame.
        let with = |value: &str| request("POST", "/", "", &[("Authorization", value)], b"");
        let good = with("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(
            h.run(|| verify_basic_auth(&good, Some("Aladdin"), "webhook_password")),
            Ok(())
        );
        assert_eq!(
            h.run(|| verify_basic_auth(&good, None, "webhook_password")),
            Ok(())
        );
        assert_eq!(
            unauthorized(h.run(|| verify_basic_auth(&good, Some("Ali"), "webhook_password"))),
            "wrong Basic user name"
        );
        // Aladdin:open sesamE
        let wrong = with("Basic QWxhZGRpbjpvcGVuIHNlc2FtRQ==");
        assert_eq!(
            unauthorized(h.run(|| verify_basic_auth(&wrong, None, "webhook_password"))),
            "signature does not match"
        );
        let bearer = with("Bearer x");
        assert_eq!(
            unauthorized(h.run(|| verify_basic_auth(&bearer, None, "webhook_password"))),
            "authorization is not Basic"
        );
        let none = request("POST", "/", "", &[], b"");
        assert_eq!(
            unauthorized(h.run(|| verify_basic_auth(&none, None, "webhook_password"))),
            "missing authorization header"
        );
    }

    #[test]
    fn equals() {
        let h = Harness::new().secret("token", "t0k3n");
        assert_eq!(h.run(|| verify_equals("t0k3n", "token")), Ok(()));
        assert_eq!(
            unauthorized(h.run(|| verify_equals("t0k3", "token"))),
            "signature does not match"
        );
    }
}
