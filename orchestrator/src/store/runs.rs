//! Run rows.

use mindbus::wire::{RunStatus, RunSummary};
use serde_json::Value;
use sqlx::{PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use super::Tx;
use crate::engine::RunState;

/// One run, as stored.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: Uuid,
    pub workflow: String,
    /// The workflow file the run started with.
    pub definition: String,
    pub status: RunStatus,
    pub input: Value,
    pub state: RunState,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub traceparent: Option<String>,
    /// Whom the run spends for: its `run.start`'s `tenant` field, copied to its commands.
    pub tenant: Option<String>,
    /// The run's deadline, in Unix milliseconds.
    pub deadline_ms: Option<i64>,
    /// Who started it, for a per-owner limit on running runs (the gateway names the API
    /// key); `None` for runs started without one.
    pub owner: Option<String>,
}

const COLUMNS: &str = "id, workflow, definition, status, input, state, output, error, traceparent, tenant, owner, \
     (extract(epoch FROM deadline_at) * 1000)::int8 AS deadline_ms";

fn from_row(row: &PgRow) -> Result<RunRow, sqlx::Error> {
    let decode = |e: String| sqlx::Error::Decode(e.into());
    let status: String = row.try_get("status")?;
    let state: Value = row.try_get("state")?;
    Ok(RunRow {
        id: row.try_get("id")?,
        workflow: row.try_get("workflow")?,
        definition: row.try_get("definition")?,
        status: status.parse().map_err(decode)?,
        input: row.try_get("input")?,
        state: serde_json::from_value(state).map_err(|e| decode(e.to_string()))?,
        output: row.try_get("output")?,
        error: row.try_get("error")?,
        traceparent: row.try_get("traceparent")?,
        tenant: row.try_get("tenant")?,
        deadline_ms: row.try_get("deadline_ms")?,
        owner: row.try_get("owner")?,
    })
}

/// Inserts a new run; `false` when a run with this id exists (a redelivered start).
pub async fn insert_run(tx: &mut Tx, run: &RunRow) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO mindbus_runs (id, workflow, definition, status, input, state, traceparent, tenant, deadline_at, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::float8 / 1000), $10) ON CONFLICT (id) DO NOTHING",
    )
    .bind(run.id)
    .bind(&run.workflow)
    .bind(&run.definition)
    .bind(run.status.as_str())
    .bind(&run.input)
    .bind(state_json(&run.state)?)
    .bind(&run.traceparent)
    .bind(&run.tenant)
    .bind(run.deadline_ms)
    .bind(&run.owner)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes `owner`'s start lock for this transaction (so two starts cannot both see room
/// for one more run) and counts its running runs.
pub async fn running_of(tx: &mut Tx, owner: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('mindbus.run.owner:' || $1, 0))")
        .bind(owner)
        .execute(&mut **tx)
        .await?;
    sqlx::query_scalar("SELECT count(*) FROM mindbus_runs WHERE owner = $1 AND status = 'running'")
        .bind(owner)
        .fetch_one(&mut **tx)
        .await
}

/// Locks a run's row for this transaction and reads it.
pub async fn lock_run(tx: &mut Tx, id: Uuid) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM mindbus_runs WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Locks a run's row for this transaction and reads only its status (not its state, which
/// may be large).
pub async fn lock_status(tx: &mut Tx, id: Uuid) -> Result<Option<RunStatus>, sqlx::Error> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM mindbus_runs WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    status
        .map(|s| s.parse().map_err(|e: String| sqlx::Error::Decode(e.into())))
        .transpose()
}

