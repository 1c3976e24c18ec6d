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

/// What `mindbus config check FILE` prints, asserting that it fails.
fn check_failing(file: &std::path::Path) -> String {
    let out = mindbus()
        .args(["config", "check"])
        .arg(file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let text = check_failing(&file);
    assert!(
        text.contains("/roles/writer/model: `openai/unpriced` has no price"),
        "{text}"
    );
}

/// `mindbus config check` checks every process's section by its own type, naming each bad
/// field by its path, and refuses a section no process owns.
#[test]
fn config_check_names_every_bad_field_of_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mindbus.yaml");
    std::fs::write(
        &file,
        "gateway:
  api_keys:
    - name: a
      sha256: not-a-hash
      tenant: 'bad tenant!'
    - name: b
      sha256: '0000000000000000000000000000000000000000000000000000000000000000'
      tenant: acme
monitor:
  batch: 0
orchestrator:
  concurrency: many
gatway: {}
",
    )
    .unwrap();
    let text = check_failing(&file);
    let paths: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .collect();
    assert_eq!(
        paths,
        [
            "/gateway/api_keys/0/sha256",
            "/gateway/api_keys/0/tenant",
            "/monitor/batch",
            "/orchestrator/concurrency",
            "/",
        ],
        "{text}"
    );
    assert!(text.contains("gatway"), "{text}");
}

/// `mindbus top` shows each role's numbers from Redis alone, and its rates from what was
/// added between two looks.
#[test]
fn top_shows_lag_and_the_rate_of_commands_between_refreshes() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;

    use mindbus_testkit::testenv::{delete_prefix, redis_url, unique};

    let prefix = unique("t-cli-top");
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    // The role's group, as an agent makes it; no agent reads, so commands wait.
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(format!("{prefix}:cmd:{{echo}}"))
        .arg(&["echo", "$", "MKSTREAM"])
        .exec(&mut conn)
        .unwrap();
    let send = |n: usize| {
        for _ in 0..n {
            let out = mindbus()
                .args(["--prefix", &prefix, "send", "echo", "echo.say", "{}"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    send(3);
    let mut top = mindbus()
        .args(["--prefix", &prefix, "top", "-n", "2", "--every", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(top.stdout.take().unwrap()).lines();
    // The echo row's cells.
    let mut next_row = || loop {
        let line = lines.next().expect("a row for echo").unwrap();
        if line.contains(" echo ") {
            return line
                .split(['│', '┆', '|'])
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>();
        }
    };
    // role, agents, in/s, out/s, lag, pending, dead letters
    let first = next_row();
    assert_eq!(first, ["echo", "0", "-", "-", "3", "0", "0"]);
    send(6);
    let second = next_row();
    assert!(top.wait().unwrap().success());
    delete_prefix(&prefix);
    let published: f64 = second[2].parse().unwrap();
    assert!(published > 0.0, "{second:?}");
    assert_eq!(second[4], "9", "{second:?}");
}
