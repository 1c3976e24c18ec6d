//! The core cases on a Redis Cluster of the test's own (three masters, and one): a round
//! trip from redis-cli, Python and node, an agent killed mid-command, poison to the dead letters, runs
//! through an orchestrator and monitor kill recorded exactly once, and a busy role's slot
//! moved to another master while its commands flow. The gateway's cases on a cluster are
//! among the gateway's tests.

use std::time::Duration;

use mindbus::keys::Stream;
use mindbus::wire::{Command, ErrorType, MessageId, Payload, Status};
use mindbus_testkit::servers::PrivateCluster;
use serde_json::json;
use tokio::time::Instant;

use super::{
    Runs, assert_none_lost_or_twice, sigkill_an_agent, sigkill_an_orchestrator_and_the_monitor,
};
use crate::mesh::Mesh;
use crate::testenv;

/// A command published with `redis-cli -c` names a reply stream and blocks on it; the
/// Python and node examples publish and wait the same way: each gets its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_round_trip_from_redis_cli_python_and_node() {
    let cluster = PrivateCluster::start(3);
    let mesh = Mesh::on(&cluster.url(), "cl-trip").await;
    let _agents = mesh.agents(1);
    let commands = mesh.role_stream(Stream::Commands);
    let reply = mesh.bus.keys().reply("echo", "cli");
    let id = MessageId::new().to_string();
    let data = r#"{"text":"hi"}"#;
    cluster.cli(&[
        "XADD", &commands, "*", "id", &id, "type", "echo.say", "data", data, "replyto", &reply,
    ]);
    let answer = cluster.cli(&["XREAD", "BLOCK", "30000", "STREAMS", &reply, "0-0"]);
    assert!(
        answer.contains(&id) && answer.contains("completed"),
        "{answer}"
    );

    for (program, example) in [
        ("python3", "python/publish.py"),
        ("node", "node/publish.mjs"),
    ] {
        let result = mindbus_testkit::run_example(program, example, &cluster.url(), &mesh.prefix);
        assert_eq!(result["status"], "completed", "{example}");
    }
}

/// A cluster of one node, which names itself without a host (it was never told its
/// address): commands are answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_of_one_node_answers_every_command_once() {
    let cluster = PrivateCluster::start(1);
    let mesh = Mesh::on(&cluster.url(), "cl-one").await;
    let _agents = mesh.agents(2);
    let sent = mesh.publish(200, 0).await;
    mesh.wait_answered(&sent, Instant::now(), Duration::from_secs(60))
        .await;
    assert_none_lost_or_twice(&mesh.tally(&sent).await);
}

/// An agent killed with SIGKILL mid-command: its commands are reclaimed and answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_agent_sigkill_mid_command() {
    let cluster = PrivateCluster::start(3);
    let mesh = Mesh::on(&cluster.url(), "cl-kill").await;
    sigkill_an_agent(&mesh, "cluster: agent SIGKILL mid-command").await;
}

/// A command that always panics, and an entry without a type, end in the role's dead
/// letters; the commands around them are answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_poison_ends_in_the_dead_letters() {
    let cluster = PrivateCluster::start(3);
    let mesh = Mesh::on(&cluster.url(), "cl-poison").await;
    let _agents = mesh.agents(2);
    let mut poison = Command::new("echo.say", Payload::json(json!({"panic": true})));
    poison.maxattempts = Some(2);
    mesh.bus.publish(&mesh.role, &poison).await.unwrap();
    cluster.cli(&[
        "XADD",
        &mesh.role_stream(Stream::Commands),
        "*",
        "data",
        "{}",
    ]);
    let sent = mesh.publish(100, 0).await;
    mesh.wait_answered(&sent, Instant::now(), Duration::from_secs(60))
        .await;
    assert_none_lost_or_twice(&mesh.tally(&sent).await);

    let dead_letters = mesh.role_stream(Stream::DeadLetters);
    testenv::eventually(Duration::from_secs(60), "two dead letters", || async {
        let letters = mindbus_testkit::entries(&mut mesh.bus.connection(), &dead_letters).await;
        (letters.len() == 2).then_some(())
    })
    .await;
    let results = mesh.results().await;
    let poisoned = results
        .iter()
        .find(|r| r.correlationid == poison.envelope.id)
        .expect("the poison command's result");
    assert_eq!(poisoned.status, Status::Failed);
    assert_eq!(
        poisoned.failure.as_ref().map(|f| f.errortype.clone()),
        Some(ErrorType::MaxAttemptsExceeded)
    );
}

/// Runs through two orchestrators, a monitor and agents, one orchestrator and the monitor
/// killed midway: every run completes, each step result is applied once, and the monitor
/// records every entry of every role's streams (in three slots) once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_runs_through_an_orchestrator_and_monitor_kill() {
    let cluster = PrivateCluster::start(3);
    let runs = Runs::on(&cluster.url(), "cl_runs", None).await;
    sigkill_an_orchestrator_and_the_monitor(&runs, 60, "cluster: orchestrator and monitor SIGKILL")
        .await;
}

/// A busy role's slot is moved to another master (`redis-cli --cluster reshard`) while its
/// commands flow: the agents follow it, and every command is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_busy_roles_slot_moves_to_another_master_losing_nothing() {
    let cluster = PrivateCluster::start(3);
    // A role whose slot is among the first 32 of its master's, so that moving that many
    // slots moves it.
    let masters = cluster.masters();
    let (role, slot, from) = (0..10_000)
        .map(|i| format!("busy-{i}"))
        .find_map(|role| {
            let slot = cluster.slot_of(&role);
            let from = masters
                .iter()
                .find(|m| m.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))?;
            let start = from.slots[0].0;
            (slot >= start && slot - start < 32).then(|| (role, slot, from.clone()))
        })
        .expect("a role near the start of a master's slots");
    let to = masters.iter().find(|m| m.id != from.id).unwrap().clone();
    let mesh = Mesh::of_role(&cluster.url(), "cl-reshard", &role).await;
    let _agents = mesh.timeline_agents(2);
    // A backlog the agents are still working through while the slot moves, and more
    // commands published during the move and after it.
    let mut sent = mesh.publish(1_500, 150).await;
    mesh.wait_results(100, Duration::from_secs(60)).await;

    let count = slot - from.slots[0].0 + 1;
    let mut reshard = tokio::process::Command::from(cluster.reshard(&from, &to, count))
        .spawn()
        .expect("redis-cli runs");
    let moved = loop {
        sent.extend(mesh.publish(20, 5).await);
        if let Some(status) = reshard.try_wait().unwrap() {
            break status;
        }
    };
    assert!(moved.success(), "redis-cli --cluster reshard failed");
    let answered = mesh.results().await.len();
    assert!(
        answered < sent.len(),
        "the backlog was worked through before the slot moved: nothing flowed during the move"
    );
    assert_eq!(cluster.owner(slot).id, to.id, "the role's slot moved");
    sent.extend(mesh.publish(200, 5).await);

    let since = Instant::now();
    let settled = mesh
        .wait_answered(&sent, since, Duration::from_secs(90))
        .await;
    let tally = mesh.tally(&sent).await;
    tally.report(
        "cluster: the role's slot moved under load",
        "commands",
        Some(settled),
        &format!("{count} slots moved"),
    );
    assert_none_lost_or_twice(&tally);
    assert_eq!(
        mesh.repeated_events().await,
        0,
        "an event was written twice"
    );
}
