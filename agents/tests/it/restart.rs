//! An agent keeps working across a kill and restart of its (private, AOF) Redis.

use std::time::Duration;

use mindbus::wire::{Command, EventKind, Payload, Status};
use serde_json::json;

use mindbus_testkit::servers::{Persistence, PrivateRedis};

use crate::support::{Mesh, by_command};

#[tokio::test]
async fn agent_survives_a_redis_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = PrivateRedis::start(dir.path(), Persistence::AofAlways);
    let mesh = Mesh::on(&server.url(), "restart").await;
    let _agent = mesh.agent(&[]);
    let send = |i: usize| Command::new("echo.say", Payload::json(json!({"i": i})));
    for i in 0..100 {
        mesh.bus.publish("echo", &send(i)).await.unwrap();
    }
    mesh.wait_results(100, Duration::from_secs(20)).await;

    server.restart();
    // The client's shared connection reconnects after a failed request; retry until it does.
    for i in 100..200 {
        let command = send(i);
        for _ in 0..50 {
            if mesh.bus.publish("echo", &command).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let results = mesh.wait_results(200, Duration::from_secs(60)).await;
    let counts = by_command(&results);
    assert_eq!(counts.len(), 200, "no command lost across the restart");
    assert!(results.iter().all(|r| r.status == Status::Completed));
    drop(server);
}

/// Reconnecting does not count as a delivery: a command running through several dropped
/// connections is still on its first delivery, and its one result says attempt 1.
#[tokio::test]
async fn reconnects_do_not_count_as_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateRedis::start(dir.path(), Persistence::None);
    let mesh = Mesh::on(&server.url(), "reconnect").await;
    let _agent = mesh.timeline_agent(&[]);
    mesh.wait_consumers(1).await;
    let mut command = Command::new("echo.say", Payload::json(json!({"sleep_ms": 60_000})));
    command.maxattempts = Some(2);
    mesh.bus.publish("echo", &command).await.unwrap();
    crate::testenv::eventually(Duration::from_secs(10), "the command started", || async {
        mesh.any_started().await.then_some(())
    })
    .await;
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for _ in 0..3 {
        // Every connection but this one: the agent's reads and writes, and the test's bus.
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut admin)
            .await
            .unwrap();
        // Back: the agent's read loop reconnected, recovered, and blocks on a new read.
        let what = "the agent reading again after the kill";
        crate::testenv::eventually(Duration::from_secs(10), what, || async {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut admin.clone())
                .await
                .ok()?;
            clients.contains("cmd=xreadgroup").then_some(())
        })
        .await;
    }
    // The test's own connection was cut too: the first request after that fails.
    let conn = mesh.bus.connection();
    crate::testenv::eventually(
        Duration::from_secs(10),
        "the test's connection back",
        || {
            let mut conn = conn.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            }
        },
    )
    .await;
    let pending = mesh.pending().await;
    assert_eq!(pending.len(), 1, "the command still runs");
    assert_eq!(
        pending[0].2, 1,
        "still its first delivery after three reconnects"
    );
    // Ended by a cancel: its one result is still the first delivery's.
    mesh.bus.cancel(&command.envelope.id).await.unwrap();
    let results = mesh.wait_results(1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, Status::Canceled);
    assert_eq!(results[0].attempt, 1);
}

/// The finish script is called by its hash: a Redis that forgot it (a `SCRIPT FLUSH`, or a
/// restart without persistence) is given it again, and the command is answered once, each
/// of its events written once.
#[tokio::test]
async fn a_redis_that_forgot_the_finish_script_is_given_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateRedis::start(dir.path(), Persistence::None);
    let mesh = Mesh::on(&server.url(), "noscript").await;
    let _agent = mesh.timeline_agent(&[]);
    let call = |i: usize| {
        let command = Command::new("echo.say", Payload::json(json!({"i": i})));
        let id = command.envelope.id.clone();
        let bus = mesh.bus.clone();
        async move {
            let result = bus.call("echo", command, Duration::from_secs(20)).await;
            (id, result.unwrap().expect("a result"))
        }
    };
    let (_, first) = call(0).await;
    assert_eq!(first.status, Status::Completed);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut mesh.bus.connection())
        .await
        .unwrap();
    let (id, second) = call(1).await;
    assert_eq!(second.status, Status::Completed);
    let results = mesh.wait_results(2, Duration::from_secs(20)).await;
    assert_eq!(by_command(&results).get(&id), Some(&1), "answered once");
    let events = mesh.events().await;
    let of_second: Vec<_> = events
        .iter()
        .filter(|e| e.correlationid.as_ref() == Some(&id))
        .filter_map(|e| e.kind())
        .collect();
    assert_eq!(
        of_second,
        [
            EventKind::Received,
            EventKind::Started,
            EventKind::Completed
        ],
        "each event once, in order"
    );
    drop(server);
}

/// Redis out of memory while commands run: their finishes are refused whole (none is
/// acknowledged without its result), and once memory is back each is answered once. A
/// finish that acknowledged and then failed its write would lose its command.
#[tokio::test]
async fn finishes_refused_out_of_memory_are_answered_once_memory_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = PrivateRedis::start(dir.path(), Persistence::None);
    let mesh = Mesh::on(&server.url(), "oom").await;
    let _agent = mesh.agent(&[]);
    mesh.wait_consumers(1).await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let command = Command::new("echo.say", Payload::json(json!({"i": i, "sleep_ms": 1500})));
        mesh.bus.publish("echo", &command).await.unwrap();
        sent.push(command.envelope.id);
    }
    crate::testenv::eventually(
        Duration::from_secs(10),
        "the agent took every command",
        || async { (mesh.pending().await.len() == 20).then_some(()) },
    )
    .await;
    let mut conn = mesh.bus.connection();
    let config = |value: &str| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("maxmemory").arg(value);
        cmd
    };
    let () = config("1").query_async(&mut conn).await.unwrap();
    // The finishes are tried while memory is out: refused (an OOM error), or, were a
    // finish to acknowledge and then fail its write, an entry no longer pending.
    crate::testenv::eventually(Duration::from_secs(20), "a finish was tried", || async {
        let stats: String = redis::cmd("INFO")
            .arg("errorstats")
            .query_async(&mut mesh.bus.connection())
            .await
            .ok()?;
        (stats.contains("errorstat_OOM") || mesh.pending().await.len() < 20).then_some(())
    })
    .await;
    assert_eq!(
        mesh.pending().await.len(),
        20,
        "a command was acknowledged without its result"
    );
    let () = config("0").query_async(&mut conn).await.unwrap();
    let results = mesh.wait_results(20, Duration::from_secs(30)).await;
    let counts = by_command(&results);
    assert!(
        sent.iter().all(|id| counts.get(id) == Some(&1)),
        "every command answered once: {counts:?}"
    );
}
