//! The agent's one ordered writer: events and finished commands leave the process in the
//! order they happened, batched into one script call per round trip.
//!
//! A finished command is written atomically with its acknowledgement: the result is
//! accepted only if no result for that command id was accepted before (`SET NX` on its
//! done key), so a command run twice yields one result and late duplicates are dropped.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::wire::{EntryId, Fields};

const MAX_BATCH: usize = 512;

/// What the writer is asked to write.
#[derive(Debug)]
pub(crate) enum Write {
    /// A lifecycle or progress event.
    Event(Fields),
    /// A finished command; the sender learns whether its result was the accepted one.
    Finish(Finish, oneshot::Sender<bool>),
}

/// Everything that leaves the process when a command is done with.
#[derive(Debug, Default)]
pub(crate) struct Finish {
    /// The command entry to acknowledge (`None` for nothing).
    pub entry: Option<EntryId>,
    /// `<prefix>:done:<command id>`; empty means always accept.
    pub done_key: String,
    /// The command's `replyto` stream, if any.
    pub replyto: Option<String>,
    /// The result entry (empty for none).
    pub result: Fields,
    /// Events written when the result is accepted.
    pub events: Vec<Fields>,
    /// The event written instead when it is a duplicate.
    pub duplicate: Fields,
    /// A dead letter written when the result is accepted.
    pub dead_letter: Fields,
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
    mut conn: ConnectionManager,
    targets: Targets,
    mut rx: mpsc::Receiver<Write>,
    abort: CancellationToken,
) {
    let script = Script::new(include_str!("finish.lua"));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (args, waiters) = encode(&targets, std::mem::take(&mut batch));
        match write(&mut conn, &script, &args, &abort).await {
            Some(accepted) => {
                for (waiter, ok) in waiters.into_iter().zip(accepted) {
                    let _ = waiter.send(ok == 1);
                }
            }
            None => tracing::error!(
                writes = waiters.len(),
                "gave up writing a batch; its commands stay pending and will be redelivered"
            ),
        }
    }
}

async fn write(
    conn: &mut ConnectionManager,
    script: &Script,
    args: &[Vec<u8>],
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
        let mut invocation = script.prepare_invoke();
        for arg in args {
            invocation.arg(arg.as_slice());
        }
        match invocation.invoke_async::<Vec<i64>>(conn).await {
            Ok(accepted) => return Some(accepted),
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

fn push_fields(args: &mut Vec<Vec<u8>>, fields: Fields) {
    args.push((fields.len() * 2).to_string().into_bytes());
    for (name, value) in fields {
        args.push(name.into_bytes());
        args.push(value);
    }
}

fn encode(t: &Targets, batch: Vec<Write>) -> (Vec<Vec<u8>>, Vec<oneshot::Sender<bool>>) {
    let mut args: Vec<Vec<u8>> = [
        &t.commands,
        &t.group,
        &t.results,
        &t.events,
        &t.dead_letters,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([t.maxlen, t.dedup_ttl_secs, t.reply_ttl_secs].map(|n| n.to_string().into_bytes()))
    .collect();
    let mut waiters = Vec::new();
    for write in batch {
        match write {
            Write::Event(fields) => {
                args.push(b"E".to_vec());
                push_fields(&mut args, fields);
            }
            Write::Finish(finish, waiter) => {
                args.push(b"F".to_vec());
                args.push(
                    finish
                        .entry
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                        .into_bytes(),
                );
                args.push(finish.done_key.into_bytes());
                args.push(finish.replyto.unwrap_or_default().into_bytes());
                push_fields(&mut args, finish.result);
                args.push(finish.events.len().to_string().into_bytes());
                for event in finish.events {
                    push_fields(&mut args, event);
                }
                push_fields(&mut args, finish.duplicate);
                push_fields(&mut args, finish.dead_letter);
                waiters.push(waiter);
            }
        }
    }
    (args, waiters)
}
