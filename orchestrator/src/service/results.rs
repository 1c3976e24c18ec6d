//! Step results: read from every role's result stream through the `mindbus-orchestrator`
//! consumer group (a [`GroupReader`], which also takes over results a stopped orchestrator
//! left pending past the lease), applied run by run (a run's results in order, as many per
//! transaction as go together), acknowledged only after they committed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use mindbus::bus::Bus;
use mindbus::group::{Delivery, GroupOptions, GroupReader};
use mindbus::streams::StreamEntry;
use mindbus::wire::{CommandResult, EntryId, Origin, Status, field_text, without_nul};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::transition::Input;
use super::{Orchestrator, measure};

/// The consumer group every orchestrator reads results with.
pub const GROUP: &str = "mindbus-orchestrator";

/// How often roles that appeared (through another orchestrator, or before this one
/// started) are looked for.
const DISCOVER_EVERY: Duration = Duration::from_secs(2);

/// The roles whose result streams carry the orchestrators' group. Before the first step
/// command goes to a role, its group is made (from its stream's start) and the role is
/// listed in `<prefix>:steproles`, so no step result can come before the group that reads
/// it, and every orchestrator's timers learn of the role before its results can matter.
#[derive(Debug, Default)]
pub(crate) struct ResultRoles {
    known: Mutex<BTreeSet<String>>,
    /// Whether every role with a stream has been looked up once (results of roles no
    /// orchestrator listed, from before the list existed, may be waiting).
    discovered: AtomicBool,
}

impl ResultRoles {
    /// Adds every role with a stream (results written before any orchestrator listed the
    /// role, say by an earlier version, are read too).
    async fn discover(&self, bus: &Bus) -> Result<(), mindbus::Error> {
        let roles = mindbus::streams::roles(&mut bus.connection(), bus.keys()).await?;
        self.ensure(bus, roles.iter().map(String::as_str)).await?;
        self.discovered.store(true, Ordering::Release);
        Ok(())
    }

    /// Adds the roles any orchestrator has sent steps to; the roles known after it, once
    /// every role has been looked up at least once.
    pub(crate) async fn refresh(&self, bus: &Bus) -> Result<Option<Vec<String>>, mindbus::Error> {
        if !self.discovered.load(Ordering::Acquire) {
            return Ok(None);
        }
        let listed: Vec<String> = redis::cmd("SMEMBERS")
            .arg(bus.keys().step_roles())
            .query_async(&mut bus.connection())
            .await?;
        self.ensure(bus, listed.iter().map(String::as_str)).await?;
        Ok(Some(self.all()))
    }

