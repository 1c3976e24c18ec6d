//! The agent's side of its [`GroupReader`]: free slots become the room it reads into, each
//! delivery gets one slot, and the leases of running commands are renewed so nobody takes
//! them over while they run.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::group::GroupReader;
use crate::wire::EntryId;

/// Reads commands until `stop` fires; returns the reader, to leave the group with once the
/// commands still running are done.
pub(crate) async fn read_loop(
    shared: Arc<Shared>,
    mut reader: GroupReader,
    stop: CancellationToken,
) -> GroupReader {
    // Commands are taken only once the cancellations sent before this agent started are
    // known, so one cancelled then is never run.
    shared.cancellations.wait_caught_up(&stop).await;
    while !stop.is_cancelled() {
        let Some(mut permits) = (tokio::select! {
            _ = stop.cancelled() => break,
            permits = take_slots(&shared.slots, shared.config.concurrency) => permits,
        }) else {
            // The slots are closed only when the agent stops.
            break;
        };
        // After a reconnect, own pending entries come back, some of them still running here.
        // Taken before the read: one that finishes meanwhile leaves `running` but is still
        // skipped (`dispatch` alone would start it again).
        let running: HashSet<EntryId> = if reader.is_recovering() {
            shared.cancellations.running().into_iter().collect()
        } else {
            HashSet::new()
        };
        for delivery in reader.next(permits.num_permits(), &stop).await {
            if running.contains(&delivery.entry.id) {
                continue;
            }
            let Some(permit) = permits.split(1) else {
                break;
            };
            shared.dispatch(delivery, permit);
        }
        // Let the commands just dispatched start (and their events leave) before the next
        // blocking read: on a busy runtime that read's write would otherwise come first, on
        // every command's way through.
        tokio::task::yield_now().await;
    }
    reader
}

/// Waits for one free slot, then takes up to `max` in all without waiting. The slots come as
/// one permit: `split(1)` hands one to each entry, and the rest go back in one release.
async fn take_slots(slots: &Arc<Semaphore>, max: usize) -> Option<OwnedSemaphorePermit> {
    let mut permits = Arc::clone(slots).acquire_owned().await.ok()?;
    // Another task may take slots between the count and the take: then count again.
    while permits.num_permits() < max && slots.available_permits() > 0 {
        let more = slots.available_permits().min(max - permits.num_permits());
        if let Ok(rest) =
            Arc::clone(slots).try_acquire_many_owned(u32::try_from(more).unwrap_or(u32::MAX))
        {
            permits.merge(rest);
        }
    }
    Some(permits)
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
