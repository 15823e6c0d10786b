//! The host's capabilities for a destination plugin. They exist only inside the host:
//! natively (unit tests) they are not available, so keep the mapping in pure functions
//! that take what these return as arguments.

use crate::bindings::omnigate::channel::{hashing, host};
use crate::{FetchError, FetchRequest, FetchResponse, Header, Identifier, LogLevel, Platform};

/// Writes a line to the host's log (never secrets or personal data).
pub fn log(level: LogLevel, message: &str) {
    host::log(level, message);
}

/// The current time in milliseconds since the Unix epoch, UTC.
pub fn now() -> i64 {
    host::now()
}

/// A configuration value of this destination (`config = { … }`).
pub fn config(key: &str) -> Option<String> {
    host::config(key)
}

/// Lower-case hex SHA-256 of `value` in `platform`'s normal form for `identifier`; `None`
/// when the value is not an e-mail address or phone number.
pub fn hash(identifier: Identifier, platform: Platform, value: &str) -> Option<String> {
    hashing::hash(identifier, platform, value).ok()
}

/// `POST` `body` as JSON to `url` with `Authorization: Bearer {{secret:<secret>}}`
/// (the host fills the secret in, only for the allowed hosts).
pub fn post_json(url: &str, secret: &str, body: &[u8]) -> Result<FetchResponse, FetchError> {
    host::http_fetch(&FetchRequest {
        method: "POST".to_owned(),
        url: url.to_owned(),
        headers: vec![
            Header {
                name: "content-type".to_owned(),
                value: "application/json".to_owned(),
            },
            Header {
                name: "authorization".to_owned(),
                value: format!("Bearer {{{{secret:{secret}}}}}"),
            },
        ],
        body: body.to_vec(),
        timeout_ms: None,
    })
}

/// A response header, by name (case-insensitive).
pub fn header<'a>(response: &'a FetchResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value.as_str())
}
