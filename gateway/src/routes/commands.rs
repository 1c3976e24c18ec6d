//! `POST /v1/commands/{role}`, `GET /v1/commands/{id}` and `GET /v1/commands/{id}/events`.

use std::time::Duration;
use tracing::Instrument as _;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mindbus::wire::MessageId;
use mindbus::wire::{Command, CommandResult, ORCHESTRATOR_ROLE, Origin, Payload, TraceParent};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::idempotent;
use crate::AppState;
use crate::auth::{Authed, Scope};
use crate::body::JsonBody;
use crate::error::{AppError, ErrorBody};
use crate::extract::{IdPath, QueryOf, RolePath};
use crate::sse::{self, Filter, Sources};

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
    /// Any JSON value, the command's `data`.
    #[serde(default)]
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
    post, path = "/v1/roles/{role}/commands", tag = "commands", operation_id = "send_command",
    params(("role" = String, Path, description = "The agent role", pattern = "^[a-z0-9_-]{1,64}$"), Wait,
        ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key: a repeat with the same role and body answers for the first request's command"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context the command continues"),
        ("tracestate" = Option<String>, Header, description = "W3C trace state passed on with traceparent (an invalid one is dropped)")),
    request_body = NewCommand,
    responses(
        (status = 200, description = "The result came within the wait", body = CommandView),
        (status = 202, description = "Published; no result yet", body = CommandView),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No agent has started for the role", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn publish(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    RolePath(role): RolePath,
    QueryOf(wait): QueryOf<Wait>,
    headers: HeaderMap,
    JsonBody(new, body): JsonBody<NewCommand>,
) -> Result<Response, AppError> {
    if !caller.roles.allows(&role) {
        return Err(AppError::Forbidden(format!(
            "this key may not send commands to `{role}`"
        )));
    }
    if role == ORCHESTRATOR_ROLE {
        // Runs have their own routes, which hold a key to its workflows and its limits.
        return Err(AppError::Forbidden(
            "runs are started and steered through /v1/runs, not as commands".into(),
        ));
    }
    if !state.mesh().has_role(state.bus(), &role).await? {
        return Err(AppError::NotFound(format!(
            "no agent has started for the role `{role}`"
        )));
    }
    let mut command = build(&state, &role, &headers, new)?;
    if let Some(tenant) = &caller.tenant {
        command.set_tenant(tenant);
    }
    // Registered before the command goes out, so a quick result is not missed.
    let fresh_wait = state
        .results()
        .register(&role, &command.envelope.id)
        .await?;
    // In a task of its own: a client that goes away cannot leave its Idempotency-Key
    // claimed for a command that was never sent.
    let task = {
        let (state, role) = (state.clone(), role.clone());
        tokio::spawn(
            async move {
                let fresh = command.envelope.id.clone();
                let route = format!("POST /v1/roles/{role}/commands");
                let claim = idempotent(&state, &caller, &route, &body, &headers, fresh).await?;
                if claim.first {
                    if let Err(e) = send(&state, &role, &command).await {
                        claim.release(&state).await;
                        return Err(e);
                    }
                    metrics::counter!(mindbus::telemetry::metrics::GATEWAY_COMMANDS, "role" => role)
                        .increment(1);
                }
                Ok(claim)
            }
            // The command is sent within the request's span.
            .in_current_span(),
        )
    };
    let claim = task
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("publishing a command: {e}")))??;
    let id = claim.id.clone();
    let wait = wait.wait_ms.unwrap_or(0).min(state.config().max_wait_ms);
    if wait == 0 {
        return Ok((StatusCode::ACCEPTED, Json(CommandView::pending(id))).into_response());
    }
    let result = if claim.first {
        fresh_wait.wait(Duration::from_millis(wait)).await
    } else {
        // A repeat may come after the result, which is stored with the command.
        let wait_again = state.results().register(&role, &id).await?;
        match stored_result(&state, &role, &id).await? {
            Some(result) => Some(result),
            None => wait_again.wait(Duration::from_millis(wait)).await,
        }
    };
    Ok(match result {
        Some(result) => (StatusCode::OK, Json(CommandView::done(id, &result))).into_response(),
        None => (StatusCode::ACCEPTED, Json(CommandView::pending(id))).into_response(),
    })
}

/// The Redis key under which the gateway remembers, as long as results and idempotency
/// keys are kept (whichever is longer), the role of a command it published: what tells a
/// pending command from no command, and whether a key may see it.
fn sent_key(state: &AppState, id: &MessageId) -> String {
    state.bus().keys().sent(&id.to_string())
}

