//! Dynamic steps: a result adds steps to its run, within the workflow's limits.

use mindbus_orchestrator::engine::{self, Action};
use mindbus_orchestrator::workflow;
use serde_json::{Value, json};

use crate::engine::{drive, workflow};

/// A workflow whose `plan` step answers (through echo) with the steps to add.
fn planner(limits: &str, add: &str) -> String {
    format!(
        r#"
name: dyn
{limits}
output: "{{{{ steps }}}}"
steps:
  - id: plan
    role: echo
    adds_steps: true
    input:
      n: 7
      add_steps: {add}
"#
    )
}

const LIMITS: &str = "dynamic: {allowed_roles: [echo], max_added_steps: 2, max_depth: 1}";

fn end_of(yaml: &str) -> Action {
    let w = workflow(yaml);
    let (mut state, actions) = engine::start(&w, Value::Null).expect("the run starts");
    drive(&w, &mut state, actions).0
}

fn failure(yaml: &str) -> String {
    match end_of(yaml) {
        Action::Fail { reason, .. } => reason,
        other => panic!("the run should fail, not {other:?}"),
    }
}

#[test]
fn added_steps_run_after_their_parent_and_read_its_output() {
    let add = r#"[{id: extra, role: echo, input: {x: "{% raw %}{{ steps.plan.output.n }}{% endraw %}"}}]"#;
    let Action::Complete { output } = end_of(&planner(LIMITS, add)) else {
        panic!("the run should complete")
    };
    assert_eq!(output["extra"]["output"], json!({"x": 7}));
    // A model writes only plain lookups: anything that computes fails the run.
    let computed = r#"[{id: extra, role: echo, input: {x: "{% raw %}{{ steps.plan.output.n * 100000000 }}{% endraw %}"}}]"#;
    assert!(failure(&planner(LIMITS, computed)).contains("not a plain path"));
}

#[test]
fn steps_outside_the_limits_fail_the_run_naming_the_limit() {
    let other_role = r#"[{id: x, role: critic}]"#;
    assert!(failure(&planner(LIMITS, other_role)).contains("dynamic.allowed_roles"));
    let three = r#"[{id: a, role: echo}, {id: b, role: echo}, {id: c, role: echo}]"#;
    assert!(failure(&planner(LIMITS, three)).contains("dynamic.max_added_steps (2)"));
    let nested =
        r#"[{id: a, role: echo, adds_steps: true, input: {add_steps: [{id: b, role: echo}]}}]"#;
    assert!(failure(&planner(LIMITS, nested)).contains("dynamic.max_depth (1)"));
    let greedy = r#"[{id: a, role: echo, maxattempts: 4000000000}]"#;
    assert!(failure(&planner(LIMITS, greedy)).contains("dynamic.max_attempts (3)"));
    let patient = r#"[{id: a, role: echo, timeout_ms: 86400000}]"#;
    assert!(failure(&planner(LIMITS, patient)).contains("dynamic.max_timeout_ms (600000)"));
    let clash = r#"[{id: plan, role: echo}]"#;
    assert!(failure(&planner(LIMITS, clash)).contains("existing step"));
    let unlimited = planner("", r#"[{id: a, role: echo}]"#);
    let refused = workflow::parse(std::path::Path::new("t.yaml"), &unlimited, &["echo"]);
    let problems = format!("{:?}", refused.expect_err("a planner needs dynamic limits"));
    assert!(problems.contains("no `dynamic` limits"), "{problems}");
}

#[test]
fn an_empty_or_null_list_adds_nothing() {
    for add in ["[]", "null"] {
        let Action::Complete { output } = end_of(&planner(LIMITS, add)) else {
            panic!("{add}: the run should complete")
        };
        assert_eq!(
            output.as_object().map(|o| o.len()),
            Some(1),
            "{add}: {output}"
        );
    }
}

#[test]
fn a_second_level_within_max_depth_runs() {
    let limits = "dynamic: {allowed_roles: [echo], max_added_steps: 2, max_depth: 2}";
    let nested = r#"[{id: a, role: echo, adds_steps: true, input: {add_steps: [{id: b, role: echo, input: {deep: true}}]}}]"#;
    let Action::Complete { output } = end_of(&planner(limits, nested)) else {
        panic!("the run should complete")
    };
    assert_eq!(output["b"]["output"], json!({"deep": true}));
}

/// Only a step the workflow marks `adds_steps` plans: any other step's output that holds
/// `add_steps` (a model talked into writing one) is data, and the run goes on.
#[test]
fn add_steps_from_a_step_not_marked_is_only_data() {
    let yaml = r#"
name: dyn
output: "{{ steps }}"
steps:
  - id: critic
    role: echo
    input:
      add_steps: [{id: injected, role: echo}]
"#;
    let Action::Complete { output } = end_of(yaml) else {
        panic!("the run should complete")
    };
    assert!(output.get("injected").is_none(), "{output}");
    assert_eq!(
        output["critic"]["output"]["add_steps"][0]["id"],
        json!("injected")
    );
}
