//! Meta webhooks: the subscription handshake and the payload signature.
//!
//! When a webhook URL is registered, Meta calls
//! `GET ?hub.mode=subscribe&hub.verify_token=<token>&hub.challenge=<n>` and expects the
//! challenge back as the body. Every notification after that is a `POST` whose raw body
//! is signed in `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>`.
//! Both checks are computed by the host in constant time; the plugin only names secrets.

use omnigate_sdk::{
    HttpRequest, WebhookError, WebhookOutcome, ok_text, outcome, query_param, signature,
};

/// What a verified Meta webhook request is.
#[derive(Debug)]
pub enum Verified {
    /// A handshake that passed: hand this outcome (the echoed challenge, no events) back.
    Handshake(WebhookOutcome),
    /// A notification whose signature matches: parse its body.
    Notification,
}

/// Checks a Meta webhook request before anything in it is parsed.
///
/// - `GET`: the handshake. `hub.mode` must be `subscribe` and `hub.verify_token` must
///   equal the secret named `verify_token_secret`, else [`WebhookError::Forbidden`]
///   (HTTP 403, as Meta expects); the answer is `200` with `hub.challenge` as the body.
/// - `POST`: `X-Hub-Signature-256` must be the body's HMAC-SHA256 with the secret named
///   `app_secret`, else [`WebhookError::Unauthorized`] (HTTP 401).
/// - anything else: [`WebhookError::BadRequest`].
pub fn verify(
    request: &HttpRequest,
    verify_token_secret: &str,
    app_secret: &str,
) -> Result<Verified, WebhookError> {
    if request.method.eq_ignore_ascii_case("GET") {
        return handshake(request, verify_token_secret).map(Verified::Handshake);
    }
    if !request.method.eq_ignore_ascii_case("POST") {
        return Err(WebhookError::BadRequest(format!(
            "method {} not allowed, expected GET (handshake) or POST",
            request.method
        )));
    }
    signature::verify_hub_signature(request, app_secret)?;
    Ok(Verified::Notification)
}

/// Answers Meta's subscription handshake (see [`verify`]).
pub fn handshake(
    request: &HttpRequest,
    verify_token_secret: &str,
) -> Result<WebhookOutcome, WebhookError> {
    let forbidden = |why: &str| Err(WebhookError::Forbidden(why.into()));
    match query_param(request, "hub.mode").as_deref() {
        Some("subscribe") => {}
        Some(other) => return forbidden(&format!("hub.mode is {other:?}, expected \"subscribe\"")),
        None => return forbidden("missing hub.mode"),
    }
    let Some(token) = query_param(request, "hub.verify_token") else {
        return forbidden("missing hub.verify_token");
    };
    let Some(challenge) = query_param(request, "hub.challenge") else {
        return forbidden("missing hub.challenge");
    };
    // A wrong token is a refused handshake (403), not a bad signature (401).
    signature::verify_equals(&token, verify_token_secret).map_err(|e| match e {
        WebhookError::Unauthorized(why) => {
            WebhookError::Forbidden(format!("hub.verify_token refused: {why}"))
        }
        other => other,
    })?;
    Ok(outcome(ok_text(&challenge), Vec::new()))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use omnigate_sdk::testing::{Harness, request};

    fn harness() -> Harness {
        Harness::new()
            .secret("verify_token", "meatyhamhock")
            .secret("app_secret", "It's a Secret to Everybody")
    }

    #[test]
    fn handshake_echoes_the_challenge() {
        let req = request(
            "GET",
            "/webhooks/wa",
            "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock",
            &[],
            b"",
        );
        let Ok(Verified::Handshake(o)) =
            harness().run(|| verify(&req, "verify_token", "app_secret"))
        else {
            panic!("handshake refused");
        };
        assert_eq!(o.response.status, 200);
        assert_eq!(o.response.body, b"1158201444");
        assert!(o.events.is_empty());
    }

    #[test]
    fn handshake_refusals_are_forbidden() {
        for query in [
            "hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong",
            "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=meatyhamhock",
            "hub.challenge=1&hub.verify_token=meatyhamhock",
            "hub.mode=subscribe&hub.verify_token=meatyhamhock",
            "",
        ] {
            let req = request("GET", "/", query, &[], b"");
            let result = harness().run(|| verify(&req, "verify_token", "app_secret"));
            assert!(
                matches!(result, Err(WebhookError::Forbidden(_))),
                "{query}: {result:?}"
            );
        }
    }

    #[test]
    fn posts_need_the_signature() {
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let good = request(
            "POST",
            "/",
            "",
            &[("X-Hub-Signature-256", sig)],
            b"Hello, World!",
        );
        assert!(matches!(
            harness().run(|| verify(&good, "verify_token", "app_secret")),
            Ok(Verified::Notification)
        ));
        let bad = request("POST", "/", "", &[("X-Hub-Signature-256", sig)], b"Hello!");
        assert_eq!(
            harness()
                .run(|| verify(&bad, "verify_token", "app_secret"))
                .err(),
            Some(WebhookError::Unauthorized(
                "signature does not match".into()
            ))
        );
        let put = request("PUT", "/", "", &[], b"");
        assert!(matches!(
            harness().run(|| verify(&put, "verify_token", "app_secret")),
            Err(WebhookError::BadRequest(_))
        ));
    }
}
