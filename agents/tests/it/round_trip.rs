//! A command published with redis-cli or the Rust client gets its result from an echo agent.

use std::time::Duration;

use mindbus::wire::{Command, ContentType, EntryId, Origin, Payload, Status, derived_id};
use serde_json::json;

use crate::support::Mesh;

#[tokio::test]
async fn redis_cli_command_gets_a_result() {
    let mesh = Mesh::new("cli").await;
    let _agent = mesh.agent(&[]);
    let stream = mesh.stream("cmd:{echo}");
    let entry: EntryId = mesh
        .xadd_cli(&["type", "echo.say", "data", r#"{"text":"hi"}"#])
        .parse()
        .unwrap();
    let id = derived_id(Origin {
        stream: &stream,
        entry,
    });

    let results = mesh.wait_results(1, Duration::from_secs(20)).await;
    assert_eq!(
        results[0].correlationid, id,
        "the result answers the command's derived id"
    );
    assert_eq!(results[0].status, Status::Completed);
    assert_eq!(results[0].envelope.data.value, json!({"text": "hi"}));
    assert_eq!(
        results[0].envelope.traceparent.trace_id_hex(),
        id.as_uuid().unwrap().simple().to_string(),
        "the default trace is rooted at the command id"
    );
}

#[tokio::test]
async fn call_waits_on_a_private_reply_stream_in_both_encodings() {
    let mesh = Mesh::new("call").await;
    let _agent = mesh.agent(&[]);
    for content_type in [ContentType::Json, ContentType::MsgPack] {
        let command = Command::new(
            "echo.say",
            Payload {
                content_type,
                value: json!({"n": 7, "list": ["a"]}),
            },
        );
        let id = command.envelope.id.clone();
        let result = mesh.call(command).await;
        assert_eq!(result.correlationid, id);
        assert_eq!(
            result.envelope.data.content_type, content_type,
            "the result answers in the command's encoding"
        );
        assert_eq!(result.envelope.data.value, json!({"n": 7, "list": ["a"]}));
    }
}

#[tokio::test]
async fn events_trace_the_lifecycle_and_unknown_fields_survive() {
    let mesh = Mesh::new("events").await;
    let _agent = mesh.timeline_agent(&[]);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    mesh.xadd_cli(&[
        "type",
        "echo.say",
        "data",
        "{}",
        "traceparent",
        tp,
        "runid",
        "r1",
        "tenant",
        "acme",
    ]);
    let result = mesh
        .wait_results(1, Duration::from_secs(20))
        .await
        .remove(0);
    assert_eq!(result.envelope.traceparent.to_string(), tp);
    assert_eq!(result.runid.as_deref(), Some("r1"));
    mesh.wait_len(&mesh.stream("event:{echo}"), 3, Duration::from_secs(5))
        .await;
    let kinds: Vec<String> = mesh
        .events()
        .await
        .into_iter()
        .map(|e| {
            assert_eq!(
                e.envelope.traceparent.to_string(),
                tp,
                "every event carries the trace"
            );
            assert_eq!(e.correlationid, Some(result.correlationid.clone()));
            e.envelope.ty
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "mindbus.command.received",
            "mindbus.command.started",
            "mindbus.command.completed"
        ]
    );
}

#[tokio::test]
async fn cli_send_wait_prints_the_result() {
    let mesh = Mesh::new("send").await;
    let _agent = mesh.agent(&[]);
    let out = mesh
        .cli()
        .args([
            "send",
            "echo",
            "echo.say",
            r#"{"text":"from the cli"}"#,
            "--wait",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["status"], "completed");
    assert_eq!(printed["data"], json!({"text": "from the cli"}));

    // Flags can come from the environment too.
    let by_env = mesh
        .cli()
        .args(["send", "echo", "echo.say", r#"{"via":"env"}"#])
        .env("MINDBUS_SEND_WAIT", "true")
        .output()
        .unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&by_env.stdout).unwrap();
    assert_eq!(
        printed["data"],
        json!({"via": "env"}),
        "MINDBUS_SEND_WAIT=true waits like --wait"
    );

    let failed = mesh
        .cli()
        .args(["send", "echo", "echo.say", r#"{"fail":"fatal"}"#, "--wait"])
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1), "a failed result exits 1");
}

#[tokio::test]
async fn tail_prints_entries_of_a_quiet_stream() {
    let mesh = Mesh::new("tail").await;
    let _agent = mesh.timeline_agent(&[]);
    mesh.wait_consumers(1).await;
    let mut tail = mesh
        .cli()
        .args(["tail", "--count", "5", "--for-ms", "20000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut started = String::new();
    // Kept open until tail exits, so a later line on stderr cannot break its pipe.
    let mut stderr = std::io::BufReader::new(tail.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut stderr, &mut started).unwrap();
    assert!(started.starts_with("following"), "{started}");
    // One command: its entry, received, started, result, completed; the dead-letter stream
    // stays quiet and must not make tail skip anything.
    mesh.xadd_cli(&["type", "echo.say", "data", "{}"]);
    let out = tail.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "echo.say",
        "mindbus.command.received",
        "mindbus.command.started",
        "mindbus.result",
        "mindbus.command.completed",
    ] {
        assert!(text.contains(kind), "{kind} missing from:\n{text}");
    }
}

/// A producer's own id, in any form CloudEvents allows, is kept: the result answers it, and
/// its default trace is derived from it. An id with a control character is malformed.
#[tokio::test]
async fn a_producers_own_id_is_answered_as_it_is() {
    let mesh = Mesh::new("ownid").await;
    let _agent = mesh.agent(&[]);
    mesh.xadd_cli(&["type", "echo.say", "id", "order-42", "data", r#"{"n":1}"#]);
    mesh.xadd_cli(&["type", "echo.say", "id", "bad\u{7}id"]);
    let results = mesh.wait_results(2, Duration::from_secs(20)).await;
    let ours = results
        .iter()
        .find(|r| r.correlationid.as_str() == "order-42")
        .expect("a result for order-42");
    assert_eq!(ours.status, Status::Completed);
    assert_eq!(ours.envelope.data.value, json!({"n": 1}));
    let expected: mindbus::wire::MessageId = "order-42".parse().unwrap();
    assert_eq!(
        ours.envelope.traceparent.trace_id,
        expected.to_bytes(),
        "the trace is rooted at the id's bytes"
    );
    let refused = results
        .iter()
        .find(|r| r.correlationid.as_str() != "order-42")
        .unwrap();
    assert_eq!(refused.status, Status::Failed);
    assert!(
        refused.failure.as_ref().unwrap().error.contains("`id`"),
        "{:?}",
        refused.failure
    );
}

/// With `agent.events: outcomes`, a command writes no `received` or `started` event, but a
/// retry and the outcome are still told.
#[tokio::test]
async fn outcome_events_only_still_tell_retries_and_outcomes() {
    let mesh = Mesh::new("outcomes").await;
    let _agent = mesh.agent_with_env(&[("MINDBUS_AGENT__EVENTS", "outcomes")]);
    mesh.xadd_cli(&["type", "echo.say", "data", r#"{"fail_attempts":1}"#]);
    let results = mesh.wait_results(1, Duration::from_secs(20)).await;
    assert_eq!(results[0].status, Status::Completed);
    mesh.wait_len(&mesh.stream("event:{echo}"), 2, Duration::from_secs(10))
        .await;
    let kinds: Vec<String> = mesh
        .events()
        .await
        .into_iter()
        .map(|e| e.envelope.ty)
        .collect();
    assert_eq!(
        kinds,
        ["mindbus.command.retried", "mindbus.command.completed"]
    );
}

/// With `agent.events: failures`, a completed command leaves its result alone (the result is
/// the completion record), while a retry and a dead letter are still told.
#[tokio::test]
async fn failure_events_only_leave_a_completed_command_its_result_alone() {
    let mesh = Mesh::new("failures").await;
    let _agent = mesh.agent_with_env(&[("MINDBUS_AGENT__EVENTS", "failures")]);
    mesh.xadd_cli(&["type", "echo.say", "data", r#"{"fail_attempts":1}"#]);
    mesh.xadd_cli(&[
        "type",
        "echo.say",
        "data",
        r#"{"fail_attempts":5}"#,
        "maxattempts",
        "1",
    ]);
    let results = mesh.wait_results(2, Duration::from_secs(20)).await;
    let completed = results.iter().filter(|r| r.status == Status::Completed);
    let failed = results.iter().filter(|r| r.status == Status::Failed);
    assert_eq!((completed.count(), failed.count()), (1, 1));
    mesh.wait_len(&mesh.stream("event:{echo}"), 2, Duration::from_secs(10))
        .await;
    let mut kinds: Vec<String> = mesh
        .events()
        .await
        .into_iter()
        .map(|e| e.envelope.ty)
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["mindbus.command.deadlettered", "mindbus.command.retried"],
        "no received, started or completed event"
    );
}
