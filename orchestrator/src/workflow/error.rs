//! What can be wrong with a workflow file.

use std::fmt;
use std::path::PathBuf;

/// One problem in one workflow file, at one step (or at the top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowError {
    /// The file.
    pub file: PathBuf,
    /// The step, when the problem is in one.
    pub step: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

/// The kinds of problem, each with what a person needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file is not valid YAML, or has a field of the wrong type or an unknown field.
    #[error("not a valid workflow: {0}")]
    Syntax(String),
    /// The file is written for a newer workflow format than this orchestrator reads.
    #[error(
        "written for workflow format version {0}; this orchestrator reads versions up to {max} (upgrade it)",
        max = crate::workflow::FORMAT_VERSION
    )]
    NewerVersion(u32),
    /// Two steps share an id, or an id has characters other than a-z, 0-9, `-`, `_`.
    #[error("bad step id: {0}")]
    BadId(String),
    /// A step names a role no agent serves.
    #[error("unknown role `{role}` (known: {known})")]
    UnknownRole { role: String, known: String },
    /// A step must call a role or wait for approval, not both or neither.
    #[error("a step needs exactly one of `role` and `approval`")]
    RoleOrApproval,
    /// A step depends on a step that does not exist.
    #[error("depends on unknown step `{0}`")]
    UnknownDependency(String),
    /// The dependencies loop back on themselves.
    #[error("dependency cycle: {0}")]
    Cycle(String),
    /// A template or expression reads something the step cannot see.
    #[error("missing input: {0}")]
    MissingInput(String),
    /// A template does not compile.
    #[error("bad template in `{field}`: {reason}")]
    BadTemplate { field: String, reason: String },
    /// An expression does not compile.
    #[error("bad expression in `{field}`: {reason}")]
    BadExpression { field: String, reason: String },
    /// A number that must be positive is not, or the dynamic limits are inconsistent.
    #[error("bad limit: {0}")]
    BadLimit(String),
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(step) = &self.step {
            write!(f, "step `{step}`: ")?;
        }
        write!(f, "{}", self.problem)
    }
}
