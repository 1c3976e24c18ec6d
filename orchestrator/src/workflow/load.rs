//! Reading workflow files: parse, then validate, and report every problem found.

use std::path::Path;

use super::model::FormatVersion;
use super::validate;
use super::{FORMAT_VERSION, Problem, Workflow, WorkflowError};

/// Parses and validates one workflow from `text`; `file` names it in errors. `roles` are the
/// roles agents serve (empty: any role is accepted).
pub fn parse(file: &Path, text: &str, roles: &[&str]) -> Result<Workflow, Vec<WorkflowError>> {
    let error = |step: Option<String>, problem| WorkflowError {
        file: file.to_owned(),
        step,
        problem,
    };
    if let Ok(found) = serde_saphyr::from_str::<FormatVersion>(text)
        && found.version > FORMAT_VERSION
    {
        return Err(vec![error(None, Problem::NewerVersion(found.version))]);
    }
    let workflow: Workflow = serde_saphyr::from_str(text)
        .map_err(|e| vec![error(None, Problem::Syntax(e.to_string()))])?;
    let problems = validate::check(&workflow, roles);
    if problems.is_empty() {
        Ok(workflow)
    } else {
        Err(problems
            .into_iter()
            .map(|(step, problem)| error(step, problem))
            .collect())
    }
}

/// A workflow and the text it was parsed from (a run keeps the text it started with).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub workflow: Workflow,
    pub source: String,
}

/// Loads one workflow file.
pub fn load_file(path: &Path, roles: &[&str]) -> Result<Workflow, Vec<WorkflowError>> {
    read(path, roles).map(|loaded| loaded.workflow)
}

fn read(path: &Path, roles: &[&str]) -> Result<Loaded, Vec<WorkflowError>> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![WorkflowError {
            file: path.to_owned(),
            step: None,
            problem: Problem::Syntax(format!("cannot read: {e}")),
        }]
    })?;
    let workflow = parse(path, &source, roles)?;
    Ok(Loaded { workflow, source })
}

/// Loads every `*.yaml` and `*.yml` file of `dir`, sorted by name; all problems of all files
/// are reported together.
pub fn load_dir(dir: &Path, roles: &[&str]) -> Result<Vec<Loaded>, Vec<WorkflowError>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![WorkflowError {
            file: dir.to_owned(),
            step: None,
            problem: Problem::Syntax(format!("cannot read the folder: {e}")),
        }]
    })?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let (mut workflows, mut errors) = (Vec::new(), Vec::new());
    for file in files {
        match read(&file, roles) {
            Ok(workflow) => workflows.push(workflow),
            Err(mut problems) => errors.append(&mut problems),
        }
    }
    if errors.is_empty() {
        Ok(workflows)
    } else {
        Err(errors)
    }
}
