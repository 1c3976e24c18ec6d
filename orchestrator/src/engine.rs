//! The run engine: a pure state machine. Given a workflow, a run's state and what just
//! happened (a step's result, an approval, a cancellation), it updates the state and says
//! what to do next (send these commands, wait for this approval, finish the run). It does no
//! IO, so every path is unit-tested and a persisted state resumes exactly where it stood.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::workflow::{Step, Workflow, render, truthy};

/// Where one step stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    /// Not started: waiting for its dependencies.
    Pending,
    /// Its condition was false.
    Skipped,
    /// Commands are out: one per fan-out item (one in all for a plain step), in `round`.
    Running {
        round: u32,
        outputs: Vec<Option<Value>>,
    },
    /// Waiting for a person.
    AwaitingApproval,
    /// Finished with this output.
    Done { output: Value },
    /// Failed; the run fails with it.
    Failed { error: String },
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's input, defaults applied.
    pub input: Value,
    /// Every step's state.
    pub steps: BTreeMap<String, StepState>,
}

/// What the orchestrator must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send one command for `step` (its fan-out `item`, its loop `round`).
    Dispatch {
        step: String,
        item: usize,
        round: u32,
        role: String,
        command_type: String,
        input: Value,
    },
    /// Wait for an approve or reject of `step`, at most `timeout_ms`.
    AwaitApproval { step: String, timeout_ms: u64 },
    /// The run completed with this output.
    Complete { output: Value },
    /// The run failed.
    Fail {
        step: Option<String>,
        reason: String,
    },
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A step's command answered (`Err` with the failure when it did not complete).
    Result {
        step: String,
        item: usize,
        round: u32,
        output: Result<Value, String>,
    },
    /// A person approved (`true`) or rejected (`false`) an approval step.
    Decided { step: String, approved: bool },
    /// An approval step waited too long.
    ApprovalTimedOut { step: String },
}

/// Starts a run: applies input defaults, checks required inputs, and returns the first
/// actions.
pub fn start(workflow: &Workflow, input: Value) -> Result<(RunState, Vec<Action>), String> {
    let mut given = match input {
        Value::Object(map) => map,
        Value::Null => Default::default(),
        other => return Err(format!("the run input must be an object, not {other}")),
    };
    for (name, spec) in &workflow.inputs {
        if !given.contains_key(name) {
            let default = spec
                .default
                .clone()
                .ok_or_else(|| format!("missing required input `{name}`"))?;
            given.insert(name.clone(), default);
        }
    }
    let steps = workflow
        .steps
        .iter()
        .map(|s| (s.id.clone(), StepState::Pending))
        .collect();
    let mut state = RunState {
        input: Value::Object(given),
        steps,
    };
    let actions = advance(workflow, &mut state);
    Ok((state, actions))
}

/// Applies what happened and returns what to do next. An event for a step that is not
/// waiting for it (a late or repeated result) changes nothing and returns nothing, so a
/// result can never be counted twice.
pub fn apply(workflow: &Workflow, state: &mut RunState, event: Event) -> Vec<Action> {
    let Some(step) = workflow
        .steps
        .iter()
        .find(|s| Some(s.id.as_str()) == event_step(&event))
    else {
        return Vec::new();
    };
    let accepted = match event {
        Event::Result {
            item,
            round,
            output,
            ..
        } => on_result(step, state, item, round, output),
        Event::Decided { approved, .. } => on_decision(step, state, approved),
        Event::ApprovalTimedOut { .. } => {
            let approve = step
                .approval
                .as_ref()
                .is_some_and(|a| a.on_timeout == crate::workflow::OnTimeout::Approve);
            on_decision(step, state, approve)
        }
    };
    let Some(mut actions) = accepted else {
        return Vec::new();
    };
    if let Some(fail) = actions
        .iter()
        .find(|a| matches!(a, Action::Fail { .. }))
        .cloned()
    {
        return vec![fail];
    }
    actions.extend(advance(workflow, state));
    actions
}

fn event_step(event: &Event) -> Option<&str> {
    match event {
        Event::Result { step, .. }
        | Event::Decided { step, .. }
        | Event::ApprovalTimedOut { step } => Some(step),
    }
}

