//! The HTTP routes, one module per resource.

pub mod commands;
pub mod ops;
pub mod runs;

use axum::http::HeaderMap;
use mindbus::wire::MessageId;

use crate::AppState;
use crate::auth::hash_key;
use crate::error::AppError;

/// How long an `Idempotency-Key` is remembered.
const IDEMPOTENCY_TTL_SECS: u64 = 86_400;

/// The Redis key remembering `caller`'s `Idempotency-Key` for `kind` requests.
fn slot(state: &AppState, caller: &str, kind: &str, key: &str) -> String {
    format!(
        "{}:idem:{}:{kind}:{}",
        state.bus().keys().prefix(),
        hash_key(caller),
        hash_key(key)
    )
}

/// Forgets the request's `Idempotency-Key` after it failed, so that retrying it does the work
/// rather than return a command or run that never came to be.
async fn forget_idempotency(state: &AppState, caller: &str, kind: &str, headers: &HeaderMap) {
    let Some(key) = headers.get("idempotency-key").and_then(|k| k.to_str().ok()) else {
        return;
    };
    let _: Result<(), _> = redis::cmd("DEL")
        .arg(slot(state, caller, kind, key))
        .query_async(&mut state.bus().connection())
        .await;
}

/// The id a request stands for: `fresh` unless an earlier request of the same caller used
/// the same `Idempotency-Key` (for the same kind of request), whose id it then is.
async fn idempotent(
    state: &AppState,
    caller: &str,
    kind: &str,
    headers: &HeaderMap,
    fresh: MessageId,
) -> Result<MessageId, AppError> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(fresh);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            AppError::Invalid("Idempotency-Key header: must be 1 to 200 visible characters".into())
        })?;
    let slot = slot(state, caller, kind, key);
    // One atomic SET NX GET: the earlier id, or none when this request is the first.
    let earlier: Option<String> = redis::cmd("SET")
        .arg(&slot)
        .arg(fresh.to_string())
        .arg("NX")
        .arg("GET")
        .arg("EX")
        .arg(IDEMPOTENCY_TTL_SECS)
        .query_async(&mut state.bus().connection())
        .await?;
    let Some(earlier) = earlier else {
        return Ok(fresh);
    };
    earlier
        .parse()
        .ok()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("idempotency slot {slot} holds no id")))
}
