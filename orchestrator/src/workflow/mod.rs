//! Workflows: steps that call agent roles, with dependencies, fan-out, conditions, loops,
//! approvals and limits on steps added at run time.

mod error;
mod load;
mod model;
mod template;
mod validate;

pub use error::{Problem, WorkflowError};
pub use load::{Loaded, load_dir, load_file, parse};
pub use model::{
    Approval, DynamicLimits, FORMAT_VERSION, InputSpec, OnTimeout, Repeat, Step, Workflow,
};
pub use template::{render, truthy};
pub use validate::final_steps;
pub(crate) use validate::{check as check_workflow, valid_id};
