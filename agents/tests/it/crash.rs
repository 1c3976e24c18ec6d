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
    let mut agents: Vec<_> = (0..3).map(|_| mesh.timeline_agent(&flags)).collect();
    mesh.wait_consumers(3).await;

    let mut ids = Vec::with_capacity(COMMANDS);
    for i in 0..COMMANDS {
        let command = Command::new("echo.say", Payload::json(json!({"i": i, "sleep_ms": 20})));
        ids.push(command.envelope.id.clone());
        mesh.bus.publish("echo", &command).await.unwrap();
    }
    let victim = agents.remove(0);
    let pid = victim.id().unwrap();
    // Killed while it holds commands (a fixed wait could catch it between reads).
    let what = "the victim holds commands";
    crate::testenv::eventually(Duration::from_secs(60), what, || async {
        (pending_of(&mesh, pid).await > 0).then_some(())
    })
    .await;
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

/// At the shipped defaults (lease 30 s, 64 slots), a busy role takes back everything a
/// killed agent held within about one lease and one reclaim period: reclaiming comes before
/// new entries, so it never waits behind the backlog or a blocked read.
#[tokio::test]
async fn kill_9_at_the_defaults_recovers_within_a_lease_and_a_period() {
    let defaults = mindbus::config::AgentConfig::default();
    let lease = Duration::from_millis(defaults.lease_ms);
    let period = (lease / 4).min(Duration::from_secs(5));
    let mesh = Mesh::new("crash-defaults").await;
    let mut agents: Vec<_> = (0..3).map(|_| mesh.agent(&[])).collect();
    mesh.wait_consumers(3).await;

    const MANY: usize = 2_000;
    for i in 0..MANY {
        let command = Command::new("echo.say", Payload::json(json!({"i": i, "sleep_ms": 300})));
        mesh.bus.publish("echo", &command).await.unwrap();
    }
    let victim = agents.remove(0);
    let pid = victim.id().unwrap();
    // Killed once it holds a full load of commands mid-run.
    let what = "the victim took its share of commands";
    crate::testenv::eventually(Duration::from_secs(20), what, || async {
        (pending_of(&mesh, pid).await >= defaults.concurrency).then_some(())
    })
    .await;
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let stranded = pending_of(&mesh, pid).await;
    assert!(stranded > 0, "the victim was killed mid-command");

    let bound = lease + period + Duration::from_secs(10);
    let what = format!("the dead consumer still holds entries {bound:?} after the kill");
    crate::testenv::eventually(bound, &what, || async {
        (pending_of(&mesh, pid).await == 0).then_some(())
    })
    .await;
    let taken_back_in = killed_at.elapsed();
    let results = mesh.wait_results(MANY, Duration::from_secs(30)).await;
    let counts = by_command(&results);
    assert_eq!(counts.len(), MANY, "every command has a result");
    assert!(counts.values().all(|n| *n == 1), "exactly one result each");
    println!(
        "crash at the defaults: {stranded} entries stranded by kill -9, all taken back \
         {taken_back_in:?} after the kill, all {MANY} results {:?} after it \
         (lease {lease:?}, reclaim period {period:?})",
        killed_at.elapsed()
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
