//! What the orchestrator counts: runs started and ended by workflow, how long steps take,
//! and how long the orchestrator itself takes between a step's result and what follows.

use std::time::{SystemTime, UNIX_EPOCH};

use mindbus::telemetry::metrics as names;
use mindbus::wire::EntryId;

use crate::store::RunRow;

/// A run just started (and, for one that ended at once, ended).
pub(crate) fn started(run: &RunRow) {
    metrics::counter!(names::RUNS_STARTED, "workflow" => run.workflow.clone()).increment(1);
    ended(run);
}

/// A run whose transaction just committed: counted once it is over (a run over already
/// is not applied to again, so it is counted once).
pub(crate) fn ended(run: &RunRow) {
    if run.status.is_final() {
        metrics::counter!(names::RUNS_FINISHED, "workflow" => run.workflow.clone(), "status" => run.status.as_str())
            .increment(1);
    }
}

/// A step's command answered `seconds` after it was recorded as sent.
pub(crate) fn step(role: &str, seconds: f64) {
    metrics::histogram!(names::STEP_DURATION, "role" => role.to_owned()).record(seconds);
}

/// The result at `entry` is applied, and what it enabled is sent.
pub(crate) fn applied(entry: EntryId) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let millis = now.saturating_sub(entry.ms);
    metrics::histogram!(names::ORCHESTRATION_OVERHEAD).record(millis as f64 / 1000.0);
}
