//! Runs through real processes: a workflow with every feature, cancel, approvals, the
//! run deadline, and the CLI.

use std::time::Duration;

use mindbus::wire::{RunCommand, Status};
use serde_json::{Value, json};

use crate::support::{Orch, completed};

const EVERYTHING: &str = r#"
name: everything
inputs:
  n: {default: 20}
  rounds: {default: 3}
dynamic: {allowed_roles: [echo], max_added_steps: 1, max_depth: 1}
output:
  fanned: "{{ steps.fan.output | length }}"
  sum: "{{ steps.fan.output | map(attribute='i') | sum }}"
  rounds: "{{ steps.loop.output.round }}"
  skipped: "{{ steps.never.skipped }}"
steps:
  - id: seed
    role: echo
    input: {items: "{{ range(inputs.n) | list }}"}
  - id: fan
    role: echo
    needs: [seed]
    for_each: "steps.seed.output.items"
    input: {i: "{{ item }}"}
  - id: loop
    role: echo
    needs: [fan]
    repeat: {until: "output.round >= inputs.rounds", max_rounds: 5}
    input: {round: "{{ round }}"}
  - id: never
    role: echo
    needs: [seed]
    when: "inputs.n > 100"
  - id: plan
    role: echo
    needs: [loop, never]
    adds_steps: true
    input:
      note: planned
      add_steps:
        - id: extra
          role: echo
          input: {from: "{% raw %}{{ steps.plan.output.note }}{% endraw %}"}
"#;

const SLOW: &str =
    "name: slow\nsteps:\n  - id: wait\n    role: echo\n    input: {sleep_ms: 60000}\n";
const STEP_TIMEOUT: &str = "name: patient\nsteps:\n  - id: wait\n    role: echo\n    timeout_ms: 300\n    input: {sleep_ms: 60000}\n";
const HURRY: &str = "name: hurry\ndeadline_ms: 500\nsteps:\n  - id: wait\n    role: echo\n    input: {sleep_ms: 60000}\n";

fn gate(name: &str, timeout_ms: u64, on_timeout: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - id: ok\n    approval: {{timeout_ms: {timeout_ms}, on_timeout: {on_timeout}}}\n  - id: after\n    role: echo\n    needs: [ok]\n    input: {{approved: \"{{{{ steps.ok.output.approved }}}}\"}}\n"
    )
}

#[tokio::test]
async fn a_dag_with_fan_out_loop_condition_and_dynamic_step_completes() {
    let (orch, _o) = Orch::up("everything", &[("everything.yaml", EVERYTHING)]).await;
    let run = orch.start("everything", json!({})).await;
    let ended = orch.wait_ended(&[run], Duration::from_secs(60)).await;
    assert_eq!(ended[0].status, "completed", "{:?}", ended[0].error);
    assert_eq!(
        ended[0].output,
        Some(json!({"fanned": 20, "sum": 190, "rounds": 3, "skipped": true}))
    );
    let shown = orch.ask(RunCommand::Get, json!({"run_id": run})).await;
    let steps = &shown.envelope.data.value["steps"];
    assert_eq!(
        steps["extra"]["output"],
        json!({"from": "planned"}),
        "the added step ran after its parent"
    );
    let commands: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mindbus_run_commands WHERE run_id = $1 AND applied_at IS NOT NULL",
    )
    .bind(run)
    .fetch_one(&orch.pool)
    .await
    .unwrap();
    assert_eq!(
        commands,
        1 + 20 + 3 + 1 + 1,
        "seed, 20 fan-out items, 3 rounds, plan, extra"
    );
    let ends = orch.events("mindbus.run.ended").await;
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].0, run.to_string());
}

#[tokio::test]
async fn cancel_stops_the_run_and_its_running_command() {
    let (orch, _o) = Orch::up("cancel", &[("slow.yaml", SLOW)]).await;
    let run = orch.start("slow", json!({})).await;
    let command = orch.wait_command(run).await;
    let answer = orch.ask(RunCommand::Cancel, json!({"run_id": run})).await;
    assert!(completed(&answer), "{answer:?}");
    assert_eq!(answer.envelope.data.value["status"], "canceled");
    let result = orch.wait_result(command).await;
    assert_eq!(
        result.status,
        Status::Canceled,
        "the step's command was stopped"
    );
    let ended = orch.wait_ended(&[run], Duration::from_secs(5)).await;
    assert_eq!(ended[0].status, "canceled");
    let again = orch.ask(RunCommand::Cancel, json!({"run_id": run})).await;
    assert!(
        !completed(&again),
        "a run that is over cannot be cancelled again"
    );
}

