//! A database of its own per test, a key prefix of its own, and monitor processes.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use mindbus::bus::Bus;
use mindbus::config::{Config, RedisConfig};
use mindbus::streams::parse_read;
use mindbus::wire::EntryId;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn unique(name: &str) -> String {
    format!(
        "{name}_{:012x}",
        uuid::Uuid::now_v7().as_u128() as u64 & 0xffff_ffff_ffff
    )
}

/// A fresh database, dropped with the test.
pub struct TestDb {
    pub url: String,
    admin: String,
    name: String,
}

impl TestDb {
    pub async fn new(name: &str) -> Self {
        Self::on(&admin_url(), name).await
    }

    /// A fresh database on the server at `admin` (a URL to any of its databases).
    pub async fn on(admin: &str, name: &str) -> Self {
        let name = unique(&format!("mindbus_test_{name}"));
        let pool = PgPool::connect(admin)
            .await
            .expect("postgres is reachable (DATABASE_URL)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let url = format!("{}/{name}", &admin[..admin.rfind('/').unwrap()]);
        Self {
            url,
            admin: admin.to_owned(),
            name,
        }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .arg(&self.admin)
            .args([
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stderr(Stdio::null())
            .status();
    }
}

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

    /// Starts an echo agent in this process (the real runtime, only not a separate binary).
    pub fn agent(&self) {
        let mut config = Config {
            redis: RedisConfig {
                url: redis_url().into(),
                prefix: self.prefix.clone(),
            },
            ..Config::default()
        };
        config.agent.concurrency = 256;
        let stop = self.agents.clone();
        tokio::spawn(async move { mindbus_agents::run(&config, "echo", stop).await.unwrap() });
    }

    /// Starts a `mindbus-monitor` process writing to `db`.
    pub fn monitor(&self, db: &TestDb, extra: &[&str]) -> Child {
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
            // Keep every entry, so the streams can be compared with the table.
            .env("MINDBUS_MONITOR__RETAIN_ENTRIES", "0")
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
            self.stream("result"),
            self.stream("event"),
            self.stream("dlq"),
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
        let deadline = Instant::now() + timeout;
        while self.len(&self.stream("result")).await < n {
            assert!(Instant::now() < deadline, "results did not reach {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.agents.cancel();
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
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
