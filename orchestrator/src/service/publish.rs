//! Publishing what transitions committed: building the entries, sending them after the
//! commit, and re-sending what an orchestrator that died in between left in the outbox.

use std::sync::Arc;
use std::time::Duration;

use mindbus::bus::{Bus, CONTROL_MAXLEN};
use mindbus::telemetry::spans;
use mindbus::wire::{Cancel, MessageId, ORCHESTRATOR_ROLE};
use mindbus::wire::{
    Command, Envelope, Event, Extensions, Fields, Payload, RunEventKind, TraceParent,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Orchestrator, SOURCE};
use crate::store::{self, CommandRow, OutboxEntry, RunRow};

/// Entries re-sent per sweep.
const SWEEP_BATCH: i64 = 500;
/// Least age at which an orchestrator takes its own entries for stranded (a publish that
/// never ran, or whose delete failed): longer than any transaction and publish take.
const OWN_STRANDED_MS: i64 = 300_000;

impl Orchestrator {
    /// Sends committed entries (one pipeline, or one transaction per slot on a cluster),
    /// then forgets those sent. Entries not sent stay in the outbox, and a sweep sends them
    /// later.
    pub(crate) async fn publish(&self, entries: Vec<OutboxEntry>) {
        if entries.is_empty() {
            return;
        }
        let unsent = match self.xadd_all(&entries).await {
            Ok(()) => Vec::new(),
            Err(Unsent { ids, error }) => {
                tracing::warn!(error = %error, entries = ids.len(), "publishing failed; the sweep will send them");
                ids
            }
        };
        let (failed, sent): (Vec<OutboxEntry>, Vec<OutboxEntry>) =
            entries.into_iter().partition(|e| unsent.contains(&e.id));
        if !failed.is_empty()
            && let Ok(mut kept) = self.publisher.failed.lock()
        {
            kept.extend(failed);
        }
        let ids: Vec<i64> = sent.iter().map(|e| e.id).collect();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = store::delete_sent(&self.pool, &ids).await {
            tracing::warn!(error = %e, "cannot clear the outbox; entries will be sent again");
        }
    }

    /// Sends again what this orchestrator failed to publish, and entries older than
    /// `resend_after_ms` left by an orchestrator that committed a transition and died
    /// before publishing it (never one still publishing). Returns how many.
    async fn sweep(&self) -> anyhow::Result<usize> {
        self.publisher.keep().await;
        let failed = self
            .publisher
            .failed
            .lock()
            .map(|mut failed| std::mem::take(&mut *failed))
            .unwrap_or_default();
        if !failed.is_empty() {
            let count = failed.len();
            self.publish(failed).await;
            tracing::info!(entries = count, "re-sent entries whose publish failed");
        }
        let mut tx = self.pool.begin().await?;
        let me = self.publisher.number;
        let older = self.config.resend_after_ms as i64;
        // Its own entries are stranded only once no publish could still be going on.
        let own = older.saturating_mul(30).max(OWN_STRANDED_MS);
        let entries = store::take_stale(&mut tx, me, older, own, SWEEP_BATCH).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        // All or none are taken off the outbox: entries sent in a slot whose neighbours
        // failed go again with them (a step command sent twice is applied once).
        self.xadd_all(&entries)
            .await
            .map_err(|unsent| unsent.error)?;
        tx.commit().await?;
        // Any of its own it was keeping to send again are sent now.
        if let Ok(mut failed) = self.publisher.failed.lock() {
            failed.retain(|kept| entries.iter().all(|sent| sent.id != kept.id));
        }
        tracing::info!(
            entries = entries.len(),
            "re-sent entries a stopped orchestrator left unsent"
        );
        Ok(entries.len())
    }
}

/// Sweeps the outbox every tick until `stop` fires.
pub(crate) async fn sweep_loop(this: Arc<Orchestrator>, stop: CancellationToken) {
    let tick = Duration::from_millis(this.config.tick_ms);
    while !stop.is_cancelled() {
        match this.sweep().await {
            Ok(n) if n as i64 == SWEEP_BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox sweep failed"),
        }
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(tick) => {} }
    }
}

/// Entries a publish did not send, and why.
struct Unsent {
    ids: Vec<i64>,
    error: mindbus::Error,
}