    /// Makes the group on the result stream of each of `roles` not seen yet, and lists the
    /// role. A role whose result key holds another type is left out (tried again next
    /// time) and the others go on; any other failure stops here.
    pub(crate) async fn ensure<'a>(
        &self,
        bus: &Bus,
        roles: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), mindbus::Error> {
        let new: Vec<&str> = roles
            .into_iter()
            .filter(|role| self.known.lock().is_ok_and(|known| !known.contains(*role)))
            .collect();
        for role in new {
            let stream = bus.keys().results(role);
            let mut conn = bus.connection();
            match mindbus::streams::ensure_group(&mut conn, &stream, GROUP, "0").await {
                Ok(()) => {}
                Err(e) if mindbus::streams::is_wrongtype(&e) => {
                    tracing::warn!(role, error = %e, "this role's result stream is not a stream; its results cannot be read");
                    continue;
                }
                Err(e) => return Err(e),
            }
            redis::cmd("SADD")
                .arg(bus.keys().step_roles())
                .arg(role)
                .query_async::<()>(&mut conn)
                .await?;
            if let Ok(mut known) = self.known.lock() {
                known.insert(role.to_owned());
            }
        }
        Ok(())
    }

    /// Every role known so far.
    pub(crate) fn all(&self) -> Vec<String> {
        self.known
            .lock()
            .map(|known| known.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Reads and applies results until `stop` fires (reconnecting after Redis failures).
pub(crate) async fn read_loop(this: Arc<Orchestrator>, stop: CancellationToken) {
    let config = &this.config;
    let options = GroupOptions {
        group: GROUP.into(),
        kind: "orchestrator",
        registry: None,
        lease: Duration::from_millis(config.lease_ms),
        block: Duration::from_millis(config.block_ms),
    };
    let mut reader = GroupReader::new(this.bus.redis().clone(), Vec::new(), options);
    let mut discovered = Instant::now() - DISCOVER_EVERY;
    while !stop.is_cancelled() {
        if discovered.elapsed() >= DISCOVER_EVERY {
            if let Err(e) = this.result_roles.discover(&this.bus).await {
                tracing::warn!(error = %e, "looking for new roles' results failed");
            }
            discovered = Instant::now();
        }
        for role in this.result_roles.all() {
            reader.follow(this.bus.keys().results(&role));
        }
        let batch = reader.next(config.batch, &stop).await;
        if batch.is_empty() {
            continue;
        }
        let applied = apply_batch(&this, &batch, &stop).await;
        let acked = match reader.acker().await {
            Ok(acker) => acker.ack(&applied).await,
            Err(e) => Err(e),
        };
        // Left pending, they are handed over again (applying them again changes nothing:
        // each result is applied once).
        if let Err(e) = acked {
            tracing::warn!(error = %e, "acknowledging results failed");
            reader.recover();
        }
    }
    // What was read but not applied goes to the other orchestrators at once.
    reader.leave().await;
}

/// One run's results in a batch, in order: each one's index in the batch, entry and input.
type RunResults = Vec<(usize, EntryId, Input)>;

/// Applies a batch; returns the deliveries applied (those to acknowledge). Each run's
/// results are applied in their order, as many in one transaction as go together; up to
/// `concurrency` runs at once.
async fn apply_batch<'a>(
    this: &Orchestrator,
    batch: &'a [Delivery],
    stop: &CancellationToken,
) -> Vec<&'a Delivery> {
    // By index in the batch, which outlives the applying.
    let mut done = Vec::new();
    let mut runs: Vec<(Uuid, RunResults)> = Vec::new();
    for (index, delivery) in batch.iter().enumerate() {
        let entry = delivery.entry.id;
        match step_result(&delivery.stream, &delivery.entry) {
            None => done.push(index),
            Some((run_id, input)) => match runs.iter_mut().find(|(id, _)| *id == run_id) {
                Some((_, results)) => results.push((index, entry, input)),
                None => runs.push((run_id, vec![(index, entry, input)])),
            },
        }
    }
    let applied: Vec<Vec<usize>> = futures::stream::iter(runs)
        .map(|(run_id, results)| apply_run(this, run_id, results, stop))
        .buffer_unordered(this.config.concurrency)
        .collect()
        .await;
    done.extend(applied.into_iter().flatten());
    done.into_iter().map(|index| &batch[index]).collect()
}

/// Applies one run's results in order, retrying while Postgres fails; returns the ids of
/// those applied, which may be acknowledged (the rest, when stopped first, stay pending
/// for the next reader).
async fn apply_run(
    this: &Orchestrator,
    run_id: Uuid,
    results: RunResults,
    stop: &CancellationToken,
) -> Vec<usize> {
    let (ids, entries): (Vec<usize>, Vec<EntryId>) =
        results.iter().map(|(i, e, _)| (*i, *e)).unzip();
    let inputs: Vec<Input> = results.into_iter().map(|(.., input)| input).collect();
    let mut applied = 0;
    let mut delays = mindbus::streams::retry_delays();
    while applied < inputs.len() {
        match this.advance_many(run_id, &inputs[applied..]).await {
            Ok((taken, outcome)) => {
                tracing::debug!(run.id = %run_id, results = taken, ?outcome, "results applied");
                entries[applied..applied + taken]
                    .iter()
                    .for_each(|entry| measure::applied(*entry));
                applied += taken;
            }
            // One of them cannot be stored: the first goes alone (failing the run if it is
            // the one), then the rest go on together.
            Err(e) if is_permanent(&e) => {
                if !apply_one(this, run_id, &inputs[applied], stop).await {
                    break;
                }
                applied += 1;
            }
            Err(e) => {
                tracing::warn!(run.id = %run_id, error = %e, "applying results failed; retrying");
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(delay) => {} }
            }
        }
    }
    ids.into_iter().take(applied).collect()
}

