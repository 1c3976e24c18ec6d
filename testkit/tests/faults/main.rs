//! The fault suite: commands with unique ids go through several real processes while a
//! fault is injected, then every id is classified as answered once, lost, or answered twice
//! (`Tally`). Each case prints one line (`fault <case>: ...`) with the counts and the
//! recovery time, and fails on any loss or duplicate the documented guarantees do not allow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod mesh;
use mindbus_testkit::testenv;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mindbus::streams::until_up;
use mindbus::wire::{MessageId, ORCHESTRATOR_ROLE, RunRequest, StartRun};
use mindbus_testkit::servers::{Persistence, PrivatePostgres, PrivateRedis};
use mindbus_testkit::{Tally, entries};
use nix::sys::signal::Signal;
use serde_json::json;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use mesh::{Mesh, agent_lease, echo, shipped_defaults, signal};
use testenv::{TestDb, redis_url};

fn assert_none_lost_or_twice(tally: &Tally) {
    assert!(
        tally.lost.is_empty() && tally.twice.is_empty(),
        "lost: {:?}; answered twice: {:?}",
        tally.lost,
        tally.twice
    );
}

/// An agent killed with SIGKILL mid-command: its commands are reclaimed and answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_mid_command() {
    let mesh = Mesh::on(&redis_url(), "kill").await;
    sigkill_an_agent(&mesh, "agent SIGKILL mid-command").await;
}

/// Three agents of `mesh` serve 1,500 commands, and one is killed with SIGKILL after the
/// first 300 results; reports as `fault`.
async fn sigkill_an_agent(mesh: &Mesh, fault: &str) {
    let agents = mesh.agents(3);
    let sent = mesh.publish(1_500, 10).await;
    mesh.wait_results(300, Duration::from_secs(60)).await;
    signal(&agents[0], Signal::SIGKILL);
    let killed = Instant::now();
    let recovery = mesh
        .wait_answered(&sent, killed, Duration::from_secs(60))
        .await;
    let tally = mesh.tally(&sent).await;
    tally.report(
        fault,
        "commands",
        Some(recovery),
        &format!("lease {:?}", agent_lease()),
    );
    assert_none_lost_or_twice(&tally);
}

/// An agent stopped (SIGSTOP) while it holds commands, until the others have taken them
/// all over (past its lease), then resumed: its late finishes are dropped as duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigstop_past_the_lease_then_sigcont() {
    let mesh = Mesh::on(&redis_url(), "stop").await;
    let agents = mesh.agents(2);
    let sent = mesh.publish(600, 200).await;
    let zombie = agents[0].id().unwrap();
    let what = "the agent holds commands";
    testenv::eventually(Duration::from_secs(60), what, || async {
        (mesh.pending_of(zombie).await > 0).then_some(())
    })
    .await;
    signal(&agents[0], Signal::SIGSTOP);
    let stopped = Instant::now();
    let held = mesh.pending_of(zombie).await;
    let what = "the stopped agent's commands taken over";
    testenv::eventually(
        agent_lease() * 2 + Duration::from_secs(30),
        what,
        || async { (mesh.pending_of(zombie).await == 0).then_some(()) },
    )
    .await;
    let taken_over = stopped.elapsed();
    signal(&agents[0], Signal::SIGCONT);
    let recovery = mesh
        .wait_answered(&sent, stopped, Duration::from_secs(60))
        .await;
    // The resumed agent's late finishes land, and are dropped.
    let what = "a late finish of the resumed agent";
    testenv::eventually(Duration::from_secs(30), what, || async {
        (mesh.events_of("mindbus.command.duplicate").await > 0).then_some(())
    })
    .await;
    let tally = mesh.tally(&sent).await;
    let dropped = mesh.events_of("mindbus.command.duplicate").await;
    let note = format!(
        "it held {held}, all taken over {taken_over:.1?} after the stop (lease {:?}); \
         {dropped} late finishes dropped",
        agent_lease()
    );
    tally.report(
        "agent SIGSTOP, then SIGCONT",
        "commands",
        Some(recovery),
        &note,
    );
    assert_none_lost_or_twice(&tally);
}

