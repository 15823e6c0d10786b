//! The host capabilities a plugin imports (`interface host` of the contract, and
//! `hashing` for destination plugins).
//!
//! Each capability lives in its own module; this file only wires them to the generated
//! trait. Guest-visible failures are WIT error values, never traps.

pub mod fetch;
pub mod guest_output;
pub mod hashing;
pub mod placeholders;
pub mod signature;

use super::contract::v0_2::host_api::{
    self, FetchError, FetchRequest, FetchResponse, LogLevel, SecretError, SignatureScheme,
};
use super::contract::v0_2::types;
use super::state::WasmState;

/// Longest log line a plugin may write; longer ones are cut (a plugin cannot flood logs).
const MAX_LOG_LINE: usize = 8 * 1024;

impl types::Host for WasmState {}

impl host_api::Host for WasmState {
    async fn log(&mut self, level: LogLevel, message: String) {
        log(self, level, &message);
    }

    async fn now(&mut self) -> i64 {
        now(self)
    }

    async fn config(&mut self, key: String) -> Option<String> {
        config(self, &key)
    }

    async fn verify(
        &mut self,
        scheme: SignatureScheme,
        secret: String,
        message: Vec<u8>,
        signature_value: String,
    ) -> Result<bool, SecretError> {
        signature::verify(&self.env, scheme, &secret, &message, &signature_value)
    }

    async fn sign(
        &mut self,
        scheme: SignatureScheme,
        secret: String,
        message: Vec<u8>,
    ) -> Result<String, SecretError> {
        signature::sign(&self.env, scheme, &secret, &message)
    }

    async fn http_fetch(&mut self, request: FetchRequest) -> Result<FetchResponse, FetchError> {
        let result = fetch::fetch(&self.env, request).await;
        if let Err(error) = &result {
            tracing::debug!(plugin = &*self.plugin, channel = %self.env.channel_id, ?error, "http-fetch refused or failed");
        }
        result
    }
}

/// `log`: one line in the host's log, tagged with the plugin and channel. Shared by the
/// async bindings and the fiberless linker ([`super::fiberless`]), as are [`now`] and
/// [`config`].
pub(crate) fn log(state: &WasmState, level: LogLevel, message: &str) {
    let message = truncate(message, MAX_LOG_LINE);
    let plugin = &*state.plugin;
    let channel = state.env.channel_id.as_str();
    match level {
        LogLevel::Trace => tracing::trace!(target: "plugin", plugin, channel, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "plugin", plugin, channel, "{message}"),
        LogLevel::Info => tracing::info!(target: "plugin", plugin, channel, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "plugin", plugin, channel, "{message}"),
        LogLevel::Error => tracing::error!(target: "plugin", plugin, channel, "{message}"),
    }
}

/// `now`: the channel's fixed clock (fixtures), else the real time, in milliseconds.
pub(crate) fn now(state: &WasmState) -> i64 {
    state
        .env
        .fixed_now_ms
        .unwrap_or_else(|| jiff::Timestamp::now().as_millisecond())
}

/// `config`: a configuration value of the channel.
pub(crate) fn config(state: &WasmState, key: &str) -> Option<String> {
    state.env.config.get(key).cloned()
}

/// Cut `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
