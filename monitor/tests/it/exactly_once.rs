//! Every command, result and event entry ends up in Postgres exactly once.

use std::time::Duration;

use mindbus::wire::{Command, Payload};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::support::{Mesh, TestDb, wait_recorded};

async fn publish(mesh: &Mesh, from: usize, to: usize) {
    for i in from..to {
        mesh.bus
            .publish(
                "echo",
                &Command::new("echo.say", Payload::json(json!({"i": i}))),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_commands_are_recorded_exactly_once() {
    let db = TestDb::new("once").await;
    let mesh = Mesh::new("once").await;
    mesh.agent();
    let _monitor = mesh.monitor(&db, &[]);
    publish(&mesh, 0, 10_000).await;
    mesh.wait_results(10_000, Duration::from_secs(120)).await;
    let pool = db.pool().await;
    let recorded = wait_recorded(&mesh, &pool, Duration::from_secs(120)).await;
    assert!(
        recorded.len() >= 50_000,
        "commands, results and three events each: {}",
        recorded.len()
    );

    let (commands, results): (i64, i64) = sqlx::query_as("SELECT count(*) FILTER (WHERE kind = 'command'), count(*) FILTER (WHERE kind = 'result' AND status = 'completed') FROM mindbus_entries").fetch_one(&pool).await.unwrap();
    assert_eq!((commands, results), (10_000, 10_000));
    let joined: i64 = sqlx::query_scalar("SELECT count(*) FROM mindbus_entries c JOIN mindbus_entries r ON r.correlation_id = c.id AND r.kind = 'result' WHERE c.kind = 'command'").fetch_one(&pool).await.unwrap();
    assert_eq!(
        joined, 10_000,
        "every command row finds its result row by id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_monitor_mid_batch_loses_and_duplicates_nothing() {
    let db = TestDb::new("kill").await;
    let mesh = Mesh::new("kill").await;
    mesh.agent();
    let first = mesh.monitor(&db, &["--lease-ms", "1000"]);
    let pool = db.pool().await;
    publish(&mesh, 0, 3_000).await;
    // Kill it once it has recorded something but not everything.
    let what = "the first monitor recorded nothing";
    crate::testenv::eventually(Duration::from_secs(30), what, || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM mindbus_entries")
            .fetch_one(&pool)
            .await
            .ok()?;
        (rows > 0).then_some(())
    })
    .await;
    kill(Pid::from_raw(first.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    publish(&mesh, 3_000, 4_000).await;
    let _second = mesh.monitor(&db, &["--lease-ms", "1000"]);
    mesh.wait_results(4_000, Duration::from_secs(60)).await;
    let recorded = wait_recorded(&mesh, &pool, Duration::from_secs(60)).await;
    assert!(recorded.len() >= 20_000);
}
