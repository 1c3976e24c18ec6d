//! `mindbus trace ID` and `mindbus events`: the monitor's event log (read with
//! `mindbus_monitor::history`) as tables or JSON lines.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use comfy_table::Table;
use mindbus_monitor::config::MonitorConfig;
use mindbus_monitor::history::{self, Filter};
use secrecy::ExposeSecret;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// How long connecting to Postgres may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to the event log; fails within seconds, naming the server and the cause
/// (a pool would retry a refused connection until it timed out, losing the cause).
async fn connect(monitor: &MonitorConfig) -> anyhow::Result<PgConnection> {
    let url = monitor.database_url.expose_secret();
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

/// Prints the whole timeline of a command (by id) or a run (by run id), oldest first.
pub async fn trace(monitor: &MonitorConfig, id: &str) -> anyhow::Result<()> {
    let mut conn = connect(monitor).await?;
    let entries = history::timeline(&mut conn, id).await?;
    let Some(start) = entries.first().map(|e| e.entry_ms) else {
        anyhow::bail!("nothing recorded for {id} (is the monitor running?)");
    };
    let mut table = Table::new();
    table.set_header(["+ms", "kind", "type", "role", "attempt", "status", "detail"]);
    for entry in &entries {
        let detail = entry
            .malformed
            .as_ref()
            .map(|m| format!("malformed: {m}"))
            .or_else(|| entry.data.as_ref().map(|d| d.to_string()))
            .unwrap_or_default();
        table.add_row([
            (entry.entry_ms - start).to_string(),
            entry.kind.clone(),
            entry.ty.clone().unwrap_or_default(),
            entry.role.clone().unwrap_or_default(),
            entry.attempt.clone().unwrap_or_default(),
            entry.status.clone().unwrap_or_default(),
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
pub async fn events(monitor: &MonitorConfig, args: EventsArgs) -> anyhow::Result<()> {
    let mut conn = connect(monitor).await?;
    let filter = Filter {
        type_prefix: args.ty,
        role: args.role,
        status: args.status,
        since: args.since,
        until: args.until,
    };
    let entries = history::recent(&mut conn, &filter, args.limit).await?;
    if args.json {
        for entry in &entries {
            println!("{}", serde_json::to_string(entry)?);
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
    for entry in entries {
        table.add_row([
            entry.entry,
            entry.stream,
            entry.kind,
            entry.ty.unwrap_or_default(),
            entry.id.unwrap_or_default(),
            entry.correlation_id.unwrap_or_default(),
            entry.role.unwrap_or_default(),
            entry.status.unwrap_or_default(),
            entry.time.unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    text.chars().take(max).collect::<String>() + "…"
}
