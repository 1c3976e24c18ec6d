//! Redis plumbing for streams: the server (one Redis or a cluster), connections, consumer
//! groups and reply parsing.
//!
//! Two kinds of connection, never mixed: one shared, multiplexed, self-reconnecting
//! connection for writes, and connections of their own for each blocking read loop (a
//! blocking read on a multiplexed connection stalls every clone of it).

mod parse;
mod read_conn;
mod reads;
mod server;

use std::time::Duration;

use redis::RedisError;

pub use parse::{StreamEntry, parse_autoclaim, parse_pending, parse_range, parse_read};
pub use read_conn::ReadConnection;
pub use reads::Reads;
pub use server::{Connection, Redis};

use crate::Error;

/// The one retry policy: delays between reconnection (or retry) attempts, exponential
/// from 50 ms to 2 s, with jitter, without end.
pub fn retry_delays() -> impl Iterator<Item = Duration> {
    use backon::{BackoffBuilder, ExponentialBuilder};
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Runs `attempt` until it succeeds, waiting with backoff between tries and warning each
/// time (the error names the address tried); `Ok(None)` when `stop` fires first, and the
/// error when waiting cannot help ([`Error::is_permanent`]). For a process started before
/// Redis, or while it restarts, that should wait rather than exit.
pub async fn until_up<T, F, Fut>(
    stop: &tokio_util::sync::CancellationToken,
    mut attempt: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut delays = retry_delays();
    loop {
        match attempt().await {
            Ok(value) => return Ok(Some(value)),
            Err(e) if e.is_permanent() => return Err(e),
            Err(e) => tracing::warn!(error = %e, "waiting for redis"),
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! { _ = stop.cancelled() => return Ok(None), _ = tokio::time::sleep(delay) => {} }
    }
}

/// Creates `group` on `stream` (and the stream itself) unless it exists.
pub async fn ensure_group<C>(
    conn: &mut C,
    stream: &str,
    group: &str,
    start: &str,
) -> Result<(), Error>
where
    C: redis::aio::ConnectionLike + Send,
{
    let created: Result<(), RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
        _ => Ok(()),
    }
}

/// Creates `role`'s group on its command stream (and the stream) unless it exists, and
/// lists the role in the registry of roles (an agent does this when it starts and whenever
/// it reconnects, so the registry comes back after Redis loses its data).
pub async fn ensure_role<C>(conn: &mut C, keys: &crate::keys::Keys, role: &str) -> Result<(), Error>
where
    C: redis::aio::ConnectionLike + Send,
{
    ensure_group(conn, &keys.commands(role), role, "0").await?;
    redis::cmd("SADD")
        .arg(keys.roles())
        .arg(role)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// Whether an error means the consumer group (or its stream) vanished, e.g. after a Redis
/// restart without persistence; the caller recreates it.
pub fn is_nogroup(err: &Error) -> bool {
    matches!(err, Error::Redis(e) if e.code() == Some("NOGROUP"))
}

/// Whether an error means a key holds another type than the command expects (a stream
/// replaced by a string, say).
pub fn is_wrongtype(err: &Error) -> bool {
    matches!(err, Error::Redis(e) if e.code() == Some("WRONGTYPE"))
}

/// Every role with a stream under `keys`, found with `SCAN` (of every master, on a
/// cluster; sorted). New roles appear here as soon as their first command is published (or
/// their first agent starts).
pub async fn roles(conn: &mut Connection, keys: &crate::keys::Keys) -> Result<Vec<String>, Error> {
    let scan = |cursor: u64| {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(keys.role_streams_pattern())
            .arg("COUNT")
            .arg(1000)
            .arg("TYPE")
            .arg("stream");
        cmd
    };
    let mut out = Vec::new();
    for (node, mut reply) in conn.on_every_master(&scan(0)).await? {
        loop {
            let (next, found): (u64, Vec<String>) =
                redis::from_redis_value(reply).map_err(RedisError::from)?;
            out.extend(
                found
                    .iter()
                    .filter_map(|s| keys.role_of(s).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            reply = conn.on_node(node.as_deref(), &scan(next)).await?;
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A reply value as text (a bulk or simple string, or an integer), e.g. an `XINFO` field.
pub fn reply_text(value: Option<&redis::Value>) -> Option<String> {
    match value? {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A flat `XINFO` reply (`[name, value, ...]` or a map) as a map by name.
pub fn info_map(value: redis::Value) -> std::collections::HashMap<String, redis::Value> {
    let items = match value {
        redis::Value::Array(items) => items,
        redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    let mut out = std::collections::HashMap::new();
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        if let Ok(k) = redis::from_redis_value::<String>(k) {
            out.insert(k, v);
        }
    }
    out
}
