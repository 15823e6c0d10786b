//! Run plugin code natively under `cargo test`, against a fake host that behaves like
//! the real one. Not compiled for `wasm32`.
//!
//! ```
//! use omnigate_sdk::testing::{Harness, standard_webhooks_request};
//! use omnigate_sdk::{FetchResponse, host, signature};
//!
//! let harness = Harness::new()
//!     .config("api_base", "https://api.example")
//!     .secret("signing_secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
//!     .now(1_795_514_400_000)
//!     .allow_host("api.example")
//!     .on_fetch(|_req| Ok(FetchResponse { status: 200, headers: vec![], body: vec![] }));
//!
//! let request = standard_webhooks_request(
//!     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", b"{}", 1_795_514_400);
//! let checked = harness.run(|| {
//!     assert_eq!(host::config("signing_secret"), None); // secrets are never config
//!     signature::verify_standard_webhooks(&request, "signing_secret", 300)
//! });
//! assert_eq!(checked, Ok(()));
//! assert!(harness.sent().is_empty());
//! ```
//!
//! Like the host, the harness
//! - computes `verify`/`sign` with `omnigate-signature` using the secret's value;
//! - never returns a secret from `config`;
//! - on `http-fetch`, checks the URL's host against [`Harness::allow_host`] entries, then
//!   fills `{{secret:NAME}}` placeholders (and `{{basic:USER:NAME}}`, Basic credentials)
//!   in the URL, header values and body; a disallowed
//!   host or an unknown secret is [`FetchError::Denied`] and nothing is sent;
//! - gives the request as sent (placeholders filled) to [`Harness::on_fetch`], records it
//!   ([`Harness::sent`]), and replaces each secret value it filled in by [`REDACTED`] in
//!   the response;
//! - keeps log lines ([`Harness::logs`]) and echoes them to stderr.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use omnigate_signature::Scheme;

use crate::{
    FetchError, FetchRequest, FetchResponse, Header, HttpRequest, LogLevel, SecretError,
    SignatureScheme,
};

/// The harness's clock unless [`Harness::now`] sets it: 2026-11-24T10:00:00Z in ms.
pub const DEFAULT_NOW_MS: i64 = 1_795_514_400_000;

/// What replaces a secret's value in a fetch response.
pub const REDACTED: &str = "[REDACTED]";

type FetchHandler = Box<dyn FnMut(&FetchRequest) -> Result<FetchResponse, FetchError>>;

/// A fake host for native tests. Build it, then call plugin code inside [`Harness::run`].
pub struct Harness {
    inner: Rc<Inner>,
}

struct Inner {
    state: RefCell<State>,
    on_fetch: RefCell<Option<FetchHandler>>,
}

struct State {
    config: BTreeMap<String, String>,
    secrets: BTreeMap<String, String>,
    now_ms: i64,
    allowed_hosts: Vec<String>,
    sent: Vec<FetchRequest>,
    logs: Vec<(LogLevel, String)>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Inner>>> = const { RefCell::new(None) };
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A harness with no config, no secrets, no allowed hosts, the clock at
    /// [`DEFAULT_NOW_MS`] and no fetch handler (fetches fail with `Connection`).
    pub fn new() -> Self {
        Harness {
            inner: Rc::new(Inner {
                state: RefCell::new(State {
                    config: BTreeMap::new(),
                    secrets: BTreeMap::new(),
                    now_ms: DEFAULT_NOW_MS,
                    allowed_hosts: Vec::new(),
                    sent: Vec::new(),
                    logs: Vec::new(),
                }),
                on_fetch: RefCell::new(None),
            }),
        }
    }

    /// Sets a configuration value, readable with `host::config`.
    pub fn config(self, key: &str, value: &str) -> Self {
        self.inner
            .state
            .borrow_mut()
            .config
            .insert(key.into(), value.into());
        self
    }

    /// Sets a secret: usable by name in `verify`, `sign` and `{{secret:NAME}}`, never
    /// readable.
    pub fn secret(self, name: &str, value: &str) -> Self {
        self.inner
            .state
            .borrow_mut()
            .secrets
            .insert(name.into(), value.into());
        self
    }

    /// Sets the clock (`host::now`), in milliseconds since the Unix epoch.
    pub fn now(self, millis: i64) -> Self {
        self.set_now(millis);
        self
    }

    /// Moves the clock between runs.
    pub fn set_now(&self, millis: i64) {
        self.inner.state.borrow_mut().now_ms = millis;
    }

