//! MindBus on a real Redis Cluster (three masters of the test's own). It does not run on
//! one yet, so every process must refuse a cluster at once, naming it, rather than start
//! and fail command by command on keys in other slots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mindbus_testkit::binary;
use mindbus_testkit::servers::{PrivateCluster, free_port};

/// Runs `command` to its end, within `limit` (killed and failed past it).
fn run_within(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the process starts");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("{command:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn every_process_refuses_a_cluster_naming_it() {
    let cluster = PrivateCluster::start(3);
    let url = cluster.url();
    let listen = format!("127.0.0.1:{}", free_port());
    let processes: [(&str, &[&str]); 3] = [
        ("mindbus-agent", &["--role", "echo"]),
        ("mindbus", &["status"]),
        ("mindbus-gateway", &["--listen", &listen]),
    ];
    for (name, args) in processes {
        let mut command = Command::new(binary(name));
        command
            .args(args)
            .args(["--redis-url", &url, "--prefix", "cluster-refusal"]);
        let out = run_within(command, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} ran on a cluster: {stderr}");
        assert!(
            stderr.contains("is a node of a Redis Cluster"),
            "{name} does not say why: {stderr}"
        );
    }
}
