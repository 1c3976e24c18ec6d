//! What a person running MindBus sees when something is off: errors that name what is
//! wrong and where, an agent that waits for Redis instead of exiting, plain logs in files.

use std::process::Stdio;
use std::time::{Duration, Instant};

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
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent waits, it does not exit"
    );
    let text = std::fs::read_to_string(log.path()).unwrap();
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

/// `mindbus send` refuses bad JSON before it connects anywhere, naming the argument.
#[test]
fn send_checks_its_json_before_connecting() {
    let out = std::process::Command::new(mindbus_testkit::binary("mindbus"))
        .args([
            "--redis-url",
            "redis://127.0.0.1:1",
            "send",
            "echo",
            "echo.say",
            "{bad",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("not valid JSON") && text.contains("DATA"),
        "{text}"
    );
    assert!(!text.contains("redis"), "it never tried to connect: {text}");
}

/// `mindbus trace` fails within seconds when Postgres refuses, naming where and why.
#[test]
fn trace_fails_fast_naming_the_postgres_it_tried() {
    let port = free_port();
    let started = Instant::now();
    let out = std::process::Command::new(mindbus_testkit::binary("mindbus"))
        .args(["trace", "some-id"])
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/x"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("postgres at 127.0.0.1:{port}")) && text.contains("DATABASE_URL"),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("refused"),
        "the cause is named: {text}"
    );
}

/// `mindbus config check` checks the LLM roles' file too (with no file named: both shipped
/// files), naming a model without a price.
#[test]
fn config_check_checks_the_llm_roles_file_too() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let shipped = std::process::Command::new(mindbus_testkit::binary("mindbus"))
        .args(["config", "check"])
        .current_dir(root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shipped.stdout);
    assert!(shipped.status.success(), "{text}");
    assert!(text.contains("config/agents.yaml: ok"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.yaml");
    std::fs::write(
        &file,
        "roles:\n  writer:\n    model: openai/unpriced\n    system: Write.\n    prompt: Hi.\n",
    )
    .unwrap();
    let out = std::process::Command::new(mindbus_testkit::binary("mindbus"))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/roles/writer/model: `openai/unpriced` has no price"),
        "{text}"
    );
}
