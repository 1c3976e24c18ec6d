//! The consumer-group reader against a real Redis, each test on streams of its own.

use std::time::Duration;

use mindbus::group::{Delivery, GroupOptions, GroupReader};
use mindbus::streams::Connection;
use mindbus::streams::Redis;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn redis() -> Redis {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    Redis::open(&url.into()).unwrap()
}

fn options(lease_ms: u64) -> GroupOptions {
    GroupOptions {
        group: "g".into(),
        kind: "test",
        registry: None,
        lease: Duration::from_millis(lease_ms),
        block: Duration::from_millis(100),
    }
}

fn reader(stream: &str, lease_ms: u64) -> GroupReader {
    GroupReader::new(redis(), vec![stream.to_owned()], options(lease_ms))
}

/// Deletes a test's keys.
async fn delete(conn: &mut Connection, keys: &[&String]) {
    let _: () = redis::cmd("DEL").arg(keys).query_async(conn).await.unwrap();
}

async fn add(conn: &mut Connection, stream: &str, n: usize) {
    for i in 0..n {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("n")
            .arg(i)
            .query_async(conn)
            .await
            .unwrap();
    }
}

/// Reads until `want` entries came (or two seconds passed).
async fn take(reader: &mut GroupReader, room: usize, want: usize) -> Vec<Delivery> {
    let stop = CancellationToken::new();
    let mut got = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while got.len() < want && tokio::time::Instant::now() < until {
        got.extend(reader.next(room, &stop).await);
    }
    got
}

/// A consumer that stops acknowledging leaves its entries to another after the lease: taken
/// over never more than the taker has room for, with their delivery counts; what it
/// acknowledges never comes back.
#[tokio::test]
async fn idle_entries_are_taken_over_within_the_room_and_counted() {
    let stream = format!("t-group-{}", Uuid::now_v7().simple());
    let mut conn = redis().shared().await.unwrap();
    let mut a = reader(&stream, 200);
    let mut b = reader(&stream, 200);
    assert_ne!(a.consumer(), b.consumer());
    assert!(a.consumer().starts_with("test-"), "{}", a.consumer());
    // Joined before anything is added, so `a` gets everything.
    assert!(take(&mut a, 10, 1).await.is_empty());
    add(&mut conn, &stream, 5).await;
    let first = take(&mut a, 10, 5).await;
    assert_eq!(first.len(), 5);
    assert!(first.iter().all(|d| d.deliveries == 1));
    // Taken over once idle past the lease: a sweep claims the room's worth at once.
    let two = take(&mut b, 2, 1).await;
    assert_eq!(two.len(), 2, "no more than the room");
    assert!(two.iter().all(|d| d.deliveries == 2), "{two:?}");
    let rest = take(&mut b, 10, 3).await;
    assert_eq!(rest.len(), 3);
    let acker = b.acker().await.unwrap();
    acker
        .ack(&two.iter().chain(&rest).collect::<Vec<_>>())
        .await
        .unwrap();
    // Reading for two seconds, many leases: nothing acknowledged comes back.
    assert!(
        take(&mut a, 10, 1).await.is_empty(),
        "acknowledged entries stay done"
    );
    delete(&mut conn, &[&stream]).await;
}

/// A stream deleted under the reader (its group with it) is joined again, and what is added
/// afterwards is read.
#[tokio::test]
async fn a_vanished_group_is_recreated() {
    let stream = format!("t-group-{}", Uuid::now_v7().simple());
    let mut conn = redis().shared().await.unwrap();
    let mut a = reader(&stream, 10_000);
    assert!(take(&mut a, 10, 1).await.is_empty());
    delete(&mut conn, &[&stream]).await;
    // Read at least once against the missing group, then give it something to read.
    assert!(a.next(10, &CancellationToken::new()).await.is_empty());
    add(&mut conn, &stream, 1).await;
    let got = take(&mut a, 10, 1).await;
    assert_eq!(got.len(), 1, "read after the group came back");
    delete(&mut conn, &[&stream]).await;
}

