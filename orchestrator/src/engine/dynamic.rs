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

/// Adds the steps `output` lists under `add_steps` (if any) after `parent`, when `parent`
/// is marked `adds_steps`.
pub(super) fn add_steps(
    workflow: &Workflow,
    state: &mut RunState,
    parent: &Step,
    output: &Value,
) -> Result<(), String> {
    if !parent.adds_steps {
        return Ok(());
    }
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
        bound(step, limits)?;
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

/// Holds an added step to the workflow's `dynamic.max_attempts` and `max_timeout_ms`, which
/// it also gets when it names none.
fn bound(step: &mut Step, limits: &crate::workflow::DynamicLimits) -> Result<(), String> {
    let id = &step.id;
    match step.maxattempts {
        Some(asked) if asked > limits.max_attempts => {
            return Err(format!(
                "added step `{id}` asks for maxattempts {asked}, over dynamic.max_attempts ({})",
                limits.max_attempts
            ));
        }
        Some(_) => {}
        None => step.maxattempts = Some(limits.max_attempts),
    }
    match step.timeout_ms {
        Some(asked) if asked > limits.max_timeout_ms => Err(format!(
            "added step `{id}` asks for timeout_ms {asked}, over dynamic.max_timeout_ms ({})",
            limits.max_timeout_ms
        )),
        Some(_) => Ok(()),
        None => {
            step.timeout_ms = Some(limits.max_timeout_ms);
            Ok(())
        }
    }
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
    if step.approval.is_some()
        || step.for_each.is_some()
        || step.repeat.is_some()
        || step.when.is_some()
    {
        return Err(format!(
            "added step `{id}` cannot be an approval, fan out (for_each), loop (repeat) or \
             be conditional (when)"
        ));
    }
    plain_templates(&step.input).map_err(|why| format!("added step `{id}`: {why}"))?;
    if let Some(unknown) = step.needs.iter().find(|n| !state.steps.contains_key(*n)) {
        return Err(format!(
            "added step `{id}` needs `{unknown}`, which is not a step of this run"
        ));
    }
    Ok(())
}

/// Filters a model-written template may use: none allocates more than its input.
const PLAIN_FILTERS: [&str; 10] = [
    "length", "first", "last", "lower", "upper", "trim", "string", "int", "float", "tojson",
];

/// Checks that every string of a model-written input is a plain template: text with
/// `{{ path }}` lookups (`steps.plan.output.items[0]`), each with at most a few filters
/// from [`PLAIN_FILTERS`], and nothing else (no statements, operators or calls). A model
/// then cannot write a template that loops or allocates; the workflow's own templates,
/// which its authors wrote, have all of minijinja.
fn plain_templates(input: &Value) -> Result<(), String> {
    let mut stack = vec![input];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) => plain_template(text)?,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Ok(())
}

fn plain_template(text: &str) -> Result<(), String> {
    if text.contains("{%") || text.contains("{#") {
        return Err(format!(
            "`{text}` holds a statement or comment; only `{{{{ path }}}}` lookups are allowed"
        ));
    }
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("`{text}` opens `{{{{` without closing it"))?;
        plain_expression(after[..end].trim()).map_err(|why| format!("`{text}`: {why}"))?;
        rest = &after[end + 2..];
    }
    Ok(())
}

/// `a.b[0].c | filter | filter`.
fn plain_expression(expr: &str) -> Result<(), String> {
    let mut parts = expr.split('|').map(str::trim);
    let path = parts.next().unwrap_or_default();
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let segment = |s: &str| {
        let (name, index) = s.split_once('[').unwrap_or((s, ""));
        let index_ok = index.is_empty()
            || index
                .strip_suffix(']')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        word(name) && index_ok
    };
    let first_ok = path
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !path.split('.').all(segment) {
        return Err(format!(
            "`{expr}` is not a plain path such as `steps.plan.output.text`"
        ));
    }
    for filter in parts {
        if !PLAIN_FILTERS.contains(&filter) {
            return Err(format!(
                "filter `{filter}` is not one of {}",
                PLAIN_FILTERS.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn model_written_templates_are_plain_lookups() {
        let ok = json!({"a": "about {{ steps.plan.output.items[0] | upper }}", "n": 3, "b": ["{{ inputs.x }}"]});
        assert!(plain_templates(&ok).is_ok());
        for bad in [
            "{% for a in range(100000) %}x{% endfor %}",
            "{{ 'x' * 100000000 }}",
            "{{ range(100000) | join('x') }}",
            "{{ steps.a.output ~ steps.b.output }}",
            "{{ inputs.x | indent(1000000) }}",
            "{{ unclosed",
        ] {
            assert!(plain_templates(&json!({"x": bad})).is_err(), "{bad}");
        }
    }
}
