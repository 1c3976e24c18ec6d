//! The run store in Postgres: runs, the commands they sent, the outbox and the timers. Every
//! change to a run happens in a transaction that holds the run's row lock, so two
//! orchestrators never advance one run at the same time.

mod commands;
mod outbox;
mod runs;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

pub use commands::{
    AnswerRow, CommandRow, apply_answers, apply_command, close_steps, count_answers,
    insert_commands, open_commands, open_step, resent_total, step_outputs,
};
pub use outbox::{
    OutboxEntry, clear_timers, delete_sent, drop_timer, due_timers, lock_publisher, push_all,
    set_timers, take_stale, take_timer,
};
pub use runs::{
    ListCursor, RunPart, RunRow, get_run, insert_run, list_runs, lock_run, lock_status, run_part,
    running_of, save_run,
};

/// A transaction on the run store.
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Connects lazily: an orchestrator starts while Postgres is still coming up.
pub fn connect(url: &SecretString, connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(connections)
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

/// Applies the orchestrator's migrations. They share a database (and sqlx's migration table)
/// with the monitor's, so each ignores the other's versions.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator: Migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}
