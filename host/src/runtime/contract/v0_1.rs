//! Contract 0.1.0 (`wit/0.1.0`, frozen): the plugin's functions are world-level exports.
//!
//! Its data types are identical to 0.2.0's, so they are bound to the host's 0.2.0 types
//! (`with`): a 0.1.0 plugin's values need no conversion. The host interface's own types
//! (log level, signature scheme, fetch request…) are generated for this version and
//! converted to 0.2.0's before the shared implementation runs.
#![allow(missing_docs)]

use wasmtime::component::{HasSelf, Linker};

use super::super::state::WasmState;
use super::v0_2::host_api as current;

wasmtime::component::bindgen!({
    path: "../wit/0.1.0",
    world: "omnigate:channel/channel@0.1.0",
    imports: { default: async },
    exports: { default: async },
    with: { "omnigate:channel/types@0.1.0": super::v0_2::types },
});

/// The contract version.
pub const VERSION: &str = "0.1.0";

/// The world plugins of this version implement.
pub const WORLD: &str = "omnigate:channel/channel@0.1.0";

/// The functions a plugin of this version exports at the top level.
pub const EXPORTS: [&str; 3] = ["describe", "handle-webhook", "send"];

use omnigate::channel::host::{
    self as host_api, FetchError, FetchRequest, FetchResponse, LogLevel, SecretError,
    SignatureScheme,
};

/// Define this version's imports (`types`, `host`) in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<WasmState>) -> wasmtime::Result<()> {
    // `types` has no functions; a component still imports it by name.
    linker.instance("omnigate:channel/types@0.1.0")?;
    host_api::add_to_linker::<WasmState, HasSelf<WasmState>>(linker, |state| state)
}

impl host_api::Host for WasmState {
    async fn log(&mut self, level: LogLevel, message: String) {
        current::Host::log(self, level.into(), message).await
    }

    async fn now(&mut self) -> i64 {
        current::Host::now(self).await
    }

    async fn config(&mut self, key: String) -> Option<String> {
        current::Host::config(self, key).await
    }

    async fn verify(
        &mut self,
        scheme: SignatureScheme,
        secret: String,
        message: Vec<u8>,
        signature: String,
    ) -> Result<bool, SecretError> {
        current::Host::verify(self, scheme.into(), secret, message, signature)
            .await
            .map_err(Into::into)
    }

    async fn sign(
        &mut self,
        scheme: SignatureScheme,
        secret: String,
        message: Vec<u8>,
    ) -> Result<String, SecretError> {
        current::Host::sign(self, scheme.into(), secret, message)
            .await
            .map_err(Into::into)
    }

    async fn http_fetch(&mut self, request: FetchRequest) -> Result<FetchResponse, FetchError> {
        let request = current::FetchRequest {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
        };
        match current::Host::http_fetch(self, request).await {
            Ok(response) => Ok(FetchResponse {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(error) => Err(match error {
                current::FetchError::Denied(why) => FetchError::Denied(why),
                current::FetchError::InvalidRequest(why) => FetchError::InvalidRequest(why),
                current::FetchError::Timeout => FetchError::Timeout,
                current::FetchError::TooLarge(size) => FetchError::TooLarge(size),
                current::FetchError::Connection(why) => FetchError::Connection(why),
            }),
        }
    }
}

impl From<LogLevel> for current::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => Self::Trace,
            LogLevel::Debug => Self::Debug,
            LogLevel::Info => Self::Info,
            LogLevel::Warn => Self::Warn,
            LogLevel::Error => Self::Error,
        }
    }
}

impl From<SignatureScheme> for current::SignatureScheme {
    fn from(scheme: SignatureScheme) -> Self {
        match scheme {
            SignatureScheme::HmacSha256Hex => Self::HmacSha256Hex,
            SignatureScheme::HmacSha256Base64 => Self::HmacSha256Base64,
            SignatureScheme::HmacSha256Prefixed => Self::HmacSha256Prefixed,
            SignatureScheme::HmacSha1Base64 => Self::HmacSha1Base64,
            SignatureScheme::StandardWebhooks => Self::StandardWebhooks,
            SignatureScheme::SlackV0 => Self::SlackV0,
            SignatureScheme::Equals => Self::Equals,
        }
    }
}

impl From<current::SecretError> for SecretError {
    fn from(error: current::SecretError) -> Self {
        match error {
            current::SecretError::Unknown(name) => Self::Unknown(name),
            current::SecretError::Malformed(why) => Self::Malformed(why),
        }
    }
}
