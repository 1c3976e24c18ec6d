//! The `mindbus` library's error type.

use crate::config::ConfigError;
use crate::wire::WireError;

/// Everything the library's IO can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis refused a command or a connection broke.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis could not be reached: says where, and how to point MindBus elsewhere.
    #[error("cannot reach redis at {address} (set REDIS_URL or --redis-url): {source}")]
    Connect {
        /// The address tried, without credentials.
        address: String,
        /// Why connecting failed.
        source: Box<Error>,
    },
    /// An entry could not be encoded or decoded.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The configuration could not be loaded.
    #[error("{0}")]
    LoadConfig(#[from] ConfigError),
    /// The Redis URL cannot be used.
    #[error("configuration: redis url: {0}")]
    RedisUrl(#[source] redis::RedisError),
    /// A setting is unusable (a bad role name, a zero TTL).
    #[error("configuration: {0}")]
    Config(String),
    /// Redis answered in a shape MindBus does not expect (the message says what it was).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// A reply from Redis could not be decoded at all.
    #[error("unreadable reply from redis: {0}")]
    Decode(#[from] redis_protocol::error::RedisProtocolError),
}

impl Error {
    /// Whether trying again cannot help (waiting for Redis should give up and say why): a
    /// setting that cannot work.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::RedisUrl(_) | Error::Config(_))
    }
}
