//! What the gateway knows of the mesh: the registry of roles (a role is known once an agent
//! has started for it) and a short-lived overview of the streams, so that no request makes
//! Redis scan its keyspace and a flood of requests costs Redis one overview a second.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mindbus::bus::{Bus, StreamInfo};

/// How long an overview is served before it is read again.
const OVERVIEW_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Mesh {
    /// Roles seen in the registry. Roles are never taken out of it, so a role seen once
    /// stays known; an unknown one is looked up each time.
    known: RwLock<HashSet<String>>,
    /// The last overview and when it was read; the lock makes one request read it while
    /// the others wait for that read.
    overview: tokio::sync::Mutex<Option<(Instant, Arc<Vec<StreamInfo>>)>>,
}

impl Mesh {
    /// Whether an agent has ever started for `role`.
    pub async fn has_role(&self, bus: &Bus, role: &str) -> Result<bool, mindbus::Error> {
        if self.known.read().is_ok_and(|known| known.contains(role)) {
            return Ok(true);
        }
        let found = bus.has_role(role).await?;
        if found && let Ok(mut known) = self.known.write() {
            known.insert(role.to_owned());
        }
        Ok(found)
    }

    /// Every stream of every registered role, at most a second old.
    pub async fn overview(&self, bus: &Bus) -> Result<Arc<Vec<StreamInfo>>, mindbus::Error> {
        let mut cached = self.overview.lock().await;
        if let Some((at, streams)) = cached.as_ref()
            && at.elapsed() < OVERVIEW_TTL
        {
            return Ok(streams.clone());
        }
        let roles = bus.roles().await?;
        let streams = Arc::new(bus.overview(&roles).await?);
        *cached = Some((Instant::now(), streams.clone()));
        Ok(streams)
    }
}
