//! How one step moves: starting it (condition, approval, fan-out), recording its results
//! (fan-in, loops) and failing it.

use serde_json::{Value, json};

use super::{Action, RunState, StepState, context, dynamic};
use crate::workflow::{Step, Workflow, render, truthy};

/// `None` when the step was not waiting for a decision.
pub(super) fn on_decision(
    step: &Step,
    state: &mut RunState,
    approved: bool,
) -> Option<Vec<Action>> {
    let slot = state
        .steps
        .get_mut(&step.id)
        .filter(|s| **s == StepState::AwaitingApproval)?;
    if approved {
        *slot = StepState::Done {
            output: json!({"approved": true}),
        };
        Some(Vec::new())
    } else {
        *slot = StepState::Failed {
            error: "rejected".into(),
        };
        Some(vec![Action::Fail {
            step: Some(step.id.clone()),
            reason: format!("step `{}` was rejected", step.id),
        }])
    }
}

/// `None` when the step was not waiting for these results (late, repeated, or of another
/// round).
pub(super) fn on_result(
    workflow: &Workflow,
    step: &Step,
    state: &mut RunState,
    round: u32,
    output: Result<Vec<Value>, String>,
) -> Option<Vec<Action>> {
    let Some(StepState::Running {
        round: current,
        commands,
    }) = state.steps.get(&step.id)
    else {
        return None;
    };
    if *current != round {
        return None;
    }
    let output = match output {
        Ok(outputs) if outputs.len() != *commands => Err(format!(
            "internal: {} answers for {commands} commands",
            outputs.len()
        )),
        output => output,
    };
    Some(record_result(workflow, step, state, round, output))
}

fn record_result(
    workflow: &Workflow,
    step: &Step,
    state: &mut RunState,
    round: u32,
    output: Result<Vec<Value>, String>,
) -> Vec<Action> {
    let outputs = match output {
        Ok(outputs) => outputs,
        Err(error) => {
            state.steps.insert(
                step.id.clone(),
                StepState::Failed {
                    error: error.clone(),
                },
            );
            return vec![Action::Fail {
                step: Some(step.id.clone()),
                reason: format!("step `{}` failed: {error}", step.id),
            }];
        }
    };
    let output = if step.for_each.is_some() {
        Value::Array(outputs)
    } else {
        outputs.into_iter().next().unwrap_or_default()
    };
    let Some(repeat) = &step.repeat else {
        return done(workflow, state, step, output);
    };
    let mut scope = context(state, None);
    scope["output"] = output.clone();
    scope["round"] = json!(round);
    match truthy(&repeat.until, &scope) {
        Ok(true) => done(workflow, state, step, output),
        Ok(false) if round >= repeat.max_rounds => done(workflow, state, step, output),
        Ok(false) => dispatch(step, state, round + 1),
        Err(e) => fail(state, step, format!("repeat.until: {e}")),
    }
}

/// A step's final output: it adds the steps it lists (if any), then the step is done.
fn done(workflow: &Workflow, state: &mut RunState, step: &Step, output: Value) -> Vec<Action> {
    match dynamic::add_steps(workflow, state, step, &output) {
        Ok(()) => finish(state, step, output),
        Err(reason) => fail(state, step, reason),
    }
}

fn finish(state: &mut RunState, step: &Step, output: Value) -> Vec<Action> {
    state
        .steps
        .insert(step.id.clone(), StepState::Done { output });
    Vec::new()
}

fn fail(state: &mut RunState, step: &Step, error: String) -> Vec<Action> {
    state.steps.insert(
        step.id.clone(),
        StepState::Failed {
            error: error.clone(),
        },
    );
    vec![Action::Fail {
        step: Some(step.id.clone()),
        reason: format!("step `{}`: {error}", step.id),
    }]
}

pub(super) fn begin(step: &Step, state: &mut RunState) -> Vec<Action> {
    if let Some(when) = &step.when {
        match truthy(when, &context(state, None)) {
            Ok(false) => {
                state.steps.insert(step.id.clone(), StepState::Skipped);
                return Vec::new();
            }
            Ok(true) => {}
            Err(e) => return fail(state, step, format!("when: {e}")),
        }
    }
    if let Some(approval) = &step.approval {
        state
            .steps
            .insert(step.id.clone(), StepState::AwaitingApproval);
        return vec![Action::AwaitApproval {
            step: step.id.clone(),
            timeout_ms: approval.timeout_ms,
        }];
    }
    dispatch(step, state, 1)
}

/// Most commands one step fans out to. An answer costs the same however wide the step is,
/// but the step's output (every answer in one list) is part of the run's state, which
/// every later transition of the run reads.
pub const MAX_FAN_OUT: usize = 20_000;

/// Sends the step's commands for `round`: one per fan-out item, or one.
fn dispatch(step: &Step, state: &mut RunState, round: u32) -> Vec<Action> {
    let items = match &step.for_each {
        None => vec![None],
        Some(list) => match crate::workflow::render(
            &Value::String(format!("{{{{ {list} }}}}")),
            &context(state, None),
        ) {
            Ok(Value::Array(items)) if items.len() > MAX_FAN_OUT => {
                return fail(
                    state,
                    step,
                    format!(
                        "for_each yields {} items, over the {MAX_FAN_OUT} one step may fan out to",
                        items.len()
                    ),
                );
            }
            Ok(Value::Array(items)) => items.into_iter().map(Some).collect(),
            Ok(other) => {
                return fail(
                    state,
                    step,
                    format!("for_each must yield a list, not {other}"),
                );
            }
            Err(e) => return fail(state, step, format!("for_each: {e}")),
        },
    };
    if items.is_empty() {
        return finish(state, step, json!([]));
    }
    // The context is converted for the templates once, not once per item.
    let base = minijinja::Value::from_serialize(context(state, None));
    let mut actions = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let scope = match item {
            Some(item) => minijinja::context! { item => item, round => round, ..base.clone() },
            None => minijinja::context! { round => round, ..base.clone() },
        };
        match render(&step.input, &scope) {
            Ok(input) => actions.push(Action::Dispatch {
                step: step.id.clone(),
                item: index,
                round,
                role: step.role.clone().unwrap_or_default(),
                command_type: step.command_type(),
                input,
                timeout_ms: step.timeout_ms,
                maxattempts: step.maxattempts,
            }),
            Err(e) => return fail(state, step, format!("input: {e}")),
        }
    }
    state.steps.insert(
        step.id.clone(),
        StepState::Running {
            round,
            commands: actions.len(),
        },
    );
    actions
}
