//! API keys: stored as SHA-256 hashes, each scoped to roles and workflows and limited in
//! requests per minute. A request names its key in `Authorization: Bearer <key>` (or
//! `X-API-Key`); the limit is per key, so no header a client can forge changes it.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::config::{ApiKeyConfig, GatewayConfig};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::AppState;
use crate::error::AppError;

/// The SHA-256 of a key, in lower-case hex, as configs store it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// What a key may reach: everything, or the names listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(BTreeSet<String>),
}

impl Scope {
    fn from_list(list: &[String]) -> Self {
        if list.iter().any(|s| s == "*") {
            Scope::All
        } else {
            Scope::Only(list.iter().cloned().collect())
        }
    }

    /// Whether `name` is in scope.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(names) => names.contains(name),
        }
    }

    /// Whether something that names `name` (or names nothing) is in scope: something that
    /// names nothing (a result or event written without a `role`) only for a scope of all.
    pub fn allows_named(&self, name: Option<&str>) -> bool {
        match name {
            Some(name) => self.allows(name),
            None => *self == Scope::All,
        }
    }
}

/// The caller of a request: its key's name, scopes, limits and rate limiter.
#[derive(Debug)]
pub struct Caller {
    /// The key's SHA-256: what tells keys apart (names may repeat).
    pub id: String,
    pub name: String,
    pub roles: Scope,
    pub workflows: Scope,
    /// The tenant everything this key sends spends for, if the key has one.
    pub tenant: Option<String>,
    /// Runs it may have running at once.
    pub max_runs: u32,
    /// Permits for the event streams it holds open.
    pub streams: Arc<Semaphore>,
    /// Permits for its requests in flight.
    in_flight: Arc<Semaphore>,
    limiter: DefaultDirectRateLimiter,
}

/// Every known key, by hash.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_hash: HashMap<String, Arc<Caller>>,
}

impl KeyRing {
    /// The keys of `config`, plus `admin_key` (a plain key from the environment, allowed
    /// everything) when given.
    pub fn new(config: &GatewayConfig, admin_key: Option<&str>) -> Self {
        let mut by_hash = HashMap::new();
        for key in &config.api_keys {
            by_hash.insert(
                key.sha256.to_ascii_lowercase(),
                Arc::new(caller(key, config)),
            );
        }
        if let Some(plain) = admin_key.filter(|k| !k.is_empty()) {
            let admin = ApiKeyConfig {
                name: "admin".into(),
                sha256: hash_key(plain),
                roles: vec!["*".into()],
                workflows: vec!["*".into()],
                requests_per_minute: 60_000,
                tenant: None,
                max_streams: None,
                max_runs: None,
            };
            by_hash.insert(admin.sha256.clone(), Arc::new(caller(&admin, config)));
        }
        Self { by_hash }
    }

    fn find(&self, key: &str) -> Option<Arc<Caller>> {
        self.by_hash.get(&hash_key(key)).cloned()
    }
}

fn caller(key: &ApiKeyConfig, config: &GatewayConfig) -> Caller {
    let rate = NonZeroU32::new(key.requests_per_minute).unwrap_or(NonZeroU32::MIN);
    let streams = key
        .max_streams
        .unwrap_or(config.streams_per_key)
        .clamp(1, Semaphore::MAX_PERMITS);
    Caller {
        id: key.sha256.to_ascii_lowercase(),
        name: key.name.clone(),
        roles: Scope::from_list(&key.roles),
        workflows: Scope::from_list(&key.workflows),
        tenant: key.tenant.clone(),
        max_runs: key.max_runs.unwrap_or(config.runs_per_key).max(1),
        streams: Arc::new(Semaphore::new(streams)),
        in_flight: Arc::new(Semaphore::new(
            config.requests_per_key.clamp(1, Semaphore::MAX_PERMITS),
        )),
        limiter: RateLimiter::direct(Quota::per_minute(rate)),
    }
}

/// An authenticated caller within its rate limit, and one of its requests in flight
/// (counted until the handler returns).
#[derive(Debug)]
pub struct Authed(pub Arc<Caller>, pub InFlight);

/// One of a key's places for requests in flight, given back when dropped.
#[derive(Debug)]
pub struct InFlight(#[allow(dead_code)] OwnedSemaphorePermit);

impl FromRequestParts<AppState> for Authed {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let headers = &parts.headers;
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let key = bearer
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .ok_or(AppError::Unauthorized)?;
        let caller = state
            .keys()
            .find(key.trim())
            .ok_or(AppError::Unauthorized)?;
        if let Err(not_until) = caller.limiter.check() {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!(mindbus::telemetry::metrics::GATEWAY_RATE_LIMITED, "key" => caller.name.clone())
                .increment(1);
            return Err(AppError::RateLimited(wait));
        }
        let in_flight = caller.in_flight.clone().try_acquire_owned().map_err(|_| {
            AppError::OverQuota(
                "this key has as many requests in flight as it may; wait for some to end".into(),
            )
        })?;
        Ok(Authed(caller, InFlight(in_flight)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_hash_and_scoped() {
        let config = ApiKeyConfig {
            name: "writer-only".into(),
            sha256: hash_key("s3cret"),
            roles: vec!["writer".into()],
            workflows: vec![],
            requests_per_minute: 2,
            tenant: None,
            max_streams: None,
            max_runs: None,
        };
        let config = GatewayConfig {
            api_keys: vec![config],
            ..GatewayConfig::default()
        };
        let ring = KeyRing::new(&config, None);
        let caller = ring.find("s3cret").unwrap();
        assert!(caller.roles.allows("writer"));
        assert!(!caller.roles.allows("echo"));
        assert!(!caller.workflows.allows("sample"));
        assert!(ring.find("S3CRET").is_none());
        assert!(caller.limiter.check().is_ok());
        assert!(caller.limiter.check().is_ok());
        assert!(
            caller.limiter.check().is_err(),
            "the third request in a minute is over"
        );
    }
}
