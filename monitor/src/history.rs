//! Reading the event log: a command's or a run's timeline, and recent entries filtered.
//! The monitor owns the table (`migrations/`), so the queries that read it live here,
//! beside the writes.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

/// The columns of a [`LoggedEntry`]. The monitor keeps each entry's fields as written, so
/// the documented defaults that writers leave out are filled in here: a result's `attempt`
/// is 1, and absent `data` is no detail.
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

/// One recorded entry, as the event log shows it (and `mindbus events --json` prints it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedEntry {
    pub stream: String,
    /// The stream entry id, `<ms>-<seq>`.
    pub entry: String,
    /// Its milliseconds part, for timelines.
    #[serde(skip)]
    pub entry_ms: i64,
    /// `command`, `result`, `event` or `dead_letter`.
    pub kind: String,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub id: Option<String>,
    #[serde(rename = "correlationid")]
    pub correlation_id: Option<String>,
    #[serde(rename = "runid")]
    pub run_id: Option<String>,
    pub status: Option<String>,
    pub role: Option<String>,
    pub time: Option<String>,
    pub attempt: Option<String>,
    pub data: Option<Value>,
    /// Why the entry could not be decoded, when it could not.
    pub malformed: Option<String>,
}

impl From<Row> for LoggedEntry {
    fn from(row: Row) -> Self {
        Self {
            stream: row.0,
            entry: format!("{}-{}", row.1, row.2),
            entry_ms: row.1,
            kind: row.3,
            ty: row.4,
            id: row.5,
            correlation_id: row.6,
            run_id: row.7,
            status: row.8,
            role: row.9,
            time: row.10,
            attempt: row.11,
            data: row.12.as_deref().and_then(|d| serde_json::from_str(d).ok()),
            malformed: row.13,
        }
    }
}

/// Every entry of a command (by id) or a run (by run id), oldest first. In one millisecond
/// commands come first (what answers a command cannot precede it; agents leave `time` off
/// their results and events, which then read the entry's millisecond), then entries by
/// their `time`, which the process that wrote them set in the order things happened.
pub async fn timeline(conn: &mut PgConnection, id: &str) -> Result<Vec<LoggedEntry>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mindbus_entries WHERE id = $1 OR correlation_id = $1 OR run_id = $1 ORDER BY entry_ms, kind <> 'command', time, entry_seq"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql).bind(id).fetch_all(conn).await?;
    Ok(rows.into_iter().map(LoggedEntry::from).collect())
}

/// Which entries [`recent`] lists; every part is optional.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Entries whose type starts with this.
    pub type_prefix: Option<String>,
    pub role: Option<String>,
    /// A result's or dead letter's status (`completed`, `failed`, `canceled`, an errortype).
    pub status: Option<String>,
    /// At or after this time (RFC 3339).
    pub since: Option<String>,
    /// Before this time (RFC 3339).
    pub until: Option<String>,
}

/// The newest `limit` entries that pass `filter`, oldest first.
pub async fn recent(
    conn: &mut PgConnection,
    filter: &Filter,
    limit: i64,
) -> Result<Vec<LoggedEntry>, sqlx::Error> {
    let sql = format!(
        "SELECT * FROM (SELECT {COLUMNS} FROM mindbus_entries WHERE ($1::text IS NULL OR type LIKE $1 || '%') \
         AND ($2::text IS NULL OR role = $2) AND ($3::text IS NULL OR status = $3) \
         AND ($4::text IS NULL OR time >= $4::timestamptz) AND ($5::text IS NULL OR time < $5::timestamptz) \
         ORDER BY entry_ms DESC, entry_seq DESC LIMIT $6) newest ORDER BY entry_ms, entry_seq"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(&filter.type_prefix)
        .bind(&filter.role)
        .bind(&filter.status)
        .bind(&filter.since)
        .bind(&filter.until)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(LoggedEntry::from).collect())
}
