//! Logging and tracing: log lines (text or JSON) through `tracing`, filtered by
//! `RUST_LOG`; spans exported with OpenTelemetry OTLP over HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! Without an endpoint no exporter and no OpenTelemetry layer exist, and the log layer
//! takes events only, so every span callsite is disabled: a span on the hot path costs
//! one cached interest check (see `docs/tracing.md` for the figures).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::ExporterBuildError;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "omnigate";

/// Why tracing export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The `OTEL_*` settings do not make a working exporter (e.g. an unknown protocol).
    #[error("OTLP trace exporter: {0}")]
    Exporter(#[from] ExporterBuildError),
    /// A protocol this build does not speak (`grpc`).
    #[error(
        "{variable}=`{value}` is not supported: use http/protobuf or http/json (OTLP over HTTP)"
    )]
    Protocol {
        /// The variable that names it.
        variable: &'static str,
        /// Its value.
        value: String,
    },
}

/// What `init` installed; [`Telemetry::shutdown`] flushes spans still queued.
#[derive(Debug, Default)]
#[must_use = "call shutdown() before exiting, or queued spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter. Blocking (bounded by the
    /// exporter's timeout): call it outside the async runtime, after serving stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: spans not all exported at shutdown: {error}");
        }
    }
}

/// Installs the global subscriber (once; later calls install nothing). With `export` and
/// an OTLP endpoint in the environment, spans are exported too.
pub fn init(format: LogFormat, export: bool) -> Result<Telemetry, TelemetryError> {
    let provider = if export && otlp_configured() {
        check_protocol()?;
        Some(tracer_provider()?)
    } else {
        None
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("omnigate"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(Exported)
    });
    let installed = tracing_subscriber::registry()
        .with(log_layer(format))
        .with(otel)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        super::trace::set_exporting(true);
    }
    Ok(Telemetry { provider })
}

/// Whether the standard variables name an OTLP endpoint.
fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// Refuses a protocol other than OTLP over HTTP: the exporter would otherwise fall back
/// to http/protobuf silently, against what is likely a gRPC port.
fn check_protocol() -> Result<(), TelemetryError> {
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(value) = std::env::var(variable) {
            let known = ["http/protobuf", "http/json"];
            if !value.is_empty() && !known.contains(&value.trim().to_ascii_lowercase().as_str()) {
                return Err(TelemetryError::Protocol { variable, value });
            }
        }
    }
    Ok(())
}

/// OTLP over HTTP (protocol, endpoint, headers, timeout from the standard `OTEL_*`
/// variables), behind a batch processor (`OTEL_BSP_*`) that exports from its own thread.
fn tracer_provider() -> Result<SdkTracerProvider, ExporterBuildError> {
    // The exporter's reqwest client needs the process's rustls provider (https endpoints).
    crate::tls::ensure_crypto_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build())
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), named
/// `omnigate` unless the environment names the service.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(DEFAULT_SERVICE_NAME)
            .build()
    }
}

/// Log lines to stderr (stdout carries command output: `schema`, `plugin check`),
/// filtered by `RUST_LOG` (default `info`), events only.
fn log_layer<S>(format: LogFormat) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    layer.with_filter(filter.and(EventsOnly))
}

/// What the OpenTelemetry layer sees: omnigate's spans at `info` and above, and its
/// warnings and errors (recorded as events of the span they happen in); nothing of the
/// libraries'.
struct Exported;

impl Exported {
    fn wants(metadata: &Metadata<'_>) -> bool {
        let level = *metadata.level();
        metadata.target().starts_with("omnigate")
            && if metadata.is_span() {
                level <= Level::INFO
            } else {
                level <= Level::WARN
            }
    }
}

impl<S> Filter<S> for Exported {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Self::wants(metadata)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if Self::wants(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
}

/// Passes events, never spans. Log lines are events that carry the ids they need as
/// their own fields; a span seen by the log layer would have its fields formatted into a
/// string on creation, on the hot path, whether or not a line is ever logged inside it.
struct EventsOnly;

impl<S> Filter<S> for EventsOnly {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        metadata.is_event()
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Decided once per callsite: a span callsite nobody else wants is then disabled
        // for good, and `info_span!` is a relaxed load.
        if metadata.is_event() {
            Interest::always()
        } else {
            Interest::never()
        }
    }
}