/// Cancelling a run reaches every one of its open commands, however many: more than the
/// control stream keeps entries (10,000) are open when it is cancelled, and the agent that
/// starts afterwards runs none of them.
#[tokio::test]
async fn cancel_reaches_every_command_of_a_run_past_the_control_streams_length() {
    const ITEMS: usize = 10_500;
    let fan = "name: fan\ninputs:\n  items: {}\nsteps:\n  - id: each\n    role: echo\n    for_each: inputs.items\n    input: {n: \"{{ item }}\"}\n";
    let orch = Orch::new("cancel_all", &[("fan.yaml", fan)]).await;
    let _o = orch.orchestrator(2_000);
    let items: Vec<usize> = (0..ITEMS).collect();
    let run = orch.start("fan", json!({"items": items})).await;
    crate::testenv::eventually(
        Duration::from_secs(120),
        "the fan-out was not sent",
        || async {
            let sent = orch.entries("cmd:{echo}").await.len();
            (sent == ITEMS).then_some(())
        },
    )
    .await;
    let answer = orch.ask(RunCommand::Cancel, json!({"run_id": run})).await;
    assert!(completed(&answer), "{answer:?}");
    let cancels = orch.entries("control").await.len();
    assert!(
        cancels < 10,
        "one control entry per run, not per command: {cancels}"
    );
    orch.agent();
    let run_id = run.to_string();
    let statuses = crate::testenv::eventually(
        Duration::from_secs(120),
        "not every command ended",
        || async {
            let field = |fields: &[(String, String)], name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let statuses: Vec<String> = orch
                .entries("result:{echo}")
                .await
                .iter()
                .filter(|f| field(f, "runid").as_deref() == Some(run_id.as_str()))
                .filter_map(|f| field(f, "status"))
                .collect();
            (statuses.len() == ITEMS).then_some(statuses)
        },
    )
    .await;
    let ran = statuses.iter().filter(|s| *s != "canceled").count();
    assert_eq!(ran, 0, "commands of a cancelled run ran");
}

/// A run whose stored definition this orchestrator cannot read (as an older one meets a
/// newer field during an upgrade) can still be cancelled, and its step's result fails it
/// naming why, instead of failing on every try.
#[tokio::test]
async fn a_run_with_an_unreadable_definition_can_still_end() {
    let brief = "name: brief\nsteps:\n  - id: wait\n    role: echo\n    input: {sleep_ms: 2000}\n";
    let files = [("slow.yaml", SLOW), ("brief.yaml", brief)];
    let (orch, _o) = Orch::up("unreadable", &files).await;
    let newer = "version: 2\nname: slow\nsteps:\n  - id: wait\n    role: echo\n    a_field_from_the_future: 1\n";
    let mut runs = Vec::new();
    for workflow in ["slow", "brief"] {
        let run = orch.start(workflow, json!({})).await;
        orch.wait_command(run).await;
        sqlx::query("UPDATE mindbus_runs SET definition = $2 WHERE id = $1")
            .bind(run)
            .bind(newer)
            .execute(&orch.pool)
            .await
            .unwrap();
        runs.push(run);
    }
    let answer = orch
        .ask(RunCommand::Cancel, json!({"run_id": runs[0]}))
        .await;
    assert!(completed(&answer), "{answer:?}");
    // The other's step answers after two seconds, and fails it.
    let ended = orch.wait_ended(&runs, Duration::from_secs(30)).await;
    assert_eq!(ended[0].status, "canceled");
    assert_eq!(ended[1].status, "failed");
    let error = ended[1].error.clone().unwrap_or_default();
    assert!(error.contains("definition cannot be read"), "{error}");
    assert!(error.contains("format version 2"), "{error}");
}

