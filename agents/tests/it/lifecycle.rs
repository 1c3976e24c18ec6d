//! Deadlines, cancellation, retries, SIGTERM and a Redis restart.

use std::time::Duration;

use mindbus::wire::{Command, ErrorType, EventKind, Payload, Status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::time::Instant;

use crate::support::{Mesh, by_command};

#[tokio::test]
async fn an_expired_command_is_not_run() {
    let mesh = Mesh::new("deadline").await;
    let _agent = mesh.timeline_agent(&[]);
    mesh.xadd_cli(&[
        "type",
        "echo.say",
        "data",
        "{}",
        "deadline",
        "2020-01-01T00:00:00Z",
    ]);
    let result = mesh
        .wait_results(1, Duration::from_secs(20))
        .await
        .remove(0);
    assert_eq!(result.status, Status::Failed);
    assert_eq!(
        result.failure.unwrap().errortype,
        ErrorType::DeadlineExceeded
    );
    assert!(!mesh.any_started().await, "it never started");
}

#[tokio::test]
async fn a_running_command_stops_at_its_deadline() {
    let mesh = Mesh::new("deadline2").await;
    let _agent = mesh.agent(&[]);
    let mut command = Command::new("echo.say", Payload::json(json!({"sleep_ms": 60_000})));
    command.deadline = Some(jiff::Timestamp::now() + Duration::from_millis(500));
    let result = mesh.call(command).await;
    assert_eq!(
        result.failure.unwrap().errortype,
        ErrorType::DeadlineExceeded
    );
}

#[tokio::test]
async fn a_cancelled_long_command_stops_and_reports_canceled() {
    let mesh = Mesh::new("cancel").await;
    let _agent = mesh.timeline_agent(&[]);
    let command = Command::new("echo.say", Payload::json(json!({"sleep_ms": 60_000})));
    let id = command.envelope.id.clone();
    mesh.bus.publish("echo", &command).await.unwrap();
    mesh.wait_len(&mesh.stream("event:{echo}"), 2, Duration::from_secs(20))
        .await; // received, started
    let cancelled_at = Instant::now();
    mesh.bus.cancel(&id).await.unwrap();
    let result = mesh
        .wait_results(1, Duration::from_secs(20))
        .await
        .remove(0);
    assert_eq!(result.correlationid, id);
    assert_eq!(result.status, Status::Canceled);
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "stopped long before its 60 s of work"
    );
}

#[tokio::test]
async fn a_command_cancelled_before_any_agent_starts_never_runs() {
    let mesh = Mesh::new("cancel-early").await;
    let command = Command::new("echo.say", Payload::json(json!({"sleep_ms": 10})));
    mesh.bus.publish("echo", &command).await.unwrap();
    mesh.bus.cancel(&command.envelope.id).await.unwrap();
    let _agent = mesh.timeline_agent(&[]);
    let result = mesh
        .wait_results(1, Duration::from_secs(20))
        .await
        .remove(0);
    assert_eq!(result.status, Status::Canceled);
    assert!(!mesh.any_started().await, "it never started");
}

#[tokio::test]
async fn retryable_failures_are_retried_with_backoff() {
    let mesh = Mesh::new("retry").await;
    let _agent = mesh.agent(&[]);
    let command = Command::new("echo.say", Payload::json(json!({"fail_attempts": 2})));
    let result = mesh.call(command).await;
    assert_eq!(result.status, Status::Completed);
    assert_eq!(result.attempt, 3);
    let retried = mesh
        .events()
        .await
        .iter()
        .filter(|e| e.kind() == Some(EventKind::Retried))
        .count();
    assert_eq!(retried, 2);
}

