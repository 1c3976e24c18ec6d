//! The run engine, driven by a simulated echo agent (answers with its input).

use std::path::Path;

use mindbus_orchestrator::engine::{self, Action, Event, RunState};
use mindbus_orchestrator::workflow::{self, Workflow};
use serde_json::{Value, json};

pub(crate) fn workflow(yaml: &str) -> Workflow {
    workflow::parse(Path::new("test.yaml"), yaml, &["echo"]).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Answers every dispatched command with its input, a step's round at a time (the last
/// one dispatched first, to shake the order), until the run ends; returns the final action
/// and how many commands were sent.
pub(crate) fn drive(
    workflow: &Workflow,
    state: &mut RunState,
    mut actions: Vec<Action>,
) -> (Action, usize) {
    let mut sent = 0;
    loop {
        if let Some(end) = actions
            .iter()
            .find(|a| matches!(a, Action::Complete { .. } | Action::Fail { .. }))
        {
            return (end.clone(), sent);
        }
        let Some(Action::Dispatch { step, round, .. }) = actions.last().cloned() else {
            panic!("stuck with {actions:?}")
        };
        let mut answers = Vec::new();
        actions.retain(|a| match a {
            Action::Dispatch {
                step: s,
                round: r,
                item,
                input,
                ..
            } if *s == step && *r == round => {
                answers.push((*item, input.clone()));
                false
            }
            _ => true,
        });
        answers.sort_by_key(|(item, _)| *item);
        sent += answers.len();
        let event = Event::Result {
            step,
            round,
            output: Ok(answers.into_iter().map(|(_, input)| input).collect()),
        };
        // A duplicate delivery of the same results changes nothing.
        let mut next = engine::apply(workflow, state, event.clone());
        assert!(
            engine::apply(workflow, state, event).is_empty(),
            "results counted twice"
        );
        actions.append(&mut next);
    }
}

#[test]
fn the_sample_runs_its_dag_fan_out_condition_and_loop() {
    let sample = workflow::load_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/workflows/sample.yaml"),
        &["echo"],
    )
    .unwrap();
    let (mut state, actions) = engine::start(&sample, json!({"topic": "streams"})).unwrap();
    assert!(matches!(&actions[..], [Action::Dispatch { step, .. }] if step == "draft"));
    let (end, sent) = drive(&sample, &mut state, actions);
    // draft 1 + expand 3 + review 3 rounds
    assert_eq!(sent, 7);
    let Action::Complete { output } = end else {
        panic!("{end:?}")
    };
    assert_eq!(output["draft"], "A short piece on streams");
    let points: Vec<&str> = output["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["point"].as_str().unwrap())
        .collect();
    assert_eq!(
        points,
        ["why", "how", "what next"],
        "fan-in keeps the item order"
    );
}

#[test]
fn a_fan_out_of_twenty_then_a_dynamic_number_of_rounds() {
    let w = workflow(
        r#"
name: wide
inputs:
  n: {default: 20}
steps:
  - id: fan
    role: echo
    for_each: "range(inputs.n) | list"
    input: {i: "{{ item }}"}
  - id: sum
    role: echo
    needs: [fan]
    input: {count: "{{ steps.fan.output | length }}"}
    repeat: {until: "round >= 2", max_rounds: 5}
"#,
    );
    let (mut state, actions) = engine::start(&w, Value::Null).unwrap();
    assert_eq!(actions.len(), 20);
    let (end, sent) = drive(&w, &mut state, actions);
    assert_eq!(sent, 22);
    assert_eq!(
        end,
        Action::Complete {
            output: json!({"count": 20})
        }
    );
}

#[test]
fn a_false_condition_skips_and_dependents_still_run() {
    let w = workflow(
        r#"
name: cond
inputs:
  go: {default: false}
steps:
  - id: maybe
    role: echo
    when: "inputs.go"
  - id: after
    role: echo
    needs: [maybe]
    input: {skipped: "{{ steps.maybe.skipped }}"}
"#,
    );
    let (mut state, actions) = engine::start(&w, Value::Null).unwrap();
    let (end, sent) = drive(&w, &mut state, actions);
    assert_eq!(sent, 1);
    assert_eq!(
        end,
        Action::Complete {
            output: json!({"skipped": true})
        }
    );
}

#[test]
fn a_failed_step_fails_the_run_and_late_results_change_nothing() {
    let w = workflow(
        "name: f\nsteps:\n  - id: a\n    role: echo\n  - id: b\n    role: echo\n    needs: [a]\n",
    );
    let (mut state, _) = engine::start(&w, Value::Null).unwrap();
    let actions = engine::apply(
        &w,
        &mut state,
        Event::Result {
            step: "a".into(),
            round: 1,
            output: Err("boom".into()),
        },
    );
    assert!(matches!(&actions[..], [Action::Fail { reason, .. }] if reason.contains("boom")));
    assert!(
        engine::apply(
            &w,
            &mut state,
            Event::Result {
                step: "a".into(),
                round: 1,
                output: Ok(vec![json!(1)])
            }
        )
        .is_empty()
    );
    assert!(
        engine::apply(
            &w,
            &mut state,
            Event::Result {
                step: "b".into(),
                round: 1,
                output: Ok(vec![json!(1)])
            }
        )
        .is_empty(),
        "b never started"
    );
}

#[test]
fn approvals_approve_reject_and_time_out_as_declared() {
    let yaml = |on_timeout: &str| {
        format!(
            "name: a\nsteps:\n  - id: ok\n    approval: {{timeout_ms: 1000, on_timeout: {on_timeout}}}\n  - id: after\n    role: echo\n    needs: [ok]\n"
        )
    };
    let w = workflow(&yaml("reject"));
    let (mut state, actions) = engine::start(&w, Value::Null).unwrap();
    assert_eq!(
        actions,
        vec![Action::AwaitApproval {
            step: "ok".into(),
            timeout_ms: 1000
        }]
    );
    let next = engine::apply(
        &w,
        &mut state.clone(),
        Event::Decided {
            step: "ok".into(),
            approved: true,
        },
    );
    assert!(matches!(&next[..], [Action::Dispatch { step, .. }] if step == "after"));
    let rejected = engine::apply(
        &w,
        &mut state.clone(),
        Event::Decided {
            step: "ok".into(),
            approved: false,
        },
    );
    assert!(matches!(&rejected[..], [Action::Fail { .. }]));
    let timed_out = engine::apply(
        &w,
        &mut state,
        Event::ApprovalTimedOut { step: "ok".into() },
    );
    assert!(
        matches!(&timed_out[..], [Action::Fail { .. }]),
        "on_timeout: reject"
    );

    let w = workflow(&yaml("approve"));
    let (mut state, _) = engine::start(&w, Value::Null).unwrap();
    let next = engine::apply(
        &w,
        &mut state,
        Event::ApprovalTimedOut { step: "ok".into() },
    );
    assert!(
        matches!(&next[..], [Action::Dispatch { .. }]),
        "on_timeout: approve"
    );
}

#[test]
fn a_missing_required_input_is_refused() {
    let w = workflow(
        "name: i\ninputs:\n  topic: {}\nsteps:\n  - id: a\n    role: echo\n    input: {t: \"{{ inputs.topic }}\"}\n",
    );
    assert_eq!(
        engine::start(&w, Value::Null).unwrap_err(),
        "missing required input `topic`"
    );
}

#[test]
fn state_survives_a_round_trip_through_json() {
    let w = workflow(
        "name: s\noutput: \"{{ steps.b.output }}\"\nsteps:\n  - id: a\n    role: echo\n    for_each: \"[1, 2]\"\n  - id: b\n    role: echo\n",
    );
    let (mut state, _) = engine::start(&w, Value::Null).unwrap();
    engine::apply(
        &w,
        &mut state,
        Event::Result {
            step: "b".into(),
            round: 1,
            output: Ok(vec![json!("one")]),
        },
    );
    let restored: RunState = serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();
    assert_eq!(
        restored, state,
        "a persisted run resumes exactly where it stood"
    );
}

#[test]
fn after_a_failure_parallel_results_change_nothing() {
    let w = workflow(
        "name: p\noutput: \"{{ steps.c.output }}\"\nsteps:\n  - id: a\n    role: echo\n  - id: b\n    role: echo\n  - id: c\n    role: echo\n    needs: [b]\n",
    );
    let (mut state, actions) = engine::start(&w, Value::Null).unwrap();
    assert_eq!(actions.len(), 2, "a and b start together");
    let failed = engine::apply(
        &w,
        &mut state,
        Event::Result {
            step: "a".into(),
            round: 1,
            output: Err("boom".into()),
        },
    );
    assert!(matches!(&failed[..], [Action::Fail { .. }]));
    let late = engine::apply(
        &w,
        &mut state,
        Event::Result {
            step: "b".into(),
            round: 1,
            output: Ok(vec![json!(1)]),
        },
    );
    assert!(
        late.is_empty(),
        "c is not dispatched and the run does not fail twice: {late:?}"
    );
}

#[test]
fn a_skipped_final_step_without_output_fails_the_run() {
    let w = workflow(
        "name: s\nsteps:\n  - id: a\n    role: echo\n  - id: last\n    role: echo\n    needs: [a]\n    when: \"false\"\n",
    );
    let (mut state, actions) = engine::start(&w, Value::Null).unwrap();
    let (end, _) = drive(&w, &mut state, actions);
    assert!(
        matches!(&end, Action::Fail { reason, .. } if reason.contains("`last` was skipped")),
        "{end:?}"
    );
}

/// A fan-out wider than the declared limit fails its step, naming the limit, before one
/// command is sent.
#[test]
fn a_fan_out_past_its_limit_fails_naming_it() {
    let w = workflow(
        r#"
name: wider
inputs:
  items: {}
steps:
  - id: fan
    role: echo
    for_each: "inputs.items"
    input: {i: "{{ item }}"}
"#,
    );
    let items: Vec<usize> = (0..=engine::MAX_FAN_OUT).collect();
    let (_, actions) = engine::start(&w, json!({"items": items})).unwrap();
    match actions.as_slice() {
        [Action::Fail { reason, .. }] => {
            assert!(reason.contains("20000 one step may fan out to"), "{reason}");
        }
        other => panic!("the step should fail, not send {} actions", other.len()),
    }
}