/// Applies one result alone, retrying while Postgres fails, and failing its run when it can
/// never be stored; `false` when stopped first.
async fn apply_one(
    this: &Orchestrator,
    run_id: Uuid,
    input: &Input,
    stop: &CancellationToken,
) -> bool {
    let mut delays = mindbus::streams::retry_delays();
    loop {
        match this.advance(run_id, input.clone()).await {
            Ok(outcome) => {
                tracing::debug!(run.id = %run_id, ?outcome, "result applied");
                return true;
            }
            Err(e) if is_permanent(&e) => {
                abort(this, run_id, input, &e).await;
                return true;
            }
            Err(e) => {
                tracing::warn!(run.id = %run_id, error = %e, "applying a result failed; retrying");
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tokio::select! { _ = stop.cancelled() => return false, _ = tokio::time::sleep(delay) => {} }
            }
        }
    }
}

/// The run and input a result entry means, or `None` for an entry that is not a run's step
/// result (or cannot be read: the monitor records it, flagged).
fn step_result(stream: &str, entry: &StreamEntry) -> Option<(Uuid, Input)> {
    let fields = entry.fields.clone()?;
    let origin = Origin {
        stream,
        entry: entry.id,
    };
    let result = match CommandResult::decode(fields.as_slice(), origin) {
        Ok(result) => result,
        Err(e) => return unreadable(entry.id, &fields, &e),
    };
    let run_id = result.runid.as_deref()?.parse().ok()?;
    // Postgres cannot store U+0000: an agent's output or message must not make a result
    // impossible to apply.
    let output = match (&result.status, &result.failure) {
        (Status::Completed, _) => Ok(without_nul(result.envelope.data.value)),
        (_, Some(failure)) => {
            Err(format!("{}: {}", failure.errortype, failure.error).replace('\0', "\u{fffd}"))
        }
        (status, None) => Err(status.to_string()),
    };
    // Every step command's id is a UUID the orchestrator made.
    let command_id = result.correlationid.as_uuid()?;
    let input = Input::Result {
        command_id,
        status: result.status,
        output,
    };
    Some((run_id, input))
}

/// A result entry that does not decode: when it names a run (and the command it answers),
/// that run fails with the reason, so it never waits for a result that came but cannot be
/// read. Anything else is skipped (the monitor records it, flagged).
fn unreadable(
    entry: EntryId,
    fields: &[(String, Vec<u8>)],
    error: &mindbus::wire::WireError,
) -> Option<(Uuid, Input)> {
    let field = |name: &str| field_text(fields, name);
    let Some(run_id) = field("runid").and_then(|id| id.parse::<Uuid>().ok()) else {
        tracing::warn!(entry = %entry, error = %error, "skipping a malformed result");
        return None;
    };
    tracing::warn!(entry = %entry, run.id = %run_id, error = %error, "a step result cannot be read; failing its run");
    let command_id = field("correlationid")
        .and_then(|id| id.parse().ok())
        .unwrap_or_default();
    let reason = format!("malformed: a step result could not be read: {error}");
    Some((run_id, Input::Abort { command_id, reason }))
}

/// An error that retrying cannot cure: the store refuses the data (class 22 or 23) or
/// finds it past one of its limits (class 54), a
/// stored value cannot be read back, or a command to send is over the wire's limits.
fn is_permanent(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| ["22", "23", "54"].iter().any(|class| c.starts_with(class))),
            Some(
                sqlx::Error::Decode(_) | sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. },
            ) => true,
            Some(_) => false,
            None => {
                cause.is::<serde_json::Error>()
                    || cause.is::<super::catalog::DefinitionError>()
                    || cause.is::<mindbus::wire::WireError>()
            }
        })
}

/// Fails the run of a result that can never be applied, so it neither blocks the reader
/// nor leaves the run waiting forever.
async fn abort(this: &Orchestrator, run_id: Uuid, input: &Input, error: &anyhow::Error) {
    tracing::error!(run.id = %run_id, error = %format!("{error:#}"), "a result cannot be applied; failing its run");
    let Input::Result { command_id, .. } = input else {
        return;
    };
    let reason = format!("internal: a step result could not be stored: {error}");
    let abort = Input::Abort {
        command_id: *command_id,
        reason,
    };
    if let Err(e) = this.advance(run_id, abort).await {
        tracing::error!(run.id = %run_id, error = %e, "failing the run failed too; the result is skipped");
    }
}
