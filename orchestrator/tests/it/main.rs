//! The orchestrator's tests: the pure engine and workflow loading here, the process against
//! real Redis, Postgres and echo agents in `process`.

mod dynamic;
mod engine;
mod workflows;
