//! Log lines that carry the trace: inside an exported span, each line gets the span's
//! `trace_id` and `span_id` (JSON keys, or `key=value` at the end of a text line), so a log
//! pipeline can jump from a line to its trace.

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps a log line format, adding the current span's trace and span ids.
#[derive(Debug)]
pub(super) struct WithTraceIds<F> {
    pub(super) inner: F,
    pub(super) json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if !super::tracing_on() {
            return self.inner.format_event(ctx, writer, event);
        }
        // The context entering an exported span made current.
        let context = opentelemetry::Context::current();
        let span = context.span();
        let ids = span.span_context();
        if !ids.is_valid() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let (trace_id, span_id) = (ids.trace_id().to_string(), ids.span_id().to_string());
        if self.json
            && let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(&line)
        {
            fields.insert("trace_id".into(), trace_id.into());
            fields.insert("span_id".into(), span_id.into());
            return writeln!(writer, "{}", serde_json::Value::Object(fields));
        }
        let text = line.trim_end_matches('\n');
        write!(writer, "{text} trace_id={trace_id} span_id={span_id}")?;
        writer.write_char('\n')
    }
}
