//! The agent runtime: a [`Handler`] served by a consumer-group loop.
//!
//! One [`Agent`] is one consumer in the group named after its role. It reads no more
//! entries than it has free slots, renews the leases of running commands, reclaims entries
//! idle longer than a lease, retries retryable failures with backoff, dead-letters poison
//! and malformed entries, honours deadlines and cancellations, and writes every finished
//! command atomically with its acknowledgement (see `writer`).
//!
//! Layout: `reader` (read loop: own pending after a reconnect, reclaimed, then new entries),
//! `reclaim` (XAUTOCLAIM sweeps and lease renewal), `worker` (one
//! entry), `outcome` (the entries a finished command leaves), `writer` (ordered, batched
//! writes), `lease` (ownership-checked XCLAIM), `control` (cancellations).

mod control;
mod handler;
mod lease;
mod outcome;
mod reader;
mod reclaim;
mod worker;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use handler::{Context, Handler, HandlerError, HandlerResult};

use crate::Error;
use crate::config::{AgentConfig, RedisConfig};
use crate::keys::{Keys, validate_role};
use crate::streams::{Redis, ensure_role, parse_pending, until_up};
use control::Cancellations;
use handler::{DynHandler, Progress};
use lease::Leases;
use writer::Write;

/// Queued writes before producers wait (backpressure on a slow Redis).
const WRITE_QUEUE: usize = 8192;

/// One consumer of one role's command stream.
#[derive(Debug)]
pub struct Agent {
    redis: RedisConfig,
    role: String,
    consumer: String,
    config: AgentConfig,
}

impl Agent {
    /// An agent for `role` with a fresh, never reused consumer name.
    pub fn new(redis: &RedisConfig, role: &str, config: AgentConfig) -> Result<Self, Error> {
        validate_role(role).map_err(Error::Config)?;
        // The finish script passes these to SET EX and EXPIRE, which refuse 0 (the config
        // file's schema says so too; this holds for configs built in code).
        if config.dedup_ttl_secs == 0 || config.reply_ttl_secs == 0 {
            return Err(Error::Config(
                "agent.dedup_ttl_secs and agent.reply_ttl_secs must be at least 1".into(),
            ));
        }
        Ok(Self {
            redis: redis.clone(),
            role: role.into(),
            consumer: crate::group::consumer_name("agent"),
            config,
        })
    }

    /// This consumer's name in the group: host, process id and a random part.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Serves commands with `handler` until `shutdown` fires, then stops reading, lets
    /// running commands finish within the grace period, hands back the rest and returns.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let redis = Redis::open(&self.redis.url)?;
        let keys = Keys::new(self.redis.prefix.clone());
        let stream = keys.commands(&self.role);
        // An agent started before Redis (or while it restarts) waits for it.
        let connected = until_up(&shutdown, || async {
            let mut conn = redis.shared().await?;
            ensure_role(&mut conn, &keys, &self.role).await?;
            Ok(conn)
        });
        let Some(conn) = connected.await else {
            return Ok(());
        };
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let abort = CancellationToken::new();
        let targets = writer::Targets {
            commands: stream.clone(),
            group: self.role.clone(),
            results: keys.results(),
            events: keys.events(),
            dead_letters: keys.dead_letters(),
            maxlen: self.config.stream_maxlen,
            dedup_ttl_secs: self.config.dedup_ttl_secs,
            reply_ttl_secs: self.config.reply_ttl_secs,
        };
        let writer = tokio::spawn(writer::run(conn.clone(), targets, rx, abort.clone()));
        let shared = Arc::new(self.shared(conn, keys, stream, handler, writes, abort.clone()));
        tracing::info!(role = %shared.role, consumer = %shared.consumer, concurrency = shared.config.concurrency, "agent started");

        let loops = TaskTracker::new();
        loops.spawn(reader::read_loop(
            Arc::clone(&shared),
            redis.clone(),
            shutdown.clone(),
        ));
        loops.spawn(control::listen(
            redis.clone(),
            shared.keys.control(),
            Arc::clone(&shared.cancellations),
            shutdown.clone(),
        ));
        let renewing = CancellationToken::new();
        let renewer = tokio::spawn(reclaim::renew_loop(Arc::clone(&shared), renewing.clone()));

