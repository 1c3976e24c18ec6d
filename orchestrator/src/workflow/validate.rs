//! Checking a parsed workflow: ids, roles, dependencies (a DAG), limits, and every template
//! and expression (they compile, and read only what the step can see).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::template::{environment, whole_expression};
use super::{Problem, Step, Workflow};

type Found = Vec<(Option<String>, Problem)>;

/// Every problem in `workflow`, each with the step it is in.
pub(crate) fn check(workflow: &Workflow, roles: &[&str]) -> Found {
    let mut found = Found::new();
    let ids: BTreeMap<&str, &Step> = workflow.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    check_ids(workflow, &mut found);
    for step in &workflow.steps {
        check_step(step, &ids, roles, &mut found);
    }
    check_cycles(&ids, &mut found);
    check_final_step(workflow, &mut found);
    check_dynamic(workflow, roles, &mut found);
    if found.is_empty() {
        // Reference checks need a DAG to compute what each step can see.
        for step in &workflow.steps {
            check_references(workflow, step, &ancestors(step, &ids), &mut found);
        }
        if let Some(output) = &workflow.output {
            let all: BTreeSet<String> = ids.keys().map(|s| s.to_string()).collect();
            check_templates(
                workflow,
                None,
                "output",
                output,
                &all,
                &Scope::default(),
                &mut found,
            );
        }
    }
    found
}

/// Without an `output` template the run's output is its one final step's (the step no other
/// step needs); with several final steps, which one is meant must be said.
fn check_final_step(workflow: &Workflow, found: &mut Found) {
    if workflow.output.is_none() && final_steps(workflow).len() > 1 {
        let names = final_steps(workflow).join(", ");
        found.push((
            None,
            Problem::BadLimit(format!("several final steps ({names}): declare `output`")),
        ));
    }
}

/// The steps no other step needs.
pub fn final_steps(workflow: &Workflow) -> Vec<&str> {
    let needed: BTreeSet<&str> = workflow
        .steps
        .iter()
        .flat_map(|s| s.needs.iter().map(String::as_str))
        .collect();
    workflow
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .filter(|id| !needed.contains(id))
        .collect()
}

/// A step id: a-z, 0-9, `-` and `_`, not empty.
pub(crate) fn valid_id(id: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    !id.is_empty() && id.chars().all(ok)
}

fn check_ids(workflow: &Workflow, found: &mut Found) {
    let mut seen = BTreeSet::new();
    for step in &workflow.steps {
        if !valid_id(&step.id) {
            found.push((
                Some(step.id.clone()),
                Problem::BadId(format!("`{}` must be a-z, 0-9, `-` and `_`", step.id)),
            ));
        }
        if !seen.insert(step.id.as_str()) {
            found.push((
                Some(step.id.clone()),
                Problem::BadId(format!("`{}` is used by two steps", step.id)),
            ));
        }
    }
    if workflow.steps.is_empty() {
        found.push((
            None,
            Problem::BadLimit("a workflow needs at least one step".into()),
        ));
    }
}

fn check_step(step: &Step, ids: &BTreeMap<&str, &Step>, roles: &[&str], found: &mut Found) {
    let at = || Some(step.id.clone());
    match (&step.role, &step.approval) {
        (Some(role), None) => check_role(role, roles, at(), found),
        (None, Some(approval)) if approval.timeout_ms == 0 => found.push((
            at(),
            Problem::BadLimit("approval.timeout_ms must be positive".into()),
        )),
        (None, Some(_))
            if step.for_each.is_some() || step.repeat.is_some() || !step.input.is_null() =>
        {
            found.push((
                at(),
                Problem::BadLimit("an approval step takes no input, for_each or repeat".into()),
            ))
        }
        (None, Some(_)) => {}
        _ => found.push((at(), Problem::RoleOrApproval)),
    }
    for need in &step.needs {
        if !ids.contains_key(need.as_str()) {
            found.push((at(), Problem::UnknownDependency(need.clone())));
        }
    }
    let zero = |v: Option<u64>, name: &str| (v == Some(0)).then(|| name.to_owned());
    let bad = [
        zero(step.timeout_ms, "timeout_ms"),
        zero(step.maxattempts.map(u64::from), "maxattempts"),
        zero(
            step.repeat.as_ref().map(|r| u64::from(r.max_rounds)),
            "repeat.max_rounds",
        ),
    ];
    for name in bad.into_iter().flatten() {
        found.push((at(), Problem::BadLimit(format!("{name} must be positive"))));
    }
}

