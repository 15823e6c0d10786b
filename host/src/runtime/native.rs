//! A channel's webhook handling linked into the gateway as native code instead of run
//! in its WebAssembly plugin: a hook for benchmarks and embedders, not a production
//! feature.
//!
//! Why it exists: the throughput benchmark measures the gateway with a plugin's own code
//! linked natively beside the same gateway running it sandboxed, so the cost of the
//! sandbox (instance checkout, argument copies in and out of linear memory, the guest's
//! compiled code, epoch checks) stands as its own figure. Everything around the call —
//! routing, rate limits, request reading, metrics, spans, the pipeline and the store —
//! is the same code either way ([`ChannelRuntime::linked_natively`]).
//!
//! Native code runs in place, on the request's task: no CPU budget, no call timeout, no
//! memory cap and no isolation from the gateway. Only `handle-webhook` is linked;
//! `describe`, `send` and `deliver` still go to the plugin, whose outbound requests need
//! the host's allow-list and secret placeholders.
//!
//! [`ChannelRuntime::linked_natively`]: super::ChannelRuntime::linked_natively

use super::contract::v0_2::types::{WebhookError, WebhookOutcome};
use super::lent::WebhookRequest;

/// A channel plugin's `handle-webhook`, compiled into the process.
///
/// The implementor plays both sides of the sandbox's boundary: it gives the plugin code
/// its configuration, secrets (for signature checks) and clock, as the host imports would.
pub trait NativeChannel: Send + Sync {
    /// Map one provider request to events, exactly as the plugin's `handle-webhook` does.
    /// The request is lent as it is to the plugin; code that needs owned values copies
    /// them, as the sandbox copies them into the guest's memory.
    fn handle_webhook(&self, request: &WebhookRequest<'_>) -> Result<WebhookOutcome, WebhookError>;
}
