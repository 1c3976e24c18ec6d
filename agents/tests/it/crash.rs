//! `kill -9` of an agent mid-command loses nothing: every command gets exactly one result.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mindbus::wire::{Command, EventKind, Payload, Status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::support::{Mesh, by_command};

const COMMANDS: usize = 2_000;

#[tokio::test]
async fn kill_9_of_one_agent_loses_nothing() {
    let mesh = Mesh::new("crash").await;
    let flags = ["--concurrency", "8", "--lease-ms", "1000"];
    let mut agents: Vec<_> = (0..3).map(|_| mesh.agent(&flags)).collect();
    mesh.wait_consumers(3).await;

    let mut ids = Vec::with_capacity(COMMANDS);
    for i in 0..COMMANDS {
        let command = Command::new("echo.say", Payload::json(json!({"i": i, "sleep_ms": 20})));
        ids.push(command.envelope.id);
        mesh.bus.publish("echo", &command).await.unwrap();
    }
    mesh.wait_results(COMMANDS / 4, Duration::from_secs(60))
        .await;
    let victim = agents.remove(0);
    let pid = victim.id().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let stranded = pending_of(&mesh, pid).await;
    assert!(stranded > 0, "the victim was killed mid-command");

    let results = mesh.wait_results(COMMANDS, Duration::from_secs(120)).await;
    let recovered_in = killed_at.elapsed();
    let counts = by_command(&results);
    assert_eq!(counts.len(), COMMANDS, "every command has a result");
    assert!(
        ids.iter().all(|id| counts.get(id) == Some(&1)),
        "exactly one accepted result each"
    );
    assert!(results.iter().all(|r| r.status == Status::Completed));

    let mut starts: HashMap<_, usize> = HashMap::new();
    let mut duplicates = 0;
    for event in mesh.events().await {
        match event.kind() {
            Some(EventKind::Started) => *starts.entry(event.correlationid).or_default() += 1,
            Some(EventKind::Duplicate) => duplicates += 1,
            _ => {}
        }
    }
    let twice = starts.values().filter(|n| **n > 1).count();
    assert_eq!(
        pending_of(&mesh, pid).await,
        0,
        "the dead consumer's entries were reclaimed"
    );
    println!(
        "crash: {COMMANDS} commands, {stranded} stranded by kill -9, executed twice: {twice}, \
         duplicate results dropped: {duplicates}, all results {recovered_in:?} after the kill (lease 1000 ms)"
    );
}

/// Entries pending for the consumer of process `pid` (consumer names carry the pid).
async fn pending_of(mesh: &Mesh, pid: u32) -> usize {
    let marker = format!("-{pid}-");
    mesh.pending()
        .await
        .iter()
        .filter(|(_, consumer, _)| consumer.contains(&marker))
        .count()
}
