//! One transition of one run: lock the run, apply what happened through the engine, record
//! the commands, timers and events it produced, commit, then publish.

use std::sync::Arc;

use mindbus::wire::{RunEventKind, RunStatus, Status};
use serde_json::{Value, json};
use uuid::Uuid;

use super::publish::{cancel_entry, command_entry, event_entry};
use super::timers::Timer;
use super::{Orchestrator, millis_from_now};
use crate::engine::{self, Action, Event, RunState, StepState};
use crate::store::{self, CommandRow, OutboxEntry, RunRow, Tx};
use crate::workflow::Workflow;

/// How long after a step command's deadline its timer fails the step, so an agent's own
/// failed result (which says what happened) usually arrives first.
const COMMAND_TIMER_GRACE_MS: i64 = 500;

/// What happened to a run.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    /// A step's command answered.
    Result {
        command_id: Uuid,
        status: Status,
        output: Result<Value, String>,
    },
    /// Someone approved or rejected an approval step.
    Decided { step: String, approved: bool },
    /// A timer fired.
    Timer { timer: Timer, step: String },
    /// Someone cancelled the run.
    Cancel,
    /// A result could not be applied for good (the store refuses it, or it cannot be read):
    /// the run fails, if the command was still waiting for its answer.
    Abort { command_id: Uuid, reason: String },
}

/// What a transition did.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Applied; the run is now in this status.
    Applied(RunStatus),
    /// Nothing to do (the reason says why): a repeated result, a run already over.
    Ignored(String),
    /// No such run.
    NotFound,
}

/// A transition's work, written in its transaction and published after it commits.
pub(crate) struct Effects<'a> {
    pub tx: &'a mut Tx,
    /// This orchestrator's publisher number, stamped on every outbox entry.
    pub publisher: i32,
    pub out: Vec<OutboxEntry>,
}

impl Effects<'_> {
    /// Stores `entry` in the outbox, to publish once the transaction commits.
    pub async fn push(&mut self, entry: OutboxEntry) -> Result<(), sqlx::Error> {
        let entry = store::push(self.tx, self.publisher, entry).await?;
        self.out.push(entry);
        Ok(())
    }
}

/// What `input` does to a run whose stored definition cannot be read: a cancel cancels it,
/// anything else fails it naming why. Neither needs the definition, so a run can always be
/// ended.
fn unreadable(run: &mut RunRow, input: Input, why: &str) -> Vec<Action> {
    if let Input::Cancel = input {
        run.status = RunStatus::Canceled;
        run.error = Some("canceled".into());
        return Vec::new();
    }
    vec![Action::Fail {
        step: None,
        reason: format!("its workflow definition cannot be read by this orchestrator: {why}"),
    }]
}

impl Orchestrator {
    /// Applies `input` to run `run_id` in one transaction and publishes what it produced.
    pub(crate) async fn advance(&self, run_id: Uuid, input: Input) -> anyhow::Result<Outcome> {
        let mut tx = self.pool.begin().await?;
        let Some(mut run) = store::lock_run(&mut tx, run_id).await? else {
            return Ok(Outcome::NotFound);
        };
        if run.status.is_final() {
            if let Input::Result {
                command_id, status, ..
            } = &input
            {
                store::apply_command(&mut tx, run_id, *command_id, status.as_str()).await?;
                tx.commit().await?;
            }
            return Ok(Outcome::Ignored(format!("the run is {}", run.status)));
        }
        let before = run.state.clone();
        let actions = match self.catalog.definition(&run.workflow, &run.definition) {
            Ok(workflow) => match self.actions(&mut tx, &workflow, &mut run, input).await? {
                Ok(actions) => actions,
                Err(ignored) => return Ok(Outcome::Ignored(ignored)),
            },
            // A definition this orchestrator cannot read (one written for a newer version,
            // met during an upgrade): the run still ends, rather than failing every try.
            Err(e) => unreadable(&mut run, input, &e.to_string()),
        };
        let mut effects = Effects {
            tx: &mut tx,
            publisher: self.publisher.number,
            out: Vec::new(),
        };
        self.record(&mut effects, &mut run, &before, actions)
            .await?;
        let out = effects.out;
        store::save_run(&mut tx, &run).await?;
        tx.commit().await?;
        self.publish(out).await;
        Ok(Outcome::Applied(run.status))
    }

