//! The monitor against real Redis, real Postgres, real agents and real monitor processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mindbus_testkit::testenv;

mod exactly_once;
mod history;
mod store;
mod trimming;
