//! The host's capabilities: the only things a plugin can reach.
//!
//! On `wasm32` every function calls the matching import of `omnigate:channel/host`.
//! On any other target it calls the [`testing::Harness`](crate::testing::Harness) running
//! on the current thread, so plugin code is unit-tested natively; calling one of these
//! natively outside `Harness::run` panics with a message saying so.

use crate::{FetchError, FetchRequest, FetchResponse, LogLevel, SecretError, SignatureScheme};

#[cfg(target_arch = "wasm32")]
use crate::bindings::omnigate::channel::host as imp;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::native as imp;

/// Writes a line to the host's log, tagged by the host with the plugin and channel.
/// Never log secrets or whole payloads with personal data.
pub fn log(level: LogLevel, message: &str) {
    imp::log(level, message);
}

/// Logs at [`LogLevel::Debug`].
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// Logs at [`LogLevel::Info`].
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs at [`LogLevel::Warn`].
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

/// Logs at [`LogLevel::Error`].
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

/// The current time in milliseconds since the Unix epoch, UTC.
pub fn now() -> i64 {
    imp::now()
}

/// A configuration value of this channel (`config = { … }` in the host config).
/// Secrets are never returned here: use them through [`verify`], [`sign`] and
/// `{{secret:NAME}}` placeholders in [`fetch`].
pub fn config(key: &str) -> Option<String> {
    imp::config(key)
}

/// Checks `signature` over `message` with the channel secret named `secret_name`; the
/// host computes it in constant time and the secret's value never enters the plugin.
///
/// `Ok(false)` means the signature is wrong; `Err` means the secret is missing
/// ([`SecretError::Unknown`]) or does not fit the scheme ([`SecretError::Malformed`]).
/// The [`signature`](crate::signature) module wraps this for each provider.
pub fn verify(
    scheme: SignatureScheme,
    secret_name: &str,
    message: &[u8],
    signature: &str,
) -> Result<bool, SecretError> {
    imp::verify(scheme, secret_name, message, signature)
}

/// Signs `message` with the channel secret named `secret_name`; returns the scheme's
/// header value (`sha256=…`, `v1,…`, `v0=…`, hex or base64).
pub fn sign(
    scheme: SignatureScheme,
    secret_name: &str,
    message: &[u8],
) -> Result<String, SecretError> {
    imp::sign(scheme, secret_name, message)
}

/// Makes an HTTP request through the host. The URL's host must be on the channel's
/// allow-list; `{{secret:NAME}}` placeholders in the URL path, header values and body are
/// filled in by the host after that check (a placeholder in the host, userinfo or query
/// is refused, and a secret goes only to the origins it is scoped to), and redacted from
/// the response.
/// [`Fetch`](crate::Fetch) builds requests more conveniently.
pub fn fetch(request: &FetchRequest) -> Result<FetchResponse, FetchError> {
    imp::http_fetch(request)
}
