//! Outgoing HTTP through the host, and what a provider's answer means for a reply.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::http::{content_type, find_header};
use crate::{FetchError, FetchRequest, FetchResponse, Header, ProviderError, SendError, host};

/// At most this many bytes of a provider's error body go into a [`SendError`].
const MAX_DETAIL: usize = 500;

/// `{{secret:NAME}}`: a placeholder the host replaces with the channel secret `name`
/// after the allow-list check. Use it in a URL, a header value or a body.
pub fn secret_placeholder(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// `{{basic:USER:NAME}}`: a placeholder the host replaces with the credentials of HTTP
/// Basic authentication, `base64(USER:<secret NAME>)`, under the same rules as
/// [`secret_placeholder`]. `user` must not contain `:` (RFC 7617).
pub fn basic_placeholder(user: &str, secret_name: &str) -> String {
    format!("{{{{basic:{user}:{secret_name}}}}}")
}

/// A request for [`host::fetch`], built step by step:
///
/// ```ignore
/// let response = Fetch::post(&url)
///     .bearer_secret("access_token")
///     .json(&payload)?
///     .timeout_ms(10_000)
///     .send()?               // FetchError converts into SendError
///     .error_for_status()?;  // non-2xx becomes the matching SendError
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fetch {
    request: FetchRequest,
}

impl Fetch {
    /// A request with any method.
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Fetch {
            request: FetchRequest {
                method: method.to_ascii_uppercase(),
                url: url.into(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout_ms: None,
            },
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Adds a header (values may hold `{{secret:NAME}}` placeholders).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.request.headers.push(Header {
            name: name.into(),
            value: value.into(),
        });
        self
    }

    /// Adds `authorization: Bearer {{secret:NAME}}`.
    pub fn bearer_secret(self, secret_name: &str) -> Self {
        let value = format!("Bearer {}", secret_placeholder(secret_name));
        self.header("authorization", &value)
    }

    /// Adds `authorization: Basic {{basic:USER:NAME}}`: HTTP Basic authentication with
    /// `user` (e.g. Twilio's Account SID, Mailgun's `api`) and the channel secret
    /// `secret_name` as the password, encoded by the host.
    pub fn basic_auth_secret(self, user: &str, secret_name: &str) -> Self {
        let value = format!("Basic {}", basic_placeholder(user, secret_name));
        self.header("authorization", &value)
    }

    /// Sets the raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.request.body = body.into();
        self
    }

    /// Sets `value` as a JSON body with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, SendError> {
        self.request.body = serde_json::to_vec(value)
            .map_err(|e| SendError::Invalid(format!("cannot serialize request body: {e}")))?;
        self.request.headers.push(content_type("application/json"));
        Ok(self)
    }

    /// Sets `value` as an `application/x-www-form-urlencoded` body.
    pub fn form<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, SendError> {
        let body = serde_urlencoded::to_string(value)
            .map_err(|e| SendError::Invalid(format!("cannot encode form body: {e}")))?;
        self.request.body = body.into_bytes();
        self.request
            .headers
            .push(content_type("application/x-www-form-urlencoded"));
        Ok(self)
    }

    /// Sets the timeout; the host caps it at its own limit.
    pub fn timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.request.timeout_ms = Some(timeout_ms);
        self
    }

    /// The request as built so far.
    pub fn request(&self) -> &FetchRequest {
        &self.request
    }

    /// The finished request.
    pub fn into_request(self) -> FetchRequest {
        self.request
    }

    /// Sends it with [`host::fetch`].
    pub fn send(self) -> Result<FetchResponse, FetchError> {
        host::fetch(&self.request)
    }
}

impl FetchResponse {
    /// The first response header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced by U+FFFD).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// `Ok(self)` for a 2xx status, otherwise the [`SendError`] it means
    /// (see [`send_error_for_status`]).
    pub fn error_for_status(self) -> Result<Self, SendError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(send_error_for_status(
                self.status,
                &self.headers,
                &self.body,
            ))
        }
    }
}

/// What a provider's non-2xx answer means for a reply:
/// - 429 → [`SendError::RateLimited`] with `Retry-After` (seconds or an HTTP date),
/// - 401, 403 → [`SendError::Unauthorized`],
/// - 408 and 5xx → [`SendError::Transient`],
/// - any other status → [`SendError::Rejected`] with the status as code and the start of
///   the body as detail.
pub fn send_error_for_status(status: u16, headers: &[Header], body: &[u8]) -> SendError {
    let detail = detail(body);
    let described = match &detail {
        Some(d) => format!("HTTP {status}: {d}"),
        None => format!("HTTP {status}"),
    };
    match status {
        429 => {
            SendError::RateLimited(find_header(headers, "retry-after").and_then(retry_after_secs))
        }
        401 | 403 => SendError::Unauthorized(described),
        408 | 500..=599 => SendError::Transient(described),
        _ => SendError::Rejected(ProviderError {
            code: status.to_string(),
            title: format!("HTTP {status}"),
            detail,
        }),
    }
}

