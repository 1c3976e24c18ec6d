//! The one way a MindBus process takes entries from streams through a consumer group:
//! agents their commands, the orchestrator its step results, the monitor every stream. A
//! [`GroupReader`] owns
//!
//! - the consumer's name (host, process id, random: never reused), listed in each group
//!   from the start;
//! - its own pending entries first after a reconnect (listed with `XPENDING`, fetched with
//!   `XRANGE`, so their delivery counts stay as they are; those another consumer took over
//!   meanwhile are left to it);
//! - entries other consumers left idle past the lease, swept with `XAUTOCLAIM` every
//!   quarter lease, the sweep going on while the caller has room and the pending list has
//!   more to scan;
//! - new entries, never more than the caller has room for, blocking no longer than until
//!   the next sweep;
//! - reconnecting (with the one retry policy) and recreating a group that vanished;
//! - acknowledging in batches, and handing back what is left when the consumer leaves.
//!
//! Its caller decides what an entry means and acknowledges it once it is done with it; a
//! caller that works on entries for longer than a lease renews them with [`Leases`].

mod lease;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::streams::{
    Connection, Reads, Redis, StreamEntry, ensure_group, is_wrongtype, parse_autoclaim,
    parse_pending, parse_range, retry_delays,
};
use crate::wire::EntryId;

pub use lease::Leases;

/// Most entries handed back in one go when a consumer leaves.
const HAND_BACK_MAX: usize = 10_000;
/// How long a key that stopped being a stream is left out of reads before it is tried again.
const WRONG_TYPE_PAUSE: Duration = Duration::from_secs(10);

/// A consumer name that is never reused: `<kind>-<host>-<pid>-<48 random bits>`.
pub fn consumer_name(kind: &str) -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!(
        "{kind}-{host}-{}-{:012x}",
        std::process::id(),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

/// One entry handed to the caller.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream it came from.
    pub stream: Arc<str>,
    pub entry: StreamEntry,
    /// Times it has been delivered, this one included (1 for a new entry).
    pub deliveries: u32,
}

/// How a [`GroupReader`] reads.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// The consumer group.
    pub group: String,
    /// What the consumer's name starts with (`agent`, `orchestrator`, `monitor`).
    pub kind: &'static str,
    /// A set the group's name is added to whenever it joins a stream (the agents' registry
    /// of roles, which comes back this way after Redis loses its data).
    pub registry: Option<String>,
    /// Entries idle this long in another consumer's pending list are taken over.
    pub lease: Duration,
    /// Longest blocking read.
    pub block: Duration,
}

/// Acknowledges entries of one group, in batches; cheap to clone.
#[derive(Clone)]
pub struct Acker {
    conn: Connection,
    group: String,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acker")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Acker {
    /// Acknowledges the deliveries the caller is done with, in one round trip.
    pub async fn ack(&self, done: &[&Delivery]) -> Result<(), Error> {
        if done.is_empty() {
            return Ok(());
        }
        let mut by_stream: HashMap<&Arc<str>, Vec<String>> = HashMap::new();
        for delivery in done {
            by_stream
                .entry(&delivery.stream)
                .or_default()
                .push(delivery.entry.id.to_string());
        }
        // One pipeline per slot on a cluster, sent at once.
        let batches = self.conn.batches(by_stream, |(stream, _)| &***stream);
        futures::future::try_join_all(batches.into_iter().map(|batch| {
            let mut pipe = redis::pipe();
            for (stream, ids) in batch {
                pipe.cmd("XACK")
                    .arg(&**stream)
                    .arg(&self.group)
                    .arg(ids)
                    .ignore();
            }
            let mut conn = self.conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        }))
        .await?;
        Ok(())
    }
}

/// One stream followed, and where this consumer's sweep of its pending list stands.
#[derive(Debug)]
struct Followed {
    name: Arc<str>,
    /// The group exists (created from the stream's start when it did not).
    joined: bool,
    sweep: EntryId,
    /// While recovering: the last own pending entry handed over (`None`: from the
    /// start), so each is handed over once; `Some(MAX)` once the list is done.
    recovered: Option<EntryId>,
    /// The key holds another type (someone replaced the stream): left out until then, so
    /// it does not fail every read of the other streams.
    paused_until: Option<Instant>,
}