fn check_role(role: &str, roles: &[&str], at: Option<String>, found: &mut Found) {
    if !roles.is_empty() && !roles.contains(&role) {
        found.push((
            at,
            Problem::UnknownRole {
                role: role.to_owned(),
                known: roles.join(", "),
            },
        ));
    }
}

fn check_dynamic(workflow: &Workflow, roles: &[&str], found: &mut Found) {
    let planners = workflow.steps.iter().filter(|s| s.adds_steps).count();
    let Some(limits) = &workflow.dynamic else {
        if planners > 0 {
            found.push((
                None,
                Problem::BadLimit(
                    "a step is marked `adds_steps` but the workflow declares no `dynamic` limits"
                        .into(),
                ),
            ));
        }
        return;
    };
    if planners == 0 {
        found.push((
            None,
            Problem::BadLimit(
                "`dynamic` is declared but no step is marked `adds_steps: true` (only a marked \
                 step's `add_steps` adds steps)"
                    .into(),
            ),
        ));
    }
    if limits.max_added_steps == 0 || limits.max_depth == 0 {
        found.push((
            None,
            Problem::BadLimit(
                "dynamic.max_added_steps and dynamic.max_depth must be positive".into(),
            ),
        ));
    }
    for role in &limits.allowed_roles {
        check_role(role, roles, None, found);
    }
}

/// Depth-first search for a dependency cycle; reports one per cycle found.
fn check_cycles(ids: &BTreeMap<&str, &Step>, found: &mut Found) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        id: &'a str,
        ids: &BTreeMap<&'a str, &'a Step>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        found: &mut Found,
    ) {
        match marks.get(id) {
            Some(Mark::Done) => return,
            Some(Mark::Open) => {
                let start = path.iter().position(|p| *p == id).unwrap_or(0);
                let cycle: Vec<&str> = path[start..].iter().copied().chain([id]).collect();
                found.push((Some(id.to_owned()), Problem::Cycle(cycle.join(" -> "))));
                return;
            }
            None => {}
        }
        marks.insert(id, Mark::Open);
        path.push(id);
        for need in ids.get(id).map(|s| s.needs.as_slice()).unwrap_or_default() {
            if ids.contains_key(need.as_str()) {
                visit(need, ids, marks, path, found);
            }
        }
        path.pop();
        marks.insert(id, Mark::Done);
    }
    let mut marks = BTreeMap::new();
    for id in ids.keys() {
        visit(id, ids, &mut marks, &mut Vec::new(), found);
    }
}

/// Every step `step` depends on, directly or not.
fn ancestors(step: &Step, ids: &BTreeMap<&str, &Step>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<&str> = step.needs.iter().map(String::as_str).collect();
    while let Some(id) = todo.pop() {
        if out.insert(id.to_owned())
            && let Some(s) = ids.get(id)
        {
            todo.extend(s.needs.iter().map(String::as_str));
        }
    }
    out
}

/// The names a field may use besides `inputs` and `steps`: exactly what the engine gives
/// it (`when` and `for_each` see neither `item` nor `round`; `repeat.until` sees `round`
/// and `output`; `input` sees `item` in a fan-out and `round` in a loop).
#[derive(Debug, Default)]
struct Scope {
    item: bool,
    round: bool,
    output: bool,
}

