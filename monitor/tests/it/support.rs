//! A database of its own per test, a key prefix of its own, and monitor processes.

use std::collections::BTreeSet;
use std::time::Duration;

use mindbus::bus::Bus;
use mindbus::config::RedisConfig;
use mindbus::streams::parse_read;
use mindbus::wire::EntryId;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use crate::testenv::{TestDb, redis_url, unique};

/// A key prefix of its own on the shared Redis, with in-process echo agents.
pub struct Mesh {
    pub prefix: String,
    pub bus: Bus,
    agents: CancellationToken,
}

impl Mesh {
    pub async fn new(name: &str) -> Self {
        let prefix = unique(&format!("t-mon-{name}"));
        let bus = Bus::connect(&RedisConfig {
            url: redis_url().into(),
            prefix: prefix.clone(),
        })
        .await
        .unwrap();
        Self {
            prefix,
            bus,
            agents: CancellationToken::new(),
        }
    }

    /// Starts an echo agent in this process, writing every lifecycle event, so that every
    /// kind of entry is recorded.
    pub fn agent(&self) {
        crate::testenv::spawn_echo_on(
            &redis_url(),
            &self.prefix,
            256,
            mindbus::config::LifecycleEvents::All,
            self.agents.clone(),
        );
    }

    /// Starts a `mindbus-monitor` process writing to `db`, keeping every entry.
    pub fn monitor(&self, db: &TestDb, extra: &[&str]) -> Child {
        self.monitor_retaining(db, extra, 0)
    }

    /// Starts a `mindbus-monitor` process that trims streams to `retain` entries, often.
    pub fn monitor_retaining(&self, db: &TestDb, extra: &[&str], retain: u64) -> Child {
        Command::new(env!("CARGO_BIN_EXE_mindbus-monitor"))
            .args([
                "--prefix",
                &self.prefix,
                "--redis-url",
                &redis_url(),
                "--database-url",
                &db.url,
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env("MINDBUS_MONITOR__RETAIN_ENTRIES", retain.to_string())
            .env("MINDBUS_MONITOR__TRIM_EVERY_MS", "100")
            .env("MINDBUS_MONITOR__MAX_ROW_BYTES", "65536")
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    pub fn stream(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    pub async fn len(&self, stream: &str) -> usize {
        redis::cmd("XLEN")
            .arg(stream)
            .query_async(&mut self.bus.connection())
            .await
            .unwrap()
    }

    /// Every (stream, entry id) now in the command, result, event and dead-letter streams.
    pub async fn stream_entries(&self) -> BTreeSet<(String, EntryId)> {
        let mut out = BTreeSet::new();
        for stream in [
            self.stream("cmd:{echo}"),
            self.stream("result:{echo}"),
            self.stream("event:{echo}"),
            self.stream("dlq:{echo}"),
        ] {
            let mut after = "0-0".to_string();
            loop {
                let reply = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(10_000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&after)
                    .query_async(&mut self.bus.connection())
                    .await
                    .unwrap();
                let entries: Vec<_> = parse_read(reply)
                    .unwrap()
                    .into_iter()
                    .flat_map(|(_, e)| e)
                    .collect();
                let Some(last) = entries.last() else { break };
                after = last.id.to_string();
                out.extend(entries.into_iter().map(|e| (stream.clone(), e.id)));
            }
        }
        out
    }

    /// Waits until the results stream holds `n` entries.
    pub async fn wait_results(&self, n: usize, timeout: Duration) {
        let what = format!("results did not reach {n}");
        let stream = self.stream("result:{echo}");
        crate::testenv::eventually(timeout, &what, || async {
            (self.len(&stream).await >= n).then_some(())
        })
        .await;
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.agents.cancel();
        crate::testenv::delete_prefix(&self.prefix);
    }
}

/// Every (stream, entry id) recorded in the table, and the row count.
pub async fn recorded(pool: &PgPool) -> (BTreeSet<(String, EntryId)>, i64) {
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT stream, entry_ms, entry_seq FROM mindbus_entries")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let count = rows.len() as i64;
    (
        rows.into_iter()
            .map(|(s, ms, seq)| {
                (
                    s,
                    EntryId {
                        ms: ms as u64,
                        seq: seq as u64,
                    },
                )
            })
            .collect(),
        count,
    )
}

/// Waits until the table holds exactly the entries of the streams (and returns them).
pub async fn wait_recorded(
    mesh: &Mesh,
    pool: &PgPool,
    timeout: Duration,
) -> BTreeSet<(String, EntryId)> {
    let deadline = Instant::now() + timeout;
    loop {
        let want = mesh.stream_entries().await;
        let (have, rows) = recorded(pool).await;
        if have == want {
            assert_eq!(rows as usize, want.len(), "no entry recorded twice");
            return have;
        }
        if Instant::now() >= deadline {
            let missing = want.difference(&have).count();
            let extra = have.difference(&want).count();
            panic!("table and streams differ after {timeout:?}: {missing} missing, {extra} extra");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
