//! The orchestrator process: it serves run commands on its own command stream, applies step
//! results read through its consumer group on every role's result stream, fires timers (approval
//! timeouts, run deadlines) and publishes what each transition committed.
//!
//! Every transition runs in one Postgres transaction holding the run's row lock; the
//! commands and events it produces are written to the outbox in that transaction and
//! published after it commits. A result is acknowledged only after its transition commits.
//! So an orchestrator killed at any moment loses nothing: unacknowledged results are read
//! again (and recognised if already applied), unsent outbox entries are sent again by any
//! live orchestrator, with the same command ids.

mod catalog;
mod commands;
mod measure;
mod publish;
mod results;
mod timers;
mod transition;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mindbus::bus::Bus;
use mindbus::config::Config;
use mindbus::runtime::Agent;
use mindbus::telemetry::probes::{self, ProbeArgs};
use mindbus::wire::ORCHESTRATOR_ROLE;
use secrecy::ExposeSecret as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use catalog::Catalog;

use crate::config::OrchestratorConfig;
use crate::store;

/// The `source` of every entry the orchestrator writes.
const SOURCE: &str = "urn:mindbus:orchestrator";

/// Unix milliseconds `ms` from now, saturating (a timeout may come from a result's data).
pub(crate) fn millis_from_now(ms: u64) -> i64 {
    jiff::Timestamp::now()
        .as_millisecond()
        .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// What every part of one orchestrator process shares.
#[derive(Debug)]
pub(crate) struct Orchestrator {
    pool: PgPool,
    bus: Bus,
    catalog: Catalog,
    config: OrchestratorConfig,
    publisher: Publisher,
    /// The roles whose results this orchestrator reads.
    result_roles: results::ResultRoles,
}

/// How long the publisher lock's session may take to connect or answer a ping.
const SESSION_TIMEOUT: Duration = Duration::from_secs(5);

/// This orchestrator as the publisher of its outbox entries.
#[derive(Debug)]
pub(crate) struct Publisher {
    /// Stamped on its entries; its advisory lock is held for the process's life.
    pub number: i32,
    /// The session holding the lock (`None` after it dropped, until it is taken again).
    session: tokio::sync::Mutex<Option<sqlx::PgConnection>>,
    url: String,
    /// Entries whose publish failed, for its own sweep to send again.
    pub failed: std::sync::Mutex<Vec<store::OutboxEntry>>,
}

impl Publisher {
    /// A publisher number of its own (another if one is taken), locked on a session of its
    /// own (retried until Postgres answers); `None` when `stop` fires first.
    async fn claim(url: &str, stop: &CancellationToken) -> Option<Self> {
        loop {
            let number = (uuid::Uuid::new_v4().as_u128() & 0x7fff_ffff) as i32;
            match Self::lock(url, number).await {
                Ok(Some(session)) => {
                    return Some(Self {
                        number,
                        session: tokio::sync::Mutex::new(Some(session)),
                        url: url.to_owned(),
                        failed: std::sync::Mutex::default(),
                    });
                }
                Ok(None) => continue,
                Err(e) => tracing::warn!(error = %e, "cannot take a publisher lock yet; retrying"),
            }
            tokio::select! { _ = stop.cancelled() => return None, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
        }
    }

    async fn lock(url: &str, number: i32) -> Result<Option<sqlx::PgConnection>, sqlx::Error> {
        use sqlx::Connection as _;
        let locked = async {
            let mut session = sqlx::PgConnection::connect(url).await?;
            Ok(store::lock_publisher(&mut session, number)
                .await?
                .then_some(session))
        };
        tokio::time::timeout(SESSION_TIMEOUT, locked)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// Checks that the lock's session lives, and takes the lock again on a new one if it
    /// dropped (until then, other orchestrators may re-send what this one publishes; the
    /// step commands' idempotency keys drop the second results).
    pub(crate) async fn keep(&self) {
        use sqlx::Connection as _;
        let mut session = self.session.lock().await;
        if let Some(conn) = session.as_mut()
            && matches!(
                tokio::time::timeout(SESSION_TIMEOUT, conn.ping()).await,
                Ok(Ok(()))
            )
        {
            return;
        }
        *session = match Self::lock(&self.url, self.number).await {
            Ok(Some(conn)) => {
                tracing::info!(publisher = self.number, "publisher lock taken again");
                Some(conn)
            }
            Ok(None) => {
                tracing::warn!(
                    publisher = self.number,
                    "publisher lock held elsewhere; retrying"
                );
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "publisher lock lost; retrying");
                None
            }
        };
    }
}

/// Runs an orchestrator until `shutdown` fires: migrations (retried until Postgres answers),
/// then the command handler, the result reader, the timers and the outbox sweeper.
pub async fn run(
    config: &Config,
    settings: &OrchestratorConfig,
    probes: &ProbeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = settings.clone();
    let catalog =
        Catalog::load(Path::new(&settings.workflows), &settings.roles).map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("invalid workflows:\n  {}", lines.join("\n  "))
        })?;
    let connections = u32::try_from(settings.concurrency + 4).unwrap_or(32);
    let pool = store::connect(&settings.database_url, connections)?;
    let redis = mindbus::streams::Redis::open(&config.redis.url)?;
    let ready = probes::both(probes::redis_ready(redis), store::ready(pool.clone()));
    probes
        .start("mindbus-orchestrator", ready, shutdown.clone())
        .await?;
    while let Err(e) = store::migrate(&pool).await {
        tracing::warn!(error = %e, "run store migrations not applied yet; retrying");
        tokio::select! { _ = shutdown.cancelled() => return Ok(()), _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
    }
    let url = settings.database_url.expose_secret().to_owned();
    let Some(publisher) = Publisher::claim(&url, &shutdown).await else {
        return Ok(());
    };
    let bus = Bus::connect(&config.redis)
        .await
        .context("connecting to redis")?;
    let this = Arc::new(Orchestrator {
        pool: pool.clone(),
        bus,
        catalog,
        config: settings,
        publisher,
        result_roles: results::ResultRoles::default(),
    });
    tracing::info!(workflows = ?this.catalog.names(), "orchestrator started");
    let loops = TaskTracker::new();
    loops.spawn(results::read_loop(Arc::clone(&this), shutdown.clone()));
    loops.spawn(timers::timer_loop(Arc::clone(&this), shutdown.clone()));
    loops.spawn(publish::sweep_loop(Arc::clone(&this), shutdown.clone()));
    loops.close();
    let agent = Agent::new(&config.redis, ORCHESTRATOR_ROLE, config.agent.clone())?;
    agent
        .run(commands::Commands(Arc::clone(&this)), shutdown.clone())
        .await?;
    loops.wait().await;
    pool.close().await;
    tracing::info!("orchestrator stopped");
    Ok(())
}
