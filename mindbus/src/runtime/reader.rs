//! The read loop, the one place an agent takes entries, never more than it has free slots:
//! first its own pending entries after a reconnect, then entries other consumers left idle
//! past the lease (see `reclaim`), then new ones. Taking work back comes first, so a dead
//! consumer's entries run elsewhere as soon as slots free up, however busy the role is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::reclaim::Reclaimer;
use super::worker::Delivery;
use crate::Error;
use crate::streams::{
    ReadConnection, Redis, ensure_role, parse_pending, parse_range, retry_delays,
};

/// Reads commands until `stop` fires, reconnecting (and recreating the group) after errors.
pub(crate) async fn read_loop(shared: Arc<Shared>, redis: Redis, stop: CancellationToken) {
    let mut conn = None;
    let mut reclaimer = Reclaimer::new(shared.config.lease_ms);
    // A fresh consumer name has no pending entries; after a failed read it may have some
    // that were delivered to it but never reached it.
    let mut recovering = false;
    let mut delays = retry_delays();
    shared.cancellations.wait_caught_up(&stop).await;
    while !stop.is_cancelled() {
        let round = read_once(
            &shared,
            &redis,
            &mut conn,
            &mut recovering,
            &mut reclaimer,
            &stop,
        );
        match round.await {
            Ok(()) => delays = retry_delays(),
            Err(e) => {
                tracing::warn!(stream = %shared.stream, error = %e, "reading commands failed; reconnecting");
                conn = None;
                recovering = true;
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
    recovering: &mut bool,
    reclaimer: &mut Reclaimer,
    stop: &CancellationToken,
) -> Result<(), Error> {
    let block = Duration::from_millis(shared.config.block_ms);
    if conn.is_none() {
        let fresh = redis.read_connection(block).await?;
        let mut writes = shared.conn.clone();
        ensure_role(&mut writes, &shared.keys, &shared.role).await?;
        // Listed in the group from the start, not only once it has read an entry, so
        // `mindbus status` and the gateway see an idle agent too.
        redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg(&shared.stream)
            .arg(&shared.role)
            .arg(&shared.consumer)
            .query_async::<()>(&mut writes)
            .await?;
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
    if *recovering {
        *recovering = !recover_own(shared, &mut permits).await?;
    }
    if permits.num_permits() > 0 && reclaimer.due() {
        reclaimer.reclaim(shared, &mut permits).await?;
    }
    if permits.num_permits() == 0 || stop.is_cancelled() {
        return Ok(());
    }
    // Block no longer than until the next reclaim, so idle entries never wait on a quiet
    // stream; `BLOCK 0` would block forever, so a read due now does not block at all.
    let block_ms = reclaimer.until_due().min(block).as_millis() as u64;
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&shared.role)
        .arg(&shared.consumer)
        .arg("COUNT")
        .arg(permits.num_permits());
    if block_ms > 0 {
        cmd.arg("BLOCK").arg(block_ms);
    }
    cmd.arg("STREAMS").arg(&shared.stream).arg(">");
    let entries = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        entries = conn.read_entries(&cmd) => entries?,
    };
    for entry in entries {
        let Some(permit) = permits.split(1) else {
            break;
        };
        shared.dispatch(
            Delivery {
                entry,
                deliveries: 1,
            },
            permit,
        );
    }
    // Let the commands just dispatched start (and their events leave) before this loop
    // sends its next blocking read: on a busy runtime that read's write would otherwise
    // come first, on every command's way through.
    tokio::task::yield_now().await;
    Ok(())
}

/// After a reconnect: dispatches the entries pending for this consumer that do not run
/// here (a read cut short delivered them, but they never arrived). They are listed with
/// `XPENDING` and fetched with `XRANGE`, which leave their delivery counts alone: reading
/// them again with `XREADGROUP` would count a delivery for each command still running here,
/// and a few Redis blips would dead-letter a command that ran once. Returns whether none
/// is left to take.
async fn recover_own(
    shared: &Arc<Shared>,
    permits: &mut OwnedSemaphorePermit,
) -> Result<bool, Error> {
    // Taken before the listing: an entry that finishes in between is still skipped, since
    // an entry leaves `running` only after its finish is written.
    let running: HashSet<_> = shared.cancellations.running().into_iter().collect();
    let mut conn = shared.conn.clone();
    let reply = redis::cmd("XPENDING")
        .arg(&shared.stream)
        .arg(&shared.role)
        .arg("-")
        .arg("+")
        // Never more than the slots plus one read's worth are ours.
        .arg(shared.config.concurrency * 2 + running.len())
        .arg(&shared.consumer)
        .query_async(&mut conn)
        .await?;
    let mut lost: Vec<_> = parse_pending(reply)?
        .into_iter()
        .filter(|(id, _, _)| !running.contains(id))
        .collect();
    let mut left = lost.len();
    // Ours only while nobody reclaimed them: an outage longer than the lease lets another
    // agent take them. Renewing checks that and resets their idle time, without counting
    // a delivery; those taken are not ours to run.
    lost.truncate(permits.num_permits());
    let ids: Vec<_> = lost.iter().map(|(id, _, _)| *id).collect();
    let taken: HashSet<_> = shared.leases.renew(&ids).await?.into_iter().collect();
    for (id, _, deliveries) in lost {
        if taken.contains(&id) {
            left -= 1;
            continue;
        }
        let Some(permit) = permits.split(1) else {
            break;
        };
        let reply = redis::cmd("XRANGE")
            .arg(&shared.stream)
            .arg(id.to_string())
            .arg(id.to_string())
            .query_async(&mut conn)
            .await?;
        // Deleted while pending: dispatched without fields, it is only acknowledged.
        let entry = parse_range(reply)?
            .pop()
            .unwrap_or(crate::streams::StreamEntry { id, fields: None });
        shared.dispatch(Delivery { entry, deliveries }, permit);
        left -= 1;
    }
    if left == 0 {
        tracing::info!(stream = %shared.stream, "own pending entries recovered after a reconnect");
    }
    Ok(left == 0)
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