impl Followed {
    fn is_active(&self) -> bool {
        self.paused_until
            .is_none_or(|until| until <= Instant::now())
    }
}

/// Reads a set of streams through one consumer group; see the module documentation.
#[derive(Debug)]
pub struct GroupReader {
    redis: Redis,
    options: GroupOptions,
    consumer: String,
    streams: Vec<Followed>,
    reads: Reads,
    writes: Option<Connection>,
    /// After a reconnect: own pending entries may have been delivered but never arrived.
    recovering: bool,
    sweep_due: Instant,
    sweep_every: Duration,
}

impl GroupReader {
    /// A reader of `streams` (more can be followed later); connects on first use.
    pub fn new(redis: Redis, streams: Vec<String>, options: GroupOptions) -> Self {
        let sweep_every =
            (options.lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        let mut reader = Self {
            reads: Reads::new(redis.clone(), options.block),
            redis,
            consumer: consumer_name(options.kind),
            options,
            streams: Vec::new(),
            writes: None,
            recovering: false,
            // A new consumer looks at once: it may be replacing one that stopped.
            sweep_due: Instant::now(),
            sweep_every,
        };
        streams.into_iter().for_each(|s| reader.follow(s));
        reader
    }

    /// This consumer's name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The streams followed.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.streams.iter().map(|s| &*s.name)
    }

    /// Follows one more stream (for example a role that appeared), from the start of its
    /// group (created from the stream's start when it does not exist).
    pub fn follow(&mut self, stream: String) {
        if !self.streams.iter().any(|s| *s.name == *stream) {
            self.streams.push(Followed {
                name: stream.into(),
                joined: false,
                sweep: EntryId::ZERO,
                recovered: None,
                paused_until: None,
            });
        }
    }

