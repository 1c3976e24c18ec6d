//! Timers: approval timeouts, step command timeouts and run deadlines, kept in Postgres so
//! they survive restarts, fired by whichever orchestrator sees them due first.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

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
    for (run_id, kind, step) in store::due_timers(&this.pool, BATCH).await? {
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
