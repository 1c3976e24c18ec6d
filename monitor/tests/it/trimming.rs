//! Trimming never deletes an entry a consumer group has not acknowledged.

use std::time::Duration;

use mindbus::wire::{Command, EntryId, Payload};
use mindbus_monitor::config::MonitorConfig;
use serde_json::json;

use crate::support::Mesh;

#[tokio::test]
async fn trimming_under_a_backlog_keeps_every_unacknowledged_entry() {
    let mesh = Mesh::new("trim").await;
    let stream = mesh.stream("event:{echo}");
    let mut conn = mesh.bus.connection();
    let mut ids = Vec::new();
    for i in 0..100 {
        let id: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(&mut conn)
            .await
            .unwrap();
        ids.push(id.parse::<EntryId>().unwrap());
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("slow")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("slow")
        .arg("c")
        .arg("COUNT")
        .arg(50)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let acked: Vec<String> = ids[..20].iter().map(ToString::to_string).collect();
    let _: i64 = redis::cmd("XACK")
        .arg(&stream)
        .arg("slow")
        .arg(&acked)
        .query_async(&mut conn)
        .await
        .unwrap();

    let config = MonitorConfig {
        retain_entries: 10,
        ..MonitorConfig::default()
    };
    let removed = mindbus_monitor::trim::trim(&mut conn, &stream, None, &config)
        .await
        .unwrap();
    assert_eq!(removed, 20, "only the acknowledged entries go");
    let first: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        first[0].0,
        ids[20].to_string(),
        "the oldest pending entry is kept"
    );

    // Once the group has caught up, the length limit applies.
    let rest: Vec<String> = ids[20..].iter().map(ToString::to_string).collect();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("slow")
        .arg("c")
        .arg("COUNT")
        .arg(100)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XACK")
        .arg(&stream)
        .arg("slow")
        .arg(&rest)
        .query_async(&mut conn)
        .await
        .unwrap();
    mindbus_monitor::trim::trim(&mut conn, &stream, None, &config)
        .await
        .unwrap();
    assert_eq!(mesh.len(&stream).await, 10);
}

#[tokio::test]
async fn a_group_that_has_not_read_yet_blocks_all_trimming() {
    let mesh = Mesh::new("trim2").await;
    let stream = mesh.stream("result:{echo}");
    let mut conn = mesh.bus.connection();
    for i in 0..30 {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("late")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let config = MonitorConfig {
        retain_entries: 5,
        ..MonitorConfig::default()
    };
    assert_eq!(
        mindbus_monitor::trim::trim(&mut conn, &stream, None, &config)
            .await
            .unwrap(),
        0
    );
    assert_eq!(mesh.len(&stream).await, 30);
}

/// Commands published before any agent of their role started: the monitor's group is the
/// only one on the stream, yet the monitor trims none of them, and the agent that starts
/// later runs them all.
#[tokio::test]
async fn commands_queued_before_the_first_agent_are_never_trimmed() {
    let mesh = Mesh::new("trim-queued").await;
    let db = crate::support::TestDb::new("trimqueued").await;
    for i in 0..50 {
        let command = Command::new("echo.say", Payload::json(json!({"i": i})));
        mesh.bus.publish("echo", &command).await.unwrap();
    }
    let _monitor = mesh.monitor_retaining(&db, &[], 10);
    let commands = mesh.stream("cmd:{echo}");
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    crate::testenv::eventually(
        Duration::from_secs(30),
        "the monitor recorded the commands",
        || async {
            let (have, _) = crate::support::recorded(&pool).await;
            (have.iter().filter(|(s, _)| *s == commands).count() == 50).then_some(())
        },
    )
    .await;
    // A trimming round after everything was recorded: 30 events added now, once recorded,
    // are trimmed to 10 in a round that also looked at the commands.
    let events = mesh.stream("event:{echo}");
    for i in 0..30 {
        let _: String = redis::cmd("XADD")
            .arg(&events)
            .arg("*")
            .arg("type")
            .arg("x.filler")
            .arg("n")
            .arg(i)
            .query_async(&mut mesh.bus.connection())
            .await
            .unwrap();
    }
    crate::testenv::eventually(Duration::from_secs(30), "the events trimmed", || async {
        (mesh.len(&events).await <= 10).then_some(())
    })
    .await;
    assert_eq!(
        mesh.len(&commands).await,
        50,
        "nothing the role has not read is trimmed"
    );
    mesh.agent();
    mesh.wait_results(50, Duration::from_secs(30)).await;
}

/// An entry over `monitor.max_row_bytes` is recorded as a flagged preview and acknowledged
/// with its batch: nothing waits behind it.
#[tokio::test]
async fn an_entry_too_large_for_a_row_is_recorded_as_a_flagged_preview() {
    let mesh = Mesh::new("bigrow").await;
    let db = crate::support::TestDb::new("bigrow").await;
    let events = mesh.stream("event:{echo}");
    let big: String = redis::cmd("XADD")
        .arg(&events)
        .arg("*")
        .arg("type")
        .arg("x.big")
        .arg("blob")
        .arg(vec![b'x'; 100_000])
        .query_async(&mut mesh.bus.connection())
        .await
        .unwrap();
    for i in 0..20 {
        let command = Command::new("echo.say", Payload::json(json!({"i": i})));
        mesh.bus.publish("echo", &command).await.unwrap();
    }
    let mut monitor = mesh.monitor_retaining(&db, &[], 0);
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    crate::support::wait_recorded(&mesh, &pool, Duration::from_secs(30)).await;
    let (ms, seq) = big.split_once('-').unwrap();
    // By stream too: a command published in the same millisecond has the same entry id.
    let (why, fields): (String, serde_json::Value) = sqlx::query_as(
        "SELECT malformed, fields FROM mindbus_entries \
         WHERE stream = $1 AND entry_ms = $2 AND entry_seq = $3",
    )
    .bind(&events)
    .bind(ms.parse::<i64>().unwrap())
    .bind(seq.parse::<i64>().unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(why.contains("too large to record whole"), "{why}");
    assert_eq!(fields["type"], "x.big");
    assert!(fields["blob"].as_str().unwrap().len() < 1_000);
    let _ = monitor.kill().await;
}
