//! Reading webhook requests and building responses.

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Header, HttpRequest, HttpResponse, InboundEvent, WebhookError, WebhookOutcome};

/// The first header called `name` (compared case-insensitively), if any.
pub fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    find_header(&request.headers, name)
}

pub(crate) fn find_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// The request's query string as percent-decoded `(name, value)` pairs, in order.
pub fn query(request: &HttpRequest) -> Vec<(String, String)> {
    owned(query_pairs(request))
}

/// The request's query string as percent-decoded `(name, value)` pairs, in order,
/// borrowed from the request wherever nothing had to be decoded: no `String` per pair.
pub fn query_pairs(request: &HttpRequest) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    form_urlencoded::parse(request.query.as_bytes())
}

/// The first query parameter called `name`, percent-decoded.
pub fn query_param(request: &HttpRequest, name: &str) -> Option<String> {
    query_pairs(request)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A `application/x-www-form-urlencoded` body as decoded `(name, value)` pairs, in order.
/// Invalid UTF-8 is replaced by U+FFFD.
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    owned(form_pairs(body))
}

/// [`form`] without a `String` per pair: borrowed from `body` wherever nothing had to
/// be decoded.
pub fn form_pairs(body: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    // The decoder is lossy: it takes any input.
    form_urlencoded::parse(body)
}

fn owned<'a>(pairs: impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)>) -> Vec<(String, String)> {
    pairs
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// Parses a JSON body into `T`; on failure a [`WebhookError::BadRequest`] carrying serde's
/// reason, e.g. ``invalid JSON body: missing field `id` at line 1 column 20``.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(body)
        .map_err(|e| WebhookError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Refuses a request whose method is not `method` with a [`WebhookError::BadRequest`].
pub fn require_method(request: &HttpRequest, method: &str) -> Result<(), WebhookError> {
    if request.method.eq_ignore_ascii_case(method) {
        Ok(())
    } else {
        Err(WebhookError::BadRequest(format!(
            "method {} not allowed, expected {method}",
            request.method
        )))
    }
}

/// `200 OK` with an empty body.
pub fn ok() -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// `200 OK` with a `text/plain` body (e.g. an echoed handshake challenge).
pub fn ok_text(text: &str) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![content_type("text/plain; charset=utf-8")],
        body: text.as_bytes().to_vec(),
    }
}

/// `200 OK` with `value` as an `application/json` body.
///
/// If `value` cannot be serialized (a map with non-string keys), the response is a
/// `500` and the reason is logged: that is a bug in the plugin, not in the request.
pub fn ok_json<T: Serialize + ?Sized>(value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => HttpResponse {
            status: 200,
            headers: vec![content_type("application/json")],
            body,
        },
        Err(e) => {
            crate::host::error(&format!("cannot serialize response body: {e}"));
            HttpResponse {
                status: 500,
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
    }
}

/// `200 OK` with `json`, already JSON text, as an `application/json` body: a fixed
/// acknowledgement such as `{"ok":true}` without building and serializing a value on
/// every call (what [`ok_json`] with `serde_json::json!` does).
pub fn ok_json_text(json: &str) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![content_type("application/json")],
        body: json.as_bytes().to_vec(),
    }
}

/// A webhook's outcome: the response for the provider and the events found.
pub fn outcome(response: HttpResponse, events: Vec<InboundEvent>) -> WebhookOutcome {
    WebhookOutcome { response, events }
}

