//! The run engine: a pure state machine. Given a workflow, a run's state and what just
//! happened (a step's result, an approval, a cancellation), it updates the state and says
//! what to do next (send these commands, wait for this approval, finish the run). It does no
//! IO, so every path is unit-tested and a persisted state resumes exactly where it stood.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod dynamic;
mod step;

use crate::workflow::{Step, Workflow, render};
pub use dynamic::{ADD_STEPS, AddedStep};
pub use step::MAX_FAN_OUT;
use step::{begin, on_decision, on_result};

/// Where one step stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    /// Not started: waiting for its dependencies.
    Pending,
    /// Its condition was false.
    Skipped,
    /// `commands` commands are out in `round`: one per fan-out item, or one. Their answers
    /// are kept beside the run (one row each), not here, so that an answer costs the same
    /// however wide the step is; the step's last answer brings them all back at once.
    Running { round: u32, commands: usize },
    /// Waiting for a person.
    AwaitingApproval,
    /// Finished with this output.
    Done { output: Value },
    /// Failed; the run fails with it.
    Failed { error: String },
}

impl StepState {
    /// The state's name, as stored and as step events say it.
    pub fn name(&self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Skipped => "skipped",
            StepState::Running { .. } => "running",
            StepState::AwaitingApproval => "awaiting_approval",
            StepState::Done { .. } => "done",
            StepState::Failed { .. } => "failed",
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run's input, defaults applied.
    pub input: Value,
    /// Every step's state, added steps included.
    pub steps: BTreeMap<String, StepState>,
    /// Steps that results added at run time, in the order they were added.
    #[serde(default)]
    pub added: Vec<AddedStep>,
}

/// The run's steps: the workflow's, then those added at run time.
fn all_steps(workflow: &Workflow, state: &RunState) -> Vec<Step> {
    workflow
        .steps
        .iter()
        .chain(state.added.iter().map(|a| &a.step))
        .cloned()
        .collect()
}

/// What the orchestrator must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send one command for `step` (its fan-out `item`, its loop `round`), with the step's
    /// per-command timeout and deliveries.
    Dispatch {
        step: String,
        item: usize,
        round: u32,
        role: String,
        command_type: String,
        input: Value,
        timeout_ms: Option<u64>,
        maxattempts: Option<u32>,
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
    /// Every command of a step's `round` answered (their outputs in fan-out item order, one
    /// for a plain step), or one of them failed (`Err` with the failure).
    Result {
        step: String,
        round: u32,
        output: Result<Vec<Value>, String>,
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
        added: Vec::new(),
    };
    let actions = advance(workflow, &mut state);
    Ok((state, actions))
}

/// Applies what happened and returns what to do next. An event for a step that is not
/// waiting for it (a late or repeated result) changes nothing and returns nothing, so a
/// result can never be counted twice.
pub fn apply(workflow: &Workflow, state: &mut RunState, event: Event) -> Vec<Action> {
    // A failed run is over: results of steps that were still running change nothing.
    if state
        .steps
        .values()
        .any(|s| matches!(s, StepState::Failed { .. }))
    {
        return Vec::new();
    }
    let steps = all_steps(workflow, state);
    let Some(step) = steps
        .iter()
        .find(|s| Some(s.id.as_str()) == event_step(&event))
    else {
        return Vec::new();
    };
    let accepted = match event {
        Event::Result { round, output, .. } => on_result(workflow, step, state, round, output),
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

/// Starts every pending step whose dependencies are all done or skipped, and finishes the
/// run when nothing is left.
fn advance(workflow: &Workflow, state: &mut RunState) -> Vec<Action> {
    let mut actions = Vec::new();
    loop {
        let steps = all_steps(workflow, state);
        let ready: Vec<&Step> = steps
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

fn complete(workflow: &Workflow, state: &RunState) -> Action {
    let output = match &workflow.output {
        Some(template) => {
            render(template, &context(state, None)).map_err(|e| format!("output: {e}"))
        }
        // Validation guarantees one final step when there is no `output` template.
        None => match crate::workflow::final_steps(workflow)
            .first()
            .and_then(|id| state.steps.get(*id).map(|s| (*id, s)))
        {
            Some((_, StepState::Done { output })) => Ok(output.clone()),
            Some((id, _)) => Err(format!(
                "the final step `{id}` was skipped and the workflow declares no `output`"
            )),
            None => Ok(Value::Null),
        },
    };
    match output {
        Ok(output) => Action::Complete { output },
        Err(reason) => Action::Fail { step: None, reason },
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