/// A step's big output stays out of the run's events (they say how big it was); the run
/// itself still has it whole.
#[tokio::test]
async fn events_carry_no_big_outputs() {
    let big = "name: big\ninputs:\n  text: {}\nsteps:\n  - id: echo\n    role: echo\n    input: {text: \"{{ inputs.text }}\"}\n";
    let (orch, _o) = Orch::up("bigout", &[("big.yaml", big)]).await;
    let text = "x".repeat(100_000);
    let run = orch.start("big", json!({"text": text})).await;
    let ended = orch.wait_ended(&[run], Duration::from_secs(30)).await;
    assert_eq!(ended[0].status, "completed");
    let done: Vec<Value> = orch
        .events("mindbus.run.step")
        .await
        .into_iter()
        .filter(|(_, _, data)| data["state"] == "done")
        .map(|(_, _, data)| data)
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["output_truncated"], json!(true));
    assert!(done[0]["output_bytes"].as_u64().unwrap() > 100_000);
    let ended_events = orch.events("mindbus.run.ended").await;
    assert_eq!(ended_events[0].2["output_truncated"], json!(true));
    let shown = orch.ask(RunCommand::Get, json!({"run_id": run})).await;
    let shown = &shown.envelope.data.value;
    assert_eq!(shown["steps"]["echo"]["output_truncated"], json!(true));
    assert_eq!(shown["input_truncated"], json!(true), "{shown}");
    let part = json!({"run_id": run, "part": "steps.echo"});
    let whole = orch.ask(RunCommand::Get, part).await;
    assert_eq!(
        whole.envelope.data.value["value"]["text"]
            .as_str()
            .map(str::len),
        Some(100_000),
        "the run keeps the whole output"
    );
}

/// `run.get` leaves big values out and reads a list part a page at a time, in order;
/// `run.list` pages newest first, each run once; `mindbus run` prints a big output whole.
#[tokio::test]
async fn big_runs_and_long_listings_are_read_a_page_at_a_time() {
    let wide = "name: wide\nsteps:\n  - id: fan\n    role: echo\n    for_each: \"range(300) | list\"\n    input: {i: \"{{ item }}\", pad: \"{{ 'x' * 300 }}\"}\n";
    let one = "name: one\nsteps:\n  - id: a\n    role: echo\n";
    let (orch, _o) = Orch::up("pages", &[("wide.yaml", wide), ("one.yaml", one)]).await;
    let run = orch.start("wide", json!({})).await;
    let ended = orch.wait_ended(&[run], Duration::from_secs(30)).await;
    assert_eq!(ended[0].status, "completed");
    let shown = orch.ask(RunCommand::Get, json!({"run_id": run})).await;
    let shown = &shown.envelope.data.value;
    assert_eq!(shown["output_truncated"], json!(true), "{shown}");
    assert_eq!(shown["steps"]["fan"]["output_truncated"], json!(true));
    let mut items = Vec::new();
    let mut offset = Some(0);
    while let Some(from) = offset {
        let ask = json!({"run_id": run, "part": "output", "offset": from, "limit": 128});
        let page = orch.ask(RunCommand::Get, ask).await.envelope.data.value;
        assert_eq!(page["total"], json!(300));
        items.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["i"].clone()),
        );
        offset = page["next"].as_u64();
    }
    assert_eq!(items, (0..300).map(|i| json!(i)).collect::<Vec<_>>());
    let bad = orch
        .ask(
            RunCommand::Get,
            json!({"run_id": run, "part": "steps.nope"}),
        )
        .await;
    assert!(bad.failure.unwrap().error.contains("no step `nope`"));

    // The CLI reads the same parts whole.
    let run_id = run.to_string();
    let printed = orch
        .cli_json(&["runs", "show", &run_id, "--part", "output"])
        .await;
    assert_eq!(printed.as_array().map(Vec::len), Some(300));
    let printed = orch.cli_json(&["run", "wide"]).await;
    assert_eq!(
        printed.as_array().map(Vec::len),
        Some(300),
        "mindbus run prints it whole"
    );

    let mut started = vec![run];
    for _ in 0..4 {
        started.push(orch.start("one", json!({})).await);
    }
    orch.wait_ended(&started, Duration::from_secs(30)).await;
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = orch
            .ask(RunCommand::List, json!({"limit": 2, "after": after}))
            .await
            .envelope
            .data
            .value;
        listed.extend(
            page["runs"].as_array().unwrap().iter().map(|r| {
                r["created_at"].as_str().unwrap().to_owned() + r["run_id"].as_str().unwrap()
            }),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed.len(), 6, "every run once: {listed:?}");
    let mut newest_first = listed.clone();
    newest_first.sort();
    newest_first.reverse();
    newest_first.dedup();
    assert_eq!(listed, newest_first, "newest first, no repeats");
    for cursor in [
        "nope",
        "-9223372036854775808_00000000-0000-0000-0000-000000000000",
        "9223372036854775807_00000000-0000-0000-0000-000000000000",
    ] {
        let bad = orch.ask(RunCommand::List, json!({"after": cursor})).await;
        let failure = bad.failure.expect("refused");
        assert!(!failure.retryable, "{cursor}: {failure:?}");
        assert!(failure.error.contains("after"), "{cursor}: {failure:?}");
    }
}

