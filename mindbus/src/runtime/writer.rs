//! The agent's one writer: events and finished commands leave the process in batches, one
//! pipeline each (events as plain `XADD`s, then every finish of the batch in one script
//! call), with a few batches in flight on the pipelined connection.
//!
//! A finished command is written atomically with its acknowledgement: the result is
//! accepted only by the finish that finds its entry still pending, so a command run twice
//! after a reclaim yields one result; a command with an idempotency key is also accepted
//! only once per key and role (its done key), so a command published twice with that key
//! yields one result. The acknowledgement is the script's last write for each command.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use redis::aio::ConnectionManager;
use redis::{Cmd, Pipeline};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::wire::{EntryId, PackedFields};

const MAX_BATCH: usize = 512;
/// Batches sent before the first one is answered: the connection is pipelined, and Redis
/// runs them in order, so events still leave in the order they happened.
const IN_FLIGHT: usize = 4;

/// What the writer is asked to write.
#[derive(Debug)]
pub(crate) enum Write {
    /// A lifecycle or progress event.
    Event(PackedFields),
    /// A finished command; the sender learns whether its result was the accepted one.
    Finish(Finish, oneshot::Sender<bool>),
}

/// Everything that leaves the process when a command is done with.
#[derive(Debug, Default)]
pub(crate) struct Finish {
    /// The command entry to acknowledge (`None` for nothing).
    pub entry: Option<EntryId>,
    /// The command's done key (`<prefix>:done:{<role>}:<idempotency key>`), or empty when it
    /// has no idempotency key: then only the first finish of its entry is accepted.
    pub done_key: String,
    /// The command's `replyto` stream, if any.
    pub replyto: Option<String>,
    /// The result entry (empty for none).
    pub result: PackedFields,
    /// The event written when the result is accepted (empty for none); retyped
    /// `mindbus.command.duplicate` when it is not.
    pub event: PackedFields,
    /// A dead letter written when the result is accepted.
    pub dead_letter: PackedFields,
}

/// Streams and limits the writer needs.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    pub commands: String,
    pub group: String,
    pub results: String,
    pub events: String,
    pub dead_letters: String,
    pub maxlen: u64,
    pub dedup_ttl_secs: u64,
    pub reply_ttl_secs: u64,
}

/// Runs until every sender is dropped and the queue is empty. While Redis is unreachable it
/// retries with backoff; once `abort` fires it gives up on a batch after a few tries (the
/// unacknowledged commands are then redelivered elsewhere, so nothing is lost).
pub(crate) async fn run(
    conn: ConnectionManager,
    targets: Targets,
    mut rx: mpsc::Receiver<Write>,
    abort: CancellationToken,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            Some((accepted, waiters)) = in_flight.next(), if !in_flight.is_empty() => deliver(accepted, waiters),
            batch = next_batch(&mut rx), if open && in_flight.len() < IN_FLIGHT => match batch {
                None => open = false,
                Some(batch) => {
                    let (pipe, waiters) = encode(&targets, batch);
                    let (mut conn, abort) = (conn.clone(), abort.clone());
                    in_flight.push_back(async move { (write(&mut conn, &pipe, &abort).await, waiters) });
                }
            },
        }
    }
}

async fn next_batch(rx: &mut mpsc::Receiver<Write>) -> Option<Vec<Write>> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    (rx.recv_many(&mut batch, MAX_BATCH).await > 0).then_some(batch)
}

fn deliver(accepted: Option<Vec<i64>>, waiters: Vec<oneshot::Sender<bool>>) {
    let Some(accepted) = accepted else {
        return tracing::error!(
            writes = waiters.len(),
            "gave up writing a batch; its commands stay pending and will be redelivered"
        );
    };
    for (waiter, ok) in waiters.into_iter().zip(accepted) {
        let _ = waiter.send(ok == 1);
    }
}

