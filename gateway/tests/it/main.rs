//! The gateway: routes without a socket (against the real Redis), then real processes
//! (gateway, orchestrator, echo agents, monitor) over HTTP, their traces, and their metrics
//! as a real Prometheus scrapes them (with the shipped dashboards and rules checked).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connections;
mod e2e;
mod metrics;
mod routes;
mod scope;
mod stack;
mod support;
mod traces;
use mindbus_testkit::testenv;
