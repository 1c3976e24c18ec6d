//! Workflow runs, through the orchestrator's command stream: start, show, follow, cancel,
//! approve.

use std::time::Duration;
use tracing::Instrument as _;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use mindbus::wire::{
    Approval, Command, ErrorType, GetRun, ListRuns, ORCHESTRATOR_ROLE, OVER_QUOTA, RunChange,
    RunRef, RunRequest, RunStatus, RunSummary, StartRun, Status,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::commands::{SOURCE, traceparent, tracestate};
use super::idempotent;
use crate::AppState;
use crate::auth::{Authed, Caller, Scope};
use crate::body::{JsonBody, array_items};
use crate::error::{AppError, ErrorBody};
use crate::extract::{IdPath, QueryOf};
use crate::sse::{self, Filter, Sources};

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

/// A run just started (or, for a repeated `Idempotency-Key`, the first request's run).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunStarted {
    pub run_id: Uuid,
    /// `running`, or how the run has ended since.
    pub status: String,
}

/// Recent runs, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<RunSummary>,
    /// When the page is full: pass it as `after` for the next page.
    pub next: Option<String>,
}

/// The orchestrator's answer about a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub run: Value,
}

/// Asks the orchestrator; its refusal becomes `refused(message)` (or 429 when it is a
/// refusal for being over the key's quota of runs).
async fn ask(
    state: &AppState,
    command: Command,
    refused: impl FnOnce(String) -> AppError,
) -> Result<Value, AppError> {
    let result = state
        .bus()
        .call(ORCHESTRATOR_ROLE, command, ANSWER_WITHIN)
        .await?
        .ok_or_else(|| AppError::Unavailable("the orchestrator did not answer in time".into()))?;
    match (result.status, result.failure) {
        (Status::Completed, _) => Ok(result.envelope.data.value),
        (_, Some(failure)) if !failure.retryable && failure.errortype.as_str() == OVER_QUOTA => {
            Err(AppError::OverQuota(failure.error))
        }
        // Asked wrongly (a bad `part` or `after`), whatever the question.
        (_, Some(failure)) if !failure.retryable && failure.errortype == ErrorType::Malformed => {
            Err(AppError::Invalid(failure.error))
        }
        (_, Some(failure)) if !failure.retryable => Err(refused(failure.error)),
        _ => Err(AppError::Unavailable(
            "the orchestrator could not answer; try again".into(),
        )),
    }
}

/// The command asking `request` of the orchestrator for `caller`: limited to the caller's
/// workflows when it may not see every workflow (the orchestrator then answers a run of
/// another workflow as it answers a missing one: the same answer, in the same time, so ids
/// of other scopes stay unknown).
fn run_command(caller: &Caller, request: RunRequest) -> Command {
    let request = match &caller.workflows {
        Scope::Only(workflows) => request.scoped(workflows.iter().cloned().collect()),
        _ => request,
    };
    let mut command = request.to_command();
    command.envelope.source = SOURCE.into();
    // A question nobody waits for any more is skipped, not answered into the result
    // stream. (Not a start: its deadline would become the run's.)
    if !matches!(request, RunRequest::Start(_)) {
        command.deadline = Some(jiff::Timestamp::now() + ANSWER_WITHIN);
    }
    command
}

/// The run (or the part of it `query` names), if this caller may see it (404 otherwise).
async fn visible_run(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    query: &ShowQuery,
) -> Result<Value, AppError> {
    let not_found = |_| AppError::NotFound(format!("no run {id}"));
    let mut get = GetRun {
        run_id: id,
        workflows: None,
        part: None,
        offset: 0,
        limit: None,
    };
    if let Some(part) = &query.part {
        if part.len() > 300 {
            return Err(AppError::Invalid("part: longer than 300 bytes".into()));
        }
        get.part = Some(part.clone());
        let within = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        get.offset = within(query.offset.unwrap_or(0));
        get.limit = Some(within(query.limit.unwrap_or(100).clamp(1, 1000)));
    }
    ask(state, run_command(caller, RunRequest::Get(get)), not_found).await
}

