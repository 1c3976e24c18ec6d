//! The orchestrator's own role: `run.start`, `run.get`, `run.list`, `run.cancel` and
//! `run.approve` commands on `<prefix>:cmd:{orchestrator}`, from any language.

use std::sync::Arc;

use mindbus::runtime::{Context, Handler, HandlerError, HandlerResult};
use mindbus::wire::{Command, ErrorType, OVER_QUOTA, RunCommand, RunEventKind, RunStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Orchestrator;
use super::publish::event_entry;
use super::timers::Timer;
use super::transition::{Effects, Input, Outcome, bound_field};
use crate::engine::{self, RunState};
use crate::store::{self, RunPart, RunRow};

/// Serves run commands.
#[derive(Debug)]
pub(crate) struct Commands(pub Arc<Orchestrator>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    workflow: String,
    #[serde(default)]
    input: Value,
    /// Who starts it, for `max_running`.
    owner: Option<String>,
    /// Runs `owner` may have running at once, this one included.
    max_running: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRef {
    run_id: Uuid,
    /// The workflows the asker may see; a run of another is answered as missing.
    workflows: Option<Vec<String>>,
}

/// `run.get`: the run with big values left out, or one part of it a page at a time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Get {
    run_id: Uuid,
    workflows: Option<Vec<String>>,
    /// `input`, `output` or `steps.<id>` (a finished step's output).
    part: Option<String>,
    /// A list part's first item (default 0).
    #[serde(default)]
    offset: usize,
    /// A list part's items per page (1 to 1000, default 100).
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct List {
    status: Option<String>,
    limit: Option<i64>,
    workflows: Option<Vec<String>>,
    /// The `next` of the page before.
    after: Option<String>,
}

/// Most bytes of items one page of a part holds (a page has at least one item).
const PAGE_BYTES: usize = 1 << 20;

/// A page of a part as `run.get` answers it: a list's items from `offset` (fewer than asked
/// when they pass [`PAGE_BYTES`]), with `total` and the `next` offset; anything else whole.
fn page(part: RunPart, offset: usize) -> Value {
    let (items, total) = match part {
        RunPart::Whole(value) => return json!({"value": value}),
        RunPart::Items { items, total } => (items, total),
    };
    let mut bytes = 0;
    let mut page = Vec::with_capacity(items.len());
    for item in items {
        bytes += serde_json::to_vec(&item).map_or(0, |b| b.len());
        if !page.is_empty() && bytes > PAGE_BYTES {
            break;
        }
        page.push(item);
    }
    let end = offset.saturating_add(page.len());
    json!({"items": page, "offset": offset, "total": total, "next": (end < total).then_some(end)})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    run_id: Uuid,
    workflows: Option<Vec<String>>,
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
            RunCommand::Get => this.get(parse(ctx.data())?).await,
            RunCommand::List => this.list(parse(ctx.data())?).await,
            RunCommand::Cancel => {
                let RunRef { run_id, workflows } = parse(ctx.data())?;
                this.steer(run_id, workflows.as_deref(), Input::Cancel)
                    .await
            }
            RunCommand::Approve => {
                let Approve {
                    run_id,
                    workflows,
                    step,
                    approved,
                } = parse(ctx.data())?;
                let input = Input::Decided { step, approved };
                this.steer(run_id, workflows.as_deref(), input).await
            }
        }
    }
}

