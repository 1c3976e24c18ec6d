//! An agent exporting traces: its spans continue the trace a command carries, and its log
//! lines name the span they were written in.

use std::time::Duration;

use mindbus::wire::{Command, Payload, Status};
use mindbus_testkit::otlp::Receiver;
use serde_json::{Value, json};

use crate::support::Mesh;
use crate::testenv::eventually;

/// A command that fails once is retried: its warning, written inside the command's consumer
/// span, carries that span's ids in the JSON log line, and the trace is the one the
/// command's `traceparent` named, with one span per attempt.
#[tokio::test]
async fn log_lines_and_spans_of_a_retried_command_carry_its_trace() {
    let receiver = Receiver::start().await;
    let mesh = Mesh::new("traced").await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("MINDBUS_LOG__FORMAT", "json"),
    ];
    let _agent = mesh.agent_logging(&env, log.reopen().unwrap());
    let mut command = Command::new("echo.say", Payload::json(json!({"fail_attempts": 1})));
    command.envelope.tracestate = Some("vendor=abc,other=1".into());
    let trace = command.envelope.traceparent.trace_id_hex();
    let result = mesh.call(command).await;
    assert_eq!(result.status, Status::Completed);

    let spans = eventually(
        Duration::from_secs(20),
        "the spans did not arrive",
        || async {
            let spans: Vec<_> = receiver
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace)
                .collect();
            // The consumer span ends after its attempts, and may come in a later batch.
            let attempts = spans
                .iter()
                .filter(|s| s.name.starts_with("attempt "))
                .count();
            let handled = spans.iter().any(|s| s.name.starts_with("process "));
            (attempts == 2 && handled).then_some(spans)
        },
    )
    .await;
    let handled = spans
        .iter()
        .find(|s| s.name.starts_with("process "))
        .expect("a consumer span");
    assert_eq!(handled.service, "mindbus-agent");
    // The producer's vendor state rides on with the trace.
    assert_eq!(handled.trace_state, "vendor=abc,other=1");
    assert_eq!(handled.attributes["messaging.consumer.group.name"], "echo");
    for n in ["attempt 1", "attempt 2"] {
        let attempt = spans.iter().find(|s| s.name == n).expect(n);
        assert_eq!(
            attempt.parent_id, handled.span_id,
            "{n} is under the consumer span"
        );
    }

    let text = std::fs::read_to_string(log.path()).unwrap();
    let failed: Value = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "attempt failed")
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert_eq!(failed["trace_id"], json!(trace), "{failed}");
    assert_eq!(failed["span_id"], json!(handled.span_id), "{failed}");
}