/// A fan-out's answers are counted beside the run: the run's row (and its state, however
/// big) is read and written again only when the last answer arrives, so an answer costs
/// the same whatever the run's size. The step's output keeps the items' order.
#[tokio::test]
async fn fan_out_answers_leave_the_run_alone_until_the_last() {
    let wide = "name: wide\nsteps:\n  - id: seed\n    role: echo\n    input: {pad: \"{{ 'x' * 200000 }}\"}\n  - id: fan\n    role: echo\n    needs: [seed]\n    for_each: \"range(10) | list\"\n    input: {i: \"{{ item }}\", sleep_ms: \"{{ 1500 if item == 0 else 0 }}\"}\n";
    let (orch, _o) = Orch::up("fanin", &[("wide.yaml", wide)]).await;
    let run = orch.start("wide", json!({})).await;
    let count = |sql: &'static str| {
        let pool = orch.pool.clone();
        async move {
            // Nothing yet while the orchestrator is still creating its tables.
            sqlx::query_scalar::<_, i64>(sql)
                .bind(run)
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
        }
    };
    let sent = "SELECT count(*) FROM mindbus_run_commands WHERE run_id = $1 AND step = 'fan'";
    let answered = "SELECT count(*) FROM mindbus_run_commands WHERE run_id = $1 AND step = 'fan' AND applied_at IS NOT NULL";
    let version =
        "SELECT (extract(epoch FROM updated_at) * 1e6)::int8 FROM mindbus_runs WHERE id = $1";
    crate::testenv::eventually(Duration::from_secs(20), "the fan-out was sent", || async {
        (count(sent).await == 10).then_some(())
    })
    .await;
    let dispatched = count(version).await;
    crate::testenv::eventually(Duration::from_secs(20), "nine items answered", || async {
        (count(answered).await == 9).then_some(())
    })
    .await;
    assert_eq!(
        count(version).await,
        dispatched,
        "answers before the last one did not rewrite the run"
    );
    let ended = orch.wait_ended(&[run], Duration::from_secs(30)).await;
    assert_eq!(ended[0].status, "completed", "{:?}", ended[0].error);
    let shown = orch.ask(RunCommand::Get, json!({"run_id": run})).await;
    let items: Vec<i64> = shown.envelope.data.value["steps"]["fan"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["i"].as_i64().unwrap())
        .collect();
    assert_eq!(
        items,
        (0..10).collect::<Vec<_>>(),
        "fan-in keeps item order"
    );
    let counters = "SELECT count(*) FROM mindbus_run_open_steps WHERE run_id = $1";
    assert_eq!(count(counters).await, 0, "an ended run keeps no counters");
}