/// Starts a run of a workflow: 201 with the run id and status. A repeated
/// `Idempotency-Key` (same body) answers the same way for the first request's run.
#[utoipa::path(
    post, path = "/v1/runs", tag = "runs", request_body = NewRun, operation_id = "start_run",
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key: a repeat with the same body answers for the first request's run"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context the run continues"),
        ("tracestate" = Option<String>, Header, description = "W3C trace state passed on with traceparent (an invalid one is dropped)")),
    responses((status = 201, body = RunStarted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, description = "Over the key's rate limit (see Retry-After) or its running runs", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn start(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    headers: HeaderMap,
    JsonBody(new, body): JsonBody<NewRun>,
) -> Result<(StatusCode, Json<RunStarted>), AppError> {
    if !caller.workflows.allows(&new.workflow) {
        return Err(AppError::Forbidden(format!(
            "this key may not start `{}`",
            new.workflow
        )));
    }
    let max_items = state.config().max_run_items;
    let items = array_items(&new.input);
    if items > max_items {
        return Err(AppError::Invalid(format!(
            "input: holds {items} array items, more than the {max_items} a run may fan out over"
        )));
    }
    let start = StartRun {
        workflow: new.workflow,
        input: new.input,
        owner: Some(caller.id.clone()),
        max_running: Some(caller.max_runs),
    };
    let mut command = run_command(&caller, RunRequest::Start(start));
    if let Some(trace) = traceparent(&headers)? {
        command.envelope.traceparent = trace;
        command.envelope.tracestate = tracestate(&headers);
    }
    if let Some(tenant) = &caller.tenant {
        command.set_tenant(tenant);
    }
    // In a task of its own: a client that goes away cannot leave its Idempotency-Key
    // claimed for a start that was never sent.
    let task = tokio::spawn(
        async move {
            let fresh = command.envelope.id.clone();
            let claim =
                idempotent(&state, &caller, "POST /v1/runs", &body, &headers, fresh).await?;
            // A repeat sends the same start again: the orchestrator starts a run once per id,
            // so it answers with the run the first request started, or starts it if that one
            // never got through, or refuses it as it refused the first.
            command.envelope.id = claim.id.clone();
            match ask(&state, command, AppError::Invalid).await {
                Ok(run) => serde_json::from_value::<RunStarted>(run)
                    .map_err(|e| AppError::Internal(anyhow::anyhow!("run.start answered {e}"))),
                // Refused, or never sent: a retry with the same key may try again. (After a
                // timeout the start may still happen, so the key keeps pointing at it.)
                Err(
                    e @ (AppError::Invalid(_) | AppError::OverQuota(_) | AppError::Internal(_)),
                ) => {
                    claim.release(&state).await;
                    Err(e)
                }
                Err(e) => Err(e),
            }
        }
        // The start is sent within the request's span.
        .in_current_span(),
    );
    let started = task
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("starting a run: {e}")))??;
    Ok((StatusCode::CREATED, Json(started)))
}

/// Which runs to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this status: `running`, `completed`, `failed`, `canceled`.
    pub status: Option<String>,
    /// At most this many, newest first (1 to 1000; default 20).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The `next` of the page before.
    #[param(max_length = 100)]
    pub after: Option<String>,
}

/// Which part of a run to show: without `part`, the run with every value over 64 KiB
/// left out (flagged `<field>_truncated`, with `<field>_bytes`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// `input`, `output` or `steps.<id>`: that value whole, or a list a page at a time
    /// (`items`, `offset`, `total`, `next`).
    #[param(max_length = 300)]
    pub part: Option<String>,
    /// A list part's first item (default 0).
    #[param(minimum = 0)]
    pub offset: Option<u64>,
    /// A list part's items per page (1 to 1000; default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

/// The most recent runs of the workflows this key may see.
#[utoipa::path(
    get, path = "/v1/runs", tag = "runs", operation_id = "list_runs", params(ListQuery),
    responses((status = 200, body = RunList), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    QueryOf(query): QueryOf<ListQuery>,
) -> Result<Json<RunList>, AppError> {
    if query.after.as_ref().is_some_and(|a| a.len() > 100) {
        return Err(AppError::Invalid("after: longer than 100 bytes".into()));
    }
    let list = ListRuns {
        status: query.status,
        limit: query.limit.map(|l| l.clamp(1, 1000)),
        workflows: None,
        after: query.after,
    };
    let runs = ask(
        &state,
        run_command(&caller, RunRequest::List(list)),
        AppError::Invalid,
    )
    .await?;
    serde_json::from_value(runs)
        .map(Json)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("run.list answered {e}")))
}

