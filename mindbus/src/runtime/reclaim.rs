//! Reclaiming: entries of dead or stalled consumers, idle longer than the lease, are taken
//! over with XAUTOCLAIM; our own running entries have their leases renewed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use tokio::sync::OwnedSemaphorePermit;

use super::reader::{delivery_counts, take_slots};
use super::worker::Delivery;
use crate::Error;
use crate::streams::parse_autoclaim;
use crate::wire::EntryId;

/// Most entries claimed in one round.
const MAX_CLAIM: usize = 100;

/// Every quarter lease, claims idle entries (as many as there are free slots).
pub(crate) async fn reclaim_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let every = (Duration::from_millis(shared.config.lease_ms) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut cursor = EntryId::ZERO;
    shared.cancellations.wait_caught_up(&stop).await;
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(every) => {} }
        // The reader holds its slots while it blocks; the semaphore is fair, so waiting here
        // gets slots as soon as that read returns.
        let Some(permits) = (tokio::select! {
            _ = stop.cancelled() => return,
            permits = take_slots(&shared.slots, MAX_CLAIM) => permits,
        }) else {
            return;
        };
        match reclaim_once(&shared, &mut cursor, permits).await {
            Ok(0) => {}
            Ok(claimed) => {
                tracing::info!(stream = %shared.stream, claimed, "reclaimed idle entries")
            }
            Err(e) => tracing::warn!(stream = %shared.stream, error = %e, "reclaiming failed"),
        }
    }
}

async fn reclaim_once(
    shared: &Arc<Shared>,
    cursor: &mut EntryId,
    mut permits: OwnedSemaphorePermit,
) -> Result<usize, Error> {
    let mut conn = shared.conn.clone();
    let reply = redis::cmd("XAUTOCLAIM")
        .arg(&shared.stream)
        .arg(&shared.role)
        .arg(&shared.consumer)
        .arg(shared.config.lease_ms)
        .arg(cursor.to_string())
        .arg("COUNT")
        .arg(permits.num_permits())
        .query_async(&mut conn)
        .await?;
    let (next, entries) = parse_autoclaim(reply)?;
    *cursor = next;
    let counts = delivery_counts(&mut conn, shared, &entries).await?;
    let claimed = entries.len();
    for entry in entries {
        let deliveries = counts.get(&entry.id).copied().unwrap_or(2);
        let Some(permit) = permits.split(1) else {
            break;
        };
        shared.dispatch(Delivery { entry, deliveries }, permit);
    }
    Ok(claimed)
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
