//! The workflow file, as typed data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A workflow: inputs, steps and limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// The workflow format the file is written for (default 1). An orchestrator refuses a
    /// file, or a stored run's definition, of a version newer than [`FORMAT_VERSION`],
    /// naming it, rather than misreading it.
    #[serde(default = "first_version")]
    pub version: u32,
    /// The name runs are started by.
    pub name: String,
    /// What it does, for people.
    #[serde(default)]
    pub description: String,
    /// The run's inputs.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// A deadline for the whole run, in milliseconds; its commands inherit it.
    pub deadline_ms: Option<u64>,
    /// Limits on steps that results add at run time; none may be added without them.
    pub dynamic: Option<DynamicLimits>,
    /// The steps, in any order (dependencies decide the order of execution).
    pub steps: Vec<Step>,
    /// The run's output: a template over inputs and steps. Default: the last step's output.
    pub output: Option<Value>,
}

/// The newest workflow format this orchestrator reads.
pub const FORMAT_VERSION: u32 = 1;

fn first_version() -> u32 {
    1
}

/// Only the format version of a workflow file, read before the rest so a newer file is
/// named as newer, not as one with unknown fields.
#[derive(Debug, Deserialize)]
pub(crate) struct FormatVersion {
    #[serde(default = "first_version")]
    pub version: u32,
}

/// One input of a run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// For people.
    #[serde(default)]
    pub description: String,
    /// The value when the run does not give one; an input without a default is required.
    pub default: Option<Value>,
}

/// Limits on steps added at run time by a step's result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicLimits {
    /// Roles added steps may call.
    pub allowed_roles: Vec<String>,
    /// Most steps added to one run.
    pub max_added_steps: u32,
    /// Most levels of steps adding steps.
    pub max_depth: u32,
    /// Most deliveries an added step may ask for (`maxattempts`), and what it gets when it
    /// names none.
    #[serde(default = "three")]
    pub max_attempts: u32,
    /// Longest time an added step may ask for (`timeout_ms`), and what it gets when it
    /// names none.
    #[serde(default = "ten_minutes")]
    pub max_timeout_ms: u64,
}

fn three() -> u32 {
    3
}

fn ten_minutes() -> u64 {
    600_000
}

/// One step.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the workflow: a-z, 0-9, `-`, `_`.
    pub id: String,
    /// The agent role that runs it (or `approval`).
    pub role: Option<String>,
    /// Whether its output's `add_steps` adds steps to the run (within the workflow's
    /// `dynamic` limits). Another step's `add_steps` is only data: a model's answer cannot
    /// turn a step into a planner.
    #[serde(default)]
    pub adds_steps: bool,
    /// The command type. Default: `<role>.<id>`.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// Steps that must finish first.
    #[serde(default)]
    pub needs: Vec<String>,
    /// The command's data: any JSON, whose strings are templates.
    #[serde(default)]
    pub input: Value,
    /// Run only when this expression is true; otherwise the step is skipped.
    pub when: Option<String>,
    /// Fan out: one command per item of the list this expression yields (`item` in
    /// templates); the step's output is the list of their outputs.
    pub for_each: Option<String>,
    /// Run again until `until` holds, at most `max_rounds` times.
    pub repeat: Option<Repeat>,
    /// Per-command timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Deliveries per command before it fails.
    pub maxattempts: Option<u32>,
    /// Wait for a person to approve or reject instead of calling a role.
    pub approval: Option<Approval>,
}

/// A loop: run the step again until a condition holds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// An expression over `output` (this round's) and everything the step can see.
    pub until: String,
    /// Most rounds.
    pub max_rounds: u32,
}

/// A human approval.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// How long to wait, in milliseconds.
    pub timeout_ms: u64,
    /// What a timeout means.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// What an approval timeout does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The run fails.
    #[default]
    Reject,
    /// The run goes on as if approved.
    Approve,
}

impl Step {
    /// The command type this step sends.
    pub fn command_type(&self) -> String {
        self.ty.clone().unwrap_or_else(|| {
            format!("{}.{}", self.role.as_deref().unwrap_or("approval"), self.id)
        })
    }
}
