//! Trace context across the outbox: an inbound message's span context travels with its
//! outbox entries as a W3C `traceparent`, so delivery attempts (later, possibly on
//! another instance) join the message's trace.
//!
//! Everything here answers `None` / does nothing unless spans are exported (see
//! [`super::telemetry`]), so the hot path pays nothing when tracing is off.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Set once the OpenTelemetry layer is installed.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Release);
}

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Acquire)
}

/// The W3C `traceparent` of `span` (`00-<trace id>-<span id>-<flags>`), when spans are
/// exported and `span` is recorded.
pub fn traceparent(span: &Span) -> Option<String> {
    if !exporting() || span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The `traceparent` of the current span (what an outbox entry carries).
pub fn current_traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    traceparent(&Span::current())
}

/// Makes the not-yet-entered `span` a child of the remote span `traceparent`. Does
/// nothing when spans are not exported or `traceparent` is malformed (the span then
/// starts a trace of its own).
pub fn set_remote_parent(span: &Span, traceparent: &str) {
    if !exporting() || span.is_disabled() {
        return;
    }
    let Some(parent) = parse(traceparent) else {
        tracing::debug!(traceparent, "malformed stored traceparent ignored");
        return;
    };
    let context = opentelemetry::Context::new().with_remote_span_context(parent);
    // Only fails when the span has started already, which callers rule out.
    let _ = span.set_parent(context);
}

/// Parses a version-00 W3C `traceparent`.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex =
        |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
    if parts.next().is_some()
        || version != "00"
        || !hex(trace, 32)
        || !hex(span, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_w3c_traceparent() {
        let context = parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .expect("valid traceparent");
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(context.span_id().to_string(), "b7ad6b7169203331");
        assert!(context.is_sampled());
        assert!(context.is_remote());
    }

    #[test]
    fn refuses_malformed_traceparents() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn nothing_without_export() {
        assert_eq!(traceparent(&Span::none()), None);
        assert_eq!(current_traceparent(), None);
    }
}