fn check_references(
    workflow: &Workflow,
    step: &Step,
    visible: &BTreeSet<String>,
    found: &mut Found,
) {
    let item = step.for_each.is_some();
    let round = step.repeat.is_some();
    let base = Scope {
        item,
        round,
        output: false,
    };
    check_templates(
        workflow,
        Some(step),
        "input",
        &step.input,
        visible,
        &base,
        found,
    );
    if let Some(when) = &step.when {
        check_expression(
            workflow,
            step,
            "when",
            when,
            visible,
            &Scope::default(),
            found,
        );
    }
    if let Some(list) = &step.for_each {
        check_expression(
            workflow,
            step,
            "for_each",
            list,
            visible,
            &Scope::default(),
            found,
        );
    }
    if let Some(repeat) = &step.repeat {
        check_expression(
            workflow,
            step,
            "repeat.until",
            &repeat.until,
            visible,
            &Scope {
                item: false,
                round,
                output: true,
            },
            found,
        );
    }
}

fn check_templates(
    workflow: &Workflow,
    step: Option<&Step>,
    field: &str,
    value: &Value,
    visible: &BTreeSet<String>,
    scope: &Scope,
    found: &mut Found,
) {
    let at = || step.map(|s| s.id.clone());
    match value {
        Value::String(text) => {
            let env = environment();
            let names = match whole_expression(text) {
                Some(expr) => env
                    .compile_expression(expr)
                    .map(|e| e.undeclared_variables(true)),
                None => env
                    .template_from_str(text)
                    .map(|t| t.undeclared_variables(true)),
            };
            match names {
                Ok(names) => check_names(workflow, at(), field, names, visible, scope, found),
                Err(e) => found.push((
                    at(),
                    Problem::BadTemplate {
                        field: field.to_owned(),
                        reason: e.to_string(),
                    },
                )),
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_templates(
                    workflow,
                    step,
                    &format!("{field}[{i}]"),
                    item,
                    visible,
                    scope,
                    found,
                );
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                check_templates(
                    workflow,
                    step,
                    &format!("{field}.{key}"),
                    item,
                    visible,
                    scope,
                    found,
                );
            }
        }
        _ => {}
    }
}

fn check_expression(
    workflow: &Workflow,
    step: &Step,
    field: &str,
    expr: &str,
    visible: &BTreeSet<String>,
    scope: &Scope,
    found: &mut Found,
) {
    match environment().compile_expression(expr) {
        Ok(compiled) => check_names(
            workflow,
            Some(step.id.clone()),
            field,
            compiled.undeclared_variables(true),
            visible,
            scope,
            found,
        ),
        Err(e) => found.push((
            Some(step.id.clone()),
            Problem::BadExpression {
                field: field.to_owned(),
                reason: e.to_string(),
            },
        )),
    }
}

fn check_names(
    workflow: &Workflow,
    at: Option<String>,
    field: &str,
    names: std::collections::HashSet<String>,
    visible: &BTreeSet<String>,
    scope: &Scope,
    found: &mut Found,
) {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    for name in names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        let second = parts.next();
        let problem = match (root, second) {
            ("inputs", Some(input)) if !workflow.inputs.contains_key(input) => Some(format!(
                "`{field}` reads inputs.{input}, which the workflow does not declare"
            )),
            ("steps", Some(other)) if !visible.contains(other) => Some(format!(
                "`{field}` reads steps.{other}, which this step does not depend on"
            )),
            ("inputs" | "steps", _) => None,
            // minijinja's global functions.
            ("range" | "dict" | "namespace" | "debug", _) => None,
            ("item", _) if scope.item => None,
            ("round", _) if scope.round => None,
            ("output", _) if scope.output => None,
            (other, _) => Some(format!(
                "`{field}` reads `{other}`, which is not defined here"
            )),
        };
        if let Some(problem) = problem {
            found.push((at.clone(), Problem::MissingInput(problem)));
        }
    }
}
