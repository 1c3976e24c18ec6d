//! The MindBus monitor: records every entry of every MindBus stream in Postgres, exactly
//! once, and trims streams without ever passing an entry some group still needs.
//!
//! # Layout
//! - [`config`]: the monitor's section of the config file.
//! - [`record`]: a stream entry to a row (no IO); malformed entries become flagged rows.
//! - [`store`]: migrations and idempotent batch inserts.
//! - [`ingest`]: the consumer-group loop: read a batch, insert it, then acknowledge it.
//! - [`gauges`]: every stream's length, pending entries and lag, sampled for Prometheus.
//! - [`trim`]: retention by length or age, bounded by every group's progress.
//! - [`history`]: reading the event log (timelines, filtered listings).
//!
//! # Invariant
//! An entry is acknowledged only after the transaction holding its row has committed, and
//! rows are unique by stream and entry id, so a crash at any point loses nothing and
//! duplicates nothing.

pub mod config;
pub mod gauges;
pub mod history;
pub mod ingest;
pub mod record;
pub mod store;
pub mod trim;

/// The consumer group the monitor reads every stream with.
pub const GROUP: &str = "mindbus-monitor";

use std::time::Duration;

use mindbus::config::Config;
use mindbus::keys::Keys;
use mindbus::streams::{Redis, until_up};
use mindbus::telemetry::probes::{self, ProbeArgs};
use tokio_util::sync::CancellationToken;

use crate::config::MonitorConfig;

/// Runs a monitor until `shutdown` fires: migrations (retried until Postgres answers),
/// the ingest loop, and periodic trimming.
pub async fn run(
    config: &Config,
    monitor: &MonitorConfig,
    probes: &ProbeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = store::connect(&monitor.database_url)?;
    let redis = Redis::open(&config.redis.url)?;
    let ready = probes::both(
        probes::redis_ready(redis.clone()),
        store::ready(pool.clone()),
    );
    let gauges = probes
        .start("mindbus-monitor", ready, shutdown.clone())
        .await?
        .map(|_| tokio::spawn(gauges::sample_loop(config.redis.clone(), shutdown.clone())));
    let mut tries = 0u32;
    while let Err(e) = store::migrate(&pool).await {
        tries += 1;
        tracing::warn!(error = %e, tries, "migrations not applied yet; retrying");
        tokio::select! { _ = shutdown.cancelled() => return Ok(()), _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
    }
    // Waits for Redis, and refuses one it cannot run on.
    if until_up(&shutdown, || redis.shared()).await?.is_none() {
        return Ok(());
    }
    let keys = Keys::new(config.redis.prefix.clone());
    let trimmer = tokio::spawn(trim_loop(
        redis.clone(),
        keys.clone(),
        monitor.clone(),
        shutdown.clone(),
    ));
    let ingest = ingest::Ingest::new(redis, keys, pool.clone(), monitor.clone());
    tracing::info!("monitor started");
    ingest.run(shutdown).await;
    let _ = trimmer.await;
    if let Some(gauges) = gauges {
        let _ = gauges.await;
    }
    pool.close().await;
    tracing::info!("monitor stopped");
    Ok(())
}

async fn trim_loop(redis: Redis, keys: Keys, config: MonitorConfig, stop: CancellationToken) {
    let every = Duration::from_millis(config.trim_every_ms);
    loop {
        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(every) => {} }
        let Ok(mut conn) = redis.shared().await else {
            continue;
        };
        let roles = mindbus::streams::roles(&mut conn, &keys)
            .await
            .unwrap_or_default();
        for stream in roles.iter().flat_map(|role| keys.role_streams(role)) {
            // Our own group first: a stream is never trimmed past what we have not recorded,
            // even before ingest has discovered it.
            if let Err(e) = mindbus::streams::ensure_group(&mut conn, &stream, GROUP, "0").await {
                tracing::warn!(stream, error = %e, "cannot ensure the monitor group; not trimming");
                continue;
            }
            // A command stream also waits for its role's group, even before it exists.
            let role = keys.commands_role(&stream);
            match trim::trim(&mut conn, &stream, role, &config).await {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(stream, removed, "trimmed"),
                Err(e) => tracing::warn!(stream, error = %e, "trimming failed"),
            }
        }
    }
}
