//! One transition of one run: lock the run, apply what happened through the engine, record
//! the commands, timers and events it produced, commit, then publish.

use std::sync::Arc;

use mindbus::wire::{RunEnded, RunEventKind, RunStatus, RunStep, Status, StepView};
use serde_json::Value;
use uuid::Uuid;

use super::measure;
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
    /// Adds `entry` to the outbox, to publish once the transaction commits; stored by
    /// [`Effects::store`].
    pub fn push(&mut self, entry: OutboxEntry) {
        self.out.push(entry);
    }

    /// Writes the entries pushed into the transaction, all in one statement.
    async fn store(&mut self) -> Result<(), sqlx::Error> {
        store::push_all(self.tx, self.publisher, &mut self.out).await
    }
}

/// What a transition applies: engine events already worked out (steps whose answers are
/// all in, failures), or an input still to be turned into one.
enum Applying {
    Events(Vec<Event>),
    Input(Input),
}

/// What `applying` does to a run whose stored definition cannot be read: a cancel cancels
/// it, anything else fails it naming why. Neither needs the definition, so a run can always
/// be ended.
fn unreadable(run: &mut RunRow, applying: &Applying, why: &str) -> Vec<Action> {
    if let Applying::Input(Input::Cancel) = applying {
        run.status = RunStatus::Canceled;
        run.error = Some("canceled".into());
        return Vec::new();
    }
    vec![Action::Fail {
        step: None,
        reason: format!("its workflow definition cannot be read by this orchestrator: {why}"),
    }]
}

/// `Fail` instead of `actions` when they grew the run's state past `limit` bytes (every
/// later transition reads and writes it whole, and Postgres refuses a jsonb value past
/// 255 MiB, so a bigger state could never be saved); the state goes back to `before`. A
/// transition that does not grow the state (a cancel, a failure) is never refused.
fn bounded(run: &mut RunRow, before: &RunState, actions: Vec<Action>, limit: usize) -> Vec<Action> {
    let size = |state: &RunState| serde_json::to_vec(state).map_or(usize::MAX, |b| b.len());
    let bytes = size(&run.state);
    if bytes <= limit || bytes <= size(before) {
        return actions;
    }
    run.state = before.clone();
    vec![Action::Fail {
        step: None,
        reason: format!(
            "the run's state would take {bytes} bytes, over the {limit} one run may hold \
             (orchestrator.max_state_bytes): fan out over fewer items, or have steps answer with less"
        ),
    }]
}

impl Orchestrator {
    /// Applies `input` to run `run_id` in one transaction and publishes what it produced.
    pub(crate) async fn advance(&self, run_id: Uuid, input: Input) -> anyhow::Result<Outcome> {
        Ok(self
            .advance_many(run_id, std::slice::from_ref(&input))
            .await?
            .1)
    }