/// Own pending entries handed over again (after a reconnect, or a failed acknowledgement)
/// come each once, a room at a time, their delivery counts untouched; then new entries
/// come again.
#[tokio::test]
async fn own_pending_entries_are_recovered_each_once() {
    let stream = format!("t-group-{}", Uuid::now_v7().simple());
    let mut conn = redis().shared().await.unwrap();
    let mut a = reader(&stream, 60_000);
    assert!(take(&mut a, 10, 1).await.is_empty());
    add(&mut conn, &stream, 5).await;
    let first = take(&mut a, 10, 5).await;
    assert_eq!(first.len(), 5);
    a.recover();
    let stop = CancellationToken::new();
    let mut again = Vec::new();
    for _ in 0..3 {
        let page = a.next(2, &stop).await;
        assert!(page.len() <= 2, "{page:?}");
        again.extend(page);
    }
    let ids = |d: &[Delivery]| d.iter().map(|d| d.entry.id).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first), "each once, in order");
    assert!(again.iter().all(|d| d.deliveries == 1), "{again:?}");
    add(&mut conn, &stream, 1).await;
    let new = take(&mut a, 10, 1).await;
    assert_eq!(new.len(), 1);
    assert!(!ids(&first).contains(&new[0].entry.id));
    delete(&mut conn, &[&stream]).await;
}

/// Waits until every entry `consumer` holds in `stream` has been idle over `ms`.
async fn wait_idle(conn: &mut Connection, stream: &str, consumer: &str, ms: u64) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&[stream, "g", "-", "+", "100", consumer][..])
            .query_async(conn)
            .await
            .unwrap();
        if pending.iter().all(|(_, _, idle, _)| *idle > ms) {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "{pending:?}");
        tokio::task::yield_now().await;
    }
}

/// The consumers `XINFO CONSUMERS` lists in group `g` of `stream`, with their pending counts.
async fn consumers(conn: &mut Connection, stream: &str) -> Vec<(String, u64)> {
    let reply: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg("g")
        .query_async(conn)
        .await
        .unwrap();
    reply
        .into_iter()
        .map(|consumer| {
            let info = mindbus::streams::info_map(consumer);
            let name = mindbus::streams::reply_text(info.get("name")).unwrap();
            let pending = mindbus::streams::reply_text(info.get("pending")).unwrap();
            (name, pending.parse().unwrap())
        })
        .collect()
}

/// A consumer is listed in its group (and the group in the registry) before it reads
/// anything; leaving hands its pending entries to another at once, long before the lease,
/// and a consumer that leaves with nothing pending is removed.
#[tokio::test]
async fn a_consumer_joins_listed_and_leaves_handing_its_entries_back() {
    let stream = format!("t-group-{}", Uuid::now_v7().simple());
    let registry = format!("{stream}-registry");
    let mut conn = redis().shared().await.unwrap();
    let options = GroupOptions {
        registry: Some(registry.clone()),
        ..options(60_000)
    };
    let mut a = GroupReader::new(redis(), vec![stream.clone()], options);
    let mut b = reader(&stream, 60_000);
    assert!(take(&mut a, 10, 1).await.is_empty());
    assert_eq!(
        consumers(&mut conn, &stream).await,
        [(a.consumer().to_owned(), 0)]
    );
    let listed: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&registry)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(listed, ["g"]);

    add(&mut conn, &stream, 3).await;
    assert_eq!(take(&mut a, 10, 3).await.len(), 3);
    a.leave().await;
    // A minute's lease, and yet `b` takes them over at once, as a second delivery.
    let handed = take(&mut b, 10, 3).await;
    assert_eq!(handed.len(), 3, "{handed:?}");
    assert!(handed.iter().all(|d| d.deliveries == 2), "{handed:?}");
    b.acker()
        .await
        .unwrap()
        .ack(&handed.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    b.leave().await;
    let left = consumers(&mut conn, &stream).await;
    assert!(
        left.iter().all(|(name, _)| name != b.consumer()),
        "a consumer with nothing pending is removed: {left:?}"
    );
    delete(&mut conn, &[&stream, &registry]).await;
}

