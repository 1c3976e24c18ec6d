//! The ingest loop: every MindBus stream through the monitor's consumer group, a batch at a
//! time: read, insert (retrying while Postgres is away), then acknowledge.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use mindbus::config::MonitorConfig;
use mindbus::keys::Keys;
use mindbus::streams::{Redis, StreamEntry, ensure_group, parse_autoclaim, parse_read};
use mindbus::wire::EntryId;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::record::record;
use crate::{GROUP, store};

/// Most XAUTOCLAIM pages followed per stream and round.
const RECLAIM_PAGES: usize = 10;
/// Batches written to Postgres at once.
const WRITERS: usize = 2;
/// How often new streams (roles) are looked for.
const DISCOVER_EVERY: Duration = Duration::from_secs(2);

/// One monitor process.
#[derive(Debug)]
pub struct Ingest {
    redis: Redis,
    keys: Keys,
    pool: PgPool,
    config: MonitorConfig,
    consumer: String,
}

/// Where this consumer reads each stream: its own pending entries after an id, or new ones.
type Positions = HashMap<String, Option<EntryId>>;

impl Ingest {
    pub fn new(redis: Redis, keys: Keys, pool: PgPool, config: MonitorConfig) -> Self {
        let consumer = format!("monitor-{}-{:012x}", std::process::id(), rand_bits());
        Self {
            redis,
            keys,
            pool,
            config,
            consumer,
        }
    }

    /// Records entries until `stop` fires. A batch in progress is finished (or, while
    /// Postgres is down, left pending for the next monitor) before returning.
    pub async fn run(&self, stop: CancellationToken) {
        let mut delays = mindbus::streams::retry_delays();
        while !stop.is_cancelled() {
            match self.session(&stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "monitor lost redis; reconnecting");
                    let delay = delays.next().unwrap_or(Duration::from_secs(2));
                    tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(delay) => {} }
                }
            }
        }
    }

    /// One connection's worth of work; returns `Ok` only when stopped.
    async fn session(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let mut conn = self
            .redis
            .dedicated(Duration::from_millis(self.config.block_ms))
            .await?;
        // Acknowledgements go on a connection of their own: the reading one blocks.
        let acks = self.redis.shared().await?;
        let mut positions = Positions::new();
        let mut discovered = Instant::now() - DISCOVER_EVERY;
        let mut reclaimed = Instant::now();
        // While batches are written to Postgres (on separate connections), the next is read:
        // at most WRITERS + 1 batches in memory.
        let mut writing: VecDeque<JoinHandle<anyhow::Result<()>>> = VecDeque::new();
        while !stop.is_cancelled() {
            if discovered.elapsed() >= DISCOVER_EVERY {
                self.discover(&mut conn, &mut positions).await?;
                discovered = Instant::now();
            }
            if reclaimed.elapsed() >= Duration::from_millis(self.config.lease_ms / 2) {
                finish_all(&mut writing).await?;
                self.reclaim(&mut conn, &acks, &positions, stop).await?;
                reclaimed = Instant::now();
            }
            let batch = tokio::select! {
                _ = stop.cancelled() => break,
                batch = self.read(&mut conn, &mut positions) => batch?,
            };
            if batch.iter().all(|(_, entries)| entries.is_empty()) {
                continue;
            }
            if writing.len() >= WRITERS
                && let Some(oldest) = writing.pop_front()
            {
                oldest.await??;
            }
            let (pool, keys, acks, stop) = (
                self.pool.clone(),
                self.keys.clone(),
                acks.clone(),
                stop.clone(),
            );
            let max_row = self.config.max_row_bytes;
            writing.push_back(tokio::spawn(async move {
                write_batch(&pool, &keys, max_row, acks, batch, &stop).await
            }));
        }
        finish_all(&mut writing).await
    }

    async fn discover(
        &self,
        conn: &mut MultiplexedConnection,
        positions: &mut Positions,
    ) -> anyhow::Result<()> {
        let mut streams = mindbus::streams::command_streams(conn, &self.keys).await?;
        streams.extend(self.keys.shared_streams());
        for stream in streams {
            if let std::collections::hash_map::Entry::Vacant(slot) = positions.entry(stream) {
                ensure_group(conn, slot.key(), GROUP, "0").await?;
                slot.insert(Some(EntryId::ZERO));
            }
        }
        Ok(())
    }

    async fn read(
        &self,
        conn: &mut MultiplexedConnection,
        positions: &mut Positions,
    ) -> anyhow::Result<Vec<(String, Vec<StreamEntry>)>> {
        let streams: Vec<(String, Option<EntryId>)> =
            positions.iter().map(|(s, p)| (s.clone(), *p)).collect();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.config.batch);
        if streams.iter().all(|(_, p)| p.is_none()) {
            cmd.arg("BLOCK").arg(self.config.block_ms);
        }
        cmd.arg("STREAMS");
        streams.iter().for_each(|(s, _)| {
            cmd.arg(s);
        });
        streams.iter().for_each(|(_, p)| {
            cmd.arg(p.map_or(">".to_owned(), |id| id.to_string()));
        });
        let read = match cmd.query_async(conn).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                // A stream or group vanished (e.g. Redis restarted): start over from discovery.
                positions.clear();
                return Ok(Vec::new());
            }
            other => parse_read(other?)?,
        };
        for (stream, position) in &streams {
            if position.is_some() {
                let got = read
                    .iter()
                    .find(|(s, _)| s == stream)
                    .map_or(&[][..], |(_, e)| e.as_slice());
                let next = got
                    .last()
                    .filter(|_| got.len() >= self.config.batch)
                    .map(|e| e.id);
                positions.insert(stream.clone(), next);
            }
        }
        Ok(read)
    }

    /// Takes over entries a dead monitor left pending longer than the lease.
    async fn reclaim(
        &self,
        conn: &mut MultiplexedConnection,
        acks: &ConnectionManager,
        positions: &Positions,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        for stream in positions.keys() {
            // XAUTOCLAIM scans a bounded part of the pending list per call: follow its cursor.
            let mut cursor = EntryId::ZERO.to_string();
            for _ in 0..RECLAIM_PAGES {
                let reply = redis::cmd("XAUTOCLAIM")
                    .arg(stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(self.config.lease_ms)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(self.config.batch)
                    .query_async(conn)
                    .await;
                let (next, entries) = match reply
                    .map_err(mindbus::Error::from)
                    .and_then(parse_autoclaim)
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(stream, error = %e, "reclaiming failed");
                        break;
                    }
                };
                if !entries.is_empty() {
                    tracing::info!(
                        stream,
                        entries = entries.len(),
                        "reclaimed entries of a dead monitor"
                    );
                    let batch = vec![(stream.clone(), entries)];
                    let max_row = self.config.max_row_bytes;
                    write_batch(&self.pool, &self.keys, max_row, acks.clone(), batch, stop).await?;
                }
                if next == EntryId::ZERO {
                    break;
                }
                cursor = next.to_string();
            }
        }
        Ok(())
    }
}

