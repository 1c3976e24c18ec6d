//! Retention: streams are trimmed to a length or an age, but never past an entry that any
//! consumer group has not yet acknowledged (or not yet been delivered). Postgres keeps the
//! history.

use std::time::Duration;

use crate::config::MonitorConfig;
use mindbus::streams::reply_text;
use mindbus::wire::EntryId;
use redis::Value;
use redis::aio::ConnectionLike;

/// The oldest entry some group still needs: its oldest pending entry, or the first entry
/// after its last delivered one. `None` when the stream has no groups. A group in `expected`
/// that does not exist yet (a role whose first agent has not started) needs every entry.
pub async fn oldest_needed<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    expected: Option<&str>,
) -> anyhow::Result<Option<EntryId>> {
    let groups: Vec<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await?;
    let mut oldest: Option<EntryId> = None;
    let mut missing = expected;
    for group in groups {
        let info = mindbus::streams::info_map(group);
        let name = reply_text(info.get("name")).unwrap_or_default();
        if missing == Some(name.as_str()) {
            missing = None;
        }
        let delivered: EntryId = reply_text(info.get("last-delivered-id"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(EntryId::ZERO);
        let mut need = match delivered.seq.checked_add(1) {
            Some(seq) => EntryId {
                ms: delivered.ms,
                seq,
            },
            None => EntryId {
                ms: delivered.ms.saturating_add(1),
                seq: 0,
            },
        };
        let summary: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&name)
            .query_async(conn)
            .await?;
        if let Value::Array(parts) = summary
            && let Some(first) = parts
                .get(1)
                .and_then(|v| reply_text(Some(v)))
                .and_then(|s| s.parse::<EntryId>().ok())
        {
            need = need.min(first);
        }
        oldest = Some(oldest.map_or(need, |o| o.min(need)));
    }
    if missing.is_some() {
        return Ok(Some(EntryId::ZERO));
    }
    Ok(oldest)
}

/// Trims `stream` as `config` asks, never past what its groups still need, including the
/// `expected` group when it does not exist yet (a command stream's role group: nothing is
/// trimmed before its first agent has read it). Returns the number of entries removed.
pub async fn trim<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    expected: Option<&str>,
    config: &MonitorConfig,
) -> anyhow::Result<u64> {
    let Some(needed) = oldest_needed(conn, stream, expected).await? else {
        return Ok(0);
    };
    let mut target: Option<EntryId> = None;
    if config.retain_entries > 0 {
        let keep: Vec<Value> = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(config.retain_entries)
            .query_async(conn)
            .await?;
        if keep.len() as u64 >= config.retain_entries
            && let Some(Value::Array(last)) = keep.last()
        {
            target = reply_text(last.first()).and_then(|s| s.parse().ok());
        }
    }
    if config.retain_secs > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let cutoff = EntryId {
            ms: (now.as_millis() as u64).saturating_sub(config.retain_secs * 1000),
            seq: 0,
        };
        target = Some(target.map_or(cutoff, |t| t.max(cutoff)));
    }
    let Some(target) = target else { return Ok(0) };
    let minid = target.min(needed);
    let removed: u64 = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(minid.to_string())
        .query_async(conn)
        .await?;
    Ok(removed)
}
