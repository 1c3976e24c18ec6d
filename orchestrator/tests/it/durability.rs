//! Runs survive the orchestrator: `kill -9` at random moments during 200 concurrent runs,
//! and two orchestrators side by side.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng as _;
use serde_json::json;
use uuid::Uuid;

use crate::support::Orch;

const RUNS: usize = 200;
const STEPS: i64 = 5;

/// Five steps in a chain, each adding one to the last one's `n`: a skipped step or a
/// result applied twice would show in the final `n`.
fn chain() -> String {
    let mut yaml = String::from(
        "name: chain\nsteps:\n  - id: s1\n    role: echo\n    input: {n: 1, sleep_ms: 20}\n",
    );
    for i in 2..=STEPS {
        yaml.push_str(&format!(
            "  - id: s{i}\n    role: echo\n    needs: [s{}]\n    input: {{n: \"{{{{ steps.s{}.output.n + 1 }}}}\", sleep_ms: 20}}\n",
            i - 1,
            i - 1
        ));
    }
    yaml
}

async fn start_all(orch: &Orch) -> Vec<Uuid> {
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        runs.push(orch.start("chain", json!({})).await);
    }
    runs
}

/// Every run completed with n = 5, through exactly five commands, each applied once and
/// answered once.
async fn assert_all_complete_once(orch: &Orch, runs: &[Uuid]) {
    let ended = orch.wait_ended(runs, Duration::from_secs(180)).await;
    for (run, end) in runs.iter().zip(&ended) {
        assert_eq!(end.status, "completed", "run {run}: {:?}", end.error);
        assert_eq!(end.output.as_ref().unwrap()["n"], json!(STEPS), "run {run}");
    }
    let per_run: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT run_id, count(*), count(applied_at) FROM mindbus_run_commands GROUP BY run_id",
    )
    .fetch_all(&orch.pool)
    .await
    .unwrap();
    assert_eq!(per_run.len(), RUNS);
    for (run, sent, applied) in per_run {
        assert_eq!(
            (sent, applied),
            (STEPS, STEPS),
            "run {run}: one command per step, each applied"
        );
    }
    let results = orch.entries("result:{echo}").await;
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for fields in &results {
        if fields.iter().any(|(k, _)| k == "runid")
            && let Some((_, id)) = fields.iter().find(|(k, _)| k == "correlationid")
        {
            *answers.entry(id.clone()).or_default() += 1;
        }
    }
    assert_eq!(answers.len(), RUNS * STEPS as usize);
    assert!(
        answers.values().all(|n| *n == 1),
        "every command has one accepted result"
    );
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_and_repeats_nothing() {
    let orch = Orch::new("kill9", &[("chain.yaml", &chain())]).await;
    orch.agent();
    let mut current = orch.orchestrator(500);
    let runs = start_all(&orch).await;
    let mut kills = 0;
    let mut killed_mid_run = 0;
    for _ in 0..6 {
        let wait = rand::rng().random_range(200..900);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let pid = nix::unistd::Pid::from_raw(current.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        current.wait().await.unwrap();
        kills += 1;
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM mindbus_runs WHERE status = 'running'")
                .fetch_one(&orch.pool)
                .await
                .unwrap_or(0);
        if running > 0 {
            killed_mid_run += 1;
        }
        current = orch.orchestrator(500);
    }
    assert!(
        killed_mid_run > 0,
        "no kill landed while runs were going; the test proved nothing"
    );
    assert_all_complete_once(&orch, &runs).await;
    let resent = mindbus_orchestrator::store::resent_total(&orch.pool)
        .await
        .unwrap();
    println!(
        "{RUNS} runs of {STEPS} steps: {kills} kill -9 ({killed_mid_run} with runs going); {resent} step commands re-sent after a kill, all with their first id"
    );
}

#[tokio::test]
async fn two_orchestrators_never_advance_a_run_twice() {
    let orch = Orch::new("two", &[("chain.yaml", &chain())]).await;
    orch.agent();
    // Nothing crashes here, so nothing may be re-sent: a long resend delay.
    let _a = orch.orchestrator(60_000);
    let _b = orch.orchestrator(60_000);
    let runs = start_all(&orch).await;
    assert_all_complete_once(&orch, &runs).await;
    let mut done: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for (run, step, data) in orch.events("mindbus.run.step").await {
        if data["state"] == "done" {
            *done.entry((run, step)).or_default() += 1;
        }
    }
    assert_eq!(done.len(), RUNS * STEPS as usize);
    assert!(done.values().all(|n| *n == 1), "each step finished once");
    assert_eq!(
        orch.events("mindbus.run.ended").await.len(),
        RUNS,
        "each run ended once"
    );
}

/// Entries are re-sent only when their publisher is gone: a 2,000-item fan-out takes
/// longer to commit and publish than two live orchestrators wait before they call an entry
/// stale (100 ms), and yet each command is sent once, and nothing is re-sent.
#[tokio::test]
async fn a_live_publisher_is_never_raced_by_the_sweep() {
    const ITEMS: usize = 2_000;
    let fan = "name: fan\ninputs:\n  items: {}\nsteps:\n  - id: each\n    role: echo\n    for_each: inputs.items\n    input: {n: \"{{ item }}\"}\n";
    let orch = Orch::new("sweep", &[("fan.yaml", fan)]).await;
    let _a = orch.orchestrator(100);
    let _b = orch.orchestrator(100);
    // No agent: the commands stay on their stream, to be counted.
    let items: Vec<usize> = (0..ITEMS).collect();
    let run = orch.start("fan", json!({"items": items})).await;
    orch.wait_stored(run).await;
    crate::testenv::eventually(
        Duration::from_secs(60),
        "the outbox did not drain",
        || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM mindbus_outbox")
                .fetch_one(&orch.pool)
                .await
                .ok()?;
            (left == 0).then_some(())
        },
    )
    .await;
    // A sweep re-sends only rows it takes out of the outbox, and its XADDs come before its
    // commit makes them gone: with the outbox empty, every send has happened.
    let sent = orch.entries("cmd:{echo}").await.len();
    let resent = mindbus_orchestrator::store::resent_total(&orch.pool)
        .await
        .unwrap();
    assert_eq!(
        (sent, resent),
        (ITEMS, 0),
        "commands sent twice while their publisher lived"
    );
    assert_eq!(orch.events("mindbus.run.started").await.len(), 1);
}