async fn finish_all(writing: &mut VecDeque<JoinHandle<anyhow::Result<()>>>) -> anyhow::Result<()> {
    while let Some(handle) = writing.pop_front() {
        handle.await??;
    }
    Ok(())
}

/// Inserts a batch, retrying while Postgres is away, then acknowledges it. When stopped
/// first, the batch stays unacknowledged and is recorded later, by this monitor or another.
async fn write_batch(
    pool: &PgPool,
    keys: &Keys,
    max_row_bytes: usize,
    mut acks: ConnectionManager,
    batch: Vec<(String, Vec<StreamEntry>)>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let rows: Vec<_> = batch
        .iter()
        .flat_map(|(s, entries)| {
            entries
                .iter()
                .filter_map(|e| record(keys, s, e, max_row_bytes))
        })
        .collect();
    let mut delays = mindbus::streams::retry_delays();
    loop {
        // A statement holds a few rows of the largest size at most.
        match store::insert_or_bare(pool, &rows, max_row_bytes.saturating_mul(4)).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, rows = rows.len(), "postgres write failed; retrying (entries stay unacknowledged)");
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tokio::select! { _ = stop.cancelled() => return Ok(()), _ = tokio::time::sleep(delay) => {} }
            }
        }
    }
    let mut pipe = redis::pipe();
    for (stream, entries) in batch.iter().filter(|(_, e)| !e.is_empty()) {
        let ack = pipe.cmd("XACK").arg(stream).arg(GROUP);
        entries.iter().for_each(|e| {
            ack.arg(e.id.to_string());
        });
        ack.ignore();
    }
    pipe.query_async::<()>(&mut acks).await?;
    Ok(())
}

fn rand_bits() -> u64 {
    uuid::Uuid::now_v7().as_u128() as u64 & 0xffff_ffff_ffff
}
