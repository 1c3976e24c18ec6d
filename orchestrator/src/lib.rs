//! The MindBus orchestrator. So far: workflow definitions in YAML, validated on load with
//! errors that name the file, the step and the problem, and the templates that build each
//! step's input from the run's input and earlier steps' outputs.
//!
//! # Layout
//! - [`config`]: the orchestrator's section of the config file.
//! - [`engine`]: the run state machine (pure): events in, state updated, actions out.
//! - [`workflow`]: the model, loading and validation, templates and expressions (no IO but
//!   reading the workflow files).
//!
//! # Invariant
//! A workflow that loads is well formed: its steps form a DAG, every role is known, every
//! template and expression compiles, and every `steps.X` a step reads is a step it depends on.

pub mod config;
pub mod engine;
pub mod ids;
pub mod service;
pub mod store;
pub mod workflow;