/// Redis killed with `kill -9` and restarted from its AOF (`appendfsync everysec`) while a
/// producer publishes and two agents work. A producer that retries a failed publish sets
/// `idempotencykey`, so a publish that landed before the error is answered once. Redis
/// writes the AOF before it answers, so a crash of the process loses nothing it
/// acknowledged; only a crash of the machine can lose the last second (everysec).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_and_restart_from_aof_everysec() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateRedis::start(dir.path(), Persistence::AofEverySec);
    let mesh = Mesh::on(&redis.url(), "aof").await;
    let _agents = mesh.agents(2);
    let producer = {
        let bus = mesh.bus.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..3_000 {
                let mut command = echo(i, 1);
                command.idempotencykey = Some(command.envelope.id.to_string());
                // Through the restart: retried with the one retry policy until Redis is back.
                until_up(&CancellationToken::new(), || bus.publish("echo", &command))
                    .await
                    .expect("published");
                acked.push(command.envelope.id);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            acked
        })
    };
    mesh.wait_results(300, Duration::from_secs(60)).await;
    redis.kill();
    let killed = Instant::now();
    redis.restart();
    let sent = producer.await.unwrap();
    let recovery = mesh
        .wait_answered(&sent, killed, Duration::from_secs(90))
        .await;
    let tally = mesh.tally(&sent).await;
    tally.report(
        "redis kill -9, AOF everysec",
        "commands",
        Some(recovery),
        "",
    );
    assert_none_lost_or_twice(&tally);
}

const CHAIN: &str = "name: chain\nsteps:\n  - id: a\n    role: echo\n    input: {n: 1, sleep_ms: 20}\n  - id: b\n    role: echo\n    needs: [a]\n    input: {n: \"{{ steps.a.output.n + 1 }}\", sleep_ms: 20}\n";

/// Orchestrators, a monitor and agents on one Postgres database, with `chain` known.
struct Runs {
    mesh: Mesh,
    db: TestDb,
    pool: PgPool,
    workflows: tempfile::TempDir,
}

impl Runs {
    async fn new(name: &str, admin: Option<&str>) -> Self {
        Self::on(&redis_url(), name, admin).await
    }

    /// Runs on the Redis at `redis` (and the Postgres server `admin` names, or the shared
    /// one).
    async fn on(redis: &str, name: &str, admin: Option<&str>) -> Self {
        let mesh = Mesh::on(redis, name).await;
        let db = match admin {
            Some(admin) => TestDb::on(admin, name).await,
            None => TestDb::new(name).await,
        };
        let pool = db.pool().await;
        let workflows = tempfile::tempdir().unwrap();
        std::fs::write(workflows.path().join("chain.yaml"), CHAIN).unwrap();
        Self {
            mesh,
            db,
            pool,
            workflows,
        }
    }

    fn orchestrator(&self) -> tokio::process::Child {
        let dir = self.workflows.path().display().to_string();
        let mut args = vec!["--database-url", &self.db.url, "--workflows", &dir];
        let mut env = vec![];
        if !shipped_defaults() {
            args.extend(["--lease-ms", "1000"]);
            env.extend([
                ("MINDBUS_ORCHESTRATOR__TICK_MS", "50"),
                ("MINDBUS_ORCHESTRATOR__RESEND_AFTER_MS", "1000"),
                ("MINDBUS_AGENT__LEASE_MS", "1000"),
            ]);
        }
        self.mesh.spawn("mindbus-orchestrator", &args, &env)
    }

    fn monitor(&self) -> tokio::process::Child {
        let mut env = vec![("MINDBUS_MONITOR__RETAIN_ENTRIES", "0")];
        if !shipped_defaults() {
            env.push(("MINDBUS_MONITOR__LEASE_MS", "1000"));
        }
        self.mesh
            .spawn("mindbus-monitor", &["--database-url", &self.db.url], &env)
    }

    /// Publishes `n` starts of `chain`, as any producer would (trying again while Redis is
    /// away); returns the run ids.
    async fn start(&self, n: usize) -> Vec<MessageId> {
        let mut runs = Vec::with_capacity(n);
        for _ in 0..n {
            let start = RunRequest::Start(StartRun {
                workflow: "chain".into(),
                input: json!({}),
                owner: None,
                max_running: None,
            })
            .to_command();
            let bus = &self.mesh.bus;
            until_up(&CancellationToken::new(), || {
                bus.publish(ORCHESTRATOR_ROLE, &start)
            })
            .await
            .expect("published");
            runs.push(mindbus::wire::run_id(&start.envelope.id).into());
        }
        runs
    }