/// Reads a run without locking it.
pub async fn get_run(pool: &PgPool, id: Uuid) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM mindbus_runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Writes a locked run's status, state, output and error back.
pub async fn save_run(tx: &mut Tx, run: &RunRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE mindbus_runs SET status = $2, state = $3, output = $4, error = $5, updated_at = now() \
         WHERE id = $1",
    )
    .bind(run.id)
    .bind(run.status.as_str())
    .bind(state_json(&run.state)?)
    .bind(&run.output)
    .bind(&run.error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One part of a run as `run.get` reads it: a list's items from `offset` (at most
/// `limit`) and its length, or any other value whole.
#[derive(Debug)]
pub enum RunPart {
    Items { items: Vec<Value>, total: usize },
    Whole(Value),
}

/// Reads one part of run `id` (its input, output or a finished step's output), sliced in
/// Postgres, so a page costs neither the whole state's transfer nor its parsing here.
/// `Ok(None)` when there is no such run of `workflows` (when given); `Err` naming what is
/// wrong when the part is not there.
pub async fn run_part(
    pool: &PgPool,
    id: Uuid,
    workflows: Option<&[String]>,
    part: &str,
    offset: usize,
    limit: usize,
) -> Result<Option<Result<RunPart, String>>, sqlx::Error> {
    let (column, step) = match part {
        "input" => ("input", None),
        "output" => ("output", None),
        other => match other.strip_prefix("steps.") {
            Some(step) => ("state", Some(step)),
            None => {
                return Ok(Some(Err(format!(
                    "part: `{other}` is not `input`, `output` or `steps.<id>`"
                ))));
            }
        },
    };
    let value = if column == "state" {
        "CASE WHEN state -> 'steps' -> $3 ->> 'state' = 'done' THEN state -> 'steps' -> $3 -> 'output' END"
    } else {
        column
    };
    let row = sqlx::query(&format!(
        "SELECT (state -> 'steps' ? $3) AS known, v IS NOT NULL AS present, \
         CASE WHEN jsonb_typeof(v) = 'array' THEN jsonb_array_length(v) END AS total, \
         CASE WHEN jsonb_typeof(v) = 'array' THEN \
             (SELECT COALESCE(jsonb_agg(e ORDER BY n), '[]') FROM jsonb_array_elements(v) WITH ORDINALITY AS x(e, n) \
              WHERE n > $4 AND n <= $4 + $5) \
         ELSE v END AS value \
         FROM (SELECT state, {value} AS v FROM mindbus_runs \
               WHERE id = $1 AND ($2::text[] IS NULL OR workflow = ANY($2))) r"
    ))
    .bind(id)
    .bind(workflows)
    .bind(step.unwrap_or(""))
    .bind(offset as i64)
    .bind(limit as i64)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    if let Some(step) = step {
        if !row.try_get::<bool, _>("known")? {
            return Ok(Some(Err(format!("part: no step `{step}`"))));
        }
        if !row.try_get::<bool, _>("present")? {
            return Ok(Some(Err(format!("part: step `{step}` has no output"))));
        }
    }
    let value: Option<Value> = row.try_get("value")?;
    let value = value.unwrap_or_default();
    Ok(Some(Ok(match row.try_get::<Option<i32>, _>("total")? {
        Some(total) => RunPart::Items {
            items: match value {
                Value::Array(items) => items,
                _ => Vec::new(),
            },
            total: total as usize,
        },
        None => RunPart::Whole(value),
    })))
}

/// Where a listing stopped: the last run's creation time (Unix microseconds) and id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListCursor {
    micros: i64,
    id: Uuid,
}

impl ListCursor {
    /// Reads a cursor written by [`ListCursor`]'s `Display`: `<microseconds>_<run id>`,
    /// a time between 1970 and about 2255 (exact as a float, as the query needs).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a cursor a listing gave");
        let (micros, id) = text.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        if !(0..=1 << 53).contains(&micros) {
            return Err(bad());
        }
        Ok(Self {
            micros,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.micros, self.id)
    }
}

/// The most recent runs (after `after`, when given), optionally of one status and of some
/// workflows only, and the cursor of the next page when this one is full.
pub async fn list_runs(
    pool: &PgPool,
    status: Option<RunStatus>,
    workflows: Option<&[String]>,
    after: Option<ListCursor>,
    limit: i64,
) -> Result<(Vec<RunSummary>, Option<ListCursor>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, workflow, status, created_at::text AS created_at, updated_at::text AS updated_at, error, \
         (extract(epoch FROM created_at) * 1000000)::int8 AS micros \
         FROM mindbus_runs WHERE ($1::text IS NULL OR status = $1) AND ($2::text[] IS NULL OR workflow = ANY($2)) \
         AND ($4::int8 IS NULL OR (created_at, id) < ('epoch'::timestamptz + $4::float8 * interval '1 microsecond', $5::uuid)) \
         ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(status.map(RunStatus::as_str))
    .bind(workflows)
    .bind(limit)
    .bind(after.map(|c| c.micros))
    .bind(after.map(|c| c.id))
    .fetch_all(pool)
    .await?;
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == limit => Some(ListCursor {
            micros: last.try_get("micros")?,
            id: last.try_get("id")?,
        }),
        _ => None,
    };
    let runs = rows
        .iter()
        .map(|row| {
            Ok(RunSummary {
                run_id: row.try_get("id")?,
                workflow: row.try_get("workflow")?,
                status: (row.try_get::<String, _>("status")?)
                    .parse()
                    .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                error: row.try_get("error")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((runs, next))
}

fn state_json(state: &RunState) -> Result<Value, sqlx::Error> {
    serde_json::to_value(state).map_err(|e| sqlx::Error::Encode(e.into()))
}
