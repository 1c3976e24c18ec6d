//! The read loop: own pending entries first, then new ones, never more than free slots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::worker::Delivery;
use super::{Shared, retry_delays};
use crate::Error;
use crate::streams::{ReadConnection, Redis, StreamEntry, ensure_group, parse_pending};
use crate::wire::EntryId;

/// Reads commands until `stop` fires, reconnecting (and recreating the group) after errors.
pub(crate) async fn read_loop(shared: Arc<Shared>, redis: Redis, stop: CancellationToken) {
    let mut conn = None;
    // `Some(id)`: still reading our own pending entries, after `id`; `None`: reading new ones.
    let mut own_pending = Some(EntryId::ZERO);
    let mut delays = retry_delays();
    shared.cancellations.wait_caught_up(&stop).await;
    while !stop.is_cancelled() {
        match read_once(&shared, &redis, &mut conn, &mut own_pending, &stop).await {
            Ok(()) => delays = retry_delays(),
            Err(e) => {
                tracing::warn!(stream = %shared.stream, error = %e, "reading commands failed; reconnecting");
                // A read cut short may still have delivered entries to us: read our own
                // pending entries again once reconnected.
                conn = None;
                own_pending = Some(EntryId::ZERO);
                let delay = delays.next().unwrap_or(Duration::from_secs(2));
                tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
            }
        }
    }
}

async fn read_once(
    shared: &Arc<Shared>,
    redis: &Redis,
    conn: &mut Option<ReadConnection>,
    own_pending: &mut Option<EntryId>,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let block = Duration::from_millis(shared.config.block_ms);
    if conn.is_none() {
        let fresh = redis.read_connection(block).await?;
        ensure_group(&mut shared.conn.clone(), &shared.stream, &shared.role, "0").await?;
        *conn = Some(fresh);
    }
    let Some(conn) = conn.as_mut() else {
        return Ok(());
    };
    let Some(mut permits) = (tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        permits = take_slots(&shared.slots, shared.config.concurrency) => permits,
    }) else {
        // The slots are closed only when the agent stops.
        stop.cancelled().await;
        return Ok(());
    };
    let from = own_pending.map_or(">".to_owned(), |after| after.to_string());
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&shared.role)
        .arg(&shared.consumer)
        .arg("COUNT")
        .arg(permits.num_permits());
    if own_pending.is_none() {
        cmd.arg("BLOCK").arg(shared.config.block_ms);
    }
    cmd.arg("STREAMS").arg(&shared.stream).arg(from);
    let entries = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        entries = conn.read_entries(&cmd) => entries?,
    };
    let counts = if own_pending.is_some() {
        // Entries already running here come back too; moving past them keeps this from
        // re-reading the same ones while they run.
        *own_pending = entries
            .last()
            .filter(|_| entries.len() >= permits.num_permits())
            .map(|last| last.id);
        delivery_counts(&mut shared.conn.clone(), shared, &entries).await?
    } else {
        HashMap::new()
    };
    for entry in entries {
        let deliveries = counts.get(&entry.id).copied().unwrap_or(1);
        let Some(permit) = permits.split(1) else {
            break;
        };
        shared.dispatch(Delivery { entry, deliveries }, permit);
    }
    // Let the commands just dispatched start (and their events leave) before this loop
    // sends its next blocking read: on a busy runtime that read's write would otherwise
    // come first, on every command's way through.
    tokio::task::yield_now().await;
    Ok(())
}

/// Waits for one free slot, then takes up to `max` in all without waiting. The slots come as
/// one permit: `split(1)` hands one to each entry, and the rest go back in one release.
pub(crate) async fn take_slots(slots: &Arc<Semaphore>, max: usize) -> Option<OwnedSemaphorePermit> {
    let mut permits = Arc::clone(slots).acquire_owned().await.ok()?;
    // Another loop may take slots between the count and the take: then count again.
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

/// How many times each of our pending `entries` has been delivered.
pub(crate) async fn delivery_counts<C: ConnectionLike + Send>(
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
