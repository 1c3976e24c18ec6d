//! One trace follows a request from HTTP through the gateway, the orchestrator and each
//! step's agent, as real processes export it over OTLP/HTTP to a real receiver.

use std::collections::HashMap;
use std::time::Duration;

use mindbus_testkit::otlp::{Receiver, Span};

use crate::stack::Stack;
use crate::testenv::eventually;

#[tokio::test]
async fn one_request_that_starts_a_two_step_run_is_one_trace_across_the_processes() {
    let receiver = Receiver::start().await;
    let stack = Stack::traced("traced", &receiver.endpoint).await;
    let ended = stack.two_step_run("traces").await;
    assert_eq!(ended.data["data"]["status"], "completed");

    // The request's trace, once the two steps' agent spans have arrived.
    let trace = eventually(
        Duration::from_secs(20),
        "the run's spans did not arrive",
        || async {
            let spans = receiver.spans();
            let request = spans
                .iter()
                .find(|s| s.service == "mindbus-gateway" && s.name == "POST /v1/runs")?;
            let trace: Vec<Span> = spans
                .iter()
                .filter(|s| s.trace_id == request.trace_id)
                .cloned()
                .collect();
            // Each process sends its spans on its own schedule: wait for the last of them,
            // both steps' sends and both steps' handling.
            let count = |service: &str, name: &str| {
                trace
                    .iter()
                    .filter(|s| s.service == service && s.name.starts_with(name))
                    .filter(|s| s.name.ends_with(":cmd:{echo}"))
                    .count()
            };
            let sent = count("mindbus-orchestrator", "send ");
            let handled = count("mindbus-agent", "process ");
            (sent == 2 && handled == 2).then_some(trace)
        },
    )
    .await;
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent = |span: &Span| by_id.get(span.parent_id.as_str()).copied();
    let named = |service: &str, name: &str| -> Vec<&Span> {
        trace
            .iter()
            .filter(|s| s.service == service && s.name.starts_with(name))
            .collect()
    };
    let shown = || {
        trace
            .iter()
            .map(|s| format!("{} {} {} <- {}", s.service, s.name, s.span_id, s.parent_id))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // gateway: the request, and under it the run.start command sent to the orchestrator.
    let request = named("mindbus-gateway", "POST /v1/runs")[0];
    let start = named("mindbus-gateway", "send ");
    assert_eq!(start.len(), 1, "{}", shown());
    assert_eq!(parent(start[0]).map(|p| &p.span_id), Some(&request.span_id));
    assert!(start[0].attributes["messaging.destination.name"].ends_with(":cmd:{orchestrator}"));

    // orchestrator: the start handled under the gateway's send, and each step sent under it.
    let handled = named("mindbus-orchestrator", "process ");
    assert_eq!(handled.len(), 1, "{}", shown());
    assert_eq!(
        parent(handled[0]).map(|p| &p.span_id),
        Some(&start[0].span_id)
    );
    let steps: Vec<&Span> = named("mindbus-orchestrator", "send ")
        .into_iter()
        .filter(|s| s.attributes["messaging.destination.name"].ends_with(":cmd:{echo}"))
        .collect();
    assert_eq!(steps.len(), 2, "{}", shown());
    for step in &steps {
        let run = parent(step).unwrap_or_else(|| panic!("{}", shown()));
        assert_eq!(run.service, "mindbus-orchestrator");
        assert_eq!(parent(run).map(|p| &p.span_id), Some(&handled[0].span_id));
    }

    // agents: each step handled under its send, with the messaging conventions, and its
    // handler's attempt under that.
    for agent in named("mindbus-agent", "process ") {
        let sent = parent(agent).unwrap_or_else(|| panic!("{}", shown()));
        assert!(
            steps.iter().any(|s| s.span_id == sent.span_id),
            "{}",
            shown()
        );
        let a = &agent.attributes;
        assert_eq!(a["messaging.system"], "redis");
        assert_eq!(a["messaging.operation.type"], "process");
        assert_eq!(a["messaging.consumer.group.name"], "echo");
        assert!(a["messaging.destination.name"].ends_with(":cmd:{echo}"));
        assert_eq!(
            a["messaging.message.id"],
            sent.attributes["messaging.message.id"]
        );
        let attempts = trace
            .iter()
            .filter(|s| s.parent_id == agent.span_id && s.name == "attempt 1")
            .count();
        assert_eq!(attempts, 1, "{}", shown());
    }
}