#[tokio::test]
async fn sigterm_during_work_exits_0_and_loses_nothing() {
    let mesh = Mesh::new("sigterm").await;
    let mut first = mesh.timeline_agent(&[
        "--concurrency",
        "8",
        "--shutdown-grace-ms",
        "5000",
        "--lease-ms",
        "2000",
    ]);
    mesh.wait_consumers(1).await;
    let total = 40;
    for i in 0..total {
        mesh.bus
            .publish(
                "echo",
                &Command::new("echo.say", Payload::json(json!({"i": i, "sleep_ms": 300}))),
            )
            .await
            .unwrap();
    }
    mesh.wait_len(&mesh.stream("event:{echo}"), 4, Duration::from_secs(20))
        .await;
    kill(Pid::from_raw(first.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), first.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    let pending = mesh.pending().await;
    assert!(
        pending.is_empty(),
        "in-flight work finished and was acknowledged before exit: {pending:?}"
    );
    let _second = mesh.timeline_agent(&[]);
    let results = mesh.wait_results(total, Duration::from_secs(30)).await;
    assert_eq!(by_command(&results).len(), total, "nothing lost");
}

#[tokio::test]
async fn sigterm_past_the_grace_period_hands_work_back() {
    let mesh = Mesh::new("handback").await;
    let mut first = mesh.timeline_agent(&["--shutdown-grace-ms", "200", "--lease-ms", "1000"]);
    let command = Command::new("echo.say", Payload::json(json!({"sleep_ms": 3_000})));
    mesh.bus.publish("echo", &command).await.unwrap();
    mesh.wait_len(&mesh.stream("event:{echo}"), 2, Duration::from_secs(20))
        .await;
    kill(Pid::from_raw(first.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    assert!(first.wait().await.unwrap().success());
    let _second = mesh.timeline_agent(&["--lease-ms", "1000"]);
    let result = mesh
        .wait_results(1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(result.status, Status::Completed);
    assert_eq!(
        result.attempt, 2,
        "the second agent ran it as a second delivery"
    );
}

#[tokio::test]
async fn commands_with_one_idempotency_key_yield_one_accepted_result() {
    let mesh = Mesh::new("dedup").await;
    let _agent = mesh.timeline_agent(&[]);
    let keyed = |text: &str| {
        let mut command = Command::new("echo.say", Payload::json(json!({"text": text})));
        command.idempotencykey = Some("order-7".into());
        command
    };
    mesh.bus.publish("echo", &keyed("first")).await.unwrap();
    mesh.wait_results(1, Duration::from_secs(20)).await;
    // Another command (another id) with the same key: a late duplicate of the first.
    mesh.bus.publish("echo", &keyed("again")).await.unwrap();
    mesh.wait_len(&mesh.stream("event:{echo}"), 6, Duration::from_secs(20))
        .await;
    assert_eq!(last_event(&mesh).await, Some(EventKind::Duplicate));
    let results = mesh.results().await;
    assert_eq!(results.len(), 1, "the duplicate's result was dropped");
    assert_eq!(results[0].envelope.data.value, json!({"text": "first"}));
    assert!(
        mesh.pending().await.is_empty(),
        "the duplicate was acknowledged"
    );
}

#[tokio::test]
async fn without_an_idempotency_key_a_second_entry_runs_again() {
    let mesh = Mesh::new("nokey").await;
    let _agent = mesh.agent(&[]);
    let command = Command::new("echo.say", Payload::json(json!({"text": "twice"})));
    mesh.bus.publish("echo", &command).await.unwrap();
    mesh.wait_results(1, Duration::from_secs(20)).await;
    mesh.bus.publish("echo", &command).await.unwrap(); // the same id, a new entry
    let results = mesh.wait_results(2, Duration::from_secs(20)).await;
    assert!(
        results
            .iter()
            .all(|r| r.correlationid == command.envelope.id),
        "both entries were answered"
    );
}

/// A consumer that stalls (SIGSTOP) mid-command loses it to another, which runs it again and
/// answers; when the first wakes up and finishes too, its result is dropped.
#[tokio::test]
async fn a_command_run_twice_after_a_reclaim_yields_one_accepted_result() {
    run_twice_after_a_reclaim("stall", false).await;
}

/// The same, with the acknowledged entry trimmed away before the late finish, as the monitor
/// trims: its finish still counts as a duplicate.
#[tokio::test]
async fn a_late_finish_of_a_trimmed_entry_is_still_a_duplicate() {
    run_twice_after_a_reclaim("stalltrim", true).await;
}

async fn run_twice_after_a_reclaim(name: &str, trim: bool) {
    let mesh = Mesh::new(name).await;
    let first = mesh.timeline_agent(&["--lease-ms", "1000"]);
    let command = Command::new("echo.say", Payload::json(json!({"sleep_ms": 1_500})));
    mesh.bus.publish("echo", &command).await.unwrap();
    mesh.wait_len(&mesh.stream("event:{echo}"), 2, Duration::from_secs(20))
        .await;
    let stalled = Pid::from_raw(first.id().unwrap() as i32);
    kill(stalled, Signal::SIGSTOP).unwrap();
    let _second = mesh.timeline_agent(&["--lease-ms", "1000"]);
    let results = mesh.wait_results(1, Duration::from_secs(30)).await;
    assert_eq!(results[0].attempt, 2, "the second agent ran it again");
    if trim {
        let _: i64 = redis::cmd("XTRIM")
            .arg(mesh.stream("cmd:{echo}"))
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut mesh.bus.connection())
            .await
            .unwrap();
    }
    kill(stalled, Signal::SIGCONT).unwrap();
    // received and started twice, completed, then the first agent's late finish.
    mesh.wait_len(&mesh.stream("event:{echo}"), 6, Duration::from_secs(20))
        .await;
    assert_eq!(last_event(&mesh).await, Some(EventKind::Duplicate));
    assert_eq!(mesh.results().await.len(), 1, "one accepted result");
    assert!(mesh.pending().await.is_empty());
}

/// A command whose entry Redis lost while it ran (as in a restart without persistence) is
/// still answered: nothing acknowledged it, though XACK finds nothing to acknowledge.
#[tokio::test]
async fn a_command_whose_entry_redis_lost_while_it_ran_is_answered() {
    let mesh = Mesh::new("lostentry").await;
    let _agent = mesh.timeline_agent(&[]);
    let command = Command::new("echo.say", Payload::json(json!({"sleep_ms": 1_000})));
    mesh.bus.publish("echo", &command).await.unwrap();
    mesh.wait_len(&mesh.stream("event:{echo}"), 2, Duration::from_secs(20))
        .await;
    let _: i64 = redis::cmd("DEL")
        .arg(mesh.stream("cmd:{echo}"))
        .query_async(&mut mesh.bus.connection())
        .await
        .unwrap();
    let results = mesh.wait_results(1, Duration::from_secs(20)).await;
    assert_eq!(results[0].correlationid, command.envelope.id);
    assert_eq!(results[0].status, Status::Completed);
}

async fn last_event(mesh: &Mesh) -> Option<EventKind> {
    mesh.events().await.last().and_then(|e| e.kind())
}
