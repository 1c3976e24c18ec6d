//! The `mindbus` command as a person runs it: checks before it connects, errors that name
//! where and why, config checks of both shipped files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use mindbus_testkit::servers::free_port;

fn mindbus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mindbus"))
}

/// `mindbus send` refuses bad JSON before it connects anywhere, naming the argument.
#[test]
fn send_checks_its_json_before_connecting() {
    let out = mindbus()
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
    let out = mindbus()
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
    let shipped = mindbus()
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
    let out = mindbus()
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
