//! The HTTP routes, one module per resource.

pub mod commands;
pub mod ops;
pub mod runs;

use axum::http::HeaderMap;
use mindbus::wire::MessageId;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, hash_key};
use crate::body::BodyHash;
use crate::error::AppError;

/// How long an `Idempotency-Key` is remembered.
pub(crate) const IDEMPOTENCY_TTL_SECS: u64 = 86_400;

/// What an `Idempotency-Key` is bound to: the id of the first request's command or run,
/// and that request's route and body, which a repeat must match.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Slot {
    id: String,
    route: String,
    body: String,
}

/// A request's `Idempotency-Key`, claimed for this request or bound to an earlier one.
#[derive(Debug)]
pub(crate) struct Idempotency {
    /// The Redis key of the slot, and what this request wrote into it: `None` without an
    /// `Idempotency-Key`, or when an earlier request holds the slot.
    claimed: Option<(String, String)>,
    /// Whether this request is the first with its key (or has none): it does the work.
    pub first: bool,
    /// The id the request stands for.
    pub id: MessageId,
}

/// Binds the request's `Idempotency-Key` (if any) to `fresh`, unless an earlier request of
/// the same API key used it: then the request stands for that request's id, provided it
/// went to the same `route` with the same body (422 otherwise). Slots are per API key (by
/// its hash, so keys named alike share nothing).
pub(crate) async fn idempotent(
    state: &AppState,
    caller: &Caller,
    route: &str,
    body: &BodyHash,
    headers: &HeaderMap,
    fresh: MessageId,
) -> Result<Idempotency, AppError> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(Idempotency {
            claimed: None,
            first: true,
            id: fresh,
        });
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .ok_or_else(|| {
            AppError::Invalid("Idempotency-Key header: must be 1 to 200 visible characters".into())
        })?;
    let slot_key = state.bus().keys().idempotency(&caller.id, &hash_key(key));
    let ours = Slot {
        id: fresh.to_string(),
        route: route.to_owned(),
        body: body.0.clone(),
    };
    let value = serde_json::to_string(&ours).map_err(|e| AppError::Internal(e.into()))?;
    // One atomic SET NX GET: the earlier slot, or none when this request is the first.
    let earlier: Option<String> = redis::cmd("SET")
        .arg(&slot_key)
        .arg(&value)
        .arg("NX")
        .arg("GET")
        .arg("EX")
        .arg(IDEMPOTENCY_TTL_SECS)
        .query_async(&mut state.bus().connection())
        .await?;
    let Some(earlier) = earlier else {
        return Ok(Idempotency {
            claimed: Some((slot_key, value)),
            first: true,
            id: fresh,
        });
    };
    let earlier: Slot = serde_json::from_str(&earlier).map_err(|_| {
        AppError::Internal(anyhow::anyhow!("idempotency slot {slot_key} is unreadable"))
    })?;
    if earlier.route != ours.route || earlier.body != ours.body {
        return Err(AppError::Invalid(format!(
            "Idempotency-Key header: this key was first used for a different request \
             (`{}` with another body, or another route); use a new key for a new request",
            earlier.route
        )));
    }
    let id = earlier.id.parse().map_err(|_| {
        AppError::Internal(anyhow::anyhow!("idempotency slot {slot_key} holds no id"))
    })?;
    Ok(Idempotency {
        claimed: None,
        first: false,
        id,
    })
}

impl Idempotency {
    /// Releases the key after the request failed, so that retrying it does the work rather
    /// than return a command or run that never came to be. Only the slot this request
    /// wrote is removed (never one a later request claimed after it expired).
    pub async fn release(self, state: &AppState) {
        let Some((slot_key, value)) = self.claimed else {
            return;
        };
        let released: Result<i64, _> = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .key(&slot_key)
        .arg(&value)
        .invoke_async(&mut state.bus().connection())
        .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
    }
}
