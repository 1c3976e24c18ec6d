//! MindBus: a message bus for teams of AI agents, on Redis Streams.
//!
//! # Layout
//! - [`wire`]: the typed entries and their flat stream fields (no IO).
//!
//! # Invariant
//! Processes talk only through streams: everything one process tells another is an entry
//! that [`wire`] can decode.

pub mod wire;