/// A run whose state would outgrow `orchestrator.max_state_bytes` fails naming the bound,
/// rather than being retried forever against Postgres's own limit.
#[tokio::test]
async fn a_run_outgrowing_its_state_bound_fails_naming_it() {
    let wide = "name: wide\nsteps:\n  - id: fan\n    role: echo\n    for_each: \"range(10) | list\"\n    input: {pad: \"{{ 'x' * 10000 }}\"}\n";
    let orch = Orch::new("statebound", &[("wide.yaml", wide)]).await;
    orch.agent();
    let _o = orch
        .orchestrator_command(2_000)
        .env("MINDBUS_ORCHESTRATOR__MAX_STATE_BYTES", "65536")
        .spawn()
        .unwrap();
    let run = orch.start("wide", json!({})).await;
    let ended = orch.wait_ended(&[run], Duration::from_secs(30)).await;
    assert_eq!(ended[0].status, "failed");
    let error = ended[0].error.clone().unwrap_or_default();
    assert!(error.contains("orchestrator.max_state_bytes"), "{error}");
    // An input past the bound is refused at the start.
    let refused = orch
        .ask(
            RunCommand::Start,
            json!({"workflow": "wide", "input": {"pad": "x".repeat(70_000)}}),
        )
        .await;
    let failure = refused.failure.expect("refused").error;
    assert!(
        failure.contains("orchestrator.max_state_bytes"),
        "{failure}"
    );
}

#[tokio::test]
async fn approvals_are_decided_by_people_or_by_their_timeout() {
    let files = [
        ("a.yaml", gate("manual", 60_000, "reject")),
        ("b.yaml", gate("lapse-reject", 300, "reject")),
        ("c.yaml", gate("lapse-approve", 300, "approve")),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(f, y)| (*f, y.as_str())).collect();
    let (orch, _o) = Orch::up("approval", &files).await;
    let approved = orch.start("manual", json!({})).await;
    let rejected = orch.start("manual", json!({})).await;
    let lapsed_reject = orch.start("lapse-reject", json!({})).await;
    let lapsed_approve = orch.start("lapse-approve", json!({})).await;
    orch.wait_stored(approved).await;
    orch.wait_stored(rejected).await;
    let not_waiting = orch
        .ask(
            RunCommand::Approve,
            json!({"run_id": approved, "step": "after"}),
        )
        .await;
    assert!(
        not_waiting
            .failure
            .unwrap()
            .error
            .contains("not waiting for an approval")
    );
    let yes = orch
        .ask(
            RunCommand::Approve,
            json!({"run_id": approved, "step": "ok"}),
        )
        .await;
    assert!(completed(&yes), "{yes:?}");
    let no = orch
        .ask(
            RunCommand::Approve,
            json!({"run_id": rejected, "step": "ok", "approved": false}),
        )
        .await;
    assert!(completed(&no), "{no:?}");
    let ended = orch
        .wait_ended(
            &[approved, rejected, lapsed_reject, lapsed_approve],
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(ended[0].output, Some(json!({"approved": true})));
    assert_eq!(ended[1].status, "failed");
    assert!(ended[1].error.as_deref().unwrap().contains("rejected"));
    assert_eq!(ended[2].status, "failed", "on_timeout: reject");
    assert_eq!(ended[3].status, "completed", "on_timeout: approve");
}

#[tokio::test]
async fn the_run_deadline_fails_the_run_and_stops_its_commands() {
    let (orch, _o) = Orch::up("deadline", &[("hurry.yaml", HURRY)]).await;
    let run = orch.start("hurry", json!({})).await;
    let command = orch.wait_command(run).await;
    let ended = orch.wait_ended(&[run], Duration::from_secs(20)).await;
    assert_eq!(ended[0].status, "failed");
    // The run's timer or the command's inherited deadline, whichever fires first.
    let error = ended[0].error.clone().unwrap();
    assert!(error.contains("deadline_exceeded"), "{error}");
    let result = orch.wait_result(command).await;
    assert_ne!(
        result.status,
        Status::Completed,
        "the command inherited the deadline"
    );
}

#[tokio::test]
async fn a_step_timeout_fails_the_step_and_its_run() {
    let (orch, _o) = Orch::up("step_timeout", &[("patient.yaml", STEP_TIMEOUT)]).await;
    let run = orch.start("patient", json!({})).await;
    let command = orch.wait_command(run).await;
    let ended = orch.wait_ended(&[run], Duration::from_secs(20)).await;
    assert_eq!(ended[0].status, "failed");
    let error = ended[0].error.clone().unwrap();
    assert!(
        error.contains("step `wait` failed: deadline_exceeded"),
        "{error}"
    );
    let result = orch.wait_result(command).await;
    assert_eq!(
        result.failure.unwrap().errortype.as_str(),
        "deadline_exceeded"
    );
}

/// A step whose command no agent ever reads still times out, on the orchestrator's clock.
#[tokio::test]
async fn a_step_nobody_consumes_times_out_on_the_orchestrators_clock() {
    let unconsumed = "name: unheard\nsteps:\n  - id: wait\n    role: echo\n    timeout_ms: 1000\n    maxattempts: 1\n";
    let orch = Orch::new("unconsumed", &[("unheard.yaml", unconsumed)]).await;
    let _o = orch.orchestrator(2_000);
    let run = orch.start("unheard", json!({})).await;
    let ended = orch.wait_ended(&[run], Duration::from_secs(10)).await;
    assert_eq!(ended[0].status, "failed");
    let error = ended[0].error.clone().unwrap();
    assert!(error.contains("step `wait` failed: timeout"), "{error}");
    let timers: i64 = sqlx::query_scalar("SELECT count(*) FROM mindbus_run_timers")
        .fetch_one(&orch.pool)
        .await
        .unwrap();
    assert_eq!(timers, 0, "the run's timers went with it");
}

/// A result that came in time but was not applied yet (its orchestrator died holding it)
/// beats the step's timer: the timer waits until results written before its due time are
/// applied.
#[tokio::test]
async fn a_result_in_time_beats_the_timer_even_when_applied_late() {
    let timed = "name: timed\nsteps:\n  - id: wait\n    role: echo\n    timeout_ms: 1000\n";
    let orch = Orch::new("timerrace", &[("timed.yaml", timed)]).await;
    let mut first = orch.orchestrator(2_000);
    let run = orch.start("timed", json!({})).await;
    let command = orch.wait_command(run).await;
    first.kill().await.unwrap();
    let mut result = mindbus::wire::CommandResult::new(
        command.into(),
        Status::Completed,
        "test",
        mindbus::wire::Payload::json(json!({"ok": true})),
    );
    result.runid = Some(run.to_string());
    result.stepid = Some("wait".into());
    let results = format!("{}:result:{{echo}}", orch.prefix);
    let mut conn = orch.bus.connection();
    let mut add = redis::cmd("XADD");
    add.arg(&results).arg("*");
    for (name, value) in result.encode().unwrap() {
        add.arg(name).arg(value);
    }
    let _: String = add.query_async(&mut conn).await.unwrap();
    let what = "the step's timer due";
    crate::testenv::eventually(Duration::from_secs(10), what, || async {
        let due: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM mindbus_run_timers WHERE kind = 'command' AND due_at <= now()",
        )
        .fetch_one(&orch.pool)
        .await
        .ok()?;
        (due == 1).then_some(())
    })
    .await;
    // Past the step's due time, read by an orchestrator that then died: pending and
    // unapplied until the next one takes it over after the lease (1 s).
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("mindbus-orchestrator")
        .arg("dead")
        .arg("STREAMS")
        .arg(&results)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _second = orch.orchestrator(2_000);
    let ended = orch.wait_ended(&[run], Duration::from_secs(20)).await;
    assert_eq!(ended[0].status, "completed", "{:?}", ended[0].error);
}