pub(crate) fn content_type(value: &str) -> Header {
    Header {
        name: "content-type".into(),
        value: value.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            path: "/webhooks/x".into(),
            query: query.into(),
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn headers_compare_case_insensitively_first_wins() {
        let r = req(
            "",
            &[("X-Hub-Signature-256", "a"), ("x-hub-signature-256", "b")],
        );
        assert_eq!(header(&r, "x-HUB-signature-256"), Some("a"));
        assert_eq!(header(&r, "missing"), None);
    }

    #[test]
    fn query_is_percent_decoded() {
        let r = req(
            "hub.mode=subscribe&q=a%20b+c&e=%F0%9F%91%8B&empty=&hub.mode=x",
            &[],
        );
        assert_eq!(query_param(&r, "q").as_deref(), Some("a b c"));
        assert_eq!(query_param(&r, "e").as_deref(), Some("👋"));
        assert_eq!(query_param(&r, "empty").as_deref(), Some(""));
        assert_eq!(query_param(&r, "hub.mode").as_deref(), Some("subscribe"));
        assert_eq!(query_param(&r, "nope"), None);
        assert_eq!(query(&r).len(), 5);
        assert!(query(&req("", &[])).is_empty());
        // Borrowed where nothing was decoded, decoded where something was.
        let pairs: Vec<_> = query_pairs(&r).collect();
        assert!(matches!(
            pairs[0],
            (Cow::Borrowed("hub.mode"), Cow::Borrowed("subscribe"))
        ));
        assert!(matches!(&pairs[1].1, Cow::Owned(value) if value == "a b c"));
    }

    #[test]
    fn form_decodes_pairs_and_tolerates_garbage() {
        let pairs = form(b"From=%2B34600111222&Body=Hola+mundo");
        assert_eq!(
            pairs,
            vec![
                ("From".into(), "+34600111222".into()),
                ("Body".into(), "Hola mundo".into())
            ]
        );
        assert_eq!(form(b"\xff=%zz").len(), 1);
    }

    #[test]
    fn json_errors_name_the_problem() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[allow(dead_code)]
            id: String,
        }
        let err = json::<Body>(br#"{"text": "hi"}"#).expect_err("must fail");
        let WebhookError::BadRequest(reason) = err else {
            panic!("{err:?}")
        };
        assert!(
            reason.starts_with("invalid JSON body: missing field `id`"),
            "{reason}"
        );
    }

    #[test]
    fn method_check() {
        let r = req("", &[]);
        assert_eq!(require_method(&r, "POST"), Ok(()));
        assert_eq!(
            require_method(&r, "GET"),
            Err(WebhookError::BadRequest(
                "method POST not allowed, expected GET".into()
            ))
        );
    }

    #[test]
    fn responses() {
        assert_eq!(ok().status, 200);
        let text = ok_text("challenge");
        assert_eq!(text.body, b"challenge");
        let j = ok_json(&serde_json::json!({"ok": true}));
        assert_eq!(j.body, br#"{"ok":true}"#);
        assert_eq!(j.headers[0].value, "application/json");
        let text = ok_json_text(r#"{"ok":true}"#);
        assert_eq!(text.body, j.body);
        assert_eq!(text.headers, j.headers);
        let o = outcome(ok(), Vec::new());
        assert!(o.events.is_empty());
    }
}

/// Property tests: the parsers plugins run on provider input take any bytes without
/// panicking, and decode what a form encoder wrote.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::send_error_for_status;

    proptest! {
        #[test]
        fn parsers_take_any_bytes(bytes in vec(any::<u8>(), 0..512), status in 100u16..600) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let request = HttpRequest {
                method: text.clone(),
                path: text.clone(),
                query: text.clone(),
                headers: vec![Header { name: text.clone(), value: text.clone() }],
                body: bytes.clone(),
            };
            let _ = form(&bytes);
            let _ = query(&request);
            let _ = query_param(&request, &text);
            let _ = header(&request, &text);
            let _ = json::<serde_json::Value>(&bytes);
            let _ = require_method(&request, "POST");
            let retry_after = vec![Header { name: "retry-after".into(), value: text }];
            let _ = send_error_for_status(status, &retry_after, &bytes);
        }

        #[test]
        fn form_decodes_what_an_encoder_wrote(
            pairs in vec((".{0,12}", ".{0,12}"), 0..6)
        ) {
            let encoded = serde_urlencoded::to_string(&pairs).expect("pairs encode");
            prop_assert_eq!(form(encoded.as_bytes()), pairs);
        }

        #[test]
        fn borrowed_pairs_decode_as_the_serde_decoder_did(bytes in vec(any::<u8>(), 0..256)) {
            let before: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
            prop_assert_eq!(form(&bytes), before);
        }
    }
}
