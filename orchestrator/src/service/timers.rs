//! Timers: approval timeouts, step command timeouts and run deadlines, kept in Postgres so
//! they survive restarts, fired by whichever orchestrator sees them due first.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use mindbus::wire::EntryId;

use super::Orchestrator;
use super::transition::Input;
use crate::store;

/// Timers fired per tick.
const BATCH: i64 = 200;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The whole run's deadline.
    Deadline,
    /// An approval step's timeout.
    Approval,
    /// A step command's `timeout_ms` (keyed by its command id): it fails the step when no
    /// result came in time, whether or not an agent ever read the command.
    Command,
}

impl Timer {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Timer::Deadline => "deadline",
            Timer::Approval => "approval",
            Timer::Command => "command",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "deadline" => Some(Timer::Deadline),
            "approval" => Some(Timer::Approval),
            "command" => Some(Timer::Command),
            _ => None,
        }
    }
}

/// Fires due timers every tick until `stop` fires.
pub(crate) async fn timer_loop(this: Arc<Orchestrator>, stop: CancellationToken) {
    let tick = Duration::from_millis(this.config.tick_ms);
    while !stop.is_cancelled() {
        if let Err(e) = fire_due(&this).await {
            tracing::warn!(error = %e, "firing timers failed");
        }
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(tick) => {} }
    }
}

async fn fire_due(this: &Orchestrator) -> anyhow::Result<()> {
    // A command timer must not beat a result that is written but not applied yet (an
    // orchestrator that restarted, or a reader behind): it waits until the results group
    // has applied everything written before its due time. When that cannot be told (Redis
    // away), no command timer fires this tick.
    let through = results_applied_through(this).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot tell how far results are applied; command timers wait");
        0
    });
    for (run_id, kind, step) in store::due_timers(&this.pool, through, BATCH).await? {
        let Some(timer) = Timer::parse(&kind) else {
            continue;
        };
        // One timer that fails must not hold back those due after it.
        match this.advance(run_id, Input::Timer { timer, step }).await {
            Ok(outcome) => tracing::info!(run.id = %run_id, timer = kind, ?outcome, "timer fired"),
            Err(e) => {
                tracing::warn!(run.id = %run_id, timer = kind, error = %e, "firing a timer failed")
            }
        }
    }
    Ok(())
}

/// The time (Unix ms) before which every step result has been applied: the earliest of
/// [`applied_through`] over every role step commands went to.
async fn results_applied_through(this: &Orchestrator) -> anyhow::Result<i64> {
    // Every role any orchestrator sent a step to, this one's or not.
    let roles = this
        .result_roles
        .refresh(&this.bus)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the result streams are not looked up yet"))?;
    let mut through = jiff::Timestamp::now().as_millisecond();
    for role in roles {
        let stream = this.bus.keys().results(&role);
        through = through.min(applied_through(this, &stream).await?);
    }
    Ok(through)
}

/// The time (Unix ms) before which every result written to `stream` has been applied: now
/// when the orchestrators' group has read everything and holds nothing pending; else just
/// before its oldest pending or unread result.
async fn applied_through(this: &Orchestrator, stream: &str) -> anyhow::Result<i64> {
    let mut conn = this.bus.connection();
    let info = mindbus::streams::info_map(
        redis::cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .query_async(&mut conn)
            .await?,
    );
    let last_written = entry_id(info.get("last-generated-id"))?;
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await?;
    let group = groups
        .into_iter()
        .map(mindbus::streams::info_map)
        .find(|g| {
            mindbus::streams::reply_text(g.get("name")).as_deref() == Some(super::results::GROUP)
        })
        .ok_or_else(|| anyhow::anyhow!("no group {} on {stream}", super::results::GROUP))?;
    let delivered = entry_id(group.get("last-delivered-id"))?;
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(super::results::GROUP)
        .arg("-")
        .arg("+")
        .arg(1)
        .query_async(&mut conn)
        .await?;
    let oldest_pending = mindbus::streams::parse_pending(redis::Value::Array(pending))?
        .first()
        .map(|(id, _, _)| *id);
    let now = jiff::Timestamp::now().as_millisecond();
    let ms = |id: EntryId| i64::try_from(id.ms).unwrap_or(i64::MAX);
    let unread = (delivered < last_written).then(|| ms(delivered) - 1);
    let unapplied = oldest_pending.map(|oldest| ms(oldest) - 1);
    Ok([Some(now), unread, unapplied]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now))
}

fn entry_id(value: Option<&redis::Value>) -> anyhow::Result<EntryId> {
    mindbus::streams::reply_text(value)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("XINFO gave no entry id"))
}
