//! `mindbus trace` and `mindbus events` read the recorded history back.

use std::time::Duration;

use mindbus::wire::{Command, Payload};
use serde_json::{Value, json};

use crate::support::{Mesh, TestDb, redis_url, wait_recorded};

fn cli(mesh: &Mesh, db: &TestDb, args: &[&str]) -> String {
    let path =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_mindbus-monitor")).with_file_name("mindbus");
    let out = std::process::Command::new(&path)
        .args([
            "--prefix",
            &mesh.prefix,
            "--redis-url",
            &redis_url(),
            "--database-url",
            &db.url,
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} runs (build the workspace): {e}", path.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Sends `command` to the echo agent, waits for its result and for the monitor to record
/// everything; returns the command's id.
async fn answered_and_recorded(mesh: &Mesh, db: &TestDb, command: Command) -> String {
    let id = command.envelope.id.to_string();
    mesh.bus
        .call("echo", command, Duration::from_secs(20))
        .await
        .unwrap()
        .expect("a result");
    wait_recorded(mesh, &db.pool().await, Duration::from_secs(30)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_shows_a_commands_whole_timeline_in_order() {
    let db = TestDb::new("trace").await;
    let mesh = Mesh::new("trace").await;
    mesh.agent();
    let _monitor = mesh.monitor(&db, &[]);
    let mut command = Command::new("echo.say", Payload::json(json!({"fail_attempts": 1})));
    command.runid = Some("run-42".into());
    let id = answered_and_recorded(&mesh, &db, command).await;

    let trace = cli(&mesh, &db, &["trace", &id]);
    let order = [
        "echo.say",
        "mindbus.command.received",
        "mindbus.command.started",
        "mindbus.command.retried",
        "mindbus.result",
        "mindbus.command.completed",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|t| {
            trace
                .find(t)
                .unwrap_or_else(|| panic!("{t} missing from:\n{trace}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order:\n{trace}"
    );
    assert_eq!(
        cli(&mesh, &db, &["trace", "run-42"]).lines().count(),
        trace.lines().count(),
        "a run id finds the same timeline"
    );

    let lines = cli(
        &mesh,
        &db,
        &["events", "--type", "mindbus.result", "--json"],
    );
    let results: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["correlationid"], id.as_str());
    assert_eq!(results[0]["status"], "completed");
    assert_eq!(results[0]["attempt"], "2", "the retry answered");

    // A first attempt's result leaves `attempt` off the wire; the log still says 1.
    let first = Command::new("echo.say", Payload::json(json!({"n": 1})));
    let first_id = answered_and_recorded(&mesh, &db, first).await;
    let lines = cli(
        &mesh,
        &db,
        &["events", "--type", "mindbus.result", "--json"],
    );
    let first_result = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["correlationid"] == first_id.as_str())
        .unwrap_or_else(|| panic!("no result for {first_id} in:\n{lines}"));
    assert_eq!(first_result["attempt"], "1");
    let trace = cli(&mesh, &db, &["trace", &first_id]);
    assert!(!trace.contains("null"), "a detail of null shown:\n{trace}");
}