/// A step result that cannot be decoded fails its run with the reason, instead of leaving
/// it waiting for an answer that came; a second unreadable entry changes nothing.
#[tokio::test]
async fn an_unreadable_step_result_fails_its_run_with_the_reason() {
    let unheard = "name: unheard\nsteps:\n  - id: wait\n    role: echo\n";
    let orch = Orch::new("unreadable", &[("unheard.yaml", unheard)]).await;
    let _o = orch.orchestrator(2_000);
    let run = orch.start("unheard", json!({})).await;
    let command = orch.wait_command(run).await;
    let results = format!("{}:result:{{echo}}", orch.prefix);
    for _ in 0..2 {
        let _: String = redis::cmd("XADD")
            .arg(&results)
            .arg("*")
            .arg("type")
            .arg("mindbus.result")
            .arg("correlationid")
            .arg(command.to_string())
            .arg("runid")
            .arg(run.to_string())
            .arg("status")
            .arg("exploded")
            .query_async(&mut orch.bus.connection())
            .await
            .unwrap();
    }
    let ended = orch.wait_ended(&[run], Duration::from_secs(10)).await;
    assert_eq!(ended[0].status, "failed");
    let error = ended[0].error.clone().unwrap();
    assert!(
        error.contains("malformed") && error.contains("status"),
        "{error}"
    );
}

