//! `POST /v1/commands/{role}`, `GET /v1/commands/{id}` and `GET /v1/commands/{id}/events`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mindbus::wire::MessageId;
use mindbus::wire::{Command, CommandResult, Origin, Payload, TraceParent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{forget_idempotency, idempotent};
use crate::AppState;
use crate::auth::Authed;
use crate::body::JsonBody;
use crate::error::{AppError, ErrorBody};
use crate::extract::{IdPath, QueryOf, RolePath};
use crate::sse::{self, Filter};

/// The `source` of every command the gateway publishes.
pub const SOURCE: &str = "urn:mindbus:gateway";

/// A command to publish. Fields only the system sets (`id`, `source`, `attempt`, `runid`,
/// ...) are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCommand {
    /// The command type, e.g. `echo.say`.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 200)]
    pub ty: String,
    /// Any JSON, the command's `data`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: Value,
    /// A deadline, in milliseconds from now.
    pub deadline_ms: Option<u64>,
    /// Deliveries before the command is dead-lettered (1 to 1000).
    #[schema(minimum = 1, maximum = 1000)]
    pub maxattempts: Option<u32>,
}

/// How long to wait for the result.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Wait {
    /// Wait up to this many milliseconds for the result (capped by the gateway's
    /// `max_wait_ms`); without it, answer at once.
    pub wait_ms: Option<u64>,
}

/// A command and, once it has one, its result.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandView {
    #[schema(value_type = String)]
    pub id: MessageId,
    /// `pending`, or the result's status: `completed`, `failed` or `canceled`.
    pub status: String,
    /// The result, once there is one.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

impl CommandView {
    fn pending(id: MessageId) -> Self {
        Self {
            id,
            status: "pending".into(),
            result: None,
        }
    }

    fn done(id: MessageId, result: &CommandResult) -> Self {
        Self {
            id,
            status: result.status.as_str().into(),
            result: Some(result.to_json()),
        }
    }
}

/// Publishes a command to `role`: 202 with its id, or 200 with its result when `wait_ms`
/// is given and the result comes in time. A repeated `Idempotency-Key` returns the first
/// request's command.
#[utoipa::path(
    post, path = "/v1/commands/{role}", tag = "commands",
    params(("role" = String, Path, description = "The agent role", pattern = "^[a-z0-9_-]{1,64}$"), Wait,
        ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    request_body = NewCommand,
    responses(
        (status = 200, description = "The result came within the wait", body = CommandView),
        (status = 202, description = "Published; no result yet", body = CommandView),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn publish(
    State(state): State<AppState>,
    Authed(caller): Authed,
    RolePath(role): RolePath,
    QueryOf(wait): QueryOf<Wait>,
    headers: HeaderMap,
    JsonBody(new): JsonBody<NewCommand>,
) -> Result<Response, AppError> {
    if !caller.roles.allows(&role) {
        return Err(AppError::Forbidden(format!(
            "this key may not send commands to `{role}`"
        )));
    }
    let mut command = build(&state, &headers, new)?;
    if let Some(tenant) = &caller.tenant {
        command.set_tenant(tenant);
    }
    let fresh = command.envelope.id.clone();
    let id = idempotent(&state, &caller.name, "cmd", &headers, fresh.clone()).await?;
    let waiter = state.replies().register(&id);
    if id == fresh {
        if let Err(e) = state.bus().publish(&role, &command).await {
            forget_idempotency(&state, &caller.name, "cmd", &headers).await;
            return Err(e.into());
        }
        metrics::counter!("mindbus_gateway_commands_total", "role" => role.clone()).increment(1);
    }
    let wait = wait.wait_ms.unwrap_or(0).min(state.config().max_wait_ms);
    if wait == 0 {
        return Ok((StatusCode::ACCEPTED, Json(CommandView::pending(id))).into_response());
    }
    // A repeated request may come after the result: it is stored with the command.
    let stored = if id == fresh {
        None
    } else {
        stored_result(&state, &id).await?
    };
    let result = match stored {
        Some(result) => Some(result),
        None => waiter.wait(Duration::from_millis(wait)).await,
    };
    Ok(match result {
        Some(result) => (StatusCode::OK, Json(CommandView::done(id, &result))).into_response(),
        None => (StatusCode::ACCEPTED, Json(CommandView::pending(id))).into_response(),
    })
}

fn build(state: &AppState, headers: &HeaderMap, new: NewCommand) -> Result<Command, AppError> {
    if new.ty.is_empty() || new.ty.len() > 200 {
        return Err(AppError::Invalid(
            "type: must be 1 to 200 characters".into(),
        ));
    }
    if new.maxattempts.is_some_and(|m| !(1..=1000).contains(&m)) {
        return Err(AppError::Invalid("maxattempts: must be 1 to 1000".into()));
    }
    let mut command = Command::new(new.ty, Payload::json(new.data));
    command.envelope.source = SOURCE.into();
    command.replyto = Some(state.bus().keys().reply(&command.envelope.id.to_string()));
    command.deadline = new
        .deadline_ms
        .map(|ms| jiff::Timestamp::now() + Duration::from_millis(ms.min(365 * 86_400_000)));
    command.maxattempts = new.maxattempts;
    if let Some(trace) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        command.envelope.traceparent = trace
            .parse::<TraceParent>()
            .map_err(|e| AppError::Invalid(format!("traceparent header: {e}")))?;
    }
    Ok(command)
}

/// The result stored on the command's reply stream, if it has come (and not expired).
async fn stored_result(
    state: &AppState,
    id: &MessageId,
) -> Result<Option<CommandResult>, AppError> {
    let reply = state.bus().keys().reply(&id.to_string());
    let value: redis::Value = redis::cmd("XRANGE")
        .arg(&reply)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut state.bus().connection())
        .await?;
    let entry = mindbus::streams::parse_range(value)?.into_iter().next();
    let Some(entry) = entry else { return Ok(None) };
    let Some(fields) = entry.fields else {
        return Ok(None);
    };
    let origin = Origin {
        stream: &reply,
        entry: entry.id,
    };
    Ok(CommandResult::decode(fields, origin).ok())
}

/// A command's status and, once there is one, its result (kept for the reply TTL).
#[utoipa::path(
    get, path = "/v1/commands/{id}", tag = "commands",
    params(("id" = String, Path, description = "The command id")),
    responses((status = 200, body = CommandView), (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    Authed(caller): Authed,
    IdPath(id): IdPath<MessageId>,
) -> Result<Json<CommandView>, AppError> {
    match stored_result(&state, &id).await? {
        Some(result) if !caller.roles.allows_named(result.role.as_deref()) => {
            Err(AppError::NotFound(format!("no command {id}")))
        }
        Some(result) => Ok(Json(CommandView::done(id, &result))),
        None => Ok(Json(CommandView::pending(id))),
    }
}

/// The command's events (received, started, progress with streamed text, retried, and the
/// end: completed, failed, canceled or deadlettered) as server-sent events. Resumable with
/// `Last-Event-ID`.
#[utoipa::path(
    get, path = "/v1/commands/{id}/events", tag = "commands",
    params(("id" = String, Path, description = "The command id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of the command's events", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    Authed(caller): Authed,
    IdPath(id): IdPath<MessageId>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let ended = stored_result(&state, &id).await?.is_some();
    sse::respond(
        &state,
        &headers,
        Filter::Command(id, caller.roles.clone()),
        ended,
    )
    .await
}
