//! The ingest loop: every MindBus stream through the monitor's consumer group (a
//! [`GroupReader`], which also takes over what a stopped monitor left pending past the
//! lease), a batch at a time: read, insert (retrying while Postgres is away), then
//! acknowledge.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::MonitorConfig;
use mindbus::group::{Acker, Delivery, GroupOptions, GroupReader};
use mindbus::keys::Keys;
use mindbus::streams::Redis;
use mindbus::telemetry::metrics as names;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::record::{Record, record};
use crate::{GROUP, store};

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
}

impl Ingest {
    pub fn new(redis: Redis, keys: Keys, pool: PgPool, config: MonitorConfig) -> Self {
        Self {
            redis,
            keys,
            pool,
            config,
        }
    }

    /// Records entries until `stop` fires. A batch in progress is finished (or, while
    /// Postgres is down, left pending for the next monitor) before returning.
    pub async fn run(&self, stop: CancellationToken) {
        let options = GroupOptions {
            group: GROUP.into(),
            kind: "monitor",
            registry: None,
            lease: Duration::from_millis(self.config.lease_ms),
            block: Duration::from_millis(self.config.block_ms),
        };
        let mut reader = GroupReader::new(self.redis.clone(), Vec::new(), options);
        let mut discovered = Instant::now() - DISCOVER_EVERY;
        // While batches are written to Postgres (on separate connections), the next is read:
        // at most WRITERS + 1 batches in memory.
        let mut writing: VecDeque<JoinHandle<()>> = VecDeque::new();
        while !stop.is_cancelled() {
            if discovered.elapsed() >= DISCOVER_EVERY {
                if let Err(e) = self.discover(&mut reader).await {
                    tracing::warn!(error = %e, "looking for new streams failed");
                }
                discovered = Instant::now();
            }
            // A sweep takes over this monitor's own entries too once idle past the lease:
            // batches still being written are finished first.
            if reader.sweep_is_due() {
                while let Some(handle) = writing.pop_front() {
                    let _ = handle.await;
                }
            }
            let batch = reader.next(self.config.batch, &stop).await;
            if batch.is_empty() {
                // Caught up only once no batch waits for Postgres either.
                if writing.iter().all(JoinHandle::is_finished) {
                    metrics::gauge!(names::MONITOR_LAG).set(0.0);
                }
                continue;
            }
            let acker = match reader.acker().await {
                Ok(acker) => acker,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot acknowledge; the batch is read again");
                    reader.recover();
                    continue;
                }
            };
            if writing.len() >= WRITERS
                && let Some(oldest) = writing.pop_front()
            {
                let _ = oldest.await;
            }
            let (pool, keys, stop) = (self.pool.clone(), self.keys.clone(), stop.clone());
            let max_row = self.config.max_row_bytes;
            writing.push_back(tokio::spawn(async move {
                if let Err(e) = write_batch(&pool, &keys, max_row, &acker, batch, &stop).await {
                    tracing::warn!(error = %e, "acknowledging a recorded batch failed; it is recorded again (once) later");
                }
            }));
        }
        while let Some(handle) = writing.pop_front() {
            let _ = handle.await;
        }
        // What was read but not recorded goes to the other monitors at once.
        reader.leave().await;
    }

    /// Follows every stream of every role that appeared since the last look.
    async fn discover(&self, reader: &mut GroupReader) -> Result<(), mindbus::Error> {
        let mut conn = self.redis.shared().await?;
        for role in mindbus::streams::roles(&mut conn, &self.keys).await? {
            for stream in self.keys.role_streams(&role) {
                reader.follow(stream);
            }
        }
        Ok(())
    }
}

/// Inserts a batch, retrying while Postgres is away, then acknowledges it. When stopped
/// first, the batch stays unacknowledged and is recorded later, by this monitor or another.
async fn write_batch(
    pool: &PgPool,
    keys: &Keys,
    max_row_bytes: usize,
    acker: &Acker,
    batch: Vec<Delivery>,
    stop: &CancellationToken,
) -> Result<(), mindbus::Error> {
    let rows: Vec<_> = batch
        .iter()
        .filter_map(|d| record(keys, &d.stream, &d.entry, max_row_bytes))
        .collect();
    let mut delays = mindbus::streams::retry_delays();
    loop {
        // A statement holds a few rows of the largest size at most.
        match store::insert_or_bare(pool, &rows, max_row_bytes.saturating_mul(4)).await {
            Ok(inserted) => {
                measure(&rows, inserted);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = rows.len(), "postgres write failed; retrying (entries stay unacknowledged)");
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tokio::select! { _ = stop.cancelled() => return Ok(()), _ = tokio::time::sleep(delay) => {} }
            }
        }
    }
    acker.ack(&batch.iter().collect::<Vec<_>>()).await
}

/// Counts the rows a batch added (an entry recorded before, redelivered, adds none), and
/// how old its newest entry was.
fn measure(rows: &[Record], inserted: u64) {
    metrics::counter!(names::MONITOR_ROWS).increment(inserted);
    if let Some(newest) = rows.iter().map(|r| r.entry_ms).max() {
        let age = names::seconds_since(u64::try_from(newest).unwrap_or(0));
        metrics::gauge!(names::MONITOR_LAG).set(age);
    }
}
