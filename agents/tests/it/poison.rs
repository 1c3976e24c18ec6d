//! Poison and malformed commands end in the dead-letter stream; everything else is served.

use std::time::Duration;

use mindbus::wire::{Command, DeadLetter, ErrorType, EventKind, Payload, Status};
use serde_json::json;

use crate::support::{Mesh, by_command};

#[tokio::test]
async fn a_command_that_always_panics_is_dead_lettered_after_maxattempts() {
    let mesh = Mesh::new("poison").await;
    let _agent = mesh.agent(&["--concurrency", "4"]);
    let mut poison = Command::new("echo.say", Payload::json(json!({"panic": true})));
    poison.maxattempts = Some(3);
    mesh.bus.publish("echo", &poison).await.unwrap();
    for i in 0..20 {
        mesh.bus
            .publish(
                "echo",
                &Command::new("echo.say", Payload::json(json!({"i": i}))),
            )
            .await
            .unwrap();
    }
    let results = mesh.wait_results(21, Duration::from_secs(30)).await;
    assert!(by_command(&results).values().all(|n| *n == 1));
    let poisoned = results
        .iter()
        .find(|r| r.correlationid == poison.envelope.id)
        .unwrap();
    assert_eq!(poisoned.status, Status::Failed);
    assert_eq!(
        poisoned.failure.as_ref().unwrap().errortype,
        ErrorType::MaxAttemptsExceeded
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| r.status == Status::Completed)
            .count(),
        20,
        "the others are served"
    );

    let letters = mesh.entries(&mesh.stream("dlq")).await;
    assert_eq!(letters.len(), 1);
    let letter = DeadLetter::decode(letters[0].1.clone()).unwrap();
    assert_eq!(letter.deliveries, 3);
    assert!(letter.reason.contains("panicked"), "{}", letter.reason);
    let started = mesh
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.correlationid == Some(poison.envelope.id) && e.kind() == Some(EventKind::Started)
        })
        .count();
    assert_eq!(started, 3, "exactly maxattempts deliveries");
    let pending = mesh.pending().await;
    assert!(pending.is_empty(), "the poison entry was acknowledged");
}

#[tokio::test]
async fn malformed_entries_are_dead_lettered_at_once_naming_the_field() {
    let mesh = Mesh::new("malformed").await;
    let _agent = mesh.agent(&[]);
    mesh.xadd_cli(&["data", r#"{"text":"no type"}"#]);
    mesh.xadd_cli(&["type", "echo.say", "data", r#"{"text":"#]);
    mesh.xadd_cli(&["type", "echo.say", "maxattempts", "many"]);
    mesh.xadd_cli(&["type", "echo.say", "data", r#"{"ok":true}"#]);

    let results = mesh.wait_results(4, Duration::from_secs(20)).await;
    let letters: Vec<DeadLetter> = mesh
        .entries(&mesh.stream("dlq"))
        .await
        .into_iter()
        .map(|(_, f)| DeadLetter::decode(f).unwrap())
        .collect();
    assert_eq!(letters.len(), 3);
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("`type`")), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("`data`") && r.contains("JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("`maxattempts`")),
        "{reasons:?}"
    );
    assert!(
        letters
            .iter()
            .all(|l| l.deliveries == 1 && l.errortype == ErrorType::Malformed)
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| r
                .failure
                .as_ref()
                .is_some_and(|f| f.errortype == ErrorType::Malformed))
            .count(),
        3
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| r.status == Status::Completed)
            .count(),
        1,
        "the good command is served"
    );
}

#[tokio::test]
async fn dlq_retry_sends_a_dead_letter_back_and_it_can_succeed() {
    let mesh = Mesh::new("dlqretry").await;
    let _agent = mesh.agent(&[]);
    let mut command = Command::new("echo.say", Payload::json(json!({"fail_attempts": 1})));
    command.maxattempts = Some(1);
    // With a key, the retry's result is accepted only because retry clears the done key.
    command.idempotencykey = Some("retry-me".into());
    mesh.bus.publish("echo", &command).await.unwrap();
    mesh.wait_len(&mesh.stream("dlq"), 1, Duration::from_secs(20))
        .await;

    let list = mesh.cli().args(["dlq", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("max_attempts_exceeded"));
    let retried = mesh.cli().args(["dlq", "retry", "--all"]).output().unwrap();
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );

    // The retried command arrives with the same id, so its delivery count starts again at 1
    // and attempt 1 fails again; a dead letter with maxattempts 1 retried proves the path.
    let results = mesh.wait_results(2, Duration::from_secs(20)).await;
    assert!(
        results
            .iter()
            .all(|r| r.correlationid == command.envelope.id),
        "the retry keeps the command id"
    );
    assert_eq!(
        mesh.entries(&mesh.stream("dlq")).await.len(),
        1,
        "the retried letter was removed and the new failure recorded"
    );
}

#[tokio::test]
async fn dlq_retry_keeps_a_derived_command_id() {
    let mesh = Mesh::new("dlqderived").await;
    let _agent = mesh.agent(&[]);
    let stream = mesh.stream("cmd:{echo}");
    let entry: mindbus::wire::EntryId = mesh
        .xadd_cli(&[
            "type",
            "echo.say",
            "data",
            r#"{"fail_attempts":1}"#,
            "maxattempts",
            "1",
        ])
        .parse()
        .unwrap();
    let id = mindbus::wire::derived_id(mindbus::wire::Origin {
        stream: &stream,
        entry,
    });
    mesh.wait_len(&mesh.stream("dlq"), 1, Duration::from_secs(20))
        .await;
    let retried = mesh.cli().args(["dlq", "retry", "--all"]).output().unwrap();
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    let results = mesh.wait_results(2, Duration::from_secs(20)).await;
    assert!(
        results.iter().all(|r| r.correlationid == id),
        "a waiter on the original id sees the retry's result too"
    );
}