    /// The next entries, at most `room` (of new entries, `room` from each stream): own
    /// pending ones after a reconnect, then idle ones of other consumers, then new ones
    /// (waiting up to the block for them). Empty
    /// when nothing came or `stop` fired. Failures are retried (reconnecting) until `stop`.
    pub async fn next(&mut self, room: usize, stop: &CancellationToken) -> Vec<Delivery> {
        let mut delays = retry_delays();
        while !stop.is_cancelled() {
            match self.try_next(room, stop).await {
                Ok(got) => return got,
                Err(e) => {
                    tracing::warn!(group = %self.options.group, error = %e, "reading streams failed; reconnecting");
                    self.reads.reset();
                    self.recover();
                    // Joined again (the group, the registry, the consumer): Redis may have
                    // lost any of them, not only the group a NOGROUP names.
                    self.streams.iter_mut().for_each(|s| s.joined = false);
                    if is_wrongtype(&e) {
                        self.pause_non_streams().await;
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(2));
                    tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(delay) => {} }
                }
            }
        }
        Vec::new()
    }

    /// Hands this consumer's own pending entries over again on the next reads (for
    /// example after acknowledging some failed), each once.
    pub fn recover(&mut self) {
        self.recovering = true;
        self.streams.iter_mut().for_each(|s| s.recovered = None);
    }

    /// Whether the next read hands this consumer's own pending entries over again: a
    /// caller still working on some of them takes note of which before reading, and
    /// skips those (they may finish, and leave `running`, while the listing is under way).
    pub fn is_recovering(&self) -> bool {
        self.recovering
    }

    /// Whether the next read sweeps the pending list for idle entries, which takes over
    /// this consumer's own entries too once they are idle past the lease: a caller still
    /// working on entries it was handed finishes them first.
    pub fn sweep_is_due(&self) -> bool {
        self.sweep_due <= Instant::now()
    }

    /// What acknowledges this reader's entries, for tasks that finish them on their own.
    pub async fn acker(&mut self) -> Result<Acker, Error> {
        Ok(Acker {
            conn: self.writes().await?,
            group: self.options.group.clone(),
        })
    }

    /// Leaves the group: every entry still pending for this consumer is handed to the others
    /// (who may take it at once), or, when none is left, the consumer is removed from the
    /// group. Entries it cannot hand back are taken over after the lease, as a crashed
    /// consumer's would be.
    pub async fn leave(&mut self) {
        let mut writes = match self.writes().await {
            Ok(conn) => conn,
            Err(e) => {
                return tracing::warn!(error = %e, "could not leave the group; pending entries are taken over after the lease");
            }
        };
        for stream in &self.streams {
            if let Err(e) =
                hand_back(&mut writes, &stream.name, &self.options, &self.consumer).await
            {
                tracing::warn!(stream = %stream.name, error = %e, "could not hand entries back; they are taken over after the lease");
            }
        }
    }

    /// Leaves keys that are no longer streams out of reads for a while (each is tried again
    /// after [`WRONG_TYPE_PAUSE`]), so the other streams go on being read.
    async fn pause_non_streams(&mut self) {
        let Ok(mut writes) = self.writes().await else {
            return;
        };
        for stream in &mut self.streams {
            let kind: Result<String, _> = redis::cmd("TYPE")
                .arg(&*stream.name)
                .query_async(&mut writes)
                .await;
            if let Ok(kind) = kind
                && kind != "stream"
                && kind != "none"
            {
                tracing::warn!(stream = %stream.name, kind, "the key is no longer a stream; left out of reads for now");
                stream.paused_until = Some(Instant::now() + WRONG_TYPE_PAUSE);
                stream.joined = false;
            }
        }
    }

    async fn writes(&mut self) -> Result<Connection, Error> {
        if let Some(conn) = &self.writes {
            return Ok(conn.clone());
        }
        let conn = self.redis.shared().await?;
        self.writes = Some(conn.clone());
        Ok(conn)
    }

    async fn try_next(
        &mut self,
        room: usize,
        stop: &CancellationToken,
    ) -> Result<Vec<Delivery>, Error> {
        let mut writes = self.writes().await?;
        for stream in self
            .streams
            .iter_mut()
            .filter(|s| !s.joined && s.is_active())
        {
            join(&mut writes, &stream.name, &self.options, &self.consumer).await?;
            stream.joined = true;
        }
        let mut got = Vec::new();
        if self.recovering {
            self.recovering = !self.recover_own(&mut writes, room, &mut got).await?;
        }
        if got.len() < room && self.sweep_due <= Instant::now() {
            self.sweep(&mut writes, room, &mut got).await?;
        }
        let idle = !self.streams.iter().any(Followed::is_active);
        if !got.is_empty() || idle {
            if idle {
                // Nothing to read yet: wait as a read would.
                tokio::select! { _ = stop.cancelled() => {}, _ = tokio::time::sleep(self.options.block) => {} }
            }
            return Ok(got);
        }
        self.read_new(room, stop).await
    }

    /// New entries, at most `room` from each stream; blocks no longer than until the next
    /// sweep.
    async fn read_new(
        &mut self,
        room: usize,
        stop: &CancellationToken,
    ) -> Result<Vec<Delivery>, Error> {
        let block = self
            .sweep_due
            .saturating_duration_since(Instant::now())
            .min(self.options.block);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.options.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(room);
        // `BLOCK 0` would block forever: a read due now does not block at all.
        if block.as_millis() > 0 {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS");
        let streams: Vec<(&str, &str)> = self
            .streams
            .iter()
            .filter(|s| s.is_active())
            .map(|s| (&*s.name, ">"))
            .collect();
        let reply = tokio::select! {
            // Dropped mid-read, a connection may still get the reply: start afresh.
            _ = stop.cancelled() => {
                self.reads.reset();
                self.recover();
                return Ok(Vec::new());
            }
            reply = self.reads.read(&cmd, &streams) => reply?,
        };
        let mut got = Vec::new();
        for (name, entries) in reply {
            let stream = match self.streams.iter().find(|s| *s.name == *name) {
                Some(followed) => Arc::clone(&followed.name),
                None => name.into(),
            };
            got.extend(entries.into_iter().map(|entry| Delivery {
                stream: Arc::clone(&stream),
                entry,
                deliveries: 1,
            }));
        }
        Ok(got)
    }

    /// Adds this consumer's own pending entries (up to the room left) to `got`; whether
    /// none is left to take. Each is renewed first: after an outage longer than the lease,
    /// another consumer may have taken it over, and then it is that consumer's.
    async fn recover_own(
        &mut self,
        writes: &mut Connection,
        room: usize,
        got: &mut Vec<Delivery>,
    ) -> Result<bool, Error> {
        let mut done = true;
        for stream in self.streams.iter_mut().filter(|s| s.is_active()) {
            if stream.recovered == Some(EntryId::MAX) {
                continue;
            }
            let left = room - got.len();
            if left == 0 {
                return Ok(false);
            }
            let from = stream
                .recovered
                .map_or("-".to_owned(), |id| format!("({id}"));
            let reply = redis::cmd("XPENDING")
                .arg(&*stream.name)
                .arg(&self.options.group)
                .arg(from)
                .arg("+")
                .arg(left)
                .arg(&self.consumer)
                .query_async(writes)
                .await?;
            let pending = parse_pending(reply)?;
            stream.recovered = match pending.last() {
                Some((last, _, _)) if pending.len() == left => {
                    done = false;
                    Some(*last)
                }
                _ => Some(EntryId::MAX),
            };
            if pending.is_empty() {
                continue;
            }
            let ids: Vec<EntryId> = pending.iter().map(|(id, _, _)| *id).collect();
            let leases = Leases::new(
                writes.clone(),
                &stream.name,
                &self.options.group,
                &self.consumer,
            );
            let taken: HashSet<EntryId> = leases.renew(&ids).await?.into_iter().collect();
            let pending: Vec<_> = pending
                .into_iter()
                .filter(|(id, _, _)| !taken.contains(id))
                .collect();
            // Fetched in one round trip.
            let mut pipe = redis::pipe();
            for (id, _, _) in &pending {
                pipe.cmd("XRANGE")
                    .arg(&*stream.name)
                    .arg(id.to_string())
                    .arg(id.to_string());
            }
            let replies: Vec<redis::Value> = pipe.query_async(writes).await?;
            for ((id, _, deliveries), reply) in pending.into_iter().zip(replies) {
                // Deleted while pending: handed over without fields.
                let entry = parse_range(reply)?
                    .pop()
                    .unwrap_or(StreamEntry { id, fields: None });
                got.push(Delivery {
                    stream: Arc::clone(&stream.name),
                    entry,
                    deliveries,
                });
            }
        }
        if done && !got.is_empty() {
            tracing::info!(group = %self.options.group, entries = got.len(), "own pending entries recovered after a reconnect");
        }
        Ok(done)
    }

    /// Takes over entries idle past the lease (up to the room left), stream by stream,
    /// following each stream's `XAUTOCLAIM` cursor; the next sweep is due a period after
    /// every cursor came back to the start.
    async fn sweep(
        &mut self,
        writes: &mut Connection,
        room: usize,
        got: &mut Vec<Delivery>,
    ) -> Result<(), Error> {
        let lease_ms = self.options.lease.as_millis() as u64;
        let mut finished = true;
        for stream in self.streams.iter_mut().filter(|s| s.is_active()) {
            loop {
                let left = room - got.len();
                if left == 0 {
                    finished = false;
                    break;
                }
                let reply = redis::cmd("XAUTOCLAIM")
                    .arg(&*stream.name)
                    .arg(&self.options.group)
                    .arg(&self.consumer)
                    .arg(lease_ms)
                    .arg(stream.sweep.to_string())
                    .arg("COUNT")
                    .arg(left)
                    .query_async(writes)
                    .await;
                let (next, entries) = match reply.map_err(Error::from).and_then(parse_autoclaim) {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        // Tried again next period, not at once.
                        self.sweep_due = Instant::now() + self.sweep_every;
                        return Err(e);
                    }
                };
                stream.sweep = next;
                // Own entries just recovered may be idle past the lease too: once is enough.
                let entries: Vec<StreamEntry> = entries
                    .into_iter()
                    .filter(|e| {
                        !got.iter()
                            .any(|d| d.stream == stream.name && d.entry.id == e.id)
                    })
                    .collect();
                if !entries.is_empty() {
                    tracing::info!(stream = %stream.name, claimed = entries.len(), "took over idle entries");
                    metrics::counter!(crate::telemetry::metrics::RECLAIMS, "stream" => stream.name.to_string(), "group" => self.options.group.clone())
                        .increment(entries.len() as u64);
                    let counts = delivery_counts(
                        writes,
                        stream,
                        &self.options.group,
                        &self.consumer,
                        &entries,
                    )
                    .await?;
                    got.extend(entries.into_iter().map(|entry| Delivery {
                        deliveries: counts.get(&entry.id).copied().unwrap_or(2),
                        stream: Arc::clone(&stream.name),
                        entry,
                    }));
                }
                if next == EntryId::ZERO {
                    break;
                }
            }
        }
        if finished {
            self.sweep_due = Instant::now() + self.sweep_every;
        }
        Ok(())
    }
}

