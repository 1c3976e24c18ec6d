//! The MindBus HTTP gateway: a thin, safe front door that turns requests into commands and
//! workflow runs, and streams their events back as server-sent events.
//!
//! # Layout
//! - [`routes`]: the handlers (`commands`, `runs`, `ops`).
//! - [`config`]: the gateway's section of the config file.
//! - [`auth`]: API keys (hashed, scoped, rate-limited per key).
//! - `body`: JSON bodies with size and depth limits, errors naming the field.
//! - `mesh`: the registry of roles and a short-lived overview of the streams.
//! - `sse`: server-sent events from the roles' event streams, resumable by `Last-Event-ID`.
//! - [`error`]: one error type, one HTTP answer per variant.
//! - [`openapi`]: the generated OpenAPI document.
//!
//! # Invariant
//! The gateway is stateless: everything it knows is in Redis (commands, results, events,
//! idempotency keys) or behind the orchestrator, so gateways side by side are
//! interchangeable, and a client never sets a field only the system may set.

pub mod auth;
mod body;
pub mod config;
pub mod error;
mod extract;
mod mesh;
pub mod openapi;
pub mod routes;

mod sse;
mod state;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mindbus::config::Config;
use mindbus::serve;
use mindbus::telemetry::metrics as names;
use mindbus::telemetry::probes::{self, ProbeArgs};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, OnResponse as _, TraceLayer};

pub use state::AppState;

use config::GatewayConfig;
use error::AppError;
use routes::{commands, ops, runs};

/// The whole API over `state`; tests call it without a socket.
pub fn app(state: AppState) -> Router {
    let config = state.config();
    // Longer than the longest wait a request may ask for, and than two orchestrator answers.
    let timeout = Duration::from_millis(config.max_wait_ms).max(Duration::from_secs(20))
        + Duration::from_secs(15);
    Router::new()
        .route("/v1/roles/{role}/commands", post(commands::publish))
        .route("/v1/commands/{id}", get(commands::show))
        .route("/v1/commands/{id}/events", get(commands::events))
        .route("/v1/runs", post(runs::start).get(runs::list))
        .route("/v1/runs/{id}", get(runs::show))
        .route("/v1/runs/{id}/events", get(runs::events))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/runs/{id}/approve", post(runs::approve))
        .route("/v1/roles", get(ops::roles))
        .route("/v1/streams", get(ops::streams))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(timeout, deadline))
        .layer(CatchPanicLayer::custom(|_| {
            AppError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
        }))
        // Outside the deadline and the panic catcher: their answers are counted too.
        .layer(middleware::from_fn(record))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(http_span)
                .on_response(record_status),
        )
        .with_state(state)
}

/// A server span for each request, after OpenTelemetry's conventions for HTTP, a child of
/// the request's `traceparent` when it has a valid one; when no traces are exported, the
/// debug span request logs show.
fn http_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    // Probes every few seconds would each be a trace of their own.
    if !mindbus::telemetry::tracing_on() || matches!(route, "/healthz" | "/readyz") {
        return tracing::debug_span!("request", method = %request.method(), route);
    }
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Ok(Some(parent)) = commands::traceparent(request.headers()) {
        let state = commands::tracestate(request.headers());
        mindbus::telemetry::spans::continues(&span, &parent, state.as_deref());
    }
    span
}

fn record_status(response: &Response, latency: Duration, span: &tracing::Span) {
    DefaultOnResponse::default().on_response(response, latency, span);
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Answers 503 (in the usual error body) when a request takes longer than `limit`.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            AppError::Unavailable("the request took too long; try again".into()).into_response()
        }
    }
}

/// Counts requests by method, route and status, and times them. Every label comes from a
/// fixed set, whatever a client sends: a method MindBus does not serve is `other`, and a
/// path no route matches is `unmatched`.
async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method: &'static str = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::GATEWAY_REQUESTS, "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!(names::GATEWAY_REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves the API on `gateway.listen`, and the metrics and probes on
/// `gateway.metrics_listen` (unless empty), until `shutdown` fires.
pub async fn run(
    config: &Config,
    gateway: &GatewayConfig,
    admin_key: Option<&str>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState::new(config, gateway.clone(), admin_key, shutdown.clone()).await?;
    let limits = serve::Limits {
        connections: gateway.max_connections,
        header_timeout: Duration::from_millis(gateway.header_timeout_ms),
        write_timeout: Duration::from_millis(gateway.write_timeout_ms),
    };
    let listener = tokio::net::TcpListener::bind(&gateway.listen)
        .await
        .with_context(|| format!("binding gateway.listen {}", gateway.listen))?;
    tracing::info!(address = %listener.local_addr()?, "gateway listening");
    let probes = ProbeArgs {
        metrics_listen: Some(gateway.metrics_listen.clone()),
    };
    let ready = probes::redis_ready(state.bus().redis().clone());
    let probes = probes
        .start("mindbus-gateway", ready, shutdown.clone())
        .await
        .context("serving gateway.metrics_listen")?;
    serve::serve(listener, app(state), limits, shutdown).await;
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    Ok(())
}
