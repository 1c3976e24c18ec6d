//! Workflow runs on the wire: the commands the orchestrator serves on its own command
//! stream, the states a run goes through and the events it leaves on its event stream,
//! `<prefix>:event:{orchestrator}`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use super::{Command, Payload};

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

/// A question for the orchestrator, typed: every side builds run commands with
/// [`RunRequest::to_command`] and the orchestrator reads them with
/// [`RunRequest::from_command`], so no side writes or reads their data by hand.
#[derive(Debug, Clone, PartialEq)]
pub enum RunRequest {
    Start(StartRun),
    Get(GetRun),
    List(ListRuns),
    Cancel(RunRef),
    Approve(Approval),
}

/// `run.start`: start a run of `workflow`; its id is the command's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    pub workflow: String,
    #[serde(default)]
    pub input: Value,
    /// Who starts it, for `max_running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Runs `owner` may have running at once, this one included (refused with error type
    /// `over_quota` past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
}

/// `run.cancel`: one run, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRef {
    pub run_id: Uuid,
    /// The workflows the asker may see; a run of another is answered as missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows: Option<Vec<String>>,
}

/// `run.get`: the run with big values left out, or one part of it a page at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRun {
    pub run_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows: Option<Vec<String>>,
    /// `input`, `output` or `steps.<id>` (a finished step's output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// A list part's first item (default 0).
    #[serde(default)]
    pub offset: usize,
    /// A list part's items per page (1 to 1000, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `run.list`: recent runs, newest first, a page at a time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRuns {
    /// Only runs with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Runs per page (1 to 1000, default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows: Option<Vec<String>>,
    /// The `next` of the page before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// `run.approve`: decide a run's approval step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub run_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows: Option<Vec<String>>,
    pub step: String,
    #[serde(default = "yes")]
    pub approved: bool,
}

fn yes() -> bool {
    true
}

/// Why a command is not a run request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunRequestError {
    /// Its `type` is not a run command.
    #[error("{0}")]
    UnknownType(String),
    /// Its data does not fit the command (the message names the field).
    #[error("data: {0}")]
    Data(String),
}

impl RunRequest {
    /// Which command this is.
    pub fn kind(&self) -> RunCommand {
        match self {
            Self::Start(_) => RunCommand::Start,
            Self::Get(_) => RunCommand::Get,
            Self::List(_) => RunCommand::List,
            Self::Cancel(_) => RunCommand::Cancel,
            Self::Approve(_) => RunCommand::Approve,
        }
    }

    /// Limits the request to runs of `workflows` (a start is not limited: which workflows
    /// a caller may start is checked before asking).
    pub fn scoped(mut self, workflows: Vec<String>) -> Self {
        match &mut self {
            Self::Start(_) => {}
            Self::Get(r) => r.workflows = Some(workflows),
            Self::List(r) => r.workflows = Some(workflows),
            Self::Cancel(r) => r.workflows = Some(workflows),
            Self::Approve(r) => r.workflows = Some(workflows),
        }
        self
    }

    /// The command that asks this (JSON data), to publish on the orchestrator's stream.
    pub fn to_command(&self) -> Command {
        let data = match self {
            Self::Start(r) => serde_json::to_value(r),
            Self::Get(r) => serde_json::to_value(r),
            Self::List(r) => serde_json::to_value(r),
            Self::Cancel(r) => serde_json::to_value(r),
            Self::Approve(r) => serde_json::to_value(r),
        };
        // Plain structs of strings, numbers and JSON values always serialize.
        Command::new(
            self.kind().as_str(),
            Payload::json(data.unwrap_or_default()),
        )
    }

