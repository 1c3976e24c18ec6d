//! What every test against the shared servers needs: their URLs, unique names, a database
//! of its own per test, waiting on state, cleaning a key prefix, and an echo agent in the
//! test's own process.

use std::process::Stdio;

use sqlx::PgPool;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn unique(name: &str) -> String {
    format!(
        "{name}_{:012x}",
        uuid::Uuid::now_v7().as_u128() as u64 & 0xffff_ffff_ffff
    )
}

/// A fresh database, dropped with the test.
#[derive(Debug)]
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

/// Polls `check` (every 50 ms) until it yields a value, and returns it; fails the test
/// with `what` when `timeout` passes first. For state that has no notification to wait on
/// (a row in Postgres, a port that starts answering).
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Deletes every key under `prefix` (a test's own) from the shared Redis.
pub fn delete_prefix(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

/// Starts an echo agent in this process (the real runtime, only not a separate binary),
/// stopped when `stop` fires.
pub fn spawn_echo(prefix: &str, concurrency: usize, stop: tokio_util::sync::CancellationToken) {
    let events = mindbus::config::AgentConfig::default().events;
    spawn_echo_on(&redis_url(), prefix, concurrency, events, stop);
}

/// Like [`spawn_echo`], on the Redis (or cluster) at `url`, writing `events`.
pub fn spawn_echo_on(
    url: &str,
    prefix: &str,
    concurrency: usize,
    events: mindbus::config::LifecycleEvents,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut config = mindbus::config::Config {
        redis: mindbus::config::RedisConfig {
            url: url.to_owned().into(),
            prefix: prefix.to_owned(),
        },
        ..Default::default()
    };
    config.agent.events = events;
    tokio::spawn(async move {
        let unused = std::path::Path::new("");
        mindbus_agents::run(
            &config,
            "echo",
            true,
            unused,
            Some(concurrency),
            &Default::default(),
            stop,
        )
        .await
        .unwrap()
    });
}
