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
    /// The server is a node of a Redis Cluster, which MindBus does not run on yet: its
    /// processes read several roles' streams (in different slots) in one request.
    #[error(
        "redis at {address} is a node of a Redis Cluster (cluster_enabled:1): MindBus runs on \
         one Redis (with or without replicas), not yet on a cluster"
    )]
    Cluster {
        /// The node's address, without credentials.
        address: String,
    },
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
    /// Whether trying again cannot help (waiting for Redis should give up and say why).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Cluster { .. })
    }
}
