//! `mindbus trace ID` and `mindbus events`: reading the monitor's event log in Postgres.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use comfy_table::Table;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The monitor keeps each entry's fields as written, so the documented defaults that writers
/// leave out are filled in here: a result's `attempt` is 1, and absent `data` is no detail.
const COLUMNS: &str = "stream, entry_ms, entry_seq, kind, type, id::text, correlation_id::text, run_id, status, role, \
                       time::text, coalesce(fields->>'attempt', CASE WHEN kind = 'result' THEN '1' END), \
                       nullif(data, 'null'::jsonb)::text, malformed";

type Row = (
    String,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// How long connecting to Postgres may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to the event log; fails within seconds, naming the server and the cause
/// (a pool would retry a refused connection until it timed out, losing the cause).
async fn connect(config: &mindbus::config::Config) -> anyhow::Result<PgConnection> {
    let url = config.monitor.database_url.expose_secret();
    let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a postgres URL")?;
    let server = format!("{}:{}", options.get_host(), options.get_port());
    let context =
        || format!("connecting to postgres at {server} (set DATABASE_URL or --database-url)");
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))
        .with_context(context)?
        .with_context(context)
}

/// Prints the whole timeline of a command (by id) or a run (by run id), oldest first. Entries
/// of different streams in the same millisecond are ordered by their `time`, which the
/// process that wrote them set in the order things happened.
pub async fn trace(config: &mindbus::config::Config, id: &str) -> anyhow::Result<()> {
    let mut conn = connect(config).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM mindbus_entries WHERE id = $1 OR correlation_id = $1 OR run_id = $1 ORDER BY entry_ms, time, entry_seq"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql).bind(id).fetch_all(&mut conn).await?;
    anyhow::ensure!(
        !rows.is_empty(),
        "nothing recorded for {id} (is the monitor running?)"
    );
    let start = rows[0].1;
    let mut table = Table::new();
    table.set_header(["+ms", "kind", "type", "role", "attempt", "status", "detail"]);
    for row in &rows {
        let detail = row
            .13
            .clone()
            .map(|m| format!("malformed: {m}"))
            .or_else(|| row.12.clone())
            .unwrap_or_default();
        table.add_row([
            (row.1 - start).to_string(),
            row.3.clone(),
            row.4.clone().unwrap_or_default(),
            row.9.clone().unwrap_or_default(),
            row.11.clone().unwrap_or_default(),
            row.8.clone().unwrap_or_default(),
            truncate(&detail, 80),
        ]);
    }
    println!("{table}");
    Ok(())
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only entries whose type starts with this.
    #[arg(long = "type", env = "MINDBUS_EVENTS_TYPE")]
    ty: Option<String>,
    /// Only entries of this role.
    #[arg(long, env = "MINDBUS_EVENTS_ROLE")]
    role: Option<String>,
    /// Only results or dead letters with this status (completed, failed, canceled, or an errortype).
    #[arg(long, env = "MINDBUS_EVENTS_STATUS")]
    status: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[arg(long, env = "MINDBUS_EVENTS_SINCE")]
    since: Option<String>,
    /// Only entries before this time (RFC 3339).
    #[arg(long, env = "MINDBUS_EVENTS_UNTIL")]
    until: Option<String>,
    /// At most this many, newest last.
    #[arg(long, default_value_t = 100, env = "MINDBUS_EVENTS_LIMIT")]
    limit: i64,
    /// One JSON object per line instead of a table.
    #[arg(long, env = "MINDBUS_EVENTS_JSON")]
    json: bool,
}

/// Lists recorded entries, filtered.
pub async fn events(config: &mindbus::config::Config, args: EventsArgs) -> anyhow::Result<()> {
    let mut conn = connect(config).await?;
    let sql = format!(
        "SELECT * FROM (SELECT {COLUMNS} FROM mindbus_entries WHERE ($1::text IS NULL OR type LIKE $1 || '%') \
         AND ($2::text IS NULL OR role = $2) AND ($3::text IS NULL OR status = $3) \
         AND ($4::text IS NULL OR time >= $4::timestamptz) AND ($5::text IS NULL OR time < $5::timestamptz) \
         ORDER BY entry_ms DESC, entry_seq DESC LIMIT $6) newest ORDER BY entry_ms, entry_seq"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(&args.ty)
        .bind(&args.role)
        .bind(&args.status)
        .bind(&args.since)
        .bind(&args.until)
        .bind(args.limit)
        .fetch_all(&mut conn)
        .await?;
    if args.json {
        for row in &rows {
            println!("{}", row_json(row));
        }
        return Ok(());
    }
    let mut table = Table::new();
    table.set_header([
        "entry",
        "stream",
        "kind",
        "type",
        "id",
        "correlation",
        "role",
        "status",
        "time",
    ]);
    for row in &rows {
        table.add_row([
            format!("{}-{}", row.1, row.2),
            row.0.clone(),
            row.3.clone(),
            row.4.clone().unwrap_or_default(),
            row.5.clone().unwrap_or_default(),
            row.6.clone().unwrap_or_default(),
            row.9.clone().unwrap_or_default(),
            row.8.clone().unwrap_or_default(),
            row.10.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn row_json(row: &Row) -> Value {
    json!({
        "stream": row.0, "entry": format!("{}-{}", row.1, row.2), "kind": row.3, "type": row.4, "id": row.5,
        "correlationid": row.6, "runid": row.7, "status": row.8, "role": row.9, "time": row.10, "attempt": row.11,
        "data": row.12.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()), "malformed": row.13,
    })
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    text.chars().take(max).collect::<String>() + "…"
}