    /// The runs that completed with the right output.
    async fn completed(&self) -> Vec<MessageId> {
        let rows: Vec<(uuid::Uuid,)> = sqlx::query_as(
            "SELECT id FROM mindbus_runs WHERE status = 'completed' AND output ->> 'n' = '2'",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        rows.into_iter().map(|(id,)| id.into()).collect()
    }

    /// Waits until every run of `runs` completed (or `timeout` passes); the time it took.
    async fn wait_completed(
        &self,
        runs: &[MessageId],
        since: Instant,
        timeout: Duration,
    ) -> Duration {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let done: BTreeSet<MessageId> = self.completed().await.into_iter().collect();
            if runs.iter().all(|run| done.contains(run)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        since.elapsed()
    }

    /// The tally of runs: a run is answered once when it completed with the right output
    /// through one applied result per step command; twice when a command was applied twice.
    async fn tally(&self, runs: &[MessageId]) -> Tally {
        let completed = self.completed().await;
        let mut tally = Tally::of(runs, completed.iter());
        let twice: Vec<(uuid::Uuid,)> = sqlx::query_as(
            "SELECT run_id FROM mindbus_run_commands GROUP BY run_id HAVING count(*) <> 2 OR count(applied_at) <> 2",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        tally.twice.extend(twice.into_iter().map(|(id,)| id.into()));
        tally
    }

    /// After the fault at `since`: every run of `started` completes, each step result is
    /// applied once, and the monitor records every entry once; reports as `fault`.
    async fn check_recovered(&self, started: &[MessageId], since: Instant, fault: &str) {
        let recovery = self
            .wait_completed(started, since, Duration::from_secs(120))
            .await;
        let tally = self.tally(started).await;
        let recorded = self.wait_recorded(Duration::from_secs(120)).await;
        let note = format!("{recorded} entries recorded by the monitor, each once");
        tally.report(fault, "runs", Some(recovery), &note);
        assert_none_lost_or_twice(&tally);
    }

    /// Waits until the monitor's table holds exactly the entries of every stream, each
    /// once; returns how many.
    async fn wait_recorded(&self, timeout: Duration) -> usize {
        let mesh = &self.mesh;
        let keys = mesh.bus.keys();
        let streams: Vec<String> = ["echo", ORCHESTRATOR_ROLE]
            .into_iter()
            .flat_map(|role| keys.role_streams(role))
            .collect();
        let what = "the monitor's table never matched the streams exactly once";
        testenv::eventually(timeout, what, || async {
            let mut want = BTreeSet::new();
            for stream in &streams {
                for (id, _) in entries(&mut mesh.bus.connection(), stream).await {
                    want.insert((stream.clone(), id.ms as i64, id.seq as i64));
                }
            }
            let rows: Vec<(String, i64, i64)> =
                sqlx::query_as("SELECT stream, entry_ms, entry_seq FROM mindbus_entries")
                    .fetch_all(&self.pool)
                    .await
                    .ok()?;
            let have: BTreeSet<_> = rows.iter().cloned().collect();
            (have.len() == rows.len() && have == want).then_some(rows.len())
        })
        .await
    }
}

/// One of two orchestrators and the monitor killed with SIGKILL during 200 concurrent runs;
/// a new monitor starts. Every run completes, every step result is applied once, and the
/// monitor's record holds every entry exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_and_monitor_sigkill_during_200_runs() {
    let runs = Runs::new("orchkill", None).await;
    sigkill_an_orchestrator_and_the_monitor(&runs, 200, "orchestrator and monitor SIGKILL").await;
}

/// Two orchestrators, a monitor and two agents on `runs` start `n` runs; once a third have
/// completed, one orchestrator and the monitor are killed with SIGKILL and a new monitor
/// starts; reports as `fault`.
async fn sigkill_an_orchestrator_and_the_monitor(runs: &Runs, n: usize, fault: &str) {
    let orchestrators = [runs.orchestrator(), runs.orchestrator()];
    let monitor = runs.monitor();
    let _agents = runs.mesh.agents(2);
    let started = runs.start(n).await;
    let what = "a third of the runs completed";
    testenv::eventually(Duration::from_secs(60), what, || async {
        (runs.completed().await.len() >= n / 3).then_some(())
    })
    .await;
    signal(&orchestrators[0], Signal::SIGKILL);
    signal(&monitor, Signal::SIGKILL);
    let killed = Instant::now();
    let _monitor = runs.monitor();
    runs.check_recovered(&started, killed, fault).await;
}

/// Redis killed with SIGKILL and restarted (AOF `always`: it loses nothing) under 100 runs:
/// the orchestrator and the monitor reconnect and recreate nothing they should not; every
/// run completes, every step result is applied once, and the monitor's record holds every
/// entry exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_and_restart_under_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateRedis::start(dir.path(), Persistence::AofAlways);
    let runs = Runs::on(&redis.url(), "redisruns", None).await;
    let _orchestrator = runs.orchestrator();
    let _monitor = runs.monitor();
    let _agents = runs.mesh.agents(2);
    let mut started = runs.start(50).await;
    let what = "ten runs completed";
    testenv::eventually(Duration::from_secs(60), what, || async {
        (runs.completed().await.len() >= 10).then_some(())
    })
    .await;
    redis.kill();
    let killed = Instant::now();
    redis.restart();
    started.extend(runs.start(50).await);
    runs.check_recovered(&started, killed, "redis kill -9, AOF always")
        .await;
}

/// How long the Postgres case keeps Postgres down (`MINDBUS_OUTAGE_SECS`, default 60).
fn outage() -> Duration {
    let secs = std::env::var("MINDBUS_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Postgres stopped for a minute while commands flow at 200/s and runs are under way:
/// agents keep answering (they never touch Postgres), and once Postgres is back the runs
/// complete and the monitor's record has no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_a_minute() {
    let pg = PrivatePostgres::start();
    let runs = Runs::new("pgdown", Some(&pg.url())).await;
    let _orchestrator = runs.orchestrator();
    let _monitor = runs.monitor();
    let _agents = runs.mesh.agents(2);
    let started = runs.start(20).await;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let producer = {
        let (bus, sent) = (runs.mesh.bus.clone(), Arc::clone(&sent));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for i in 0.. {
                tick.tick().await;
                let command = echo(i, 0);
                bus.publish("echo", &command).await.unwrap();
                sent.lock().unwrap().push(command.envelope.id);
            }
        })
    };
    runs.mesh.wait_results(300, Duration::from_secs(60)).await;
    pg.down();
    let down = Instant::now();
    let before = sent.lock().unwrap().len();
    tokio::time::sleep(outage()).await;
    let published_while_down = sent.lock().unwrap().len() - before;
    let answered_while_down = runs.mesh.results().await.len();
    pg.up();
    let outage_took = down.elapsed();
    // Commands go on flowing a while after Postgres is back.
    runs.mesh
        .wait_results(answered_while_down + 200, Duration::from_secs(60))
        .await;
    producer.abort();
    let sent = sent.lock().unwrap().clone();
    let recovery = runs
        .wait_completed(&started, down, Duration::from_secs(120))
        .await;
    runs.mesh
        .wait_answered(&sent, down, Duration::from_secs(60))
        .await;
    let commands = runs.mesh.tally(&sent).await;
    let tally = runs.tally(&started).await;
    let recorded = runs.wait_recorded(Duration::from_secs(180)).await;
    let note = format!(
        "postgres down {:.0} s, {published_while_down} commands published and \
         {answered_while_down} results written by then",
        outage_took.as_secs_f64()
    );
    commands.report("postgres stopped", "commands", None, &note);
    let note = format!("{recorded} entries recorded by the monitor, each once");
    tally.report(
        "postgres stopped",
        "runs started before it",
        Some(recovery),
        &note,
    );
    assert_none_lost_or_twice(&commands);
    assert_none_lost_or_twice(&tally);
    assert!(
        answered_while_down + 400 >= before + published_while_down,
        "agents kept answering while postgres was down: {answered_while_down} results for \
         {} commands",
        before + published_while_down
    );
}
