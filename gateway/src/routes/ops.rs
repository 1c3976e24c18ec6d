//! Health, readiness, the OpenAPI document, and what the mesh looks like.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use mindbus::bus::{GroupInfo, StreamInfo};
use mindbus::keys::Stream;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Authed;
use crate::error::{AppError, ErrorBody};

/// Answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Answers 200 when Redis answers, 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = String), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    let ping: Result<String, _> = redis::cmd("PING")
        .query_async(&mut state.bus().connection())
        .await;
    ping.map(|_| "ready")
        .map_err(|_| AppError::Unavailable("redis does not answer".into()))
}

/// The OpenAPI document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

/// One agent role.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub role: String,
    /// Consumers in the role's group (one per agent process, live or not yet cleaned up).
    pub consumers: u64,
    /// Commands delivered and not yet finished.
    pub pending: u64,
    /// Commands not yet delivered.
    pub lag: Option<u64>,
}

/// One stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamView {
    pub stream: String,
    pub role: String,
    /// Which of the role's streams: `cmd`, `result`, `event` or `dlq`.
    pub kind: String,
    pub length: u64,
    pub groups: Vec<GroupView>,
}

/// One consumer group.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    pub name: String,
    pub consumers: u64,
    pub pending: u64,
    pub lag: Option<u64>,
    pub last_delivered: String,
}

impl From<GroupInfo> for GroupView {
    fn from(g: GroupInfo) -> Self {
        Self {
            name: g.name,
            consumers: g.consumers,
            pending: g.pending,
            lag: g.lag,
            last_delivered: g.last_delivered,
        }
    }
}

impl From<StreamInfo> for StreamView {
    fn from(s: StreamInfo) -> Self {
        Self {
            stream: s.stream,
            role: s.role,
            kind: s.kind.as_str().into(),
            length: s.length,
            groups: s.groups.into_iter().map(GroupView::from).collect(),
        }
    }
}

/// The registered roles this key may use (those an agent has started for), with consumers,
/// pending work and lag.
#[utoipa::path(get, path = "/v1/roles", tag = "mesh",
    responses((status = 200, body = Vec<AgentView>), (status = 401, body = ErrorBody),
        (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = [])))]
pub async fn roles(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
) -> Result<Json<Vec<AgentView>>, AppError> {
    let overview = state.mesh().overview(state.bus()).await?;
    let roles = overview
        .iter()
        .filter_map(|s| {
            let role =
                Some(&s.role).filter(|r| s.kind == Stream::Commands && caller.roles.allows(r))?;
            let group = s.groups.iter().find(|g| &g.name == role);
            Some(AgentView {
                consumers: group.map_or(0, |g| g.consumers),
                pending: group.map_or(0, |g| g.pending),
                lag: group.and_then(|g| g.lag),
                role: role.clone(),
            })
        })
        .collect();
    Ok(Json(roles))
}

/// The MindBus streams this key may see (every stream of its registered roles: commands,
/// results, events, dead letters), with their lengths and groups.
#[utoipa::path(get, path = "/v1/streams", tag = "mesh",
    responses((status = 200, body = Vec<StreamView>), (status = 401, body = ErrorBody),
        (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = [])))]
pub async fn streams(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
) -> Result<Json<Vec<StreamView>>, AppError> {
    let overview = state.mesh().overview(state.bus()).await?;
    Ok(Json(
        overview
            .iter()
            .filter(|s| caller.roles.allows(&s.role))
            .cloned()
            .map(StreamView::from)
            .collect(),
    ))
}

/// Any path that is not a route.
pub async fn not_found() -> AppError {
    AppError::NotFound("no such route".into())
}
