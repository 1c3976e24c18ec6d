//! The bus client against a real Redis, each test under its own key prefix.

use std::time::Duration;

use mindbus::bus::Bus;
use mindbus::config::RedisConfig;
use mindbus::wire::{Command, CommandResult, EntryId, MessageId, Origin, Payload, Status};
use serde_json::json;
use uuid::Uuid;

async fn bus(name: &str) -> Bus {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("t-bus-{name}-{}", Uuid::now_v7().simple());
    Bus::connect(&RedisConfig {
        url: url.into(),
        prefix,
    })
    .await
    .unwrap()
}

async fn cleanup(bus: &Bus) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", bus.keys().prefix()))
        .query_async(&mut bus.connection())
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut bus.connection())
            .await
            .unwrap();
    }
}

/// Answers every `echo` command published under `bus`'s prefix, a batch at a time and in
/// reverse order, after a result for a command nobody waits for.
async fn answer_echo(bus: Bus, count: usize) {
    let mut conn = bus.connection();
    let (commands, results) = (bus.keys().commands("echo"), bus.keys().results("echo"));
    let mut after = EntryId::ZERO;
    let mut answered = 0;
    while answered < count {
        let reply = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&commands)
            .arg(after.to_string())
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut batch = Vec::new();
        for (_, entries) in mindbus::streams::parse_read(reply).unwrap() {
            for entry in entries {
                after = entry.id;
                let origin = Origin {
                    stream: &commands,
                    entry: entry.id,
                };
                batch.push(Command::decode(entry.fields.unwrap(), origin).unwrap());
            }
        }
        let stray = CommandResult::new(
            MessageId::new(),
            Status::Completed,
            "test",
            Payload::json(json!(null)),
        );
        for result in std::iter::once(stray).chain(batch.iter().rev().map(|command| {
            CommandResult::new(
                command.envelope.id.clone(),
                Status::Completed,
                "test",
                command.envelope.data.clone(),
            )
        })) {
            let mut add = redis::cmd("XADD");
            add.arg(&results).arg("*");
            for (name, value) in result.encode().unwrap() {
                add.arg(name).arg(value);
            }
            let _: String = add.query_async(&mut conn).await.unwrap();
        }
        answered += batch.len();
    }
}

/// Many calls at once wait through the bus's one follower of echo's result stream, each for
/// its own result, whatever order the results come in and whatever else is on the stream.
#[tokio::test]
async fn concurrent_calls_each_get_their_own_result() {
    let bus = bus("calls").await;
    let answering = tokio::spawn(answer_echo(bus.clone(), 50));
    let calls = (0..50).map(|i| {
        let bus = bus.clone();
        async move {
            let command = Command::new("echo.say", Payload::json(json!({ "i": i })));
            let result = bus
                .call("echo", command, Duration::from_secs(10))
                .await
                .unwrap()
                .expect("a result within the wait");
            assert_eq!(result.envelope.data.value, json!({ "i": i }));
        }
    });
    futures::future::join_all(calls).await;
    answering.await.unwrap();
    // Nobody answers this one: the wait runs out and says so.
    let lonely = Command::new("echo.say", Payload::json(json!({})));
    let none = bus
        .call("nobody", lonely, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(none.is_none());
    cleanup(&bus).await;
}

/// A follower of several streams hands out their merged history in entry-id order, every
/// entry once, even when one stream holds more than a read takes: the quiet stream's later
/// entries wait until the busy one has been read up to them (else a reader that resumes
/// after the last id it got would skip the busy stream's rest).
#[tokio::test]
async fn a_follower_of_a_busy_and_a_quiet_stream_hands_out_every_entry_in_order() {
    let bus = bus("follow").await;
    let (busy, quiet) = (bus.keys().events("busy"), bus.keys().events("quiet"));
    let mut conn = bus.connection();
    let mut written = Vec::new();
    for i in 0..1_300 {
        let stream = if i % 400 == 399 { &quiet } else { &busy };
        let id: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("i")
            .arg(i)
            .query_async(&mut conn)
            .await
            .unwrap();
        written.push((stream.clone(), id.parse::<EntryId>().unwrap()));
    }
    let streams = vec![busy.clone(), quiet.clone()];
    let mut follower = mindbus::bus::Follower::after(
        bus.redis(),
        streams,
        EntryId::ZERO,
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    let mut read = Vec::new();
    let mut reads = 0;
    while read.len() < written.len() && reads < 20 {
        let batch = follower.next().await.unwrap();
        let caught_up = follower.caught_up();
        read.extend(batch.into_iter().map(|(stream, entry)| (stream, entry.id)));
        reads += 1;
        assert_eq!(
            caught_up,
            read.len() == written.len(),
            "caught up exactly once everything is read"
        );
    }
    assert!(reads > 1, "the busy stream took more than one read");
    // In entry-id order (entries of two streams in the same millisecond may tie).
    assert!(read.windows(2).all(|w| w[0].1 <= w[1].1), "out of order");
    let (mut read, mut written) = (read, written);
    read.sort();
    written.sort();
    assert!(
        read == written,
        "not every entry once: {} of {}",
        read.len(),
        written.len()
    );
    cleanup(&bus).await;
}
