//! The event log in Postgres: migrations and idempotent batch inserts.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::record::Record;

/// Connects lazily: the pool dials Postgres on first use, so a monitor starts (and keeps
/// its place in Redis) while Postgres is still down.
pub fn connect(url: &SecretString) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url.expose_secret())
}

/// A readiness check: Postgres answers `SELECT 1` on the pool.
pub fn ready(pool: PgPool) -> mindbus::telemetry::probes::Check {
    mindbus::telemetry::probes::check(move || {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(drop)
                .map_err(|e| format!("postgres does not answer: {e}"))
        }
    })
}

/// Applies the migrations under `monitor/migrations/`. They share a database (and sqlx's
/// migration table) with the orchestrator's, so each ignores the other's versions.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Inserts rows in one statement; rows already there (a redelivery) are skipped. Returns
/// how many were new.
pub async fn insert(pool: &PgPool, rows: &[Record]) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&Record) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
    let result = sqlx::query(
        "INSERT INTO mindbus_entries (stream, entry_ms, entry_seq, kind, type, id, correlation_id, run_id, step_id, \
         status, source, role, time, trace_id, data, fields, malformed) \
         SELECT s, ms, seq, k, t, i, c, r, st, stat, src, rl, tm::timestamptz, tr, d, f, m FROM UNNEST(\
         $1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
         $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::jsonb[], $16::jsonb[], $17::text[]) \
         AS u(s, ms, seq, k, t, i, c, r, st, stat, src, rl, tm, tr, d, f, m) \
         ON CONFLICT (stream, entry_ms, entry_seq) DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.stream.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.entry_ms).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.entry_seq).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.kind.to_owned()).collect::<Vec<_>>())
    .bind(col(|r| r.ty.clone()))
    .bind(col(|r| r.id.clone()))
    .bind(col(|r| r.correlation_id.clone()))
    .bind(col(|r| r.run_id.clone()))
    .bind(col(|r| r.step_id.clone()))
    .bind(col(|r| r.status.clone()))
    .bind(col(|r| r.source.clone()))
    .bind(col(|r| r.role.clone()))
    .bind(col(|r| r.time.clone()))
    .bind(col(|r| r.trace_id.clone()))
    .bind(rows.iter().map(|r| r.data.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.fields.clone()).collect::<Vec<_>>())
    .bind(col(|r| r.malformed.clone()))
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Inserts rows like [`insert`], in statements of at most `max_bytes` of entries each, so
/// no batch is refused for its size. A statement Postgres refuses for its data or size
/// (which no retry fixes) is split in halves, down to the one row refused, which is stored
/// bare, with the reason, instead of blocking every batch behind it. Other errors
/// (Postgres away) are returned, to be retried.
pub async fn insert_or_bare(
    pool: &PgPool,
    rows: &[Record],
    max_bytes: usize,
) -> Result<u64, sqlx::Error> {
    let mut inserted = 0;
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        let mut bytes = rows[start].bytes;
        while end < rows.len() && bytes + rows[end].bytes <= max_bytes {
            bytes += rows[end].bytes;
            end += 1;
        }
        inserted += insert_halving(pool, &rows[start..end]).await?;
        start = end;
    }
    Ok(inserted)
}

fn insert_halving<'a>(
    pool: &'a PgPool,
    rows: &'a [Record],
) -> futures::future::BoxFuture<'a, Result<u64, sqlx::Error>> {
    Box::pin(async move {
        match insert(pool, rows).await {
            Err(e) if refused(&e).is_some() => {
                if let [row] = rows {
                    tracing::warn!(error = %e, stream = row.stream, "postgres refused a row; storing it bare");
                    let too_large = refused(&e) == Some(Refusal::Size);
                    return insert(pool, &[row.bare(&e.to_string(), too_large)]).await;
                }
                tracing::warn!(error = %e, rows = rows.len(), "postgres refused a batch; splitting it");
                let (first, second) = rows.split_at(rows.len() / 2);
                Ok(insert_halving(pool, first).await? + insert_halving(pool, second).await?)
            }
            other => other,
        }
    })
}

#[derive(Debug, PartialEq)]
enum Refusal {
    /// Class 22 or 23: a value Postgres cannot take (encoding, constraint).
    Data,
    /// Class 54: a program limit (a value or statement too large). Class 53 (disk full,
    /// out of memory, too many connections) passes: it is retried like an outage.
    Size,
}

/// Why Postgres refused a statement for good, if it did.
fn refused(err: &sqlx::Error) -> Option<Refusal> {
    let code = err.as_database_error()?.code()?;
    match code.get(..2)? {
        "22" | "23" => Some(Refusal::Data),
        "54" => Some(Refusal::Size),
        _ => None,
    }
}
