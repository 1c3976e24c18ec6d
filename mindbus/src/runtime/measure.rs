//! What an agent counts: commands handled by outcome, their duration, how many run now,
//! retries and dead letters. The handles are registered once per role (a lookup by name
//! and labels for every command would cost more than the count); they are no-ops when
//! the process serves no metrics.

use metrics::{Counter, Gauge, Histogram};

use crate::telemetry::metrics as names;
use crate::wire::ErrorType;

/// How a command's handling ended, as counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Deleted from the stream while pending: only acknowledged.
    #[default]
    Deleted,
    Completed,
    Failed,
    Canceled,
    /// Dead-lettered as malformed.
    Malformed,
    /// Dead-lettered after its last attempt.
    Exhausted,
}

/// A role's metric handles.
#[derive(Debug)]
pub(crate) struct RoleMetrics {
    deleted: Counter,
    completed: Counter,
    failed: Counter,
    canceled: Counter,
    dead_lettered: Counter,
    duplicate: Counter,
    malformed: Counter,
    exhausted: Counter,
    pub duration: Histogram,
    in_flight: Gauge,
    pub retries: Counter,
}

/// One command counted in flight until dropped (however its task ends).
#[derive(Debug)]
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1);
    }
}

impl RoleMetrics {
    pub fn new(role: &str) -> Self {
        let handled = |outcome: &'static str| metrics::counter!(names::COMMANDS_HANDLED, "role" => role.to_owned(), "outcome" => outcome);
        let dead = |errortype: ErrorType| metrics::counter!(names::DEAD_LETTERS, "role" => role.to_owned(), "errortype" => errortype.as_str().to_owned());
        Self {
            deleted: handled("deleted"),
            completed: handled("completed"),
            failed: handled("failed"),
            canceled: handled("canceled"),
            dead_lettered: handled("dead_lettered"),
            duplicate: handled("duplicate"),
            malformed: dead(ErrorType::Malformed),
            exhausted: dead(ErrorType::MaxAttemptsExceeded),
            duration: metrics::histogram!(names::COMMAND_DURATION, "role" => role.to_owned()),
            in_flight: metrics::gauge!(names::COMMANDS_IN_FLIGHT, "role" => role.to_owned()),
            retries: metrics::counter!(names::COMMAND_RETRIES, "role" => role.to_owned()),
        }
    }

    /// One more command in flight, until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.increment(1);
        InFlight(self.in_flight.clone())
    }

    /// Counts a finish once written: `accepted` is false when another finish of the same
    /// command was accepted first (then it is a duplicate, whatever its outcome).
    pub fn finished(&self, outcome: Outcome, accepted: bool) {
        if !accepted {
            return self.duplicate.increment(1);
        }
        match outcome {
            Outcome::Deleted => self.deleted.increment(1),
            Outcome::Completed => self.completed.increment(1),
            Outcome::Failed => self.failed.increment(1),
            Outcome::Canceled => self.canceled.increment(1),
            Outcome::Malformed | Outcome::Exhausted => {
                self.dead_lettered.increment(1);
                let letters = match outcome {
                    Outcome::Malformed => &self.malformed,
                    _ => &self.exhausted,
                };
                letters.increment(1);
            }
        }
    }
}