/// A run as `run.get` shows it: every value over
/// [`EVENT_OUTPUT_BYTES`](super::transition::EVENT_OUTPUT_BYTES) (the input, the output,
/// each step's output) left out and flagged.
fn view(run: RunRow) -> Value {
    let mut steps = serde_json::to_value(&run.state.steps).unwrap_or_default();
    if let Value::Object(steps) = &mut steps {
        for step in steps.values_mut() {
            bound_field(step, "output");
            bound_field(step, "error");
        }
    }
    let mut view = json!({
        "run_id": run.id,
        "workflow": run.workflow,
        "status": run.status.as_str(),
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "steps": steps,
        "added_steps": run.state.added.iter().map(|a| &a.step.id).collect::<Vec<_>>(),
    });
    for field in ["input", "output", "error"] {
        bound_field(&mut view, field);
    }
    view
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
            // Not the names it knows: an asker may not be allowed to know them.
            return Err(HandlerError::fatal(format!(
                "no workflow `{}`",
                start.workflow
            )));
        };
        let (state, actions) =
            engine::start(&workflow, start.input).map_err(HandlerError::fatal)?;
        let bytes = serde_json::to_vec(&state).map_or(usize::MAX, |b| b.len());
        if bytes > self.config.max_state_bytes {
            return Err(HandlerError::fatal(format!(
                "the run's input takes {bytes} bytes, over the {} one run may hold \
                 (orchestrator.max_state_bytes)",
                self.config.max_state_bytes
            ))
            .with_type(ErrorType::Malformed));
        }
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
            owner: start.owner.clone(),
        };
        let mut tx = self.pool.begin().await.map_err(retry)?;
        let running = match (&start.owner, start.max_running) {
            (Some(owner), Some(_)) => Some(store::running_of(&mut tx, owner).await.map_err(retry)?),
            _ => None,
        };
        if !store::insert_run(&mut tx, &run).await.map_err(retry)? {
            // A redelivered start: answer with the run it started.
            drop(tx);
            return self.summary(run.id).await;
        }
        if let (Some(running), Some(max)) = (running, start.max_running)
            && running >= i64::from(max)
        {
            return Err(HandlerError::fatal(format!(
                "{running} runs started with this key are running, as many as it may have; \
                 start more once some end"
            ))
            .with_type(ErrorType::Other(OVER_QUOTA.into())));
        }
        if let Some(due) = deadline_ms {
            store::set_timers(
                &mut tx,
                run.id,
                Timer::Deadline.as_str(),
                &[(String::new(), due)],
            )
            .await
            .map_err(retry)?;
        }
        let started = json!({"workflow": run.workflow, "input": run.input});
        let entry =
            event_entry(&self.bus, &run, RunEventKind::Started, None, started).map_err(retry)?;
        let mut fx = Effects {
            tx: &mut tx,
            publisher: self.publisher.number,
            out: Vec::new(),
        };
        fx.push(entry);
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

    /// The run (if it is of one of `workflows`, when given): with every value over
    /// [`EVENT_OUTPUT_BYTES`](super::transition::EVENT_OUTPUT_BYTES) left out and flagged,
    /// or, when `part` names one, that value (a list a page at a time).
    async fn get(&self, get: Get) -> HandlerResult {
        let missing = || HandlerError::fatal(format!("no run {}", get.run_id));
        let Some(part) = get.part else {
            let run = store::get_run(&self.pool, get.run_id)
                .await
                .map_err(retry)?
                .filter(|run| {
                    get.workflows
                        .as_ref()
                        .is_none_or(|w| w.contains(&run.workflow))
                })
                .ok_or_else(missing)?;
            return Ok(view(run));
        };
        let limit = get.limit.unwrap_or(100).clamp(1, 1000);
        let workflows = get.workflows.as_deref();
        let found = store::run_part(&self.pool, get.run_id, workflows, &part, get.offset, limit)
            .await
            .map_err(retry)?
            .ok_or_else(missing)?
            .map_err(|e| HandlerError::fatal(e).with_type(ErrorType::Malformed))?;
        let mut answer = page(found, get.offset);
        answer["run_id"] = json!(get.run_id);
        answer["part"] = json!(part);
        Ok(answer)
    }

    /// The run with big values left out.
    async fn summary(&self, run_id: Uuid) -> HandlerResult {
        let run = store::get_run(&self.pool, run_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| HandlerError::fatal(format!("no run {run_id}")))?;
        Ok(view(run))
    }

    async fn list(&self, list: List) -> HandlerResult {
        let status = list
            .status
            .map(|s| s.parse::<RunStatus>())
            .transpose()
            .map_err(|e| HandlerError::fatal(format!("status: {e}")))?;
        let after = list
            .after
            .as_deref()
            .map(store::ListCursor::parse)
            .transpose()
            .map_err(|e| {
                HandlerError::fatal(format!("after: {e}")).with_type(ErrorType::Malformed)
            })?;
        let limit = list.limit.unwrap_or(20).clamp(1, 1000);
        let (runs, next) =
            store::list_runs(&self.pool, status, list.workflows.as_deref(), after, limit)
                .await
                .map_err(retry)?;
        Ok(json!({"runs": runs, "next": next.map(|c| c.to_string())}))
    }

    /// Cancels or decides a run of one of `workflows` (when given); answers with the run's
    /// status, or why nothing changed.
    async fn steer(
        &self,
        run_id: Uuid,
        workflows: Option<&[String]>,
        input: Input,
    ) -> HandlerResult {
        if let Some(workflows) = workflows {
            let run = store::get_run(&self.pool, run_id).await.map_err(retry)?;
            if !run.is_some_and(|run| workflows.contains(&run.workflow)) {
                return Err(HandlerError::fatal(format!("no run {run_id}")));
            }
        }
        match self.advance(run_id, input).await.map_err(retry)? {
            Outcome::Applied(status) => Ok(json!({"run_id": run_id, "status": status.as_str()})),
            Outcome::Ignored(why) => Err(HandlerError::fatal(why)),
            Outcome::NotFound => Err(HandlerError::fatal(format!("no run {run_id}"))),
        }
    }
}
