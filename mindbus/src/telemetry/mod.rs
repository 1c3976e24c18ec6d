//! Logs, traces and metrics for the binaries: `tracing` with fields, as text or JSON lines;
//! when an OTLP endpoint is configured, OpenTelemetry spans exported over OTLP/HTTP; and,
//! when a metrics listener is set, Prometheus metrics ([`metrics`], served by [`probes`]).
//!
//! Traces are configured by the standard variables alone: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns them on, and `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
//! (`parentbased_always_on` by default), `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_BSP_*` are
//! read by the OpenTelemetry SDK itself. `OTEL_SDK_DISABLED=true` turns them off. With no
//! endpoint nothing is exported and no span is made: [`spans`] hands out disabled spans.

mod logs;
pub mod metrics;
pub mod probes;
pub mod spans;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterFn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::config::{LogConfig, LogFormat};

/// Crates whose logs are off whatever the level: genai logs provider response bodies,
/// which may echo an API key (the LLM layer reports failures itself, keys scrubbed).
const SILENCED: [&str; 1] = ["genai=off"];

/// The exporter, when this process exports spans (set once, by [`init`]).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether this process exports spans; when not, [`spans`] makes none.
pub fn tracing_on() -> bool {
    PROVIDER.get().is_some()
}

/// Sends the spans still buffered, waiting at most a few seconds.
fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        tracing::warn!(error = %e, "could not send the last spans");
    }
}

/// Ends the process with `code` after sending the spans still buffered
/// (`std::process::exit` skips [`Telemetry`]'s drop).
pub fn exit(code: i32) -> ! {
    flush();
    std::process::exit(code)
}

/// Held by a process's `main`: dropping it sends the spans still buffered.
#[derive(Debug)]
pub struct Telemetry(());

impl Drop for Telemetry {
    fn drop(&mut self) {
        flush();
    }
}

/// Installs the global subscriber: logs to standard error (so that standard output stays
/// the command's own output; `RUST_LOG` overrides the configured level), and spans of
/// `service` (unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` name it) to the
/// configured OTLP endpoint. Logs inside a span carry its `trace_id` and `span_id`.
pub fn init(config: &LogConfig, service: &'static str) -> Telemetry {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    for directive in SILENCED {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    // Colour codes only on a terminal: a log file or a collector gets plain text.
    let output = fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let output = match config.format {
        LogFormat::Json => output
            .json()
            .flatten_event(true)
            .map_event_format(|inner| logs::WithTraceIds { inner, json: true })
            .boxed(),
        LogFormat::Text => output
            .map_event_format(|inner| logs::WithTraceIds { inner, json: false })
            .boxed(),
    };
    let (provider, problem) = match provider(service) {
        Ok(provider) => (provider, None),
        Err(e) => (None, Some(e)),
    };
    // MindBus's own spans from INFO, and its warnings and errors as span events, whatever
    // the log level: the log filter decides what is printed, not what is traced.
    let traced = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("mindbus"))
            .with_filter(FilterFn::new(exported).with_max_level_hint(LevelFilter::INFO))
    });
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(filter))
        .with(traced)
        .try_init();
    if let Some(e) = problem {
        tracing::warn!(error = %e, "traces are off: the OTLP exporter could not be set up");
    }
    if let Some(provider) = provider {
        let _ = PROVIDER.set(provider);
    }
    Telemetry(())
}

/// What goes to the trace backend: MindBus's own spans and warnings only. Other crates'
/// events stay out (genai's may echo a provider's answer, and with it an API key).
fn exported(meta: &Metadata<'_>) -> bool {
    let most = if meta.is_span() {
        Level::INFO
    } else {
        Level::WARN
    };
    *meta.level() <= most && meta.target().starts_with("mindbus")
}

/// The tracer provider when an endpoint is configured and the SDK is not disabled.
fn provider(
    service: &'static str,
) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let set = |name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if disabled
        || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    {
        return Ok(None);
    }
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // The resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the process's own
    // name only stands in when neither names the service.
    let mut resource = opentelemetry_sdk::Resource::builder();
    let attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    if !set("OTEL_SERVICE_NAME") && !attributes.contains("service.name=") {
        resource = resource.with_service_name(service);
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Some(provider))
}
