//! What the orchestrator counts: runs started and ended by workflow, how long steps take,
//! and how long the orchestrator itself takes between a step's result and what follows.

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

/// Steps' commands answered, each (role, seconds after it was recorded as sent).
pub(crate) fn steps(answered: &[(String, f64)]) {
    for (role, seconds) in answered {
        metrics::histogram!(names::STEP_DURATION, "role" => role.clone()).record(*seconds);
    }
}

/// The result at `entry` is applied, and what it enabled is sent.
pub(crate) fn applied(entry: EntryId) {
    metrics::histogram!(names::ORCHESTRATION_OVERHEAD).record(names::seconds_since(entry.ms));
}
