//! Workflow runs, through the orchestrator's command stream: start, show, follow, cancel,
//! approve.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mindbus::wire::{Command, ORCHESTRATOR_ROLE, Payload, RunCommand, Status};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::commands::SOURCE;
use super::{forget_idempotency, idempotent};
use crate::AppState;
use crate::auth::{Authed, Caller};
use crate::body::JsonBody;
use crate::error::{AppError, ErrorBody};
use crate::extract::IdPath;
use crate::sse::{self, Filter};

/// How long the orchestrator has to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A run to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    /// The workflow's name.
    pub workflow: String,
    /// The run's input (an object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
}

/// A decision on an approval step.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The approval step.
    pub step: String,
    /// `false` rejects.
    #[serde(default = "yes")]
    pub approved: bool,
}

fn yes() -> bool {
    true
}

/// The orchestrator's answer about a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub run: Value,
}

/// Asks the orchestrator; its refusal becomes `refused(message)`.
async fn ask(
    state: &AppState,
    command: Command,
    refused: impl FnOnce(String) -> AppError,
) -> Result<Value, AppError> {
    // Answers come on the result stream, through the gateway's one follower of it.
    let waiter = state.replies().register(&command.envelope.id);
    state.bus().publish(ORCHESTRATOR_ROLE, &command).await?;
    let result = waiter
        .wait(ANSWER_WITHIN)
        .await
        .ok_or_else(|| AppError::Unavailable("the orchestrator did not answer in time".into()))?;
    match (result.status, result.failure) {
        (Status::Completed, _) => Ok(result.envelope.data.value),
        (_, Some(failure)) if !failure.retryable => Err(refused(failure.error)),
        _ => Err(AppError::Unavailable(
            "the orchestrator could not answer; try again".into(),
        )),
    }
}

fn run_command(kind: RunCommand, data: Value) -> Command {
    let mut command = Command::new(kind.as_str(), Payload::json(data));
    command.envelope.source = SOURCE.into();
    command
}

/// The run, if this caller may see it (404 otherwise, so ids of other scopes stay unknown).
async fn visible_run(state: &AppState, caller: &Caller, id: Uuid) -> Result<Value, AppError> {
    let not_found = |_| AppError::NotFound(format!("no run {id}"));
    let run = ask(
        state,
        run_command(RunCommand::Get, json!({"run_id": id})),
        not_found,
    )
    .await?;
    match run["workflow"].as_str() {
        Some(workflow) if caller.workflows.allows(workflow) => Ok(run),
        _ => Err(AppError::NotFound(format!("no run {id}"))),
    }
}

/// Starts a run of a workflow: 201 with the run id. A repeated `Idempotency-Key` returns the
/// first request's run.
#[utoipa::path(
    post, path = "/v1/runs", tag = "runs", request_body = NewRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key")),
    responses((status = 201, body = RunView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn start(
    State(state): State<AppState>,
    Authed(caller): Authed,
    headers: HeaderMap,
    JsonBody(new): JsonBody<NewRun>,
) -> Result<(StatusCode, Json<RunView>), AppError> {
    if !caller.workflows.allows(&new.workflow) {
        return Err(AppError::Forbidden(format!(
            "this key may not start `{}`",
            new.workflow
        )));
    }
    let mut command = run_command(
        RunCommand::Start,
        json!({"workflow": new.workflow, "input": new.input}),
    );
    if let Some(tenant) = &caller.tenant {
        command.set_tenant(tenant);
    }
    let fresh = command.envelope.id.clone();
    let id = idempotent(&state, &caller.name, "run", &headers, fresh).await?;
    if id != command.envelope.id {
        let first = visible_run(&state, &caller, mindbus::wire::run_id(&id))
            .await
            .map_err(|e| match e {
                AppError::NotFound(_) => AppError::Conflict(
                    "a request with this Idempotency-Key is still starting its run; retry".into(),
                ),
                other => other,
            })?;
        return Ok((StatusCode::CREATED, Json(RunView { run: first })));
    }
    command.envelope.id = id;
    match ask(&state, command, AppError::Invalid).await {
        Ok(run) => Ok((StatusCode::CREATED, Json(RunView { run }))),
        // Refused for good: a retry with the same key may try again. (After a timeout the
        // start may still happen, so the key keeps pointing at it.)
        Err(e @ AppError::Invalid(_)) => {
            forget_idempotency(&state, &caller.name, "run", &headers).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// A run's status, input, output and steps.
#[utoipa::path(
    get, path = "/v1/runs/{id}", tag = "runs",
    params(("id" = Uuid, Path, description = "The run id")),
    responses((status = 200, body = RunView), (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    Authed(caller): Authed,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<RunView>, AppError> {
    Ok(Json(RunView {
        run: visible_run(&state, &caller, id).await?,
    }))
}

/// The run's events (its transitions, and its commands' events with streamed text) as
/// server-sent events, ending with `mindbus.run.ended`. Resumable with `Last-Event-ID`.
#[utoipa::path(
    get, path = "/v1/runs/{id}/events", tag = "runs",
    params(("id" = Uuid, Path, description = "The run id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of the run's events", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    Authed(caller): Authed,
    IdPath(id): IdPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let run = visible_run(&state, &caller, id).await?;
    let ended = run["status"].as_str() != Some("running");
    sse::respond(
        &state,
        &headers,
        Filter::Run(id, caller.roles.clone()),
        ended,
    )
    .await
}

/// Cancels a run and its running commands (409 when it is already over).
#[utoipa::path(
    post, path = "/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = Uuid, Path, description = "The run id")),
    responses((status = 200, body = RunView), (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<RunView>, AppError> {
    visible_run(&state, &caller, id).await?;
    let run = ask(
        &state,
        run_command(RunCommand::Cancel, json!({"run_id": id})),
        AppError::Conflict,
    )
    .await?;
    Ok(Json(RunView { run }))
}

/// Approves or rejects a run's approval step (409 when it is not waiting for one).
#[utoipa::path(
    post, path = "/v1/runs/{id}/approve", tag = "runs", request_body = Decision,
    params(("id" = Uuid, Path, description = "The run id")),
    responses((status = 200, body = RunView), (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn approve(
    State(state): State<AppState>,
    Authed(caller): Authed,
    IdPath(id): IdPath<Uuid>,
    JsonBody(decision): JsonBody<Decision>,
) -> Result<Json<RunView>, AppError> {
    visible_run(&state, &caller, id).await?;
    let data = json!({"run_id": id, "step": decision.step, "approved": decision.approved});
    let run = ask(
        &state,
        run_command(RunCommand::Approve, data),
        AppError::Conflict,
    )
    .await?;
    Ok(Json(RunView { run }))
}
