//! Workflow runs on the wire: the commands the orchestrator serves on its own command
//! stream, the states a run goes through and the events it leaves on `<prefix>:event`.

use std::fmt;
use std::str::FromStr;

/// The role the orchestrator serves: runs start with `XADD <prefix>:cmd:{orchestrator} * type
/// run.start data '{"workflow":"sample","input":{...}}'`.
pub const ORCHESTRATOR_ROLE: &str = "orchestrator";

/// The error type of a `run.start` refused because its owner has as many runs running as
/// it may.
pub const OVER_QUOTA: &str = "over_quota";

/// What one can ask the orchestrator, as the command `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunCommand {
    /// `{"workflow": NAME, "input": {...}}`: start a run; its id is the command's id. With
    /// `"owner": NAME, "max_running": N`, refused (error type `over_quota`) while `NAME`
    /// has `N` runs running.
    Start,
    /// `{"run_id": ID}`: a run's state. Every command naming a run also takes
    /// `"workflows": [NAME, ...]`: a run of another workflow is then answered as missing.
    Get,
    /// `{"status": "running", "limit": 20, "workflows": [...]}` (all optional): recent runs.
    List,
    /// `{"run_id": ID}`: stop a run and cancel its running commands.
    Cancel,
    /// `{"run_id": ID, "step": STEP, "approved": true}`: decide an approval step.
    Approve,
}

const COMMANDS: [(RunCommand, &str); 5] = [
    (RunCommand::Start, "run.start"),
    (RunCommand::Get, "run.get"),
    (RunCommand::List, "run.list"),
    (RunCommand::Cancel, "run.cancel"),
    (RunCommand::Approve, "run.approve"),
];

impl RunCommand {
    /// The command `type`.
    pub fn as_str(self) -> &'static str {
        COMMANDS
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("", |(_, name)| name)
    }
}

impl FromStr for RunCommand {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        COMMANDS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(c, _)| *c)
            .ok_or_else(|| {
                let known: Vec<&str> = COMMANDS.iter().map(|(_, n)| *n).collect();
                format!("`{s}` is not one of {}", known.join(", "))
            })
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Steps are running or waiting.
    Running,
    /// Every step finished; the run has its output.
    Completed,
    /// A step failed, an approval was rejected or the deadline passed.
    Failed,
    /// Someone cancelled it.
    Canceled,
}

const STATUSES: [(RunStatus, &str); 4] = [
    (RunStatus::Running, "running"),
    (RunStatus::Completed, "completed"),
    (RunStatus::Failed, "failed"),
    (RunStatus::Canceled, "canceled"),
];

impl RunStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        STATUSES
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, name)| name)
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        self != RunStatus::Running
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        STATUSES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(status, _)| *status)
            .ok_or_else(|| format!("`{s}` is not one of running, completed, failed, canceled"))
    }
}

/// The `type` of a run's events; each carries the run's id in `runid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunEventKind {
    /// The run started; `data` holds the workflow and input.
    Started,
    /// A step changed state; `data` holds `step`, `state` and, when done, `output`.
    Step,
    /// The run ended; `data` holds `status`, and `output` or `error`.
    Ended,
}

const RUN_EVENTS: [(RunEventKind, &str); 3] = [
    (RunEventKind::Started, "mindbus.run.started"),
    (RunEventKind::Step, "mindbus.run.step"),
    (RunEventKind::Ended, "mindbus.run.ended"),
];

impl RunEventKind {
    /// The event `type`.
    pub fn as_str(self) -> &'static str {
        RUN_EVENTS
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("", |(_, name)| name)
    }
}

impl FromStr for RunEventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RUN_EVENTS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| format!("`{s}` is not a run event"))
    }
}

/// The id of the run a `run.start` command starts: the command's id when it is a UUID (as
/// every id MindBus makes is), else UUIDv5(URL namespace, id), so a start sent again with
/// the same id is the same run.
pub fn run_id(start: &super::MessageId) -> uuid::Uuid {
    uuid::Uuid::from_bytes(start.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (command, name) in COMMANDS {
            assert_eq!(name.parse::<RunCommand>(), Ok(command));
            assert_eq!(command.as_str(), name);
        }
        for (status, name) in STATUSES {
            assert_eq!(name.parse::<RunStatus>(), Ok(status));
        }
        for (kind, name) in RUN_EVENTS {
            assert_eq!(name.parse::<RunEventKind>(), Ok(kind));
        }
        assert!("run.stop".parse::<RunCommand>().is_err());
    }
}