/// A run's status, input, output and steps (values over 64 KiB left out and flagged), or
/// one part of it, a page at a time.
#[utoipa::path(
    get, path = "/v1/runs/{id}", tag = "runs", operation_id = "show_run",
    params(("id" = Uuid, Path, description = "The run id"), ShowQuery),
    responses((status = 200, body = RunView), (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    IdPath(id): IdPath<Uuid>,
    QueryOf(query): QueryOf<ShowQuery>,
) -> Result<Json<RunView>, AppError> {
    Ok(Json(RunView {
        run: visible_run(&state, &caller, id, &query).await?,
    }))
}

/// The run's events (its transitions, and its commands' events with streamed text) as
/// server-sent events, ending with `mindbus.run.ended`. Resumable with `Last-Event-ID`.
#[utoipa::path(
    get, path = "/v1/runs/{id}/events", tag = "runs", operation_id = "run_events",
    params(("id" = Uuid, Path, description = "The run id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of the run's events", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    IdPath(id): IdPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let permits = sse::reserve(&state, &caller)?;
    let run = visible_run(&state, &caller, id, &ShowQuery::default()).await?;
    let ended = serde_json::from_value::<RunChange>(run)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("run.get answered {e}")))?
        .status
        != RunStatus::Running;
    // The run's own events, and those of its commands on every registered role in scope.
    let keys = state.bus().keys();
    let mut streams = vec![keys.events(ORCHESTRATOR_ROLE)];
    for role in state.bus().roles().await? {
        if role != ORCHESTRATOR_ROLE && caller.roles.allows(&role) {
            streams.push(keys.events(&role));
        }
    }
    sse::respond(
        &state,
        permits,
        &headers,
        Filter::Run(id, caller.roles.clone()),
        Sources {
            events: streams,
            reply: None,
        },
        ended,
    )
    .await
}

/// Cancels a run and its running commands (409 when it is already over).
#[utoipa::path(
    post, path = "/v1/runs/{id}/cancel", tag = "runs", operation_id = "cancel_run",
    params(("id" = Uuid, Path, description = "The run id")),
    responses((status = 200, body = RunView), (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    IdPath(id): IdPath<Uuid>,
) -> Result<Json<RunView>, AppError> {
    visible_run(&state, &caller, id, &ShowQuery::default()).await?;
    let cancel = RunRef {
        run_id: id,
        workflows: None,
    };
    let run = ask(
        &state,
        run_command(&caller, RunRequest::Cancel(cancel)),
        AppError::Conflict,
    )
    .await?;
    Ok(Json(RunView { run }))
}

/// Approves or rejects a run's approval step (409 when it is not waiting for one).
#[utoipa::path(
    post, path = "/v1/runs/{id}/approve", tag = "runs", request_body = Decision, operation_id = "approve_run",
    params(("id" = Uuid, Path, description = "The run id")),
    responses((status = 200, body = RunView), (status = 401, body = ErrorBody), (status = 429, description = "Over the key's rate limit; see Retry-After", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []), ("api_key_header" = []))
)]
pub async fn approve(
    State(state): State<AppState>,
    Authed(caller, ..): Authed,
    IdPath(id): IdPath<Uuid>,
    JsonBody(decision, _): JsonBody<Decision>,
) -> Result<Json<RunView>, AppError> {
    visible_run(&state, &caller, id, &ShowQuery::default()).await?;
    let approval = Approval {
        run_id: id,
        workflows: None,
        step: decision.step,
        approved: decision.approved,
    };
    let run = ask(
        &state,
        run_command(&caller, RunRequest::Approve(approval)),
        AppError::Conflict,
    )
    .await?;
    Ok(Json(RunView { run }))
}
