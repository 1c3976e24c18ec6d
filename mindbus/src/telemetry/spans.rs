//! The spans MindBus makes, after OpenTelemetry's semantic conventions for messaging: a
//! producer span for each command sent, a consumer span for each delivery handled (a child
//! of the `traceparent` its entry carries) and a span for each attempt, so one trace follows
//! a command from whoever sent it through every process that touched it. Each helper hands
//! out a disabled span, at the cost of a flag check, when the process exports no traces.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::tracing_on;
use crate::wire::{Command, MessageId, TraceParent};

/// `messaging.system` of MindBus's messaging spans.
pub const MESSAGING_SYSTEM: &str = "redis";

/// A consumer span for handling `command`, delivered for the `delivery`th time from
/// `stream` to consumer group `group`: a child of the trace context the entry carries.
pub fn consumer(stream: &str, group: &str, command: &Command, delivery: u32) -> Span {
    if !tracing_on() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {stream}"),
        otel.kind = "consumer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = stream,
        messaging.consumer.group.name = group,
        messaging.message.id = %command.envelope.id,
        messaging.message.conversation_id = command.runid.as_deref(),
        mindbus.command.type = command.envelope.ty.as_str(),
        mindbus.delivery = delivery,
        mindbus.reclaimed = delivery > 1,
    );
    continues(
        &span,
        &command.envelope.traceparent,
        command.envelope.tracestate.as_deref(),
    );
    span
}

/// A span for the `attempt`th run of a command's handler, inside its consumer span: a
/// command retried shows one per attempt.
pub fn attempt(attempt: u32) -> Span {
    if !tracing_on() {
        return Span::none();
    }
    tracing::info_span!(
        "attempt",
        otel.name = format!("attempt {attempt}"),
        mindbus.attempt = attempt
    )
}

/// A producer span for sending the entry `id` to `stream`, with the trace context the entry
/// should carry instead of its own: a child of the current span, or, outside any, of
/// `otherwise` (the context the entry was given). `None` when no traces are exported.
pub fn producer(
    stream: &str,
    id: &MessageId,
    otherwise: &TraceParent,
) -> Option<(Span, TraceParent)> {
    if !tracing_on() {
        return None;
    }
    let within = opentelemetry::Context::current().has_active_span();
    send_span(stream, id, (!within).then_some(otherwise))
}

/// Like [`producer`], a child of `parent` whatever the current span (a step a run sends
/// belongs to the run's trace).
pub fn producer_under(
    stream: &str,
    id: &MessageId,
    parent: &TraceParent,
) -> Option<(Span, TraceParent)> {
    send_span(stream, id, Some(parent))
}

fn send_span(
    stream: &str,
    id: &MessageId,
    parent: Option<&TraceParent>,
) -> Option<(Span, TraceParent)> {
    if !tracing_on() {
        return None;
    }
    let span = tracing::info_span!(
        "send",
        otel.name = format!("send {stream}"),
        otel.kind = "producer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = stream,
        messaging.message.id = %id,
    );
    if let Some(parent) = parent {
        continues(&span, parent, None);
    }
    let carried = trace_parent(&span)?;
    Some((span, carried))
}

/// The trace context to hand on from here: the current span's when it is exported, else
/// `otherwise`.
pub fn current_or(otherwise: TraceParent) -> TraceParent {
    trace_parent(&Span::current()).unwrap_or(otherwise)
}

/// `text` as a W3C `tracestate`, when it is a valid one of at most 512 bytes (the length
/// the W3C recommendation asks every carrier to pass on).
pub fn trace_state(text: &str) -> Option<TraceState> {
    (text.len() <= 512).then(|| text.parse().ok()).flatten()
}

/// What to pass on of a received `tracestate`: its members as parsed (at most 32, each key
/// checked), written out again; `None` for one that is invalid, too long or empty. Whatever
/// a producer wrote, no more than this is copied onto the entries that follow.
pub fn tracestate_to_pass_on(text: &str) -> Option<String> {
    let header = trace_state(text)?.header();
    let printable = header.bytes().all(|b| (0x20..0x7f).contains(&b));
    (printable && !header.is_empty()).then_some(header)
}

/// Makes `span` a child of the remote context `parent` (before it is entered), with the
/// W3C `tracestate` that came with it, if any and valid (an invalid one is dropped, as
/// the W3C recommendation says).
pub fn continues(span: &Span, parent: &TraceParent, tracestate: Option<&str>) {
    let state = tracestate.and_then(trace_state).unwrap_or_default();
    let context = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        state,
    );
    // A span the filter left out has no context to set: nothing to do.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
}

/// The W3C trace context naming `span` as the parent, when it is exported.
pub fn trace_parent(span: &Span) -> Option<TraceParent> {
    let context = span.context();
    let span = context.span();
    let ids = span.span_context();
    ids.is_valid().then(|| TraceParent {
        trace_id: ids.trace_id().to_bytes(),
        parent_id: ids.span_id().to_bytes(),
        flags: ids.trace_flags().to_u8(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_valid_bounded_trace_state_is_passed_on_as_parsed() {
        let pass = tracestate_to_pass_on;
        assert_eq!(
            pass("vendor=abc,other=1").as_deref(),
            Some("vendor=abc,other=1")
        );
        // Empty members are dropped; past 32 members nothing more is taken.
        let padded = format!("k=v{}garbage that is not a member", ",".repeat(40));
        assert_eq!(pass(&padded).as_deref(), Some("k=v"));
        assert_eq!(pass("not a trace state!"), None);
        assert_eq!(pass(",,,"), None);
        assert_eq!(pass("k=\u{7}bell"), None);
        assert_eq!(pass(&format!("k={}", "v".repeat(600))), None);
    }
}