/// Sends the batch's pipeline, retrying with backoff while Redis is unreachable. The
/// script travels with every call (`EVAL`), so a restarted Redis needs no reloading.
async fn write(
    conn: &mut ConnectionManager,
    pipe: &Pipeline,
    abort: &CancellationToken,
) -> Option<Vec<i64>> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build();
    let mut tries_after_abort = 0;
    loop {
        match pipe.query_async::<Vec<Vec<i64>>>(conn).await {
            Ok(mut accepted) => return Some(accepted.pop().unwrap_or_default()),
            Err(e) => tracing::warn!(error = %e, "writing to redis failed; retrying"),
        }
        if abort.is_cancelled() {
            tries_after_abort += 1;
            if tries_after_abort > 3 {
                return None;
            }
        }
        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(2))).await;
    }
}

const FINISH_SCRIPT: &str = include_str!("finish.lua");

fn push_fields(cmd: &mut Cmd, fields: &PackedFields) {
    cmd.arg(fields.len() * 2);
    for (name, value) in fields.iter() {
        cmd.arg(name).arg(value);
    }
}

fn xadd(stream: &str, maxlen: u64, fields: &PackedFields) -> Cmd {
    let mut cmd = Cmd::with_capacity(6 + fields.len() * 2, 64 + fields.byte_len());
    cmd.arg("XADD").arg(stream);
    if maxlen > 0 {
        cmd.arg("MAXLEN").arg("~").arg(maxlen);
    }
    cmd.arg("*");
    for (name, value) in fields.iter() {
        cmd.arg(name).arg(value);
    }
    cmd
}

/// One pipeline for the batch: its events as plain `XADD`s, then all its finished commands
/// in one `EVAL` of the finish script. A command's events are queued before its finish, so
/// they still land before its terminal event.
fn encode(t: &Targets, batch: Vec<Write>) -> (Pipeline, Vec<oneshot::Sender<bool>>) {
    let mut pipe = redis::pipe();
    let mut waiters = Vec::new();
    let mut script = script_header(t, &batch);
    for write in batch {
        match write {
            Write::Event(fields) => {
                pipe.add_command(xadd(&t.events, t.maxlen, &fields))
                    .ignore();
            }
            Write::Finish(finish, waiter) => {
                push_finish(&mut script, finish);
                waiters.push(waiter);
            }
        }
    }
    if !waiters.is_empty() {
        pipe.add_command(script);
    }
    (pipe, waiters)
}

/// The script call's start, with room for every finish in `batch`, so that building it
/// rarely moves what is already written.
fn script_header(t: &Targets, batch: &[Write]) -> Cmd {
    let names =
        t.commands.len() + t.group.len() + t.results.len() + t.events.len() + t.dead_letters.len();
    let (args, bytes) = batch
        .iter()
        .filter_map(|write| match write {
            Write::Finish(finish, _) => Some(finish_size(finish)),
            Write::Event(_) => None,
        })
        .fold(
            (16, FINISH_SCRIPT.len() + names + 128),
            |(a, b), (fa, fb)| (a + fa, b + fb),
        );
    let mut cmd = Cmd::with_capacity(args, bytes);
    cmd.arg("EVAL").arg(FINISH_SCRIPT).arg(0);
    cmd.arg(&t.commands)
        .arg(&t.group)
        .arg(&t.results)
        .arg(&t.events)
        .arg(&t.dead_letters);
    cmd.arg(t.maxlen)
        .arg(t.dedup_ttl_secs)
        .arg(t.reply_ttl_secs);
    cmd
}

/// The arguments and bytes a finish adds to the script call (counts and ids included).
fn finish_size(finish: &Finish) -> (usize, usize) {
    let groups = [&finish.result, &finish.event, &finish.dead_letter];
    let (args, bytes) = groups.iter().fold((0, 0), |(a, b), fields| {
        (a + 1 + fields.len() * 2, b + 8 + fields.byte_len())
    });
    let replyto = finish.replyto.as_ref().map_or(0, String::len);
    (args + 3, bytes + 64 + finish.done_key.len() + replyto)
}

fn push_finish(cmd: &mut Cmd, finish: Finish) {
    cmd.arg(finish.entry.map(|e| e.to_string()).unwrap_or_default());
    cmd.arg(finish.done_key)
        .arg(finish.replyto.unwrap_or_default());
    push_fields(cmd, &finish.result);
    push_fields(cmd, &finish.event);
    push_fields(cmd, &finish.dead_letter);
}
