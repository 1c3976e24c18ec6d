//! MindBus: a message bus for teams of AI agents, on Redis Streams.
//!
//! # Layout
//! - [`wire`]: the typed entries and their flat stream fields (no IO).
//! - [`keys`]: the Redis key names under the configured prefix.
//! - [`config`]: typed, layered, schema-checked configuration.
//! - [`streams`]: Redis connections, consumer groups and reply parsing.
//! - [`group`]: the consumer-group reader (own pending, reclaiming, new entries, acks).
//! - [`bus`]: the client: publish, wait for results, follow streams, cancel.
//! - [`runtime`]: the agent runtime, a [`runtime::Handler`] behind a consumer-group loop.
//! - [`telemetry`]: logs, OpenTelemetry traces and Prometheus metrics for the binaries: the
//!   spans MindBus makes, the metrics it exports, and the probes (`/metrics`, `/healthz`,
//!   `/readyz`) every process can serve.
//! - [`serve`]: the HTTP connection loop, with the limits a listener facing a network needs.
//! - [`shutdown`]: SIGTERM/SIGINT as a cancellation token, for the binaries.
//!
//! # Invariant
//! Processes talk only through streams: everything one process tells another is an entry
//! that [`wire`] can decode, and a command entry's result is accepted at most once (and a
//! command with an `idempotencykey`, once per key and role).

pub mod bus;
pub mod config;
mod error;
pub mod group;
pub mod keys;
pub mod runtime;
pub mod serve;
pub mod shutdown;
pub mod streams;
pub mod telemetry;
pub mod wire;

pub use error::Error;