    /// Reads a command's `type` and data (absent data counts as `{}`).
    pub fn from_command(command: &Command) -> Result<Self, RunRequestError> {
        let kind: RunCommand = command
            .envelope
            .ty
            .parse()
            .map_err(RunRequestError::UnknownType)?;
        let data = match &command.envelope.data.value {
            Value::Null => Value::Object(Default::default()),
            data => data.clone(),
        };
        fn read<T: serde::de::DeserializeOwned>(data: Value) -> Result<T, RunRequestError> {
            serde_json::from_value(data).map_err(|e| RunRequestError::Data(e.to_string()))
        }
        Ok(match kind {
            RunCommand::Start => Self::Start(read(data)?),
            RunCommand::Get => Self::Get(read(data)?),
            RunCommand::List => Self::List(read(data)?),
            RunCommand::Cancel => Self::Cancel(read(data)?),
            RunCommand::Approve => Self::Approve(read(data)?),
        })
    }
}

/// What `run.start`, `run.cancel` and `run.approve` answer (among other fields): the run
/// and where it stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunChange {
    pub run_id: Uuid,
    pub status: RunStatus,
}

/// What `run.get` with a `part` answers: the part whole, or one page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPartPage {
    pub run_id: Uuid,
    pub part: String,
    #[serde(flatten)]
    pub page: PartPage,
}

/// A part's content in a [`RunPartPage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PartPage {
    /// A value that is not a list, whole.
    Whole { value: Value },
    /// Items from `offset` (fewer than asked when they pass the page's byte bound), of
    /// `total`; `next` is the offset of the next page, if any.
    Items {
        items: Vec<Value>,
        offset: usize,
        total: usize,
        next: Option<usize>,
    },
}

/// The data of a `mindbus.run.started` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    pub workflow: String,
    pub input: Value,
}

/// The data of a `mindbus.run.step` event: a step's new state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunStep {
    pub step: String,
    #[serde(flatten)]
    pub view: StepView,
}

/// Where one step stands, as `run.get` and `mindbus.run.step` events show it. An output over
/// the events' bound is left out, with `output_truncated` and `output_bytes`; `run.get`'s
/// `part` reads it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepView {
    /// `pending`, `skipped`, `running`, `awaiting_approval`, `done` or `failed`.
    pub state: String,
    /// The round a running step's commands are out in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// How many commands a running step has out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<usize>,
    /// A done step's output (`null` when it was left out for its size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The output was left out for its size (`output_bytes`); `run.get`'s `part` reads it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<usize>,
    /// Why a failed step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `run.get` without a `part` answers: the run, every value over the events' bound
/// left out (`null`) with `<field>_truncated` and `<field>_bytes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub run_id: Uuid,
    pub workflow: String,
    pub status: RunStatus,
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub input_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_bytes: Option<usize>,
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<usize>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_bytes: Option<usize>,
    /// Every step, by id, added steps included.
    pub steps: std::collections::BTreeMap<String, StepView>,
    /// The steps results added at run time, in the order they were added.
    pub added_steps: Vec<String>,
}

/// What `run.list` answers: runs newest first, and the cursor of the next page (pass it as
/// `after`) when this one is full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    pub next: Option<String>,
}

/// A run in a [`RunList`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub workflow: String,
    pub status: RunStatus,
    /// When it started and when it last changed, as Postgres prints a timestamp.
    pub created_at: String,
    pub updated_at: String,
    pub error: Option<String>,
}

/// The data of a `mindbus.run.ended` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnded {
    pub status: RunStatus,
    pub workflow: String,
    /// A completed run's output, unless it was left out for its size.
    pub output: Option<Value>,
    /// The output was left out for its size (`output_bytes`); `run.get`'s `part` reads it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<usize>,
    /// Why a run that did not complete ended.
    pub error: Option<String>,
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

