//! The orchestrator's tests: the pure engine and workflow loading, then runs through real
//! Redis, Postgres, echo agents and `mindbus-orchestrator` processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod article;
mod durability;
mod dynamic;
mod engine;
mod runs;
mod support;
use mindbus_testkit::testenv;
mod workflows;
