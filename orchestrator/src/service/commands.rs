//! The orchestrator's own role: `run.start`, `run.get`, `run.list`, `run.cancel` and
//! `run.approve` commands on `<prefix>:cmd:{orchestrator}`, from any language.

use std::sync::Arc;

use mindbus::runtime::{Context, Handler, HandlerError, HandlerResult};
use mindbus::wire::{Command, ErrorType, RunCommand, RunEventKind, RunStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Orchestrator;
use super::publish::event_entry;
use super::timers::Timer;
use super::transition::{Effects, Input, Outcome};
use crate::engine::{self, RunState};
use crate::store::{self, RunRow};

/// Serves run commands.
#[derive(Debug)]
pub(crate) struct Commands(pub Arc<Orchestrator>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    workflow: String,
    #[serde(default)]
    input: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRef {
    run_id: Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct List {
    status: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    run_id: Uuid,
    step: String,
    #[serde(default = "yes")]
    approved: bool,
}

fn yes() -> bool {
    true
}

impl Handler for Commands {
    async fn handle(&self, ctx: Context) -> HandlerResult {
        let kind: RunCommand = ctx
            .command
            .envelope
            .ty
            .parse()
            .map_err(|e: String| HandlerError::fatal(e).with_type(ErrorType::UnknownType))?;
        let this = &self.0;
        match kind {
            RunCommand::Start => this.start(&ctx.command, parse(ctx.data())?).await,
            RunCommand::Get => this.get(parse::<RunRef>(ctx.data())?.run_id).await,
            RunCommand::List => this.list(parse(ctx.data())?).await,
            RunCommand::Cancel => {
                let run_id = parse::<RunRef>(ctx.data())?.run_id;
                this.steer(run_id, Input::Cancel).await
            }
            RunCommand::Approve => {
                let Approve {
                    run_id,
                    step,
                    approved,
                } = parse(ctx.data())?;
                this.steer(run_id, Input::Decided { step, approved }).await
            }
        }
    }
}

/// Reads a command's data, or fails it naming what is wrong.
fn parse<T: for<'de> Deserialize<'de>>(data: &Value) -> Result<T, HandlerError> {
    let data = if data.is_null() {
        json!({})
    } else {
        data.clone()
    };
    serde_json::from_value(data)
        .map_err(|e| HandlerError::fatal(format!("data: {e}")).with_type(ErrorType::Malformed))
}

/// A store failure is worth retrying (Postgres may be back soon).
fn retry(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::retryable(e.to_string())
}

impl Orchestrator {
    /// Starts a run whose id is the command's id, so a redelivered start starts nothing new.
    async fn start(&self, command: &Command, start: Start) -> HandlerResult {
        let Some((workflow, source)) = self.catalog.get(&start.workflow) else {
            return Err(HandlerError::fatal(format!(
                "no workflow `{}`; known: {}",
                start.workflow,
                self.catalog.names().join(", ")
            )));
        };
        let (state, actions) =
            engine::start(&workflow, start.input).map_err(HandlerError::fatal)?;
        let deadline_ms = [
            workflow.deadline_ms.map(super::millis_from_now),
            command.deadline.map(|d| d.as_millisecond()),
        ]
        .into_iter()
        .flatten()
        .min();
        let mut run = RunRow {
            id: mindbus::wire::run_id(&command.envelope.id),
            workflow: workflow.name.clone(),
            definition: source.to_owned(),
            status: RunStatus::Running,
            input: state.input.clone(),
            state,
            output: None,
            error: None,
            traceparent: Some(command.envelope.traceparent.to_string()),
            tenant: command.tenant().map(str::to_owned),
            deadline_ms,
        };
        let mut tx = self.pool.begin().await.map_err(retry)?;
        if !store::insert_run(&mut tx, &run).await.map_err(retry)? {
            // A redelivered start: answer with the run it started.
            drop(tx);
            return self.get(run.id).await;
        }
        if let Some(due) = deadline_ms {
            store::set_timer(&mut tx, run.id, Timer::Deadline.as_str(), "", due)
                .await
                .map_err(retry)?;
        }
        let started = json!({"workflow": run.workflow, "input": run.input});
        let entry =
            event_entry(&self.bus, &run, RunEventKind::Started, None, started).map_err(retry)?;
        let mut fx = Effects {
            out: vec![store::push(&mut tx, entry).await.map_err(retry)?],
            tx: &mut tx,
        };
        let before = RunState {
            steps: run
                .state
                .steps
                .keys()
                .map(|k| (k.clone(), engine::StepState::Pending))
                .collect(),
            ..run.state.clone()
        };
        self.record(&mut fx, &mut run, &before, actions)
            .await
            .map_err(retry)?;
        let out = fx.out;
        store::save_run(&mut tx, &run).await.map_err(retry)?;
        tx.commit().await.map_err(retry)?;
        self.publish(out).await;
        tracing::info!(run.id = %run.id, workflow = %run.workflow, "run started");
        Ok(json!({"run_id": run.id, "status": run.status.as_str()}))
    }

    /// A run's whole state.
    async fn get(&self, run_id: Uuid) -> HandlerResult {
        let run = store::get_run(&self.pool, run_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| HandlerError::fatal(format!("no run {run_id}")))?;
        Ok(json!({
            "run_id": run.id,
            "workflow": run.workflow,
            "status": run.status.as_str(),
            "input": run.input,
            "output": run.output,
            "error": run.error,
            "steps": run.state.steps,
            "added_steps": run.state.added.iter().map(|a| &a.step.id).collect::<Vec<_>>(),
        }))
    }

    async fn list(&self, list: List) -> HandlerResult {
        let status = list
            .status
            .map(|s| s.parse::<RunStatus>())
            .transpose()
            .map_err(|e| HandlerError::fatal(format!("status: {e}")))?;
        let runs = store::list_runs(&self.pool, status, list.limit.unwrap_or(20).clamp(1, 1000))
            .await
            .map_err(retry)?;
        Ok(json!({"runs": runs}))
    }

    /// Cancels or decides; answers with the run's status, or why nothing changed.
    async fn steer(&self, run_id: Uuid, input: Input) -> HandlerResult {
        match self.advance(run_id, input).await.map_err(retry)? {
            Outcome::Applied(status) => Ok(json!({"run_id": run_id, "status": status.as_str()})),
            Outcome::Ignored(why) => Err(HandlerError::fatal(why)),
            Outcome::NotFound => Err(HandlerError::fatal(format!("no run {run_id}"))),
        }
    }
}
