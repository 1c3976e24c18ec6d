//! Any language: Python and node publish and read results; a Python agent serves a role.

use std::process::Stdio;
use std::time::Duration;

use mindbus::wire::{Origin, derived_id};
use serde_json::{Value, json};

use mindbus_testkit::examples;

use crate::support::Mesh;

/// `examples/python/agent.py` serving one `shout` command.
fn python_agent(mesh: &Mesh) -> tokio::process::Child {
    tokio::process::Command::new("python3")
        .arg(examples().join("python/agent.py"))
        .args(["--role", "shout", "--count", "1"])
        .env("REDIS_URL", &mesh.url)
        .env("MINDBUS_PREFIX", &mesh.prefix)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs")
}

fn run_example(mesh: &Mesh, program: &str, script: &str) -> Value {
    mindbus_testkit::run_example(program, script, &mesh.url, &mesh.prefix)
}

#[tokio::test]
async fn python_publishes_and_reads_its_result() {
    let mesh = Mesh::new("py").await;
    let _agent = mesh.agent(&[]);
    let result = run_example(&mesh, "python3", "python/publish.py");
    assert_eq!(result["status"], "completed");
    assert_eq!(
        serde_json::from_str::<Value>(result["data"].as_str().unwrap()).unwrap(),
        json!({"text": "hi from python"})
    );
}

#[tokio::test]
async fn node_publishes_and_reads_its_result() {
    let mesh = Mesh::new("node").await;
    let _agent = mesh.agent(&[]);
    let result = run_example(&mesh, "node", "node/publish.mjs");
    assert_eq!(result["status"], "completed");
    assert_eq!(
        serde_json::from_str::<Value>(result["data"].as_str().unwrap()).unwrap(),
        json!({"text": "hi from node"})
    );
}

#[tokio::test]
async fn a_python_agent_serves_commands_sent_by_the_rust_cli() {
    let mesh = Mesh::new("pyagent").await;
    let mut agent = python_agent(&mesh);
    let out = mesh
        .cli()
        .args([
            "send",
            "shout",
            "shout.say",
            r#"{"text":"hello"}"#,
            "--wait",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["status"], "completed");
    assert_eq!(printed["data"], json!({"text": "HELLO"}));
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "the python agent served its one command and exited"
    );
}

#[tokio::test]
async fn a_python_agent_derives_the_id_of_a_command_sent_without_one() {
    let mesh = Mesh::new("pyderive").await;
    let mut agent = python_agent(&mesh);
    let stream = mesh.stream("cmd:{shout}");
    let entry = crate::support::redis_cli(
        &mesh.url,
        &[
            "XADD",
            &stream,
            "*",
            "type",
            "shout.say",
            "data",
            r#"{"text":"hi"}"#,
        ],
    );
    let results = mesh
        .wait_results_of("shout", 1, Duration::from_secs(10))
        .await;
    let origin = Origin {
        stream: &stream,
        entry: entry.trim().parse().unwrap(),
    };
    assert_eq!(
        results[0].correlationid,
        derived_id(origin),
        "Python and Rust derive the same id for the command"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
