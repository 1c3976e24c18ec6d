//! The agent's one writer: events and finished commands leave the process in batches, one
//! pipeline each (events as plain `XADD`s, then every finish of the batch in one script
//! call), with a few batches in flight on the pipelined connection.
//!
//! A finished command is written atomically with its acknowledgement: the result is
//! accepted only by the finish that finds its entry still pending, so a command run twice
//! after a reclaim yields one result; a command with an idempotency key is also accepted
//! only once per key and role (its done key), so a command published twice with that key
//! yields one result. The acknowledgement is the script's last write for each command.

use std::sync::LazyLock;
use std::time::Duration;

use crate::streams::Connection;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use redis::{Cmd, ErrorKind, Pipeline, Script, ServerErrorKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::measure::Outcome;
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
    Finish(Box<Finish>, oneshot::Sender<bool>),
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
    /// A `duplicate` event the worker writes itself when the result is not accepted and
    /// there is no `event` to retype (never sent to the script).
    pub on_duplicate: PackedFields,
    /// A dead letter written when the result is accepted.
    pub dead_letter: PackedFields,
    /// How the command ended, for the metrics.
    pub outcome: Outcome,
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
    conn: Connection,
    targets: Targets,
    mut rx: mpsc::Receiver<Write>,
    abort: CancellationToken,
) {
    let cluster = conn.is_cluster();
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            Some((accepted, waiters)) = in_flight.next(), if !in_flight.is_empty() => deliver(accepted, waiters),
            batch = next_batch(&mut rx), if open && in_flight.len() < IN_FLIGHT => match batch {
                None => open = false,
                Some(batch) => {
                    let (encoded, waiters) = encode(&targets, batch, cluster);
                    let (mut conn, abort) = (conn.clone(), abort.clone());
                    in_flight.push_back(async move { (write(&mut conn, &encoded, &abort).await, waiters) });
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

/// Sends the batch, retrying with backoff while Redis is unreachable. The finish script is
/// called by its hash (`EVALSHA`): when Redis does not have it (a restart, a `SCRIPT
/// FLUSH`), nothing of the call ran, so the script is loaded and only its call is sent again
/// (the batch's events, already written, are not). On a cluster the events go first, in a
/// `MULTI`/`EXEC` of their own: redis-rs sends a whole pipeline again when one of its
/// commands is redirected or told to try again while a slot moves, which would write events
/// twice; a transaction is refused whole in that case, so sending it again is safe.
async fn write(
    conn: &mut Connection,
    batch: &Encoded,
    abort: &CancellationToken,
) -> Option<Vec<i64>> {
    let mut retry = Retry::new(abort);
    if let Some(events) = &batch.events {
        while let Err(e) = events.query_async::<()>(conn).await {
            tracing::warn!(error = %e, "writing events to redis failed; retrying");
            if !retry.wait().await {
                return None;
            }
        }
        if batch.script.is_none() {
            return Some(Vec::new());
        }
    }
    let mut pipe = batch.pipe.clone();
    loop {
        match pipe.query_async::<Vec<Vec<i64>>>(conn).await {
            Ok(mut accepted) => return Some(accepted.pop().unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                // The events ran; from here on only the script call is sent.
                pipe = redis::pipe();
                if let Some(script) = &batch.script {
                    pipe.add_command(script.clone());
                }
                match FINISH.load_async(conn).await {
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "loading the finish script failed; retrying")
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "writing to redis failed; retrying"),
        }
        if !retry.wait().await {
            return None;
        }
    }
}

/// Waits between tries of one batch: with backoff, and at most a few times once `abort`
/// fired.
struct Retry<'a> {
    delays: backon::ExponentialBackoff,
    abort: &'a CancellationToken,
    tries_after_abort: u32,
}

impl<'a> Retry<'a> {
    fn new(abort: &'a CancellationToken) -> Self {
        Self {
            delays: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(2))
                .with_jitter()
                .without_max_times()
                .build(),
            abort,
            tries_after_abort: 0,
        }
    }

    /// Waits before the next try; `false` when the batch is given up.
    async fn wait(&mut self) -> bool {
        if self.abort.is_cancelled() {
            self.tries_after_abort += 1;
            if self.tries_after_abort > 3 {
                return false;
            }
        }
        tokio::time::sleep(self.delays.next().unwrap_or(Duration::from_secs(2))).await;
        true
    }
}

/// The finish script, sent by its hash.
static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("finish.lua")));

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

/// A batch ready to send: one pipeline (its events as plain `XADD`s, then the finish call),
/// or on a cluster the events as a transaction of their own and the finish call alone; and
/// the finish call alone, for sending again.
#[derive(Debug)]
struct Encoded {
    events: Option<Pipeline>,
    pipe: Pipeline,
    script: Option<Cmd>,
}