    /// The engine's actions for `input`, or why there are none.
    async fn actions(
        &self,
        tx: &mut Tx,
        workflow: &Arc<Workflow>,
        run: &mut RunRow,
        input: Input,
    ) -> anyhow::Result<Result<Vec<Action>, String>> {
        let event = match input {
            Input::Result {
                command_id,
                status,
                output,
            } => match store::apply_command(tx, run.id, command_id, status.as_str()).await? {
                Some(CommandRow {
                    step, item, round, ..
                }) => {
                    let timer = command_id.to_string();
                    store::drop_timer(tx, run.id, Timer::Command.as_str(), &timer).await?;
                    Event::Result {
                        step,
                        item,
                        round,
                        output,
                    }
                }
                None => return Ok(Err("the result was applied before".into())),
            },
            Input::Decided { step, approved } => {
                if run.state.steps.get(&step) != Some(&StepState::AwaitingApproval) {
                    return Ok(Err(format!("step `{step}` is not waiting for an approval")));
                }
                store::drop_timer(tx, run.id, Timer::Approval.as_str(), &step).await?;
                Event::Decided { step, approved }
            }
            Input::Timer { timer, step } => {
                if !store::take_timer(tx, run.id, timer.as_str(), &step).await? {
                    return Ok(Err("the timer is gone".into()));
                }
                match timer {
                    Timer::Approval => Event::ApprovalTimedOut { step },
                    Timer::Command => {
                        let Ok(command_id) = step.parse::<Uuid>() else {
                            return Ok(Err(format!("`{step}` is not a command id")));
                        };
                        match store::apply_command(tx, run.id, command_id, "failed").await? {
                            Some(CommandRow {
                                step, item, round, ..
                            }) => Event::Result {
                                output: Err(format!(
                                    "timeout: no result for command {command_id} by its deadline"
                                )),
                                step,
                                item,
                                round,
                            },
                            None => return Ok(Err("the command was answered".into())),
                        }
                    }
                    Timer::Deadline => {
                        return Ok(Ok(vec![Action::Fail {
                            step: None,
                            reason: "deadline_exceeded: the run's deadline passed".into(),
                        }]));
                    }
                }
            }
            Input::Cancel => {
                run.status = RunStatus::Canceled;
                run.error = Some("canceled".into());
                return Ok(Ok(Vec::new()));
            }
            Input::Abort { command_id, reason } => {
                // Only a command of this run still waiting for its answer: a stray entry
                // naming an answered (or unknown) command changes nothing.
                if store::apply_command(tx, run.id, command_id, "failed")
                    .await?
                    .is_none()
                {
                    return Ok(Err("the command was answered before".into()));
                }
                return Ok(Ok(vec![Action::Fail { step: None, reason }]));
            }
        };
        Ok(Ok(engine::apply(workflow, &mut run.state, event)))
    }

    /// Writes the effects of `actions` (taken from state `before`) into the transaction.
    pub(crate) async fn record(
        &self,
        fx: &mut Effects<'_>,
        run: &mut RunRow,
        before: &RunState,
        actions: Vec<Action>,
    ) -> anyhow::Result<()> {
        for action in actions {
            match action {
                Action::Dispatch {
                    step,
                    item,
                    round,
                    role,
                    command_type,
                    input,
                    timeout_ms,
                    maxattempts,
                } => {
                    let deadline = [timeout_ms.map(millis_from_now), run.deadline_ms]
                        .into_iter()
                        .flatten()
                        .min();
                    let row = CommandRow {
                        command_id: crate::ids::command_id(run.id, &step, item, round),
                        run_id: run.id,
                        step,
                        item,
                        round,
                        role,
                    };
                    store::insert_command(fx.tx, &row).await?;
                    if let Some(timeout_ms) = timeout_ms {
                        // The agent's own answer says more, so it gets a moment to arrive.
                        let due =
                            millis_from_now(timeout_ms).saturating_add(COMMAND_TIMER_GRACE_MS);
                        let timer = row.command_id.to_string();
                        store::set_timer(fx.tx, run.id, Timer::Command.as_str(), &timer, due)
                            .await?;
                    }
                    let entry = command_entry(
                        &self.bus,
                        run,
                        &row,
                        &command_type,
                        input,
                        deadline,
                        maxattempts,
                    )?;
                    fx.push(entry).await?;
                }
                Action::AwaitApproval { step, timeout_ms } => {
                    let due = millis_from_now(timeout_ms);
                    store::set_timer(fx.tx, run.id, Timer::Approval.as_str(), &step, due).await?;
                }
                Action::Complete { output } => {
                    run.status = RunStatus::Completed;
                    run.output = Some(output);
                }
                Action::Fail { reason, .. } => {
                    run.status = RunStatus::Failed;
                    run.error = Some(reason);
                }
            }
        }
        self.step_events(fx, run, before).await?;
        if run.status.is_final() {
            self.end(fx, run).await?;
        }
        Ok(())
    }