/// Notes the command's role, then publishes it (the note goes first, so a command that
/// is on its stream is always one the gateway can show; a failed publish takes it back).
async fn send(state: &AppState, role: &str, command: &Command) -> Result<(), AppError> {
    let note = sent_key(state, &command.envelope.id);
    let mut conn = state.bus().connection();
    redis::cmd("SET")
        .arg(&note)
        .arg(role)
        .arg("EX")
        .arg(state.reply_ttl_secs().max(super::IDEMPOTENCY_TTL_SECS))
        .query_async::<()>(&mut conn)
        .await?;
    if let Err(e) = state.bus().publish(role, command).await {
        let _: Result<(), _> = redis::cmd("DEL").arg(&note).query_async(&mut conn).await;
        return Err(e.into());
    }
    Ok(())
}

/// Where a command the gateway published stands, for a caller allowed `roles`: its role,
/// and its result once it has ended; not found for no such command, or one of a role out
/// of scope (the same answer).
struct Standing {
    role: String,
    result: Option<Box<CommandResult>>,
}

async fn standing(state: &AppState, roles: &Scope, id: &MessageId) -> Result<Standing, AppError> {
    let role: Option<String> = redis::cmd("GET")
        .arg(sent_key(state, id))
        .query_async(&mut state.bus().connection())
        .await?;
    let Some(role) = role.filter(|role| roles.allows(role)) else {
        return Err(AppError::NotFound(format!("no command {id}")));
    };
    let result = stored_result(state, &role, id).await?.map(Box::new);
    Ok(Standing { role, result })
}

fn build(
    state: &AppState,
    role: &str,
    headers: &HeaderMap,
    new: NewCommand,
) -> Result<Command, AppError> {
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
    command.replyto = Some(
        state
            .bus()
            .keys()
            .reply(role, &command.envelope.id.to_string()),
    );
    command.deadline = new
        .deadline_ms
        .map(|ms| jiff::Timestamp::now() + Duration::from_millis(ms.min(365 * 86_400_000)));
    command.maxattempts = new.maxattempts;
    if let Some(trace) = traceparent(headers)? {
        command.envelope.traceparent = trace;
        command.envelope.tracestate = tracestate(headers);
    }
    Ok(command)
}

/// The request's `traceparent` header, if it has one.
pub fn traceparent(headers: &HeaderMap) -> Result<Option<TraceParent>, AppError> {
    match headers.get("traceparent") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map_err(|_| AppError::Invalid("traceparent header: not visible ASCII".into()))?
            .parse::<TraceParent>()
            .map(Some)
            .map_err(|e| AppError::Invalid(format!("traceparent header: {e}"))),
    }
}

/// The request's `tracestate` header as it is passed on, when it is a valid W3C trace
/// state (one that is not is dropped, as the W3C recommendation says, rather than refused).
pub fn tracestate(headers: &HeaderMap) -> Option<String> {
    let text = headers.get("tracestate")?.to_str().ok()?;
    mindbus::telemetry::spans::tracestate_to_pass_on(text)
}

/// The result stored on the reply stream of command `id` of `role`, if it has come (and
/// not expired).
async fn stored_result(
    state: &AppState,
    role: &str,
    id: &MessageId,
) -> Result<Option<CommandResult>, AppError> {
    let reply = state.bus().keys().reply(role, &id.to_string());
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
    get, path = "/v1/commands/{id}", tag = "commands", operation_id = "show_command",
    params(("id" = String, Path, description = "The command id")),
    responses((status = 200, body = CommandView), (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    IdPath(id): IdPath<MessageId>,
) -> Result<Json<CommandView>, AppError> {
    Ok(Json(
        match standing(&state, &caller.roles, &id).await?.result {
            Some(result) => CommandView::done(id, &result),
            None => CommandView::pending(id),
        },
    ))
}

/// The command's events (progress with streamed text, retried, failed, canceled or
/// deadlettered; received, started and completed when its agents write them) as server-sent
/// events, ending with the last of them or with its result (`mindbus.result`). Resumable
/// with `Last-Event-ID`.
#[utoipa::path(
    get, path = "/v1/commands/{id}/events", tag = "commands", operation_id = "command_events",
    params(("id" = String, Path, description = "The command id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of the command's events", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, description = "Over the key's rate limit (see Retry-After) or its event streams", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    IdPath(id): IdPath<MessageId>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let permits = sse::reserve(&state, &caller)?;
    let standing = standing(&state, &caller.roles, &id).await?;
    let keys = state.bus().keys();
    let sources = Sources {
        events: vec![keys.events(&standing.role)],
        reply: Some(keys.reply(&standing.role, &id.to_string())),
    };
    sse::respond(
        &state,
        permits,
        &headers,
        Filter::Command(id.clone(), caller.roles.clone()),
        sources,
        standing.result.is_some(),
    )
    .await
}