/// Encodes a batch: its events as plain `XADD`s, then all its finished commands in one
/// call of the finish script. A command's events are queued before its finish, so they
/// still land before its terminal event. `cluster`: the events are sent first, apart.
fn encode(t: &Targets, batch: Vec<Write>, cluster: bool) -> (Encoded, Vec<oneshot::Sender<bool>>) {
    let mut pipe = redis::pipe();
    let mut finishes = Vec::new();
    let mut waiters = Vec::new();
    for write in batch {
        match write {
            Write::Event(fields) => {
                pipe.add_command(xadd(&t.events, t.maxlen, &fields))
                    .ignore();
            }
            Write::Finish(finish, waiter) => {
                finishes.push(*finish);
                waiters.push(waiter);
            }
        }
    }
    let mut events = None;
    if cluster && !pipe.is_empty() {
        pipe.atomic();
        events = Some(std::mem::replace(&mut pipe, redis::pipe()));
    }
    let script = (!finishes.is_empty()).then(|| finish_call(t, finishes));
    if let Some(script) = &script {
        pipe.add_command(script.clone());
    }
    (
        Encoded {
            events,
            pipe,
            script,
        },
        waiters,
    )
}

/// `EVALSHA` of the finish script for `finishes`: the role's four streams and every done
/// key and reply stream as `KEYS` (each finish names its own by index), then the limits and
/// each finish's entry and fields as `ARGV`.
fn finish_call(t: &Targets, finishes: Vec<Finish>) -> Cmd {
    let mut keys: Vec<&str> = vec![&t.commands, &t.results, &t.events, &t.dead_letters];
    let mut indexes = Vec::with_capacity(finishes.len());
    for finish in &finishes {
        let mut index = [0; 2];
        let named = [Some(finish.done_key.as_str()), finish.replyto.as_deref()];
        for (slot, key) in index.iter_mut().zip(named) {
            if let Some(key) = key.filter(|key| !key.is_empty()) {
                keys.push(key);
                *slot = keys.len();
            }
        }
        indexes.push(index);
    }
    let (args, bytes) = finishes.iter().map(finish_size).fold(
        (
            8 + keys.len(),
            128 + keys.iter().map(|k| k.len()).sum::<usize>(),
        ),
        |(a, b), (fa, fb)| (a + fa, b + fb),
    );
    let mut cmd = Cmd::with_capacity(args, bytes);
    cmd.arg("EVALSHA").arg(FINISH.get_hash()).arg(keys.len());
    for key in &keys {
        cmd.arg(*key);
    }
    cmd.arg(&t.group)
        .arg(t.maxlen)
        .arg(t.dedup_ttl_secs)
        .arg(t.reply_ttl_secs);
    for (finish, [done, reply]) in finishes.iter().zip(indexes) {
        cmd.arg(finish.entry.map(|e| e.to_string()).unwrap_or_default());
        cmd.arg(done).arg(reply);
        push_fields(&mut cmd, &finish.result);
        push_fields(&mut cmd, &finish.event);
        push_fields(&mut cmd, &finish.dead_letter);
    }
    cmd
}

/// The arguments and bytes a finish adds to the script call (counts and ids included).
fn finish_size(finish: &Finish) -> (usize, usize) {
    let groups = [&finish.result, &finish.event, &finish.dead_letter];
    let (args, bytes) = groups.iter().fold((0, 0), |(a, b), fields| {
        (a + 1 + fields.len() * 2, b + 8 + fields.byte_len())
    });
    (args + 3, bytes + 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keys;

    /// The hash tag of a key: what Redis Cluster hashes to pick its slot.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = open + 1 + key[open + 1..].find('}')?;
        Some(&key[open + 1..close]).filter(|tag| !tag.is_empty())
    }

    #[test]
    fn a_finish_call_declares_every_key_in_its_roles_slot() {
        let keys = Keys::new("mb");
        let t = Targets {
            commands: keys.commands("echo"),
            group: "echo".into(),
            results: keys.results("echo"),
            events: keys.events("echo"),
            dead_letters: keys.dead_letters("echo"),
            maxlen: 0,
            dedup_ttl_secs: 60,
            reply_ttl_secs: 60,
        };
        let with_both = Finish {
            done_key: keys.done("echo", "k1"),
            replyto: Some(keys.reply("echo", "me")),
            ..Finish::default()
        };
        let call = finish_call(&t, vec![with_both, Finish::default()]);
        let args: Vec<String> = call
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(args[0], "EVALSHA");
        assert_eq!(args[1], FINISH.get_hash());
        let count: usize = args[2].parse().unwrap();
        let declared = &args[3..3 + count];
        assert_eq!(
            declared,
            [
                "mb:cmd:{echo}",
                "mb:result:{echo}",
                "mb:event:{echo}",
                "mb:dlq:{echo}",
                "mb:done:{echo}:k1",
                "mb:reply:{echo}:me",
            ]
        );
        assert!(declared.iter().all(|key| hash_tag(key) == Some("echo")));
        // ARGV: group and limits, then each finish: entry, done and reply as KEYS indexes.
        let argv = &args[3 + count..];
        assert_eq!(argv[..4], ["echo", "0", "60", "60"]);
        assert_eq!(argv[4..7], ["", "5", "6"]);
        let second = 7 + 3;
        assert_eq!(argv[second..second + 3], ["", "0", "0"]);
    }
}