/// Creates the group on `stream` unless it exists (from the stream's start), lists its name
/// in the registry if any, and lists the consumer in it, so an idle consumer shows too.
async fn join(
    writes: &mut Connection,
    stream: &str,
    options: &GroupOptions,
    consumer: &str,
) -> Result<(), Error> {
    ensure_group(writes, stream, &options.group, "0").await?;
    // Two requests: the registry and the stream may be in different cluster slots.
    if let Some(registry) = &options.registry {
        redis::cmd("SADD")
            .arg(registry)
            .arg(&options.group)
            .query_async::<()>(writes)
            .await?;
    }
    redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(stream)
        .arg(&options.group)
        .arg(consumer)
        .query_async::<()>(writes)
        .await?;
    Ok(())
}

/// Hands `consumer`'s pending entries of `stream` back, or removes it when it has none.
async fn hand_back(
    writes: &mut Connection,
    stream: &str,
    options: &GroupOptions,
    consumer: &str,
) -> Result<(), Error> {
    let reply = redis::cmd("XPENDING")
        .arg(stream)
        .arg(&options.group)
        .arg("-")
        .arg("+")
        .arg(HAND_BACK_MAX)
        .arg(consumer)
        .query_async(writes)
        .await?;
    let ids: Vec<EntryId> = parse_pending(reply)?
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    if ids.is_empty() {
        redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(stream)
            .arg(&options.group)
            .arg(consumer)
            .query_async::<()>(writes)
            .await?;
        return Ok(());
    }
    Leases::new(writes.clone(), stream, &options.group, consumer)
        .hand_back(&ids, options.lease)
        .await?;
    tracing::info!(
        stream,
        entries = ids.len(),
        "handed unfinished entries back"
    );
    Ok(())
}

/// How many times each of `entries` (just claimed by `consumer`) has been delivered, each
/// asked for by its own id: a range would also hold entries the consumer is still working
/// on, however many they are.
async fn delivery_counts(
    writes: &mut Connection,
    stream: &Followed,
    group: &str,
    consumer: &str,
    entries: &[StreamEntry],
) -> Result<HashMap<EntryId, u32>, Error> {
    let mut pipe = redis::pipe();
    for entry in entries {
        let id = entry.id.to_string();
        pipe.cmd("XPENDING")
            .arg(&*stream.name)
            .arg(group)
            .arg(&id)
            .arg(&id)
            .arg(1)
            .arg(consumer);
    }
    let replies: Vec<redis::Value> = pipe.query_async(writes).await?;
    let mut counts = HashMap::with_capacity(entries.len());
    for reply in replies {
        counts.extend(
            parse_pending(reply)?
                .into_iter()
                .map(|(id, _, count)| (id, count)),
        );
    }
    Ok(counts)
}