        shutdown.cancelled().await;
        tracing::info!(
            running = shared.cancellations.running().len(),
            "stopping: no more reads, finishing in-flight commands"
        );
        loops.close();
        loops.wait().await;
        shared.drain().await;
        renewing.cancel();
        let _ = renewer.await;
        let leases = shared.leases.clone();
        let lease = Duration::from_millis(shared.config.lease_ms);
        let (mut conn, stream, group, consumer) = (
            shared.conn.clone(),
            shared.stream.clone(),
            shared.role.clone(),
            shared.consumer.clone(),
        );
        drop(shared);
        let mut writer = writer;
        if tokio::time::timeout(Duration::from_secs(10), &mut writer)
            .await
            .is_err()
        {
            // Let it give up (a few tries), so nothing is written after entries are handed back.
            abort.cancel();
            let _ = writer.await;
        }
        hand_back_rest(&mut conn, &leases, &stream, &group, &consumer, lease).await;
        tracing::info!("agent stopped");
        Ok(())
    }

    fn shared<H: Handler>(
        &self,
        conn: ConnectionManager,
        keys: Keys,
        stream: String,
        handler: H,
        writes: mpsc::Sender<Write>,
        abort: CancellationToken,
    ) -> Shared {
        let source = format!("mindbus-agent/{}/{}", self.role, self.consumer);
        let progress = Progress {
            writes: writes.clone(),
            source: source.as_str().into(),
            role: self.role.as_str().into(),
        };
        Shared {
            leases: Leases::new(conn.clone(), &stream, &self.role, &self.consumer),
            role: self.role.clone(),
            consumer: self.consumer.clone(),
            source,
            keys,
            stream,
            config: self.config.clone(),
            handler: Arc::new(handler),
            writes,
            progress,
            cancellations: Arc::default(),
            slots: Arc::new(Semaphore::new(self.config.concurrency)),
            abort,
            workers: TaskTracker::new(),
            conn,
        }
    }
}

/// What every loop and worker of one agent shares.
pub(crate) struct Shared {
    pub role: String,
    pub stream: String,
    pub consumer: String,
    pub source: String,
    pub keys: Keys,
    pub config: AgentConfig,
    pub handler: Arc<dyn DynHandler>,
    pub writes: mpsc::Sender<Write>,
    pub progress: Progress,
    pub cancellations: Arc<Cancellations>,
    pub leases: Leases,
    pub slots: Arc<Semaphore>,
    /// Fires when the grace period is over: running handlers are dropped and handed back.
    pub abort: CancellationToken,
    pub workers: TaskTracker,
    pub conn: ConnectionManager,
}

impl Shared {
    /// Waits for running commands, up to the grace period; then aborts the rest.
    async fn drain(&self) {
        self.workers.close();
        let grace = Duration::from_millis(self.config.shutdown_grace_ms);
        if tokio::time::timeout(grace, self.workers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.cancellations.running().len(),
                "grace period over; handing the rest back"
            );
            self.abort.cancel();
            self.workers.wait().await;
        }
    }
}

/// Hands every entry still pending for this consumer to the others (they can claim it at
/// once), or, when none is left, removes the consumer from the group.
async fn hand_back_rest(
    conn: &mut ConnectionManager,
    leases: &Leases,
    stream: &str,
    group: &str,
    consumer: &str,
    lease: Duration,
) {
    let pending = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query_async(conn)
        .await;
    let ids: Vec<_> = match pending.map_err(Error::from).and_then(parse_pending) {
        Ok(rows) => rows.into_iter().map(|(id, _, _)| id).collect(),
        Err(e) => {
            return tracing::warn!(error = %e, "could not list pending entries at shutdown; they will be reclaimed after the lease");
        }
    };
    if ids.is_empty() {
        let _: Result<i64, _> = redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .query_async(conn)
            .await;
    } else if let Err(e) = leases.hand_back(&ids, lease).await {
        tracing::warn!(error = %e, entries = ids.len(), "could not hand entries back; they will be reclaimed after the lease");
    } else {
        tracing::info!(entries = ids.len(), "handed unfinished entries back");
    }
}
