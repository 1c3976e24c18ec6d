//! The orchestrator's own role: `run.start`, `run.get`, `run.list`, `run.cancel` and
//! `run.approve` commands on `<prefix>:cmd:{orchestrator}`, from any language.

use std::sync::Arc;

use mindbus::runtime::{Context, Handler, HandlerError, HandlerResult};
use mindbus::telemetry::spans;
use mindbus::wire::{
    Approval, Command, ErrorType, GetRun, ListRuns, OVER_QUOTA, PartPage, RunChange, RunEventKind,
    RunList, RunPartPage, RunRef, RunRequest, RunRequestError, RunStarted, RunStatus, RunView,
    StartRun,
};
use uuid::Uuid;

use super::publish::event_entry;
use super::timers::Timer;
use super::transition::{Effects, Input, Outcome, step_view, within_event};
use super::{Orchestrator, measure};
use crate::engine::{self, RunState};
use crate::store::{self, RunPart, RunRow};

/// Serves run commands.
#[derive(Debug)]
pub(crate) struct Commands(pub Arc<Orchestrator>);

/// Most bytes of items one page of a part holds (a page has at least one item).
const PAGE_BYTES: usize = 1 << 20;

/// A page of a part as `run.get` answers it: a list's items from `offset` (fewer than asked
/// when they pass [`PAGE_BYTES`]), with `total` and the `next` offset; anything else whole.
fn page(part: RunPart, offset: usize) -> PartPage {
    let (items, total) = match part {
        RunPart::Whole(value) => return PartPage::Whole { value },
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
    PartPage::Items {
        items: page,
        offset,
        total,
        next: (end < total).then_some(end),
    }
}

impl Handler for Commands {
    async fn handle(&self, ctx: Context) -> HandlerResult {
        let request = RunRequest::from_command(&ctx.command).map_err(|e| {
            let kind = match e {
                RunRequestError::UnknownType(_) => ErrorType::UnknownType,
                RunRequestError::Data(_) => ErrorType::Malformed,
            };
            HandlerError::fatal(e.to_string()).with_type(kind)
        })?;
        let this = &self.0;
        match request {
            RunRequest::Start(start) => this.start(&ctx.command, start).await,
            RunRequest::Get(get) => this.get(get).await,
            RunRequest::List(list) => this.list(list).await,
            RunRequest::Cancel(RunRef { run_id, workflows }) => {
                this.steer(run_id, workflows.as_deref(), Input::Cancel)
                    .await
            }
            RunRequest::Approve(Approval {
                run_id,
                workflows,
                step,
                approved,
            }) => {
                let input = Input::Decided { step, approved };
                this.steer(run_id, workflows.as_deref(), input).await
            }
        }
    }
}

/// A run as `run.get` shows it: every value over
/// [`EVENT_OUTPUT_BYTES`](super::transition::EVENT_OUTPUT_BYTES) (the input, the output,
/// the error, each step's output and error) left out and flagged.
fn view(run: RunRow) -> RunView {
    let (input, input_bytes) = within_event(Some(run.input));
    let (output, output_bytes) = within_event(run.output);
    let (error, error_bytes) = within_event(run.error);
    RunView {
        run_id: run.id,
        workflow: run.workflow,
        status: run.status,
        input,
        input_truncated: input_bytes.is_some(),
        input_bytes,
        output,
        output_truncated: output_bytes.is_some(),
        output_bytes,
        error,
        error_truncated: error_bytes.is_some(),
        error_bytes,
        steps: (run.state.steps.iter())
            .map(|(id, state)| (id.clone(), step_view(state)))
            .collect(),
        added_steps: run.state.added.iter().map(|a| a.step.id.clone()).collect(),
    }
}

/// A typed answer as the command's result data.
fn answer(value: &impl serde::Serialize) -> HandlerResult {
    serde_json::to_value(value).map_err(|e| HandlerError::fatal(format!("answer: {e}")))
}

/// A store failure is worth retrying (Postgres may be back soon).
fn retry(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::retryable(e.to_string())
}

impl Orchestrator {
    /// Starts a run whose id is the command's id, so a redelivered start starts nothing new.
    async fn start(&self, command: &Command, start: StartRun) -> HandlerResult {
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
            // With traces exported, the run's steps are children of this handling's span.
            traceparent: Some(spans::current_or(command.envelope.traceparent).to_string()),
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
        let started = RunStarted {
            workflow: run.workflow.clone(),
            input: run.input.clone(),
        };
        let started = serde_json::to_value(started).map_err(retry)?;
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
        measure::started(&run);
        tracing::info!(run.id = %run.id, workflow = %run.workflow, "run started");
        answer(&RunChange {
            run_id: run.id,
            status: run.status,
        })
    }

    /// The run (if it is of one of `workflows`, when given): with every value over
    /// [`EVENT_OUTPUT_BYTES`](super::transition::EVENT_OUTPUT_BYTES) left out and flagged,
    /// or, when `part` names one, that value (a list a page at a time).
    async fn get(&self, get: GetRun) -> HandlerResult {
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
            return answer(&view(run));
        };
        let limit = get.limit.unwrap_or(100).clamp(1, 1000);
        let workflows = get.workflows.as_deref();
        let found = store::run_part(&self.pool, get.run_id, workflows, &part, get.offset, limit)
            .await
            .map_err(retry)?
            .ok_or_else(missing)?
            .map_err(|e| HandlerError::fatal(e).with_type(ErrorType::Malformed))?;
        answer(&RunPartPage {
            run_id: get.run_id,
            part,
            page: page(found, get.offset),
        })
    }

    /// The run with big values left out.
    async fn summary(&self, run_id: Uuid) -> HandlerResult {
        let run = store::get_run(&self.pool, run_id)
            .await
            .map_err(retry)?
            .ok_or_else(|| HandlerError::fatal(format!("no run {run_id}")))?;
        answer(&view(run))
    }

    async fn list(&self, list: ListRuns) -> HandlerResult {
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
        answer(&RunList {
            runs,
            next: next.map(|c| c.to_string()),
        })
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
            Outcome::Applied(status) => answer(&RunChange { run_id, status }),
            Outcome::Ignored(why) => Err(HandlerError::fatal(why)),
            Outcome::NotFound => Err(HandlerError::fatal(format!("no run {run_id}"))),
        }
    }
}