    /// Allows fetches to `host` (any port), or to `host:port` only when a port is given.
    pub fn allow_host(self, host: &str) -> Self {
        self.inner
            .state
            .borrow_mut()
            .allowed_hosts
            .push(host.to_ascii_lowercase());
        self
    }

    /// Answers allowed fetches; it sees the request as sent, placeholders filled.
    pub fn on_fetch(
        self,
        handler: impl FnMut(&FetchRequest) -> Result<FetchResponse, FetchError> + 'static,
    ) -> Self {
        *self.inner.on_fetch.borrow_mut() = Some(Box::new(handler));
        self
    }

    /// Runs `f` with this harness as the host of the current thread.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Rc<Inner>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|current| *current.borrow_mut() = previous);
            }
        }
        let previous = CURRENT.with(|current| current.borrow_mut().replace(Rc::clone(&self.inner)));
        let _restore = Restore(previous);
        f()
    }

    /// Every request that passed the checks, as sent (placeholders filled), in order.
    pub fn sent(&self) -> Vec<FetchRequest> {
        self.inner.state.borrow().sent.clone()
    }

    /// Every log line, in order.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.inner.state.borrow().logs.clone()
    }
}

/// A provider's answer to a plugin's fetch, as a fake API in a test gives it.
pub fn response(status: u16, headers: &[(&str, &str)], body: &str) -> FetchResponse {
    FetchResponse {
        status,
        headers: headers
            .iter()
            .map(|(name, value)| Header {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

/// Builds an [`HttpRequest`] as the host would hand it to a plugin.
pub fn request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpRequest {
    HttpRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: headers
            .iter()
            .map(|(name, value)| Header {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect(),
        body: body.to_vec(),
    }
}

/// A JSON `POST` to `/webhooks/test` signed with Standard Webhooks headers, using the
/// secret's *value* (`whsec_…`) and `ts_secs` (Unix seconds) as `webhook-timestamp`; the
/// `webhook-id` is `msg_test_{ts_secs}`. Panics if the secret is not a valid key.
pub fn standard_webhooks_request(secret_value: &str, body: &[u8], ts_secs: i64) -> HttpRequest {
    let id = format!("msg_test_{ts_secs}");
    let content = omnigate_signature::standard_webhooks::signed_content(&id, ts_secs, body);
    let signature =
        omnigate_signature::sign(Scheme::StandardWebhooks, secret_value.as_bytes(), &content)
            .unwrap_or_else(|e| panic!("standard_webhooks_request: {e}"));
    let ts = ts_secs.to_string();
    request(
        "POST",
        "/webhooks/test",
        "",
        &[
            ("content-type", "application/json"),
            ("webhook-id", &id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &signature),
        ],
        body,
    )
}

/// Reads a fixture file relative to the crate under test (`CARGO_MANIFEST_DIR`, which
/// `cargo test` sets). Panics with the path if it cannot be read.
pub fn fixture(path: &str) -> Vec<u8> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let full = Path::new(&dir).join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", full.display()))
}

/// The host imports, served by the harness running on this thread.
pub(crate) mod native {
    use super::*;

    fn current() -> Rc<Inner> {
        CURRENT
            .with(|current| current.borrow().clone())
            .unwrap_or_else(|| {
                panic!(
                    "omnigate_sdk::host called natively outside omnigate_sdk::testing::Harness::run"
                )
            })
    }

    pub(crate) fn log(level: LogLevel, message: &str) {
        eprintln!("[plugin {level:?}] {message}");
        current()
            .state
            .borrow_mut()
            .logs
            .push((level, message.to_owned()));
    }

    pub(crate) fn now() -> i64 {
        current().state.borrow().now_ms
    }

    pub(crate) fn config(key: &str) -> Option<String> {
        current().state.borrow().config.get(key).cloned()
    }

    pub(crate) fn verify(
        scheme: SignatureScheme,
        secret_name: &str,
        message: &[u8],
        signature: &str,
    ) -> Result<bool, SecretError> {
        let secret = secret_value(secret_name)?;
        omnigate_signature::verify(to_scheme(scheme), secret.as_bytes(), message, signature)
            .map_err(malformed)
    }

    pub(crate) fn sign(
        scheme: SignatureScheme,
        secret_name: &str,
        message: &[u8],
    ) -> Result<String, SecretError> {
        let secret = secret_value(secret_name)?;
        omnigate_signature::sign(to_scheme(scheme), secret.as_bytes(), message).map_err(malformed)
    }

    pub(crate) fn http_fetch(request: &FetchRequest) -> Result<FetchResponse, FetchError> {
        let inner = current();
        let (sent, used) = prepare(&inner.state.borrow(), request)?;
        inner.state.borrow_mut().sent.push(sent.clone());
        let answer = match inner.on_fetch.borrow_mut().as_mut() {
            Some(handler) => handler(&sent),
            None => Err(FetchError::Connection(
                "the test harness has no on_fetch handler".into(),
            )),
        };
        Ok(redact_response(
            answer.map_err(|e| redact_error(e, &used))?,
            &used,
        ))
    }

    fn secret_value(name: &str) -> Result<String, SecretError> {
        current()
            .state
            .borrow()
            .secrets
            .get(name)
            .cloned()
            .ok_or_else(|| SecretError::Unknown(name.to_owned()))
    }

    fn malformed(e: omnigate_signature::SecretError) -> SecretError {
        let omnigate_signature::SecretError::Malformed(why) = e;
        SecretError::Malformed(why)
    }

    fn to_scheme(scheme: SignatureScheme) -> Scheme {
        match scheme {
            SignatureScheme::HmacSha256Hex => Scheme::HmacSha256Hex,
            SignatureScheme::HmacSha256Base64 => Scheme::HmacSha256Base64,
            SignatureScheme::HmacSha256Prefixed => Scheme::HmacSha256Prefixed,
            SignatureScheme::HmacSha1Base64 => Scheme::HmacSha1Base64,
            SignatureScheme::StandardWebhooks => Scheme::StandardWebhooks,
            SignatureScheme::SlackV0 => Scheme::SlackV0,
            SignatureScheme::Equals => Scheme::Equals,
        }
    }

    /// Checks the request like the host and fills placeholders; returns the request as
    /// sent and the secret values used.
    fn prepare(
        state: &State,
        request: &FetchRequest,
    ) -> Result<(FetchRequest, Vec<String>), FetchError> {
        if request.method.is_empty() || !request.method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(FetchError::InvalidRequest(format!(
                "invalid method {:?}",
                request.method
            )));
        }
        let host = allowed_host(state, &request.url)?;
        let mut used = Vec::new();
        let url = fill_str(&request.url, &state.secrets, &mut used)?;
        // A secret must not be able to move the request to another host.
        if allowed_host(state, &url).ok() != Some(host) {
            return Err(FetchError::Denied(
                "a placeholder changes the URL's host".into(),
            ));
        }
        let mut headers = Vec::with_capacity(request.headers.len());
        for header in &request.headers {
            let value = fill_str(&header.value, &state.secrets, &mut used)?;
            headers.push(Header {
                name: header.name.clone(),
                value,
            });
        }
        let body = fill(&request.body, &state.secrets, &mut used)?;
        used.sort();
        used.dedup();
        Ok((
            FetchRequest {
                url,
                headers,
                body,
                ..request.clone()
            },
            used,
        ))
    }

    /// The URL's host if it is on the allow-list.
    fn allowed_host(state: &State, url: &str) -> Result<String, FetchError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| FetchError::InvalidRequest(format!("invalid URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::InvalidRequest(format!(
                "URL scheme {} not allowed",
                parsed.scheme()
            )));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| FetchError::InvalidRequest(format!("URL {url:?} has no host")))?
            .to_ascii_lowercase();
        let with_port = parsed
            .port_or_known_default()
            .map(|port| format!("{host}:{port}"));
        let allowed = state
            .allowed_hosts
            .iter()
            .any(|entry| *entry == host || Some(entry) == with_port.as_ref());
        if allowed {
            Ok(host)
        } else {
            Err(FetchError::Denied(format!(
                "host {host} is not allowed for this channel"
            )))
        }
    }

    const OPEN: &[u8] = b"{{secret:";
    const BASIC_OPEN: &[u8] = b"{{basic:";
    const CLOSE: &[u8] = b"}}";

    /// Replaces every `{{secret:NAME}}` and `{{basic:USER:NAME}}` in `input`; an unknown
    /// NAME is `Denied`.
    fn fill(
        input: &[u8],
        secrets: &BTreeMap<String, String>,
        used: &mut Vec<String>,
    ) -> Result<Vec<u8>, FetchError> {
        let mut out = Vec::with_capacity(input.len());
        let mut rest = input;
        while let Some((start, open)) = next_placeholder(rest) {
            let after = &rest[start + open.len()..];
            let Some(end) = find(after, CLOSE) else { break };
            let inside = String::from_utf8_lossy(&after[..end]);
            let (user, name) = if open == BASIC_OPEN {
                let (user, name) = inside.split_once(':').ok_or_else(|| {
                    FetchError::Denied(format!("basic placeholder {inside:?} has no USER:"))
                })?;
                (Some(user), name)
            } else {
                (None, inside.as_ref())
            };
            let value = secrets.get(name).ok_or_else(|| {
                FetchError::Denied(format!("unknown secret {name:?} in placeholder"))
            })?;
            out.extend_from_slice(&rest[..start]);
            match user {
                Some(user) => {
                    let credentials = omnigate_signature::basic_credentials(user, value.as_bytes());
                    out.extend_from_slice(credentials.as_bytes());
                    // Echoed whole, the credentials are redacted too (the host redacts
                    // every base64 form of the secret).
                    used.push(credentials);
                }
                None => out.extend_from_slice(value.as_bytes()),
            }
            used.push(value.clone());
            rest = &after[end + CLOSE.len()..];
        }
        out.extend_from_slice(rest);
        Ok(out)
    }

    fn next_placeholder(input: &[u8]) -> Option<(usize, &'static [u8])> {
        [OPEN, BASIC_OPEN]
            .into_iter()
            .filter_map(|open| find(input, open).map(|at| (at, open)))
            .min_by_key(|(at, _)| *at)
    }

    fn fill_str(
        input: &str,
        secrets: &BTreeMap<String, String>,
        used: &mut Vec<String>,
    ) -> Result<String, FetchError> {
        let filled = fill(input.as_bytes(), secrets, used)?;
        // UTF-8 in, UTF-8 secrets spliced in at ASCII boundaries: still UTF-8.
        Ok(String::from_utf8_lossy(&filled).into_owned())
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack
            .windows(needle.len())
            .position(|window| window == needle)
    }

    fn redact(input: &[u8], used: &[String]) -> Vec<u8> {
        let mut out = input.to_vec();
        for secret in used.iter().filter(|s| !s.is_empty()) {
            let mut redacted = Vec::with_capacity(out.len());
            let mut rest = out.as_slice();
            while let Some(at) = find(rest, secret.as_bytes()) {
                redacted.extend_from_slice(&rest[..at]);
                redacted.extend_from_slice(REDACTED.as_bytes());
                rest = &rest[at + secret.len()..];
            }
            redacted.extend_from_slice(rest);
            out = redacted;
        }
        out
    }

    fn redact_str(input: &str, used: &[String]) -> String {
        String::from_utf8_lossy(&redact(input.as_bytes(), used)).into_owned()
    }

    fn redact_response(response: FetchResponse, used: &[String]) -> FetchResponse {
        FetchResponse {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|h| Header {
                    name: h.name,
                    value: redact_str(&h.value, used),
                })
                .collect(),
            body: redact(&response.body, used),
        }
    }

    fn redact_error(error: FetchError, used: &[String]) -> FetchError {
        match error {
            FetchError::Denied(m) => FetchError::Denied(redact_str(&m, used)),
            FetchError::InvalidRequest(m) => FetchError::InvalidRequest(redact_str(&m, used)),
            FetchError::Connection(m) => FetchError::Connection(redact_str(&m, used)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fetch, host};

    fn echo(req: &FetchRequest) -> Result<FetchResponse, FetchError> {
        Ok(FetchResponse {
            status: 200,
            headers: vec![Header {
                name: "x-echo".into(),
                value: req.url.clone(),
            }],
            body: req.body.clone(),
        })
    }

    #[test]
    fn config_never_returns_secrets_and_clock_is_settable() {
        let h = Harness::new()
            .config("api_base", "https://x")
            .secret("token", "t");
        h.run(|| {
            assert_eq!(host::config("api_base").as_deref(), Some("https://x"));
            assert_eq!(host::config("token"), None);
            assert_eq!(host::now(), DEFAULT_NOW_MS);
        });
        h.set_now(5);
        assert_eq!(h.run(host::now), 5);
    }

    #[test]
    fn fetch_fills_placeholders_records_and_redacts() {
        let h = Harness::new()
            .secret("token", "s3cr3t")
            .allow_host("api.example")
            .on_fetch(echo);
        let response = h.run(|| {
            Fetch::post("https://api.example/bot{{secret:token}}/send")
                .bearer_secret("token")
                .body("token={{secret:token}}")
                .send()
        });
        let response = response.expect("allowed");
        assert_eq!(response.body, b"token=[REDACTED]");
        assert_eq!(
            response.headers[0].value,
            "https://api.example/bot[REDACTED]/send"
        );
        let sent = h.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].url, "https://api.example/bots3cr3t/send");
        assert_eq!(sent[0].headers[0].value, "Bearer s3cr3t");
        assert_eq!(sent[0].body, b"token=s3cr3t");
    }

    #[test]
    fn basic_placeholders_are_filled_like_the_host() {
        let h = Harness::new()
            .secret("auth_token", "open sesame")
            .allow_host("api.example")
            .on_fetch(|req| {
                Ok(FetchResponse {
                    status: 401,
                    headers: vec![],
                    body: req.headers[0].value.clone().into_bytes(),
                })
            });
        let response = h
            .run(|| {
                Fetch::get("https://api.example/")
                    .basic_auth_secret("Aladdin", "auth_token")
                    .send()
            })
            .expect("allowed");
        assert_eq!(
            h.sent()[0].headers[0].value,
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(response.body, b"Basic [REDACTED]");
    }

    #[test]
    fn fetch_denials_send_nothing() {
        let h = Harness::new()
            .secret("token", "s3cr3t")
            .allow_host("api.example:8443")
            .on_fetch(echo);
        let denied = |url: &str, body: &str| {
            let result = h.run(|| Fetch::post(url).body(body).send());
            assert!(
                matches!(result, Err(FetchError::Denied(_))),
                "{url}: {result:?}"
            );
        };
        denied("https://evil.example/", "");
        denied("https://api.example/", ""); // port 443 is not 8443
        denied("https://api.example:8443/", "{{secret:other}}");
        assert!(h.sent().is_empty());
        let invalid = h.run(|| Fetch::get("ftp://api.example:8443/").send());
        assert!(
            matches!(invalid, Err(FetchError::InvalidRequest(_))),
            "{invalid:?}"
        );
        let ok = h.run(|| Fetch::get("https://API.example:8443/x").send());
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(h.sent().len(), 1);
    }

    #[test]
    fn fetch_without_handler_is_a_connection_error() {
        let h = Harness::new().allow_host("api.example");
        let result = h.run(|| Fetch::get("http://api.example/").send());
        assert!(matches!(result, Err(FetchError::Connection(_))));
        assert_eq!(h.sent().len(), 1);
    }

    #[test]
    fn verify_and_sign_by_secret_name() {
        let h = Harness::new().secret("k", "key");
        let (signature, verified, unknown) = h.run(|| {
            let signature = host::sign(SignatureScheme::HmacSha256Hex, "k", b"m").expect("sign");
            let verified = host::verify(SignatureScheme::HmacSha256Hex, "k", b"m", &signature);
            (
                signature,
                verified,
                host::verify(SignatureScheme::Equals, "nope", b"", "x"),
            )
        });
        assert_eq!(
            Ok(signature),
            omnigate_signature::sign(Scheme::HmacSha256Hex, b"key", b"m")
        );
        assert_eq!(verified, Ok(true));
        assert_eq!(unknown, Err(SecretError::Unknown("nope".into())));
        let malformed = h.run(|| host::sign(SignatureScheme::Equals, "k", b""));
        assert!(matches!(malformed, Err(SecretError::Malformed(_))));
    }

    #[test]
    fn logs_are_captured_and_runs_nest() {
        let outer = Harness::new();
        let inner = Harness::new();
        outer.run(|| {
            host::info("outer");
            inner.run(|| host::warn("inner"));
            host::error("outer again");
        });
        assert_eq!(
            outer.logs(),
            vec![
                (LogLevel::Info, "outer".into()),
                (LogLevel::Error, "outer again".into())
            ]
        );
        assert_eq!(inner.logs(), vec![(LogLevel::Warn, "inner".into())]);
    }

    #[test]
    #[should_panic(expected = "outside omnigate_sdk::testing::Harness::run")]
    fn host_calls_outside_a_harness_panic() {
        host::now();
    }

    #[test]
    fn helpers() {
        let req = standard_webhooks_request("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", b"{}", 100);
        assert_eq!(crate::header(&req, "webhook-id"), Some("msg_test_100"));
        let content =
            omnigate_signature::standard_webhooks::signed_content("msg_test_100", 100, b"{}");
        let signature = crate::header(&req, "webhook-signature").unwrap_or_default();
        let secret = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(
            omnigate_signature::verify(Scheme::StandardWebhooks, secret, &content, signature),
            Ok(true)
        );
        assert!(String::from_utf8_lossy(&fixture("Cargo.toml")).contains("omnigate-sdk"));
    }
}