    /// One `mindbus.run.step` event per step whose state changed.
    async fn step_events(
        &self,
        fx: &mut Effects<'_>,
        run: &RunRow,
        before: &RunState,
    ) -> anyhow::Result<()> {
        for (id, state) in &run.state.steps {
            // A run that failed while starting steps sent none of their commands.
            let started = matches!(state, StepState::Running { .. });
            if started && run.status.is_final() {
                continue;
            }
            let Some(data) = step_news(id, before.steps.get(id), state)? else {
                continue;
            };
            let entry = event_entry(&self.bus, run, RunEventKind::Step, Some(id), data)?;
            fx.push(entry).await?;
        }
        Ok(())
    }

    /// A run that ended: its timers go, its running commands are cancelled, and its end is
    /// announced.
    async fn end(&self, fx: &mut Effects<'_>, run: &RunRow) -> anyhow::Result<()> {
        store::clear_timers(fx.tx, run.id).await?;
        // One entry for the whole run, however many commands it has open (agents match it
        // against each command's `runid`).
        if !store::open_commands(fx.tx, run.id).await?.is_empty() {
            fx.push(cancel_entry(&self.bus, run.id)).await?;
        }
        let mut data = json!({
            "status": run.status.as_str(),
            "workflow": run.workflow,
            "output": run.output,
            "error": run.error,
        });
        bound_output(&mut data);
        let entry = event_entry(&self.bus, run, RunEventKind::Ended, None, data)?;
        fx.push(entry).await?;
        tracing::info!(run.id = %run.id, status = %run.status, "run ended");
        Ok(())
    }
}

/// What a step event says about a step that went from `before` to `now`: `None` when
/// nothing worth telling changed (a fan-out item answered, but the step still runs).
fn step_news(
    id: &str,
    before: Option<&StepState>,
    now: &StepState,
) -> serde_json::Result<Option<Value>> {
    if before == Some(now) {
        return Ok(None);
    }
    let mut data = serde_json::to_value(now)?;
    if let StepState::Running { round, outputs } = now {
        if matches!(before, Some(StepState::Running { round: r, .. }) if r == round) {
            return Ok(None);
        }
        data = json!({"state": "running", "round": round, "commands": outputs.len()});
    }
    data["step"] = json!(id);
    bound_output(&mut data);
    Ok(Some(data))
}

/// Most bytes of an output an event carries; a bigger one is left out (`output_bytes`
/// says how big it is) and read whole with `run.get`.
pub(crate) const EVENT_OUTPUT_BYTES: usize = 64 * 1024;

/// Leaves `data["output"]` out when it is over [`EVENT_OUTPUT_BYTES`]: an event stream
/// entry (and every reader of it) stays small however much a step answered.
fn bound_output(data: &mut Value) {
    let Some(output) = data.get("output") else {
        return;
    };
    let bytes = serde_json::to_vec(output).map_or(0, |b| b.len());
    if bytes > EVENT_OUTPUT_BYTES {
        data["output"] = Value::Null;
        data["output_bytes"] = json!(bytes);
        data["output_truncated"] = json!(true);
    }
}
