//! Dynamic steps: a step's output may add steps to its run, within the limits the workflow
//! declares under `dynamic` (allowed roles, most added steps, most levels). Anything outside
//! them fails the run with a reason that says which limit.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RunState, StepState};
use crate::workflow::{Step, Workflow, check_workflow, valid_id};

/// The field of a step's output that lists steps to add.
pub const ADD_STEPS: &str = "add_steps";

/// A step added at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddedStep {
    /// The step, as the result described it (it always needs its parent).
    pub step: Step,
    /// The step whose output added it.
    pub parent: String,
    /// 1 when a workflow step added it, 2 when an added step did, and so on.
    pub depth: u32,
}

/// Adds the steps `output` lists under `add_steps` (if any) after `parent`.
pub(super) fn add_steps(
    workflow: &Workflow,
    state: &mut RunState,
    parent: &Step,
    output: &Value,
) -> Result<(), String> {
    let listed = match output.get(ADD_STEPS) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) if items.is_empty() => return Ok(()),
        Some(listed) => listed,
    };
    let Some(limits) = &workflow.dynamic else {
        return Err("its output adds steps, but the workflow declares no `dynamic` limits".into());
    };
    let mut steps: Vec<Step> =
        serde_json::from_value(listed.clone()).map_err(|e| format!("{ADD_STEPS}: {e}"))?;
    let total = state.added.len() + steps.len();
    if total > limits.max_added_steps as usize {
        return Err(format!(
            "it would bring the added steps to {total}, over dynamic.max_added_steps ({})",
            limits.max_added_steps
        ));
    }
    let depth = depth(state, &parent.id) + 1;
    if depth > limits.max_depth {
        return Err(format!(
            "it would add steps at depth {depth}, over dynamic.max_depth ({})",
            limits.max_depth
        ));
    }
    for step in &mut steps {
        check(step, state, &limits.allowed_roles)?;
        if !step.needs.contains(&parent.id) {
            step.needs.push(parent.id.clone());
        }
    }
    validate_together(workflow, state, &steps, &limits.allowed_roles)?;
    for step in steps {
        state.steps.insert(step.id.clone(), StepState::Pending);
        state.added.push(AddedStep {
            step,
            parent: parent.id.clone(),
            depth,
        });
    }
    Ok(())
}

/// The run's steps with `new` among them must pass every check a workflow file passes
/// (templates compile and read only steps they depend on, no cycle, limits positive).
fn validate_together(
    workflow: &Workflow,
    state: &RunState,
    new: &[Step],
    allowed: &[String],
) -> Result<(), String> {
    let mut combined = workflow.clone();
    combined
        .steps
        .extend(state.added.iter().map(|a| a.step.clone()));
    combined.steps.extend(new.iter().cloned());
    // The run's output is the workflow's; added leaves are not candidates for it.
    combined.output = Some(Value::Null);
    // The workflow's own roles were checked when it loaded; added steps may use `allowed`.
    let roles: Vec<&str> = workflow
        .steps
        .iter()
        .filter_map(|s| s.role.as_deref())
        .chain(allowed.iter().map(String::as_str))
        .collect();
    let problems = check_workflow(&combined, &roles);
    if problems.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = problems
        .into_iter()
        .map(|(step, problem)| match step {
            Some(step) => format!("added step `{step}`: {problem}"),
            None => problem.to_string(),
        })
        .collect();
    Err(text.join("; "))
}

fn depth(state: &RunState, id: &str) -> u32 {
    state
        .added
        .iter()
        .find(|a| a.step.id == id)
        .map_or(0, |a| a.depth)
}

/// An added step must call an allowed role, have a new id and need only known steps.
fn check(step: &Step, state: &RunState, allowed: &[String]) -> Result<(), String> {
    let id = &step.id;
    if !valid_id(id) {
        return Err(format!(
            "added step id `{id}` must be a-z, 0-9, `-` and `_`"
        ));
    }
    if state.steps.contains_key(id) {
        return Err(format!("added step `{id}` has the id of an existing step"));
    }
    match &step.role {
        Some(role) if allowed.contains(role) => {}
        Some(role) => {
            return Err(format!(
                "added step `{id}` calls role `{role}`, which dynamic.allowed_roles ({}) does not allow",
                allowed.join(", ")
            ));
        }
        None => return Err(format!("added step `{id}` must call a role")),
    }
    // Each added step is one command: a fan-out or a loop would multiply the work past
    // what max_added_steps promises.
    if step.approval.is_some() || step.for_each.is_some() || step.repeat.is_some() {
        return Err(format!(
            "added step `{id}` cannot be an approval, fan out (for_each) or loop (repeat)"
        ));
    }
    if let Some(unknown) = step.needs.iter().find(|n| !state.steps.contains_key(*n)) {
        return Err(format!(
            "added step `{id}` needs `{unknown}`, which is not a step of this run"
        ));
    }
    Ok(())
}