    /// Applies a prefix of `inputs` to run `run_id` in one transaction, and says how many it
    /// took: all the results at its head together (a wide fan-in commits once per batch of
    /// answers, not once per answer), or else the one input at its head.
    pub(crate) async fn advance_many(
        &self,
        run_id: Uuid,
        inputs: &[Input],
    ) -> anyhow::Result<(usize, Outcome)> {
        let results = leading_results(inputs);
        let taken = results.max(1).min(inputs.len());
        let mut tx = self.pool.begin().await?;
        let Some(status) = store::lock_status(&mut tx, run_id).await? else {
            return Ok((taken, Outcome::NotFound));
        };
        if status.is_final() {
            if results > 0 {
                answers(&mut tx, run_id, &inputs[..results], false).await?;
                tx.commit().await?;
            }
            return Ok((taken, Outcome::Ignored(format!("the run is {status}"))));
        }
        let mut steps = Vec::new();
        let applying = if results > 0 {
            let events;
            (events, steps) = answers(&mut tx, run_id, &inputs[..results], true).await?;
            if events.is_empty() {
                tx.commit().await?;
                measure::steps(&steps);
                return Ok((taken, Outcome::Applied(RunStatus::Running)));
            }
            Applying::Events(events)
        } else {
            Applying::Input(inputs[0].clone())
        };
        let mut run = store::lock_run(&mut tx, run_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished under its lock"))?;
        let before = run.state.clone();
        let actions = match self.catalog.definition(&run.workflow, &run.definition) {
            Ok(workflow) => match applying {
                Applying::Events(events) => apply_events(&workflow, &mut run.state, events),
                Applying::Input(input) => {
                    match self.actions(&mut tx, &workflow, &mut run, input).await? {
                        Ok(actions) => actions,
                        Err(ignored) => return Ok((taken, Outcome::Ignored(ignored))),
                    }
                }
            },
            // A definition this orchestrator cannot read (one written for a newer version,
            // met during an upgrade): the run still ends, rather than failing every try.
            Err(e) => unreadable(&mut run, &applying, &e.to_string()),
        };
        let actions = bounded(&mut run, &before, actions, self.config.max_state_bytes);
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
        measure::ended(&run);
        measure::steps(&steps);
        Ok((taken, Outcome::Applied(run.status)))
    }

    /// The engine's actions for `input` (anything but a result), or why there are none.
    async fn actions(
        &self,
        tx: &mut Tx,
        workflow: &Arc<Workflow>,
        run: &mut RunRow,
        input: Input,
    ) -> anyhow::Result<Result<Vec<Action>, String>> {
        let event = match input {
            Input::Result { .. } => unreachable!("results are applied by `answers`"),
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
                        match store::apply_command(tx, run.id, command_id, "failed", None).await? {
                            Some(CommandRow { step, round, .. }) => Event::Result {
                                output: Err(format!(
                                    "timeout: no result for command {command_id} by its deadline"
                                )),
                                step,
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
                if store::apply_command(tx, run.id, command_id, "failed", None)
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
        // Commands sent per (step, round), counted so their answers need not read the run.
        let mut sent: std::collections::BTreeMap<(String, u32), usize> = Default::default();
        let mut commands = Vec::new();
        let mut command_timers = Vec::new();
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
                    *sent.entry((row.step.clone(), row.round)).or_default() += 1;
                    if let Some(timeout_ms) = timeout_ms {
                        // The agent's own answer says more, so it gets a moment to arrive.
                        let due =
                            millis_from_now(timeout_ms).saturating_add(COMMAND_TIMER_GRACE_MS);
                        command_timers.push((row.command_id.to_string(), due));
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
                    fx.push(entry);
                    commands.push(row);
                }
                Action::AwaitApproval { step, timeout_ms } => {
                    let due = vec![(step, millis_from_now(timeout_ms))];
                    store::set_timers(fx.tx, run.id, Timer::Approval.as_str(), &due).await?;
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
        // Each kind of row in one statement, however wide the fan-out.
        store::insert_commands(fx.tx, &commands).await?;
        store::set_timers(fx.tx, run.id, Timer::Command.as_str(), &command_timers).await?;
        for ((step, round), open) in sent {
            store::open_step(fx.tx, run.id, &step, round, open).await?;
        }
        self.step_events(fx, run, before)?;
        if run.status.is_final() {
            self.end(fx, run).await?;
        }
        fx.store().await?;
        Ok(())
    }

    /// One `mindbus.run.step` event per step whose state changed.
    fn step_events(
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
            let Some(news) = step_news(id, before.steps.get(id), state) else {
                continue;
            };
            let data = serde_json::to_value(news)?;
            let entry = event_entry(&self.bus, run, RunEventKind::Step, Some(id), data)?;
            fx.push(entry);
        }
        Ok(())
    }

    /// A run that ended: its timers go, its running commands are cancelled, and its end is
    /// announced.
    async fn end(&self, fx: &mut Effects<'_>, run: &RunRow) -> anyhow::Result<()> {
        store::clear_timers(fx.tx, run.id).await?;
        store::close_steps(fx.tx, run.id).await?;
        // One entry for the whole run, however many commands it has open (agents match it
        // against each command's `runid`).
        if !store::open_commands(fx.tx, run.id).await?.is_empty() {
            fx.push(cancel_entry(&self.bus, run.id));
        }
        let (output, output_bytes) = within_event(run.output.clone());
        let ended = RunEnded {
            status: run.status,
            workflow: run.workflow.clone(),
            output,
            output_truncated: output_bytes.is_some(),
            output_bytes,
            error: run.error.clone(),
        };
        let data = serde_json::to_value(ended)?;
        let entry = event_entry(&self.bus, run, RunEventKind::Ended, None, data)?;
        fx.push(entry);
        tracing::info!(run.id = %run.id, status = %run.status, "run ended");
        Ok(())
    }
}

/// Most bytes of answers one transaction stores: far below what Postgres takes in one
/// statement, however big a run's results are.
const BATCH_OUTPUT_BYTES: usize = 16 << 20;

/// How many results at the head of `inputs` go into one transaction: all of them, up to
/// [`BATCH_OUTPUT_BYTES`] of outputs (and at least one).
fn leading_results(inputs: &[Input]) -> usize {
    let mut bytes = 0;
    let mut count = 0;
    for input in inputs {
        let Input::Result { output, .. } = input else {
            break;
        };
        bytes += output
            .as_ref()
            .map_or(0, |o| serde_json::to_vec(o).map_or(0, |b| b.len()));
        if count > 0 && bytes > BATCH_OUTPUT_BYTES {
            break;
        }
        count += 1;
    }
    count
}

/// The engine's actions for `events`, in order, until one ends the run; a run that fails
/// sends none of the commands earlier events asked for.
fn apply_events(workflow: &Workflow, state: &mut RunState, events: Vec<Event>) -> Vec<Action> {
    let mut actions = Vec::new();
    for event in events {
        actions.extend(engine::apply(workflow, state, event));
        if let Some(fail) = actions.iter().find(|a| matches!(a, Action::Fail { .. })) {
            return vec![fail.clone()];
        }
        if actions.iter().any(|a| matches!(a, Action::Complete { .. })) {
            break;
        }
    }
    actions
}

/// Records `results` (all `Input::Result`) on their commands' rows, with the run's row lock
/// held, without reading the run: a batch of answers costs the same however big the run
/// is. A command answered twice in the batch keeps its first answer. When `counting`,
/// returns what the engine must hear: each failure, and each step whose round is now fully
/// answered, with its outputs.
async fn answers(
    tx: &mut Tx,
    run_id: Uuid,
    results: &[Input],
    counting: bool,
) -> anyhow::Result<(Vec<Event>, Vec<(String, f64)>)> {
    let mut seen = std::collections::HashSet::new();
    let mut rows: Vec<store::AnswerRow<'_>> = Vec::with_capacity(results.len());
    let mut failures: Vec<Option<&String>> = Vec::with_capacity(results.len());
    for input in results {
        if let Input::Result {
            command_id,
            status,
            output,
        } = input
            && seen.insert(*command_id)
        {
            rows.push(store::AnswerRow {
                command_id: *command_id,
                status: status.as_str(),
                output: output.as_ref().ok(),
            });
            failures.push(output.as_ref().err());
        }
    }
    let applied = store::apply_answers(tx, run_id, Timer::Command.as_str(), &rows).await?;
    if !counting {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut events = Vec::new();
    let mut counts: Vec<(String, u32, usize)> = Vec::new();
    let mut steps = Vec::with_capacity(applied.len());
    for (index, row, seconds) in applied {
        steps.push((row.role.clone(), seconds));
        if let Some(error) = failures[index] {
            events.push(Event::Result {
                step: row.step,
                round: row.round,
                output: Err(error.clone()),
            });
            continue;
        }
        match counts
            .iter_mut()
            .find(|(s, r, _)| *s == row.step && *r == row.round)
        {
            Some((_, _, n)) => *n += 1,
            None => counts.push((row.step, row.round, 1)),
        }
    }
    for (step, round, open) in store::count_answers(tx, run_id, &counts).await? {
        if open <= 0 {
            let outputs = store::step_outputs(tx, run_id, &step, round).await?;
            events.push(Event::Result {
                step,
                round,
                output: Ok(outputs),
            });
        }
    }
    Ok((events, steps))
}

/// What a step event says about a step that went from `before` to `now`: `None` when
/// nothing worth telling changed (a fan-out item answered, but the step still runs).
fn step_news(id: &str, before: Option<&StepState>, now: &StepState) -> Option<RunStep> {
    if before == Some(now) {
        return None;
    }
    Some(RunStep {
        step: id.to_owned(),
        view: step_view(now),
    })
}

/// Where a step stands, as events and `run.get` show it: an output over
/// [`EVENT_OUTPUT_BYTES`] left out.
pub(crate) fn step_view(state: &StepState) -> StepView {
    let mut view = StepView {
        state: state.name().to_owned(),
        ..StepView::default()
    };
    match state {
        StepState::Running { round, commands } => {
            view.round = Some(*round);
            view.commands = Some(*commands);
        }
        StepState::Done { output } => {
            let (output, bytes) = within_event(Some(output.clone()));
            view.output = Some(output.unwrap_or(Value::Null));
            view.output_truncated = bytes.is_some();
            view.output_bytes = bytes;
        }
        StepState::Failed { error } => view.error = Some(error.clone()),
        StepState::Pending | StepState::Skipped | StepState::AwaitingApproval => {}
    }
    view
}

/// Most bytes of an output an event carries; a bigger one is left out (`output_bytes`
/// says how big it is) and read with `run.get`'s `part`.
pub(crate) const EVENT_OUTPUT_BYTES: usize = 64 * 1024;

/// `value`, unless it is over [`EVENT_OUTPUT_BYTES`]: then nothing, and how big it was.
pub(crate) fn within_event<T: serde::Serialize>(value: Option<T>) -> (Option<T>, Option<usize>) {
    let bytes = value
        .as_ref()
        .map_or(0, |v| serde_json::to_vec(v).map_or(0, |b| b.len()));
    if bytes > EVENT_OUTPUT_BYTES {
        (None, Some(bytes))
    } else {
        (value, None)
    }
}
