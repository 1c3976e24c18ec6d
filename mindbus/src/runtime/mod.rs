//! The agent runtime: a [`Handler`] served through a consumer group.
//!
//! One [`Agent`] is one consumer in the group named after its role, reading through a
//! [`GroupReader`] (its own pending entries after a reconnect, entries others left idle
//! past the lease, then new ones, never more than it has free slots). The runtime renews
//! the leases of running commands, retries retryable failures with backoff, dead-letters
//! poison and malformed entries, honours deadlines and cancellations, and writes every
//! finished command atomically with its acknowledgement (see `writer`).
//!
//! Layout: `reader` (slots to deliveries, and lease renewal), `worker` (one entry),
//! `outcome` (the entries a finished command leaves), `writer` (ordered, batched writes),
//! `control` (cancellations).

mod control;
mod handler;
mod measure;
mod outcome;
mod reader;
mod worker;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use crate::streams::Connection;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use handler::{Context, Handler, HandlerError, HandlerResult};

use crate::Error;
use crate::config::{AgentConfig, RedisConfig};
use crate::group::{GroupOptions, GroupReader, Leases};
use crate::keys::{Keys, validate_role};
use crate::streams::{Redis, until_up};
use control::Cancellations;
use handler::{DynHandler, Progress};
use measure::RoleMetrics;
use writer::Write;

/// Queued writes before producers wait (backpressure on a slow Redis).
const WRITE_QUEUE: usize = 8192;

/// One consumer of one role's command stream.
#[derive(Debug)]
pub struct Agent {
    redis: Redis,
    keys: Keys,
    role: String,
    reader: GroupReader,
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
        let keys = Keys::new(redis.prefix.clone());
        let redis = Redis::open(&redis.url)?;
        let options = GroupOptions {
            group: role.into(),
            kind: "agent",
            registry: Some(keys.roles()),
            lease: Duration::from_millis(config.lease_ms),
            block: Duration::from_millis(config.block_ms),
        };
        let reader = GroupReader::new(redis.clone(), vec![keys.commands(role)], options);
        Ok(Self {
            redis,
            keys,
            role: role.into(),
            reader,
            config,
        })
    }

    /// This consumer's name in the group: host, process id and a random part.
    pub fn consumer(&self) -> &str {
        self.reader.consumer()
    }

    /// Serves commands with `handler` until `shutdown` fires, then stops reading, lets
    /// running commands finish within the grace period, hands back the rest and returns.
    pub async fn run<H: Handler>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        // An agent started before Redis (or while it restarts) waits for it.
        let Some(conn) = until_up(&shutdown, || self.redis.shared()).await? else {
            return Ok(());
        };
        let stream = self.keys.commands(&self.role);
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let abort = CancellationToken::new();
        let targets = writer::Targets {
            commands: stream.clone(),
            group: self.role.clone(),
            results: self.keys.results(&self.role),
            events: self.keys.events(&self.role),
            dead_letters: self.keys.dead_letters(&self.role),
            maxlen: self.config.stream_maxlen,
            dedup_ttl_secs: self.config.dedup_ttl_secs,
            reply_ttl_secs: self.config.reply_ttl_secs,
        };
        let writer = tokio::spawn(writer::run(conn.clone(), targets, rx, abort.clone()));
        let shared = Arc::new(self.shared(conn, stream, handler, writes, abort.clone()));
        tracing::info!(role = %shared.role, consumer = %shared.consumer, concurrency = shared.config.concurrency, "agent started");

        let reading = tokio::spawn(reader::read_loop(
            Arc::clone(&shared),
            self.reader,
            shutdown.clone(),
        ));
        let listening = tokio::spawn(control::listen(
            self.redis.clone(),
            shared.keys.control(),
            Arc::clone(&shared.cancellations),
            shutdown.clone(),
        ));
        let renewing = CancellationToken::new();
        let renewer = tokio::spawn(reader::renew_loop(Arc::clone(&shared), renewing.clone()));

        shutdown.cancelled().await;
        tracing::info!(
            running = shared.cancellations.running().len(),
            "stopping: no more reads, finishing in-flight commands"
        );
        let reader = reading.await;
        let _ = listening.await;
        shared.drain().await;
        renewing.cancel();
        let _ = renewer.await;
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
        match reader {
            Ok(mut reader) => reader.leave().await,
            Err(e) => {
                tracing::warn!(error = %e, "the read loop failed; pending entries are taken over after the lease")
            }
        }
        tracing::info!("agent stopped");
        Ok(())
    }

    fn shared<H: Handler>(
        &self,
        conn: Connection,
        stream: String,
        handler: H,
        writes: mpsc::Sender<Write>,
        abort: CancellationToken,
    ) -> Shared {
        let consumer = self.reader.consumer().to_owned();
        let source = format!("mindbus-agent/{}/{}", self.role, consumer);
        let progress = Progress {
            writes: writes.clone(),
            source: source.as_str().into(),
            role: self.role.as_str().into(),
        };
        Shared {
            leases: Leases::new(conn.clone(), &stream, &self.role, &consumer),
            role: self.role.clone(),
            consumer,
            source,
            keys: self.keys.clone(),
            stream,
            config: self.config.clone(),
            handler: Arc::new(handler),
            writes,
            progress,
            cancellations: Arc::default(),
            slots: Arc::new(Semaphore::new(self.config.concurrency)),
            abort,
            workers: TaskTracker::new(),
            metrics: RoleMetrics::new(&self.role),
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
    pub metrics: RoleMetrics,
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
