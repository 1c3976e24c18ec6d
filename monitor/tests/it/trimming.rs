//! Trimming never deletes an entry a consumer group has not acknowledged.

use mindbus::config::MonitorConfig;
use mindbus::wire::EntryId;

use crate::support::Mesh;

#[tokio::test]
async fn trimming_under_a_backlog_keeps_every_unacknowledged_entry() {
    let mesh = Mesh::new("trim").await;
    let stream = mesh.stream("event");
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
    let removed = mindbus_monitor::trim::trim(&mut conn, &stream, &config)
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
    mindbus_monitor::trim::trim(&mut conn, &stream, &config)
        .await
        .unwrap();
    assert_eq!(mesh.len(&stream).await, 10);
}

#[tokio::test]
async fn a_group_that_has_not_read_yet_blocks_all_trimming() {
    let mesh = Mesh::new("trim2").await;
    let stream = mesh.stream("result");
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
        mindbus_monitor::trim::trim(&mut conn, &stream, &config)
            .await
            .unwrap(),
        0
    );
    assert_eq!(mesh.len(&stream).await, 30);
}
