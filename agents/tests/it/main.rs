//! End-to-end tests: real `mindbus-agent` processes against a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod crash;
mod fakes;
mod languages;
mod lifecycle;
mod llm;
mod operations;
mod poison;
mod restart;
mod round_trip;
mod traces;
use mindbus_testkit::testenv;
