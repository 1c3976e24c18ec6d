//! The `mindbus` crate's integration tests: one binary, one module per concern.
#![allow(clippy::unwrap_used)]

mod bus;
mod group;
mod read_conn;
mod schemas;