/// What a failed fetch means for a reply: timeouts, connection failures and oversized
/// answers are [`SendError::Transient`]; a denied or invalid request is
/// [`SendError::Invalid`] (retrying cannot help: the configuration must change).
pub fn send_error_for_fetch(error: FetchError) -> SendError {
    match error {
        FetchError::Timeout => SendError::Transient("provider did not answer in time".into()),
        FetchError::Connection(why) => SendError::Transient(format!("connection failed: {why}")),
        FetchError::TooLarge(size) => {
            SendError::Transient(format!("provider response too large ({size} bytes)"))
        }
        FetchError::Denied(why) => SendError::Invalid(format!("fetch denied: {why}")),
        FetchError::InvalidRequest(why) => SendError::Invalid(format!("invalid request: {why}")),
    }
}

impl From<FetchError> for SendError {
    fn from(error: FetchError) -> Self {
        send_error_for_fetch(error)
    }
}

/// `Retry-After` as seconds from now: delta-seconds, or an HTTP date.
fn retry_after_secs(value: &str) -> Option<u32> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u32>() {
        return Some(secs);
    }
    let at = crate::time::parse_http_date(value)?.div_euclid(1000);
    let delta = at - host::now().div_euclid(1000);
    Some(u32::try_from(delta.max(0)).unwrap_or(u32::MAX))
}

fn detail(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut cut = text.len().min(MAX_DETAIL);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(text[..cut].to_owned())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::testing::Harness;

    fn h(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn builder_sets_everything() {
        let fetch = Fetch::post("https://api.example/x")
            .bearer_secret("token")
            .json(&serde_json::json!({"a": 1}))
            .expect("json")
            .timeout_ms(5000);
        let req = fetch.request();
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.headers[0],
            h("authorization", "Bearer {{secret:token}}")
        );
        assert_eq!(req.headers[1], h("content-type", "application/json"));
        assert_eq!(req.body, br#"{"a":1}"#);
        assert_eq!(req.timeout_ms, Some(5000));
        let basic = Fetch::get("https://x.example").basic_auth_secret("AC1", "auth_token");
        assert_eq!(
            basic.request().headers[0],
            h("authorization", "Basic {{basic:AC1:auth_token}}")
        );
        let form = Fetch::new("post", "https://x.example")
            .form(&[("a", "b c")])
            .expect("form");
        assert_eq!(form.request().body, b"a=b+c");
    }

    #[test]
    fn status_mapping() {
        assert_eq!(
            send_error_for_status(429, &[h("Retry-After", "30")], b""),
            SendError::RateLimited(Some(30))
        );
        assert_eq!(
            send_error_for_status(429, &[], b""),
            SendError::RateLimited(None)
        );
        assert_eq!(
            send_error_for_status(401, &[], b"bad token"),
            SendError::Unauthorized("HTTP 401: bad token".into())
        );
        assert!(matches!(
            send_error_for_status(403, &[], b""),
            SendError::Unauthorized(_)
        ));
        assert_eq!(
            send_error_for_status(503, &[], b""),
            SendError::Transient("HTTP 503".into())
        );
        assert_eq!(
            send_error_for_status(400, &[], b" {\"error\":\"no\"} "),
            SendError::Rejected(ProviderError {
                code: "400".into(),
                title: "HTTP 400".into(),
                detail: Some("{\"error\":\"no\"}".into())
            })
        );
        let long = "é".repeat(400);
        let SendError::Rejected(e) = send_error_for_status(422, &[], long.as_bytes()) else {
            panic!()
        };
        assert!(e.detail.is_some_and(|d| d.len() <= MAX_DETAIL));
    }

    #[test]
    fn retry_after_http_date() {
        // 2026-11-24T10:00:00Z plus 90 s.
        let headers = [h("retry-after", "Tue, 24 Nov 2026 10:01:30 GMT")];
        let mapped = Harness::new()
            .now(1_795_514_400_000)
            .run(|| send_error_for_status(429, &headers, b""));
        assert_eq!(mapped, SendError::RateLimited(Some(90)));
        let garbage = [h("retry-after", "soon")];
        assert_eq!(
            send_error_for_status(429, &garbage, b""),
            SendError::RateLimited(None)
        );
    }

    #[test]
    fn fetch_error_mapping() {
        assert!(matches!(
            send_error_for_fetch(FetchError::Timeout),
            SendError::Transient(_)
        ));
        assert!(matches!(
            send_error_for_fetch(FetchError::Connection("x".into())),
            SendError::Transient(_)
        ));
        assert!(matches!(
            send_error_for_fetch(FetchError::TooLarge(9)),
            SendError::Transient(_)
        ));
        assert!(matches!(
            send_error_for_fetch(FetchError::Denied("x".into())),
            SendError::Invalid(_)
        ));
        assert!(matches!(
            SendError::from(FetchError::InvalidRequest("x".into())),
            SendError::Invalid(_)
        ));
    }

    #[test]
    fn response_helpers() {
        let resp = FetchResponse {
            status: 201,
            headers: vec![h("X-Id", "7")],
            body: br#"{"id":"a"}"#.to_vec(),
        };
        assert!(resp.is_success());
        assert_eq!(resp.header("x-id"), Some("7"));
        assert_eq!(resp.json::<serde_json::Value>().expect("json")["id"], "a");
        assert_eq!(resp.text(), r#"{"id":"a"}"#);
        assert!(resp.error_for_status().is_ok());
        let failed = FetchResponse {
            status: 500,
            headers: vec![],
            body: vec![],
        };
        assert_eq!(
            failed.error_for_status(),
            Err(SendError::Transient("HTTP 500".into()))
        );
    }
}
