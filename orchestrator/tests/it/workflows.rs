//! Workflow files: the shipped ones load; each kind of error is rejected with a message
//! that names the file, the step and the problem.

use std::path::{Path, PathBuf};

use mindbus_orchestrator::workflow::{self, render};
use serde_json::json;

const ROLES: &[&str] = &["echo"];

/// The roles the shipped config serves.
const SHIPPED_ROLES: &[&str] = &["echo", "writer", "critic", "editor"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_shipped_workflows_load() {
    let workflows = workflow::load_dir(&root().join("config/workflows"), SHIPPED_ROLES)
        .unwrap_or_else(|errors| {
            panic!(
                "{}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    assert!(workflows.iter().any(|w| w.workflow.name == "sample"));
    assert!(workflows.iter().any(|w| w.workflow.name == "article"));
}

#[test]
fn every_kind_of_error_is_named() {
    let dir = root().join("orchestrator/tests/it/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 9);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .expect("first line says what to expect");
        let errors = workflow::load_file(&file, ROLES)
            .expect_err(&format!("{} should be rejected", file.display()));
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains(expect) && m.contains(&*file.to_string_lossy())),
            "{}: expected `{expect}`, got {messages:?}",
            file.display()
        );
    }
}

#[test]
fn a_step_input_renders_from_inputs_and_earlier_outputs() {
    let sample = workflow::load_file(&root().join("config/workflows/sample.yaml"), ROLES).unwrap();
    let expand = sample.steps.iter().find(|s| s.id == "expand").unwrap();
    let context = json!({"inputs": {"topic": "streams"}, "steps": {"draft": {"output": {"text": "A short piece"}}}, "item": "why"});
    assert_eq!(
        render(&expand.input, &context).unwrap(),
        json!({"point": "why", "context": "A short piece"})
    );
    assert_eq!(expand.command_type(), "echo.expand");
}
