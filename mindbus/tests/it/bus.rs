//! The bus client against a real Redis, each test under its own key prefix.

use std::time::Duration;

use mindbus::bus::{Bus, ResultWaiter};
use mindbus::config::RedisConfig;
use mindbus::wire::{CommandResult, EntryId, Payload, Status};
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

#[tokio::test]
async fn a_result_in_the_same_millisecond_as_its_command_is_found() {
    let bus = bus("samems").await;
    let mut conn = bus.connection();
    // Ids of different streams are not ordered within a millisecond: the result can carry
    // a lower sequence number than its command.
    let command = EntryId {
        ms: 1_800_000_000_000,
        seq: 5,
    };
    let id = mindbus::wire::MessageId::new();
    let result = CommandResult::new(
        id.clone(),
        Status::Completed,
        "test",
        Payload::json(json!({"ok": true})),
    );
    let mut add = redis::cmd("XADD");
    add.arg(bus.keys().results()).arg("1800000000000-0");
    for (name, value) in result.encode().unwrap() {
        add.arg(name).arg(value);
    }
    let _: String = add.query_async(&mut conn).await.unwrap();

    let mut waiter = ResultWaiter::new(&bus).await.unwrap();
    let found = waiter
        .wait_result(command, &id, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(found.map(|r| r.correlationid), Some(id));
    cleanup(&bus).await;
}