#[tokio::test]
async fn the_cli_runs_a_workflow_and_shows_it() {
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/workflows/sample.yaml"
    ))
    .unwrap();
    let (orch, _o) = Orch::up("cli", &[("sample.yaml", &sample)]).await;
    let cli = orch.cli();
    let out = tokio::task::spawn_blocking(move || {
        let mut cli = cli;
        cli.args(["run", "sample", "--input", r#"{"topic": "streams"}"#])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let output: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(output["draft"], "A short piece on streams");
    assert_eq!(output["sections"].as_array().unwrap().len(), 3);
    assert!(
        stderr.contains("step review: running (round 3)"),
        "{stderr}"
    );
    assert_eq!(completed_runs(&orch), 1);
    // A run started with redis-cli, as any language would, shows up beside it; its
    // `tenant` goes with every command it sends (LLM budgets are per tenant).
    let stream = format!("{}:cmd:{{orchestrator}}", orch.prefix);
    let data = r#"{"workflow": "sample", "input": {"topic": "redis-cli"}}"#;
    let xadd = std::process::Command::new("redis-cli")
        .args(["-u", &crate::testenv::redis_url(), "XADD", &stream, "*"])
        .args(["type", "run.start", "data", data, "tenant", "acme"])
        .output()
        .expect("redis-cli is installed");
    assert!(xadd.status.success(), "{xadd:?}");
    crate::testenv::eventually(
        Duration::from_secs(20),
        "the redis-cli run did not complete",
        || async { (completed_runs(&orch) == 2).then_some(()) },
    )
    .await;
    let commands = orch.entries("cmd:{echo}").await;
    let acme = commands
        .iter()
        .filter(|f| f.contains(&("tenant".to_string(), "acme".to_string())))
        .count();
    assert_eq!((acme, commands.len()), (7, 14), "each run sends 7 commands");
    let unknown = orch.cli().args(["run", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let refusal = String::from_utf8_lossy(&unknown.stderr);
    assert!(refusal.contains("no workflow `nope`"), "{refusal}");
    assert!(
        !refusal.contains("sample"),
        "a refusal names workflows the asker may not know of: {refusal}"
    );
}

/// How many runs `mindbus runs list` shows as completed.
fn completed_runs(orch: &Orch) -> usize {
    let list = orch
        .cli()
        .args(["runs", "list", "--status", "completed"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    listed["runs"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_result_for_another_run_or_holding_nul_neither_corrupts_nor_stalls() {
    let (orch, _o) = Orch::up("forged", &[("slow.yaml", SLOW)]).await;
    let (a, b) = (
        orch.start("slow", json!({})).await,
        orch.start("slow", json!({})).await,
    );
    let b_command = orch.wait_command(b).await;
    orch.wait_command(a).await;
    let forge = |run: uuid::Uuid, data: &str| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(format!("{}:result:{{echo}}", orch.prefix)).arg("*");
        cmd.arg("type")
            .arg("mindbus.result")
            .arg("status")
            .arg("completed");
        cmd.arg("correlationid").arg(b_command.to_string());
        cmd.arg("runid")
            .arg(run.to_string())
            .arg("data")
            .arg(data.to_owned());
        cmd
    };
    // Run a's id with run b's command: not a's command, so nothing happens to either.
    forge(a, r#"{"stolen": true}"#)
        .query_async::<String>(&mut orch.bus.connection())
        .await
        .unwrap();
    forge(b, r#"{"text": "a\u0000b"}"#)
        .query_async::<String>(&mut orch.bus.connection())
        .await
        .unwrap();
    let ended = orch.wait_ended(&[b], Duration::from_secs(20)).await;
    assert_eq!(ended[0].status, "completed", "{:?}", ended[0].error);
    assert_eq!(ended[0].output, Some(json!({"text": "a\u{fffd}b"})));
    assert_eq!(orch.ended(a).await, None, "run a did not take b's result");
}
