//! Reclaiming: entries of dead or stalled consumers, idle longer than the lease, are taken
//! over with XAUTOCLAIM by the read loop before it reads new entries; our own running
//! entries have their leases renewed meanwhile, so nobody takes them from us.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::worker::Delivery;
use crate::Error;
use crate::streams::{StreamEntry, parse_autoclaim, parse_pending};
use crate::wire::EntryId;

/// Sweeps of the group's pending list for idle entries: one sweep every quarter lease
/// (between 50 ms and 5 s), each going on while free slots last and the pending list has
/// more to scan. So a dead consumer's entries run elsewhere within about a lease and a
/// period, at the rate slots free up, however many it held.
#[derive(Debug)]
pub(crate) struct Reclaimer {
    cursor: EntryId,
    due: Instant,
    every: Duration,
}

impl Reclaimer {
    pub fn new(lease_ms: u64) -> Self {
        let every = (Duration::from_millis(lease_ms) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        Self {
            cursor: EntryId::ZERO,
            // A new agent looks at once: it may be replacing one that crashed.
            due: Instant::now(),
            every,
        }
    }

    /// Whether a sweep is under way or its time has come.
    pub fn due(&self) -> bool {
        self.due <= Instant::now()
    }

    /// How long until the next sweep is due (zero while one is under way).
    pub fn until_due(&self) -> Duration {
        self.due.saturating_duration_since(Instant::now())
    }

    /// Claims up to the free slots' worth of idle entries and dispatches them. The sweep
    /// goes on (due at once) until XAUTOCLAIM's cursor comes back to the start.
    pub async fn reclaim(
        &mut self,
        shared: &Arc<Shared>,
        permits: &mut OwnedSemaphorePermit,
    ) -> Result<(), Error> {
        let mut conn = shared.conn.clone();
        let reply = redis::cmd("XAUTOCLAIM")
            .arg(&shared.stream)
            .arg(&shared.role)
            .arg(&shared.consumer)
            .arg(shared.config.lease_ms)
            .arg(self.cursor.to_string())
            .arg("COUNT")
            .arg(permits.num_permits())
            .query_async(&mut conn)
            .await;
        let (next, entries) = match reply.map_err(Error::from).and_then(parse_autoclaim) {
            Ok(claimed) => claimed,
            Err(e) => {
                // Try again next period, not at once.
                self.due = Instant::now() + self.every;
                return Err(e);
            }
        };
        self.cursor = next;
        if next == EntryId::ZERO {
            self.due = Instant::now() + self.every;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let counts = delivery_counts(&mut conn, shared, &entries).await?;
        tracing::info!(stream = %shared.stream, claimed = entries.len(), "reclaimed idle entries");
        for entry in entries {
            let deliveries = counts.get(&entry.id).copied().unwrap_or(2);
            let Some(permit) = permits.split(1) else {
                break;
            };
            shared.dispatch(Delivery { entry, deliveries }, permit);
        }
        Ok(())
    }
}

/// How many times each of our pending `entries` has been delivered.
async fn delivery_counts<C: ConnectionLike + Send>(
    conn: &mut C,
    shared: &Shared,
    entries: &[StreamEntry],
) -> Result<HashMap<EntryId, u32>, Error> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(HashMap::new());
    };
    let reply = redis::cmd("XPENDING")
        .arg(&shared.stream)
        .arg(&shared.role)
        .arg(first.id.to_string())
        .arg(last.id.to_string())
        // Our running entries may lie in the same range: count them in.
        .arg(entries.len() + shared.config.concurrency)
        .arg(&shared.consumer)
        .query_async(conn)
        .await?;
    Ok(parse_pending(reply)?
        .into_iter()
        .map(|(id, _, count)| (id, count))
        .collect())
}

/// Every third of a lease, renews the leases of the entries running here.
pub(crate) async fn renew_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let every = (Duration::from_millis(shared.config.lease_ms) / 3).max(Duration::from_millis(30));
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(every) => {} }
        let running = shared.cancellations.running();
        match shared.leases.renew(&running).await {
            Ok(lost) if !lost.is_empty() => {
                tracing::warn!(stream = %shared.stream, lost = lost.len(), "leases lost to another consumer; their results will be deduplicated")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(stream = %shared.stream, error = %e, "renewing leases failed"),
        }
    }
}
