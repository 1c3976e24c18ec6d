//! What every request handler shares.

use std::sync::Arc;

use mindbus::bus::{Bus, Results};
use mindbus::config::Config;

use crate::config::GatewayConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyRing;
use crate::mesh::Mesh;

/// The gateway's shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    bus: Bus,
    keys: KeyRing,
    mesh: Mesh,
    config: GatewayConfig,
    /// How long agents keep results on reply streams, in seconds.
    reply_ttl_secs: u64,
    streams: Arc<Semaphore>,
    stop: CancellationToken,
}

impl AppState {
    /// Connects to Redis; `admin_key` is a plain key from the
    /// environment allowed everything.
    pub async fn new(
        config: &Config,
        gateway: GatewayConfig,
        admin_key: Option<&str>,
        stop: CancellationToken,
    ) -> Result<Self, mindbus::Error> {
        let bus = Bus::connect(&config.redis).await?;
        Ok(Self(Arc::new(Inner {
            keys: KeyRing::new(&gateway, admin_key),
            mesh: Mesh::default(),
            reply_ttl_secs: config.agent.reply_ttl_secs,
            streams: Arc::new(Semaphore::new(gateway.max_streams)),
            config: gateway,
            bus,
            stop,
        })))
    }

    pub fn bus(&self) -> &Bus {
        &self.0.bus
    }

    pub fn keys(&self) -> &KeyRing {
        &self.0.keys
    }

    pub fn mesh(&self) -> &Mesh {
        &self.0.mesh
    }

    /// How long a command's result is kept, and so how long the gateway remembers the
    /// commands it published.
    pub fn reply_ttl_secs(&self) -> u64 {
        self.0.reply_ttl_secs
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.0.config
    }

    /// Where the results of the commands this gateway serves are waited for.
    pub fn results(&self) -> &Arc<Results> {
        self.0.bus.results()
    }

    /// Permits for open event streams.
    pub fn streams(&self) -> &Arc<Semaphore> {
        &self.0.streams
    }

    /// Fires on shutdown: open event streams end, so the server can drain.
    pub fn stop(&self) -> &CancellationToken {
        &self.0.stop
    }
}
