//! The `mindbus` library's error type.

use crate::config::ConfigError;
use crate::wire::WireError;

/// Everything the library's IO can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis refused a command or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// An entry could not be encoded or decoded.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The configuration could not be loaded.
    #[error("{0}")]
    LoadConfig(#[from] ConfigError),
    /// A setting is unusable (bad URL, bad role name).
    #[error("configuration: {0}")]
    Config(String),
    /// Redis answered in a shape MindBus does not expect.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
}
