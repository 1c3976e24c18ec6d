//! `mindbus-ingest-bench`: entries per second from streams into Postgres, beside a plain
//! batched insert of the same rows (no MindBus code) measured in the same run, and the
//! monitor's lag under a steady load.

use std::time::{Duration, Instant};

use clap::Parser;
use mindbus::keys::Keys;
use mindbus::streams::Redis;
use mindbus::wire::{Command, Event, EventKind, Payload};
use mindbus_monitor::config::MonitorConfig;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Entries to ingest in the throughput run.
    #[arg(long, default_value_t = 100_000)]
    entries: usize,
    /// Entries per second in the lag run.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds of the lag run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// A Postgres URL to any database of a server where databases may be created.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tag = format!("{}", std::process::id());
    let (baseline_db, monitor_db) = (
        database(&args.database_url, &format!("bench_plain_{tag}")).await?,
        database(&args.database_url, &format!("bench_mon_{tag}")).await?,
    );
    let keys = Keys::new(format!("bench-ingest-{tag}"));
    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let entries = fill(&mut conn, &keys, args.entries).await?;

    // Baseline: the same rows, already in memory, through a plain batched INSERT.
    let plain = baseline_db.connect().await?;
    mindbus_monitor::store::migrate(&plain).await?;
    let start = Instant::now();
    for chunk in entries.chunks(1000) {
        let mut builder = sqlx::QueryBuilder::new(
            "INSERT INTO mindbus_entries (stream, entry_ms, entry_seq, kind, fields) ",
        );
        builder.push_values(chunk, |mut row, (stream, ms, seq, fields)| {
            row.push_bind(stream)
                .push_bind(ms)
                .push_bind(seq)
                .push_bind("event")
                .push_bind(fields);
        });
        builder.build().execute(&plain).await?;
    }
    let baseline = entries.len() as f64 / start.elapsed().as_secs_f64();

    // MindBus: the monitor reads the streams, decodes, inserts and acknowledges.
    let pool = monitor_db.connect().await?;
    mindbus_monitor::store::migrate(&pool).await?;
    let redis = Redis::open(&args.redis_url.clone().into())?;
    let config = MonitorConfig {
        retain_entries: 0,
        ..MonitorConfig::default()
    };
    let stop = CancellationToken::new();
    let ingest = mindbus_monitor::ingest::Ingest::new(redis, keys.clone(), pool.clone(), config);
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { ingest.run(stop).await }
    });
    let start = Instant::now();
    wait_rows(&pool, &mut conn, &keys, entries.len() as i64).await?;
    let monitor = entries.len() as f64 / start.elapsed().as_secs_f64();

    // Lag: a steady load, and how long each entry took to reach the table.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM mindbus_entries")
        .fetch_one(&pool)
        .await?;
    let sent = steady(&mut conn, &keys, args.rate, args.seconds).await?;
    wait_rows(&pool, &mut conn, &keys, before + sent as i64).await?;
    let lags: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM recorded_at) * 1000 - entry_ms::float8 FROM mindbus_entries WHERE fields ? 'steady' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    stop.cancel();
    let _ = running.await;
    pool.close().await;
    plain.close().await;
    cleanup(&mut conn, &keys).await?;
    baseline_db.drop_it().await?;
    monitor_db.drop_it().await?;

    let at = |q: f64| {
        lags.get(((lags.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("\n{} entries (commands and events)", entries.len());
    println!("plain batched insert   {baseline:>10.0} entries/s");
    println!(
        "mindbus-monitor        {monitor:>10.0} entries/s   ({:.0}% of plain)",
        100.0 * monitor / baseline
    );
    println!(
        "lag at {} entries/s for {} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.rate,
        args.seconds,
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

type Entry = (String, i64, i64, serde_json::Value);

/// Writes `n` real entries (a command and two events at a time) and returns them as rows.
async fn fill(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    n: usize,
) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        let mut streams = Vec::new();
        let mut all_fields = Vec::new();
        for &i in chunk {
            let command = Command::new("echo.say", Payload::json(json!({"i": i, "text": "bench"})));
            let (stream, fields) = match i % 3 {
                0 => (keys.commands("echo"), command.encode()?),
                _ => (
                    keys.events("echo"),
                    Event::new(
                        EventKind::Started,
                        "bench",
                        command.envelope.id,
                        Payload::json(json!({})),
                    )
                    .encode()?,
                ),
            };
            let add = pipe.cmd("XADD").arg(&stream).arg("*");
            for (k, v) in &fields {
                add.arg(k).arg(v.as_slice());
            }
            streams.push(stream);
            all_fields.push(fields);
        }
        let ids: Vec<String> = pipe.query_async(conn).await?;
        for ((stream, fields), id) in streams.into_iter().zip(all_fields).zip(ids) {
            let id: mindbus::wire::EntryId = id.parse().map_err(anyhow::Error::msg)?;
            let json: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into()))
                .collect();
            out.push((stream, id.ms as i64, id.seq as i64, json.into()));
        }
    }
    Ok(out)
}

async fn steady(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<u64> {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100).max(1);
    let mut sent = 0;
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        tick.tick().await;
        let mut pipe = redis::pipe();
        for _ in 0..per_tick {
            pipe.cmd("XADD")
                .arg(keys.events("echo"))
                .arg("*")
                .arg("type")
                .arg("bench.tick")
                .arg("steady")
                .arg("1")
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
        sent += per_tick;
    }
    Ok(sent)
}

/// Waits until the monitor has recorded `n` rows, asking Redis (cheap) rather than running
/// `count(*)` against the table it is writing to.
async fn wait_rows(
    pool: &PgPool,
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &Keys,
    n: i64,
) -> anyhow::Result<()> {
    loop {
        let mut done = true;
        for stream in [keys.commands("echo"), keys.events("echo")] {
            let lag: Option<(i64, i64)> = group_progress(conn, &stream).await?;
            done &= lag == Some((0, 0));
        }
        if done {
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM mindbus_entries")
                .fetch_one(pool)
                .await?;
            if rows >= n {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The monitor group's (lag, pending) on `stream`, once the group exists.
async fn group_progress(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> anyhow::Result<Option<(i64, i64)>> {
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await?;
    let Some(group) = groups.into_iter().find(|g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == mindbus_monitor::GROUP.as_bytes())) else {
        return Ok(None);
    };
    let int = |v: Option<&redis::Value>| match v {
        Some(redis::Value::Int(i)) => *i,
        _ => -1,
    };
    Ok(Some((int(group.get("lag")), int(group.get("pending")))))
}

async fn cleanup(conn: &mut redis::aio::MultiplexedConnection, keys: &Keys) -> anyhow::Result<()> {
    let _: () = redis::cmd("DEL")
        .arg(keys.commands("echo"))
        .arg(keys.events("echo"))
        .query_async(conn)
        .await?;
    Ok(())
}

/// A database made for this run and dropped after it.
struct Database {
    admin: String,
    name: String,
}

async fn database(admin: &str, name: &str) -> anyhow::Result<Database> {
    let pool = PgPool::connect(admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(Database {
        admin: admin.to_owned(),
        name: name.to_owned(),
    })
}

impl Database {
    async fn connect(&self) -> anyhow::Result<PgPool> {
        let url = format!(
            "{}/{}",
            &self.admin[..self.admin.rfind('/').unwrap_or(self.admin.len())],
            self.name
        );
        Ok(PgPool::connect(&url).await?)
    }

    async fn drop_it(self) -> anyhow::Result<()> {
        let pool = PgPool::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&pool)
        .await?;
        Ok(())
    }
}