impl Serialize for RunStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RunStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
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

    #[test]
    fn requests_round_trip_through_commands_and_bad_ones_are_named() {
        let run_id = Uuid::now_v7();
        let requests = [
            RunRequest::Start(StartRun {
                workflow: "w".into(),
                input: serde_json::json!({"a": [1]}),
                owner: Some("k".into()),
                max_running: Some(2),
            }),
            RunRequest::Get(GetRun {
                run_id,
                workflows: None,
                part: Some("output".into()),
                offset: 5,
                limit: Some(10),
            })
            .scoped(vec!["w".into()]),
            RunRequest::List(ListRuns::default()),
            RunRequest::Cancel(RunRef {
                run_id,
                workflows: None,
            }),
            RunRequest::Approve(Approval {
                run_id,
                workflows: None,
                step: "ok".into(),
                approved: false,
            }),
        ];
        for request in requests {
            let command = request.to_command();
            assert_eq!(command.envelope.ty, request.kind().as_str());
            assert_eq!(RunRequest::from_command(&command), Ok(request));
        }
        let mut bad = Command::new("run.get", Payload::json(serde_json::json!({"run": 1})));
        let err = RunRequest::from_command(&bad).unwrap_err();
        assert!(
            matches!(&err, RunRequestError::Data(m) if m.contains("unknown field `run`")),
            "{err}"
        );
        bad.envelope.ty = "run.stop".into();
        assert!(matches!(
            RunRequest::from_command(&bad),
            Err(RunRequestError::UnknownType(_))
        ));
        let approve = Command::new(
            "run.approve",
            Payload::json(serde_json::json!({"run_id": run_id, "step": "s"})),
        );
        assert!(
            matches!(RunRequest::from_command(&approve), Ok(RunRequest::Approve(a)) if a.approved)
        );
    }

    #[test]
    fn answers_read_as_their_types() {
        let run_id = Uuid::now_v7();
        let change: RunChange = serde_json::from_value(
            serde_json::json!({"run_id": run_id, "status": "canceled", "workflow": "w"}),
        )
        .unwrap();
        assert_eq!(change.status, RunStatus::Canceled);
        let page: RunPartPage = serde_json::from_value(serde_json::json!({"run_id": run_id, "part": "output", "items": [1], "offset": 0, "total": 3, "next": 1})).unwrap();
        assert!(matches!(
            page.page,
            PartPage::Items {
                next: Some(1),
                total: 3,
                ..
            }
        ));
        let whole: RunPartPage = serde_json::from_value(
            serde_json::json!({"run_id": run_id, "part": "input", "value": {"x": 1}}),
        )
        .unwrap();
        assert!(matches!(whole.page, PartPage::Whole { .. }));
        let ended = RunEnded {
            status: RunStatus::Completed,
            workflow: "w".into(),
            output: None,
            output_truncated: true,
            output_bytes: Some(70_000),
            error: None,
        };
        let data = serde_json::to_value(&ended).unwrap();
        assert_eq!(data["status"], "completed");
        assert_eq!(serde_json::from_value::<RunEnded>(data).unwrap(), ended);
    }

    #[test]
    fn views_keep_their_wire_names() {
        let run_id = Uuid::now_v7();
        let step = RunStep {
            step: "draft".into(),
            view: StepView {
                state: "done".into(),
                output: Some(Value::Null),
                output_truncated: true,
                output_bytes: Some(70_000),
                ..StepView::default()
            },
        };
        assert_eq!(
            serde_json::to_value(&step).unwrap(),
            serde_json::json!({"step": "draft", "state": "done", "output": null,
                "output_truncated": true, "output_bytes": 70_000})
        );
        let view = serde_json::json!({"run_id": run_id, "workflow": "w", "status": "failed",
            "input": {"a": 1}, "output": null, "error": null, "error_truncated": true,
            "error_bytes": 70_000, "steps": {"draft": {"state": "pending"}},
            "added_steps": []});
        let typed: RunView = serde_json::from_value(view.clone()).unwrap();
        assert!(typed.error_truncated && !typed.input_truncated);
        assert_eq!(serde_json::to_value(&typed).unwrap(), view);
        let list = serde_json::json!({"runs": [{"run_id": run_id, "workflow": "w",
            "status": "running", "created_at": "t0", "updated_at": "t1", "error": null}],
            "next": null});
        let typed: RunList = serde_json::from_value(list.clone()).unwrap();
        assert_eq!(typed.runs[0].status, RunStatus::Running);
        assert_eq!(serde_json::to_value(&typed).unwrap(), list);
    }
}