/// `None` when the step was not waiting for a decision.
fn on_decision(step: &Step, state: &mut RunState, approved: bool) -> Option<Vec<Action>> {
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

/// `None` when the step was not waiting for this result (late, repeated or unknown).
fn on_result(
    step: &Step,
    state: &mut RunState,
    item: usize,
    round: u32,
    output: Result<Value, String>,
) -> Option<Vec<Action>> {
    match state.steps.get(&step.id) {
        Some(StepState::Running {
            round: current,
            outputs,
        }) if *current == round && outputs.get(item).is_some_and(Option::is_none) => {}
        _ => return None,
    }
    Some(record_result(step, state, item, round, output))
}

fn record_result(
    step: &Step,
    state: &mut RunState,
    item: usize,
    round: u32,
    output: Result<Value, String>,
) -> Vec<Action> {
    let context = context(state, None);
    let output = match output {
        Ok(output) => output,
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
    let Some(StepState::Running { outputs, .. }) = state.steps.get_mut(&step.id) else {
        return Vec::new();
    };
    outputs[item] = Some(output);
    if outputs.iter().any(Option::is_none) {
        return Vec::new();
    }
    let outputs: Vec<Value> = outputs
        .iter_mut()
        .map(|o| o.take().unwrap_or_default())
        .collect();
    let output = if step.for_each.is_some() {
        Value::Array(outputs)
    } else {
        outputs.into_iter().next().unwrap_or_default()
    };
    let Some(repeat) = &step.repeat else {
        state
            .steps
            .insert(step.id.clone(), StepState::Done { output });
        return Vec::new();
    };
    let mut scope = context;
    scope["output"] = output.clone();
    scope["round"] = json!(round);
    match truthy(&repeat.until, &scope) {
        Ok(true) => finish(state, step, output),
        Ok(false) if round >= repeat.max_rounds => finish(state, step, output),
        Ok(false) => dispatch(step, state, round + 1),
        Err(e) => fail(state, step, format!("repeat.until: {e}")),
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

/// Starts every pending step whose dependencies are all done or skipped, and finishes the
/// run when nothing is left.
fn advance(workflow: &Workflow, state: &mut RunState) -> Vec<Action> {
    let mut actions = Vec::new();
    loop {
        let ready: Vec<&Step> = workflow
            .steps
            .iter()
            .filter(|s| {
                state.steps.get(&s.id) == Some(&StepState::Pending)
                    && s.needs.iter().all(|n| settled(state, n))
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        for step in ready {
            actions.extend(begin(step, state));
            if actions.iter().any(|a| matches!(a, Action::Fail { .. })) {
                return actions
                    .into_iter()
                    .filter(|a| matches!(a, Action::Fail { .. }))
                    .take(1)
                    .collect();
            }
        }
    }
    if state
        .steps
        .values()
        .all(|s| matches!(s, StepState::Done { .. } | StepState::Skipped))
    {
        actions.push(complete(workflow, state));
    }
    actions
}

fn settled(state: &RunState, step: &str) -> bool {
    matches!(
        state.steps.get(step),
        Some(StepState::Done { .. } | StepState::Skipped)
    )
}

fn begin(step: &Step, state: &mut RunState) -> Vec<Action> {
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

/// Sends the step's commands for `round`: one per fan-out item, or one.
fn dispatch(step: &Step, state: &mut RunState, round: u32) -> Vec<Action> {
    let items = match &step.for_each {
        None => vec![None],
        Some(list) => match crate::workflow::render(
            &Value::String(format!("{{{{ {list} }}}}")),
            &context(state, None),
        ) {
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
    let mut actions = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let mut scope = context(state, item.clone());
        scope["round"] = json!(round);
        match render(&step.input, &scope) {
            Ok(input) => actions.push(Action::Dispatch {
                step: step.id.clone(),
                item: index,
                round,
                role: step.role.clone().unwrap_or_default(),
                command_type: step.command_type(),
                input,
            }),
            Err(e) => return fail(state, step, format!("input: {e}")),
        }
    }
    state.steps.insert(
        step.id.clone(),
        StepState::Running {
            round,
            outputs: vec![None; items.len()],
        },
    );
    actions
}

fn complete(workflow: &Workflow, state: &RunState) -> Action {
    let output = match &workflow.output {
        Some(template) => render(template, &context(state, None)),
        None => Ok(workflow
            .steps
            .last()
            .and_then(|s| match state.steps.get(&s.id) {
                Some(StepState::Done { output }) => Some(output.clone()),
                _ => None,
            })
            .unwrap_or_default()),
    };
    match output {
        Ok(output) => Action::Complete { output },
        Err(e) => Action::Fail {
            step: None,
            reason: format!("output: {e}"),
        },
    }
}

/// What templates and expressions see: `inputs`, `steps.<id>.output` of finished steps,
/// and `item` inside a fan-out.
fn context(state: &RunState, item: Option<Value>) -> Value {
    let steps: serde_json::Map<String, Value> = state
        .steps
        .iter()
        .filter_map(|(id, s)| match s {
            StepState::Done { output } => Some((id.clone(), json!({"output": output}))),
            StepState::Skipped => Some((id.clone(), json!({"skipped": true}))),
            _ => None,
        })
        .collect();
    let mut context = json!({"inputs": state.input, "steps": steps});
    if let Some(item) = item {
        context["item"] = item;
    }
    context
}
