//! The gateway: routes without a socket (against the real Redis), then real processes
//! (gateway, orchestrator, echo agents) over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connections;
mod e2e;
mod routes;
mod scope;
mod stack;
mod support;
mod traces;
use mindbus_testkit::testenv;
