//! The commands runs sent: one row each, applied once.

use sqlx::{PgPool, Row};
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

/// Records a command about to be sent. A row that exists already (the same derived id) is
/// left as it is.
pub async fn insert_command(tx: &mut Tx, row: &CommandRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mindbus_run_commands (command_id, run_id, step, item, round, role) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (command_id) DO NOTHING",
    )
    .bind(row.command_id)
    .bind(row.run_id)
    .bind(&row.step)
    .bind(row.item as i32)
    .bind(row.round as i32)
    .bind(&row.role)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks a command's result applied, once: `None` when it is not a command of run `run_id`
/// (whose row lock the caller holds) or its result was applied before (a redelivery).
pub async fn apply_command(
    tx: &mut Tx,
    run_id: Uuid,
    command_id: Uuid,
    status: &str,
) -> Result<Option<CommandRow>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE mindbus_run_commands SET applied_at = now(), status = $2 \
         WHERE command_id = $1 AND run_id = $3 AND applied_at IS NULL \
         RETURNING command_id, run_id, step, item, round, role",
    )
    .bind(command_id)
    .bind(status)
    .bind(run_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|row| {
        Ok(CommandRow {
            command_id: row.try_get("command_id")?,
            run_id: row.try_get("run_id")?,
            step: row.try_get("step")?,
            item: row.try_get::<i32, _>("item")? as usize,
            round: row.try_get::<i32, _>("round")? as u32,
            role: row.try_get("role")?,
        })
    })
    .transpose()
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