/// After a reconnect (an outage longer than the lease), an own pending entry another
/// consumer took over meanwhile is that consumer's; the rest are handed over again with
/// their leases renewed, so no sweep takes them away while they are worked on.
#[tokio::test]
async fn recovery_renews_own_entries_and_leaves_those_taken_over() {
    let stream = format!("t-group-{}", Uuid::now_v7().simple());
    let mut conn = redis().shared().await.unwrap();
    let mut a = reader(&stream, 1_000);
    let mut b = reader(&stream, 1_000);
    assert!(take(&mut a, 10, 1).await.is_empty());
    assert!(take(&mut b, 10, 1).await.is_empty());
    add(&mut conn, &stream, 3).await;
    let first = take(&mut a, 10, 3).await;
    assert_eq!(first.len(), 3);
    // Idle past the lease, as after a long outage.
    wait_idle(&mut conn, &stream, a.consumer(), 1_000).await;
    // Meanwhile `b` took one over.
    let taken = first[1].entry.id.to_string();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&stream)
        .arg("g")
        .arg(b.consumer())
        .arg(0)
        .arg(&taken)
        .arg("JUSTID")
        .query_async(&mut conn)
        .await
        .unwrap();
    a.recover();
    // Room for the two only, so `a` does not sweep (which would reset them too).
    let again = a.next(2, &CancellationToken::new()).await;
    let ids: Vec<String> = again.iter().map(|d| d.entry.id.to_string()).collect();
    assert_eq!(
        ids,
        [first[0].entry.id.to_string(), first[2].entry.id.to_string()],
        "the entry `b` took is left to it"
    );
    // `b` sweeps at once: the renewed entries are not idle any more.
    let swept = b.next(10, &CancellationToken::new()).await;
    assert!(swept.is_empty(), "{swept:?}");
    delete(&mut conn, &[&stream]).await;
}

/// A followed key replaced by another type (a string where a stream was) does not stop the
/// other streams: it is left out of reads, and they go on being read.
#[tokio::test]
async fn a_key_that_stops_being_a_stream_does_not_hold_up_the_others() {
    let good = format!("t-group-{}", Uuid::now_v7().simple());
    let bad = format!("{good}-bad");
    let mut conn = redis().shared().await.unwrap();
    let mut reader = GroupReader::new(redis(), vec![good.clone(), bad.clone()], options(60_000));
    assert!(take(&mut reader, 10, 1).await.is_empty());
    delete(&mut conn, &[&bad]).await;
    let _: () = redis::cmd("SET")
        .arg(&bad)
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    add(&mut conn, &good, 3).await;
    // A read of both would fail, and be retried, for ever.
    let got = tokio::time::timeout(Duration::from_secs(10), take(&mut reader, 10, 3))
        .await
        .expect("the good stream is read");
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|d| *d.stream == *good));
    delete(&mut conn, &[&good, &bad]).await;
}

/// Takes over idle entries with their true delivery counts even when the taker holds many
/// entries of its own between them (a range of the pending list would stop at those).
#[tokio::test]
async fn taken_over_entries_are_counted_past_the_takers_own() {
    let stream = format!("t-group-{}", Uuid::now_v7().simple());
    let mut conn = redis().shared().await.unwrap();
    let mut b = reader(&stream, 200);
    let _: () = redis::cmd("XGROUP")
        .arg(&["CREATE", &stream, "g", "0", "MKSTREAM"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    add(&mut conn, &stream, 19).await;
    let read = |consumer: &str, count: usize| {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg(&["GROUP", "g", consumer, "COUNT"][..])
            .arg(count)
            .arg(&["STREAMS", &stream, ">"][..]);
        cmd
    };
    let ids = |reply: redis::Value| -> Vec<String> {
        mindbus::streams::parse_read(reply)
            .unwrap()
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .map(|e| e.id.to_string())
            .collect()
    };
    let first = ids(read("a", 1).query_async(&mut conn).await.unwrap());
    let held = ids(read(b.consumer(), 17).query_async(&mut conn).await.unwrap());
    let last = ids(read("a", 1).query_async(&mut conn).await.unwrap());
    // The last counts five deliveries (the takeover makes six).
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(
            &[
                &stream,
                "g",
                "a",
                "0",
                &last[0],
                "RETRYCOUNT",
                "5",
                "JUSTID",
            ][..],
        )
        .query_async(&mut conn)
        .await
        .unwrap();
    wait_idle(&mut conn, &stream, "a", 200).await;
    // `b`'s own are fresh, so only `a`'s are idle.
    let mut renew = redis::cmd("XCLAIM");
    renew
        .arg(&[&stream, "g", b.consumer(), "0"][..])
        .arg(&held)
        .arg("JUSTID");
    let _: redis::Value = renew.query_async(&mut conn).await.unwrap();

    let got = b.next(2, &CancellationToken::new()).await;
    let counts: Vec<(String, u32)> = got
        .iter()
        .map(|d| (d.entry.id.to_string(), d.deliveries))
        .collect();
    assert_eq!(counts, [(first[0].clone(), 2), (last[0].clone(), 6)]);
    delete(&mut conn, &[&stream]).await;
}