impl Orchestrator {
    /// Sends `entries` after making the results group on the result stream of every role
    /// they command: in one pipeline on one server; on a cluster in one transaction per
    /// slot, sent at once (redis-rs sends a redirected pipeline again whole, which a
    /// transaction makes safe: it is refused whole). Whatever is not sent is named.
    async fn xadd_all(&self, entries: &[OutboxEntry]) -> Result<(), Unsent> {
        let all = || entries.iter().map(|e| e.id).collect();
        let roles = entries
            .iter()
            .filter_map(|e| self.bus.keys().commands_role(&e.stream));
        if let Err(error) = self.result_roles.ensure(&self.bus, roles).await {
            return Err(Unsent { ids: all(), error });
        }
        let conn = self.bus.connection();
        let cluster = conn.is_cluster();
        let batches = conn.batches(entries, |entry| &entry.stream);
        let sent = futures::future::join_all(batches.into_iter().map(|batch| {
            let mut pipe = redis::pipe();
            if cluster {
                pipe.atomic();
            }
            for entry in &batch {
                let cmd = pipe.cmd("XADD").arg(&entry.stream);
                if let Some(maxlen) = entry.maxlen {
                    cmd.arg("MAXLEN").arg("~").arg(maxlen);
                }
                cmd.arg("*");
                for (name, value) in &entry.fields {
                    cmd.arg(name).arg(value);
                }
                cmd.ignore();
            }
            let mut conn = conn.clone();
            async move { (batch, pipe.query_async::<()>(&mut conn).await) }
        }))
        .await;
        let mut unsent = Vec::new();
        let mut first = None;
        for (batch, result) in sent {
            if let Err(e) = result {
                unsent.extend(batch.iter().map(|e| e.id));
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(Unsent {
                ids: unsent,
                error: e.into(),
            }),
        }
    }
}

/// The trace context of a command a run sends to `stream`: a producer span under the run's
/// context when traces are exported, else [`child_trace`].
fn sent_trace(run: &RunRow, stream: &str, command: &MessageId) -> Option<TraceParent> {
    let parent: TraceParent = run.traceparent.as_deref()?.parse().ok()?;
    match spans::producer_under(stream, command, &parent) {
        Some((_, sent)) => Some(sent),
        None => child_trace(run, command),
    }
}

/// The trace context of something a run does: the run's trace, a span id of its own
/// (derived from `span`).
fn child_trace(run: &RunRow, span: &MessageId) -> Option<TraceParent> {
    let parent: TraceParent = run.traceparent.as_deref()?.parse().ok()?;
    let mut child = TraceParent::rooted_at(span);
    child.trace_id = parent.trace_id;
    child.flags = parent.flags;
    Some(child)
}

fn text_fields(fields: Fields) -> Vec<(String, String)> {
    fields
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

/// The command for one step (item, round) of a run.
pub(crate) fn command_entry(
    bus: &Bus,
    run: &RunRow,
    row: &CommandRow,
    command_type: &str,
    input: Value,
    deadline_ms: Option<i64>,
    maxattempts: Option<u32>,
) -> anyhow::Result<OutboxEntry> {
    let mut command = Command::new(command_type, Payload::json(input));
    command.envelope.id = row.command_id.into();
    command.envelope.source = SOURCE.into();
    let stream = bus.keys().commands(&row.role);
    if let Some(trace) = sent_trace(run, &stream, &row.command_id.into()) {
        command.envelope.traceparent = trace;
    }
    command.deadline = deadline_ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok());
    command.maxattempts = maxattempts;
    // A step sent again (by the outbox sweep, after a crash) carries the same id: the key
    // makes agents accept one result for it.
    command.idempotencykey = Some(row.command_id.to_string());
    command.runid = Some(run.id.to_string());
    command.stepid = Some(row.step.clone());
    command.causationid = Some(run.id.to_string());
    command
        .extensions
        .insert("stepitem".into(), row.item.to_string());
    command
        .extensions
        .insert("stepround".into(), row.round.to_string());
    if let Some(tenant) = &run.tenant {
        command.set_tenant(tenant);
    }
    Ok(OutboxEntry {
        id: 0,
        run_id: run.id,
        command_id: Some(row.command_id),
        stream,
        maxlen: None,
        fields: text_fields(command.encode()?),
    })
}

/// A cancellation of every command of a run, on the control stream.
pub(crate) fn cancel_entry(bus: &Bus, run_id: Uuid) -> OutboxEntry {
    OutboxEntry {
        id: 0,
        run_id,
        command_id: None,
        stream: bus.keys().control(),
        maxlen: Some(CONTROL_MAXLEN as i64),
        fields: Cancel::Run(run_id.to_string())
            .encode()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect(),
    }
}

/// A run event.
pub(crate) fn event_entry(
    bus: &Bus,
    run: &RunRow,
    kind: RunEventKind,
    step: Option<&str>,
    data: Value,
) -> anyhow::Result<OutboxEntry> {
    let mut envelope = Envelope::new(kind.as_str(), SOURCE, Payload::json(data));
    let stream = bus.keys().events(ORCHESTRATOR_ROLE);
    if let Some(trace) = child_trace(run, &envelope.id) {
        envelope.traceparent = trace;
    }
    let event = Event {
        envelope,
        correlationid: None,
        role: None,
        attempt: None,
        runid: Some(run.id.to_string()),
        stepid: step.map(str::to_owned),
        extensions: Extensions::new(),
    };
    Ok(OutboxEntry {
        id: 0,
        run_id: run.id,
        command_id: None,
        stream,
        maxlen: None,
        fields: text_fields(event.encode()?),
    })
}
