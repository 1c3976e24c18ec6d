//! The commands runs sent: one row each, applied once.

use serde_json::Value;
use sqlx::{PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use super::Tx;

/// A command a run sent for one step (fan-out item, loop round).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRow {
    pub command_id: Uuid,
    pub run_id: Uuid,
    pub step: String,
    pub item: usize,
    pub round: u32,
    pub role: String,
}

/// Records commands about to be sent, in one statement however many. A row that exists
/// already (the same derived id) is left as it is.
pub async fn insert_commands(tx: &mut Tx, rows: &[CommandRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO mindbus_run_commands (command_id, run_id, step, item, round, role) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int4[], $5::int4[], $6::text[]) \
         ON CONFLICT (command_id) DO NOTHING",
    )
    .bind(rows.iter().map(|r| r.command_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.run_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.step.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.item as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.round as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.role.as_str()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks a command's result applied, once, keeping its `output` when it completed: `None`
/// when it is not a command of run `run_id` (whose row lock the caller holds) or its result
/// was applied before (a redelivery).
pub async fn apply_command(
    tx: &mut Tx,
    run_id: Uuid,
    command_id: Uuid,
    status: &str,
    output: Option<&Value>,
) -> Result<Option<CommandRow>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE mindbus_run_commands SET applied_at = now(), status = $2, output = $4 \
         WHERE command_id = $1 AND run_id = $3 AND applied_at IS NULL \
         RETURNING command_id, run_id, step, item, round, role",
    )
    .bind(command_id)
    .bind(status)
    .bind(run_id)
    .bind(output)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(command_row).transpose()
}

fn command_row(row: &PgRow) -> Result<CommandRow, sqlx::Error> {
    Ok(CommandRow {
        command_id: row.try_get("command_id")?,
        run_id: row.try_get("run_id")?,
        step: row.try_get("step")?,
        item: row.try_get::<i32, _>("item")? as usize,
        round: row.try_get::<i32, _>("round")? as u32,
        role: row.try_get("role")?,
    })
}

/// One answer to record: the command, its status, its output when it completed.
#[derive(Debug)]
pub struct AnswerRow<'a> {
    pub command_id: Uuid,
    pub status: &'a str,
    pub output: Option<&'a Value>,
}

/// Marks many commands' results applied in one statement (and drops their timers): for
/// those still waiting for an answer, their index in `answers`, their row and the seconds
/// since the command was recorded as sent, in order; a
/// command answered before, or not of run `run_id` (whose row lock the caller holds), is
/// left out. `answers` must name each command once.
pub async fn apply_answers(
    tx: &mut Tx,
    run_id: Uuid,
    timer_kind: &str,
    answers: &[AnswerRow<'_>],
) -> Result<Vec<(usize, CommandRow, f64)>, sqlx::Error> {
    let ids: Vec<Uuid> = answers.iter().map(|a| a.command_id).collect();
    let statuses: Vec<&str> = answers.iter().map(|a| a.status).collect();
    let outputs: Vec<Option<&Value>> = answers.iter().map(|a| a.output).collect();
    let rows = sqlx::query(
        "WITH given AS ( \
             SELECT * FROM unnest($2::uuid[], $3::text[], $4::jsonb[]) WITH ORDINALITY \
             AS g(command_id, status, output, n)), \
         applied AS ( \
             UPDATE mindbus_run_commands c \
             SET applied_at = now(), status = g.status, output = g.output \
             FROM given g \
             WHERE c.command_id = g.command_id AND c.run_id = $1 AND c.applied_at IS NULL \
             RETURNING g.n, c.command_id, c.run_id, c.step, c.item, c.round, c.role, \
                 EXTRACT(EPOCH FROM now() - c.created_at)::float8 AS seconds), \
         timers AS ( \
             DELETE FROM mindbus_run_timers t USING applied a \
             WHERE t.run_id = $1 AND t.kind = $5 AND t.step = a.command_id::text) \
         SELECT * FROM applied ORDER BY n",
    )
    .bind(run_id)
    .bind(&ids)
    .bind(&statuses)
    .bind(&outputs)
    .bind(timer_kind)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            let index = row.try_get::<i64, _>("n")? as usize - 1;
            Ok((index, command_row(row)?, row.try_get("seconds")?))
        })
        .collect()
}

/// Counts the `open` commands a step sent for `round`, whose answers are still to come.
pub async fn open_step(
    tx: &mut Tx,
    run_id: Uuid,
    step: &str,
    round: u32,
    open: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mindbus_run_open_steps (run_id, step, round, open) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (run_id, step) DO UPDATE SET round = $3, open = $4",
    )
    .bind(run_id)
    .bind(step)
    .bind(round as i32)
    .bind(open as i32)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts answers of steps' rounds, `(step, round, answers)` each: how many of each are
/// still to come, for the steps that are counting answers of that round.
pub async fn count_answers(
    tx: &mut Tx,
    run_id: Uuid,
    counts: &[(String, u32, usize)],
) -> Result<Vec<(String, u32, i32)>, sqlx::Error> {
    let steps: Vec<&str> = counts.iter().map(|(s, _, _)| s.as_str()).collect();
    let rounds: Vec<i32> = counts.iter().map(|(_, r, _)| *r as i32).collect();
    let answers: Vec<i32> = counts.iter().map(|(_, _, n)| *n as i32).collect();
    let rows = sqlx::query(
        "UPDATE mindbus_run_open_steps o SET open = o.open - d.n \
         FROM unnest($2::text[], $3::int4[], $4::int4[]) AS d(step, round, n) \
         WHERE o.run_id = $1 AND o.step = d.step AND o.round = d.round \
         RETURNING o.step, o.round, o.open",
    )
    .bind(run_id)
    .bind(&steps)
    .bind(&rounds)
    .bind(&answers)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("step")?,
                row.try_get::<i32, _>("round")? as u32,
                row.try_get("open")?,
            ))
        })
        .collect()
}

/// The answers of a step's `round`, in fan-out item order.
pub async fn step_outputs(
    tx: &mut Tx,
    run_id: Uuid,
    step: &str,
    round: u32,
) -> Result<Vec<Value>, sqlx::Error> {
    let outputs: Vec<Option<Value>> = sqlx::query_scalar(
        "SELECT output FROM mindbus_run_commands WHERE run_id = $1 AND step = $2 AND round = $3 \
         ORDER BY item",
    )
    .bind(run_id)
    .bind(step)
    .bind(round as i32)
    .fetch_all(&mut **tx)
    .await?;
    Ok(outputs.into_iter().map(Option::unwrap_or_default).collect())
}

/// Forgets a run's answer counters (it ended).
pub async fn close_steps(tx: &mut Tx, run_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mindbus_run_open_steps WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The ids of a run's commands whose results have not come.
pub async fn open_commands(tx: &mut Tx, run_id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT command_id FROM mindbus_run_commands WHERE run_id = $1 AND applied_at IS NULL",
    )
    .bind(run_id)
    .fetch_all(&mut **tx)
    .await
}

/// How many commands were sent again after a crash, in all.
pub async fn resent_total(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(SUM(resent), 0)::int8 FROM mindbus_run_commands")
        .fetch_one(pool)
        .await
}
