//! What a person running MindBus sees when something is off: errors that name what is
//! wrong and where, an agent that waits for Redis instead of exiting, plain logs in files.

use std::process::Stdio;
use std::time::Duration;

use mindbus::wire::{Command, Payload, Status};
use mindbus_testkit::servers::{Persistence, PrivateRedis, free_port};
use serde_json::json;

/// An agent started while Redis is down keeps trying, says where it tries and how to change
/// that, writes no colour codes into a log file, and serves once Redis comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_before_redis_waits_for_it_and_says_where() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_mindbus-agent"))
        .args(["--role", "echo", "--prefix", "t-ops", "--redis-url", &url])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Two failed tries logged: it tried, waited, and tried again.
    let text = crate::testenv::eventually(Duration::from_secs(10), "two tries logged", || async {
        let text = std::fs::read_to_string(log.path()).unwrap();
        (text.matches("waiting for redis").count() >= 2).then_some(text)
    })
    .await;
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent waits, it does not exit"
    );
    assert!(
        text.contains(&format!("cannot reach redis at 127.0.0.1:{port}"))
            && text.contains("REDIS_URL"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a log file: {text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let redis = PrivateRedis::start_on(dir.path(), port, Persistence::None);
    let command = Command::new("echo.say", Payload::json(json!({"up": true})));
    let bus = mindbus::bus::Bus::connect(&mindbus::config::RedisConfig {
        url: redis.url().into(),
        prefix: "t-ops".into(),
    })
    .await
    .unwrap();
    let result = bus
        .call("echo", command, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a result once redis is up");
    assert_eq!(result.status, Status::Completed);
}
