//! Poison and malformed commands end in the dead-letter stream; everything else is served.

use std::time::Duration;

use mindbus::wire::{Command, ErrorType, EventKind, Payload, Status};
use serde_json::json;

use crate::support::{Mesh, by_command};

#[tokio::test]
async fn a_command_that_always_panics_is_dead_lettered_after_maxattempts() {
    let mesh = Mesh::new("poison").await;
    let _agent = mesh.timeline_agent(&["--concurrency", "4"]);
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

    let letters = mesh.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.deliveries, 3);
    assert!(letter.reason.contains("panicked"), "{}", letter.reason);
    let started = mesh
        .events()
        .await
        .into_iter()
        .filter(|e| {
            e.correlationid == Some(poison.envelope.id.clone())
                && e.kind() == Some(EventKind::Started)
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
    let letters = mesh.dead_letters().await;
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
    mesh.wait_len(&mesh.stream("dlq:{echo}"), 1, Duration::from_secs(20))
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
        mesh.entries(&mesh.stream("dlq:{echo}")).await.len(),
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
    mesh.wait_len(&mesh.stream("dlq:{echo}"), 1, Duration::from_secs(20))
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

/// A `replyto` that is not a reply stream of the command's role (`<prefix>:reply:{<role>}:`)
/// is malformed: the event stream (which has no group
/// here, so nothing else guards it) is neither capped nor given a TTL, and nothing is
/// written to it but the mesh's own events.
#[tokio::test]
async fn a_replyto_naming_a_stream_of_the_mesh_is_malformed_and_touches_nothing() {
    let mesh = Mesh::new("replyto").await;
    let events = mesh.stream("event:{echo}");
    let mut conn = mesh.bus.connection();
    mesh.fill(&events, 3_000).await;
    let _agent = mesh.agent(&[]);
    let targets = [
        events.clone(),
        mesh.stream("result:{echo}"),
        mesh.stream("control"),
        mesh.stream("cmd:{other}"),
        mesh.stream("reply:{echo}:"),
        mesh.stream("reply:{other}:x"),
        mesh.stream("reply:x"),
    ];
    for target in &targets {
        mesh.xadd_cli(&["type", "echo.say", "replyto", target]);
    }
    let results = mesh
        .wait_results(targets.len(), Duration::from_secs(20))
        .await;
    assert!(results.iter().all(|r| r.status == Status::Failed));
    let letters = mesh.dead_letters().await;
    assert_eq!(letters.len(), targets.len());
    for letter in &letters {
        assert_eq!(letter.errortype, ErrorType::Malformed);
        assert!(letter.reason.contains("replyto"), "{}", letter.reason);
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg(&events)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "the event stream has no TTL");
    let kept = mesh.entries(&events).await;
    assert!(
        kept.len() >= 3_000,
        "nothing trimmed: {} entries",
        kept.len()
    );
    for other in &targets[1..] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(other)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl < 0, "{other} has no TTL");
    }
    let other_len: usize = redis::cmd("XLEN")
        .arg(&targets[3])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        other_len, 0,
        "nothing was written to another role's commands"
    );
}

/// A reply stream that somebody gave a consumer group is written to, but never capped or
/// expired.
#[tokio::test]
async fn a_reply_stream_with_a_group_is_neither_capped_nor_expired() {
    let mesh = Mesh::new("replygroup").await;
    let reply = mesh.stream("reply:{echo}:grouped");
    let mut conn = mesh.bus.connection();
    mindbus::streams::ensure_group(&mut conn, &reply, "mine", "0")
        .await
        .unwrap();
    mesh.fill(&reply, 2_000).await;
    let _agent = mesh.agent(&[]);
    mesh.xadd_cli(&["type", "echo.say", "replyto", &reply]);
    mesh.wait_results(1, Duration::from_secs(20)).await;
    let len: usize = redis::cmd("XLEN")
        .arg(&reply)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 2_001, "the result is added and nothing trimmed");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&reply)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, -1);
}

/// An entry with more fields than a command may have is dead-lettered whole, with a reason
/// naming the limit, and the agent goes on serving.
#[tokio::test]
async fn an_entry_with_thousands_of_fields_is_dead_lettered_whole() {
    let mesh = Mesh::new("manyfields").await;
    let stream = mesh.stream("cmd:{echo}");
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&stream).arg("*").arg("type").arg("echo.say");
    for i in 0..4_100 {
        cmd.arg(format!("x{i}")).arg(format!("value {i}"));
    }
    let mut conn = mesh.bus.connection();
    let id: String = cmd.query_async(&mut conn).await.unwrap();
    let _agent = mesh.agent(&[]);
    mesh.bus
        .publish(
            "echo",
            &Command::new("echo.say", Payload::json(json!({"ok": true}))),
        )
        .await
        .unwrap();
    let results = mesh.wait_results(2, Duration::from_secs(20)).await;
    assert_eq!(by_command(&results).len(), 2);
    let letters = mesh.dead_letters().await;
    assert_eq!(letters.len(), 1, "one dead letter");
    let letter = &letters[0];
    assert_eq!(letter.entry.to_string(), id);
    assert_eq!(letter.errortype, ErrorType::Malformed);
    assert!(letter.reason.contains("4101 fields"), "{}", letter.reason);
    assert_eq!(letter.original.len(), 4_101, "the entry whole");
    assert_eq!(
        letter.original[4_100],
        ("x4099".into(), b"value 4099".to_vec())
    );
    assert!(mesh.pending().await.is_empty());
}

/// A finish whose dead letter cannot be written (the dead-letter stream replaced by a key
/// of another type) writes nothing and leaves its entry pending, rather than acknowledging
/// it without its dead letter; once the key is fixed the same finish goes through whole.
#[tokio::test]
async fn a_finish_that_cannot_be_written_leaves_its_entry_pending() {
    let mesh = Mesh::new("finishorder").await;
    let dlq = mesh.stream("dlq:{echo}");
    let mut conn = mesh.bus.connection();
    let _: () = redis::cmd("SET")
        .arg(&dlq)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let _agent = mesh.agent_logging(&[], log.reopen().unwrap());
    mesh.xadd_cli(&["data", r#"{"no":"type"}"#]);
    // The finish was tried, refused, and is being retried.
    crate::testenv::eventually(Duration::from_secs(20), "a refused write", || async {
        let text = std::fs::read_to_string(log.path()).unwrap();
        (text.matches("writing to redis failed").count() >= 2).then_some(())
    })
    .await;
    assert_eq!(
        mesh.pending().await.len(),
        1,
        "still pending: nothing acknowledged"
    );
    assert_eq!(
        mesh.results().await.len(),
        0,
        "no result without its dead letter"
    );
    let _: () = redis::cmd("DEL")
        .arg(&dlq)
        .query_async(&mut conn)
        .await
        .unwrap();
    mesh.wait_results(1, Duration::from_secs(20)).await;
    assert_eq!(mesh.dead_letters().await.len(), 1);
    assert!(mesh.pending().await.is_empty());
}
