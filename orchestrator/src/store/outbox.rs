//! The outbox (entries committed with a transition, published after it) and the timers
//! (approval timeouts and run deadlines).

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::Tx;

/// One entry to XADD.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The outbox row; 0 before it is stored.
    pub id: i64,
    pub run_id: Uuid,
    /// Set for a step's command, to count resends.
    pub command_id: Option<Uuid>,
    pub stream: String,
    /// `MAXLEN ~` for the XADD.
    pub maxlen: Option<i64>,
    pub fields: Vec<(String, String)>,
}

/// The advisory lock space of publishers (`pg_advisory_lock(PUBLISHERS, <publisher>)`).
pub const PUBLISHERS: i32 = 0x4d42_4f42;

/// Takes the publisher lock of `publisher` on `conn`, held for as long as that session
/// lives; `false` when another session holds it.
pub async fn lock_publisher(
    conn: &mut sqlx::PgConnection,
    publisher: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(PUBLISHERS)
        .bind(publisher)
        .fetch_one(conn)
        .await
}

/// Stores entries that `publisher` will publish after the transaction commits (two
/// statements however many), giving each its row id.
pub async fn push_all(
    tx: &mut Tx,
    publisher: i32,
    entries: &mut [OutboxEntry],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('mindbus_outbox', 'id')) FROM generate_series(1, $1)",
    )
    .bind(entries.len() as i64)
    .fetch_all(&mut **tx)
    .await?;
    for (entry, id) in entries.iter_mut().zip(&ids) {
        entry.id = *id;
    }
    let fields = entries
        .iter()
        .map(|e| serde_json::to_value(&e.fields))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query(
        "INSERT INTO mindbus_outbox (id, run_id, command_id, stream, maxlen, fields, publisher) \
         SELECT id, run_id, command_id, stream, maxlen, fields, $7 \
         FROM unnest($1::int8[], $2::uuid[], $3::uuid[], $4::text[], $5::int8[], $6::jsonb[]) \
         AS e(id, run_id, command_id, stream, maxlen, fields)",
    )
    .bind(&ids)
    .bind(entries.iter().map(|e| e.run_id).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.command_id).collect::<Vec<_>>())
    .bind(
        entries
            .iter()
            .map(|e| e.stream.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(entries.iter().map(|e| e.maxlen).collect::<Vec<_>>())
    .bind(&fields)
    .bind(publisher)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Forgets entries that were published.
pub async fn delete_sent(pool: &PgPool, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mindbus_outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Locks and returns entries older than `older_ms` whose publisher is gone (an orchestrator
/// that died between commit and publish: its publisher lock is free), and `me`'s own older
/// than `own_ms` (stranded: their publish never ran, or their delete failed), skipping
/// rows another sweep is sending, and deletes them in the same transaction; their
/// commands count one more resend. Other entries of a live publisher are never taken: it
/// may still be publishing them.
pub async fn take_stale(
    tx: &mut Tx,
    me: i32,
    older_ms: i64,
    own_ms: i64,
    limit: i64,
) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "DELETE FROM mindbus_outbox WHERE id IN (SELECT id FROM mindbus_outbox \
         WHERE created_at < now() - make_interval(secs => $1::float8 / 1000) \
         AND (publisher IS NULL \
              OR (publisher = $3 AND created_at < now() - make_interval(secs => $5::float8 / 1000)) \
              OR (publisher <> $3 AND pg_try_advisory_xact_lock($4, publisher))) \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id, run_id, command_id, stream, maxlen, fields",
    )
    .bind(older_ms)
    .bind(limit)
    .bind(me)
    .bind(PUBLISHERS)
    .bind(own_ms)
    .fetch_all(&mut **tx)
    .await?;
    let mut entries = rows
        .iter()
        .map(|row| {
            let fields: serde_json::Value = row.try_get("fields")?;
            Ok(OutboxEntry {
                id: row.try_get("id")?,
                run_id: row.try_get("run_id")?,
                command_id: row.try_get("command_id")?,
                stream: row.try_get("stream")?,
                maxlen: row.try_get("maxlen")?,
                fields: serde_json::from_value(fields)
                    .map_err(|e| sqlx::Error::Decode(e.into()))?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    entries.sort_by_key(|e| e.id);
    let resent: Vec<Uuid> = entries.iter().filter_map(|e| e.command_id).collect();
    sqlx::query("UPDATE mindbus_run_commands SET resent = resent + 1 WHERE command_id = ANY($1)")
        .bind(&resent)
        .execute(&mut **tx)
        .await?;
    Ok(entries)
}

/// Sets (or moves) timers of one kind: `(step, due in Unix milliseconds)` each, in one
/// statement however many.
pub async fn set_timers(
    tx: &mut Tx,
    run_id: Uuid,
    kind: &str,
    timers: &[(String, i64)],
) -> Result<(), sqlx::Error> {
    if timers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO mindbus_run_timers (run_id, kind, step, due_at) \
         SELECT $1, $2, step, to_timestamp(due::float8 / 1000) \
         FROM unnest($3::text[], $4::int8[]) AS t(step, due) \
         ON CONFLICT (run_id, kind, step) DO UPDATE SET due_at = EXCLUDED.due_at",
    )
    .bind(run_id)
    .bind(kind)
    .bind(timers.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>())
    .bind(timers.iter().map(|(_, d)| *d).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Removes a timer that is due; `false` when it is gone (fired elsewhere, or the run ended).
pub async fn take_timer(
    tx: &mut Tx,
    run_id: Uuid,
    kind: &str,
    step: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM mindbus_run_timers WHERE run_id = $1 AND kind = $2 AND step = $3 AND due_at <= now()",
    )
    .bind(run_id)
    .bind(kind)
    .bind(step)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes a timer whether due or not (an approval was decided in time).
pub async fn drop_timer(
    tx: &mut Tx,
    run_id: Uuid,
    kind: &str,
    step: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mindbus_run_timers WHERE run_id = $1 AND kind = $2 AND step = $3")
        .bind(run_id)
        .bind(kind)
        .bind(step)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Removes every timer of a run (it ended).
pub async fn clear_timers(tx: &mut Tx, run_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM mindbus_run_timers WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Timers that are due: (run, kind, step). A command timer is due only once it is also
/// at or before `commands_through` (Unix ms): every result written before then is applied.
pub async fn due_timers(
    pool: &PgPool,
    commands_through: i64,
    limit: i64,
) -> Result<Vec<(Uuid, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, kind, step FROM mindbus_run_timers WHERE due_at <= now() \
         AND (kind <> 'command' OR due_at <= to_timestamp($1::float8 / 1000)) \
         ORDER BY due_at LIMIT $2",
    )
    // Within what a timestamp can hold: 0 (nothing applied) to the year 9999.
    .bind(commands_through.clamp(0, 253_402_300_799_000))
    .bind(limit)
    .fetch_all(pool)
    .await
}
