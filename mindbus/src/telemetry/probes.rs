//! The probes a process serves on a listener of its own, apart from any API: `/metrics` for
//! Prometheus, `/healthz` (the process runs) and `/readyz` (what it depends on answers).
//!
//! Off unless an address is given (`--metrics-listen`, `MINDBUS_METRICS_LISTEN`): agents
//! are scaled by starting more processes, and a fixed default port would let only the first
//! on a host start. `compose.yaml` turns it on.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::metrics;
use crate::serve::{Limits, serve};

/// Whether what a process depends on answers; the error says what does not.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Makes a [`Check`] of an async function.
pub fn check<F, Fut>(f: F) -> Check
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// The listener's flag, for the processes that have no config section of their own for it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProbeArgs {
    /// Serve /metrics, /healthz and /readyz here (host:port, as 0.0.0.0:9464); off when unset.
    #[arg(long, env = "MINDBUS_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

impl ProbeArgs {
    /// Starts serving the probes when an address is set.
    pub async fn start(
        &self,
        service: &'static str,
        ready: Check,
        stop: CancellationToken,
    ) -> std::io::Result<Option<JoinHandle<()>>> {
        match self.metrics_listen.as_deref().filter(|a| !a.is_empty()) {
            Some(listen) => start(listen, service, ready, stop).await.map(Some),
            None => Ok(None),
        }
    }
}

/// How often histograms' recent samples are folded in when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the metrics recorder, binds `listen` and serves the probes of `service` until
/// `stop` fires.
pub async fn start(
    listen: &str,
    service: &'static str,
    ready: Check,
    stop: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    let handle = metrics::recorder(service);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the metrics listener {listen}: {e}"),
        )
    })?;
    tracing::info!(address = %listener.local_addr()?, "metrics listening");
    // Plenty for scrapers and probes; a client holding connections open cannot take them
    // all for long (header timeout).
    let limits = Limits {
        connections: 64,
        header_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(30),
    };
    let upkeep = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = upkeep.cancelled() => break,
                () = tokio::time::sleep(UPKEEP) => handle.run_upkeep(),
            }
        }
    });
    Ok(tokio::spawn(serve(
        listener,
        router(service, ready),
        limits,
        stop,
    )))
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn router(service: &'static str, ready: Check) -> Router {
    let ready = Readiness {
        check: ready,
        last: Arc::default(),
    };
    Router::new()
        .route("/metrics", get(move || render(service)))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ready)
}

/// How long an answer of `/readyz` is reused: however often probes come, the process's
/// dependencies are asked at most this often (they share pools with the work).
const READY_FOR: Duration = Duration::from_secs(1);

/// The check, and its last answer with when it was given.
#[derive(Clone)]
struct Readiness {
    check: Check,
    last: Arc<tokio::sync::Mutex<Option<Answered>>>,
}

/// A check's answer and when it was given.
type Answered = (Instant, Result<(), String>);

async fn render(service: &'static str) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::recorder(service).render(),
    )
}

/// 200 when every dependency answers, else 503 saying which does not. One check runs at a
/// time; probes meanwhile wait for its answer.
async fn readyz(State(ready): State<Readiness>) -> (StatusCode, String) {
    let mut last = ready.last.lock().await;
    let answer = match &*last {
        Some((at, answer)) if at.elapsed() < READY_FOR => answer.clone(),
        _ => {
            let answer = tokio::time::timeout(Duration::from_secs(5), (ready.check)())
                .await
                .unwrap_or_else(|_| Err("a dependency did not answer within 5 s".into()));
            *last = Some((Instant::now(), answer.clone()));
            answer
        }
    };
    match answer {
        Ok(()) => (StatusCode::OK, "ready".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// A [`Check`] that Redis answers: a `PING` on a connection of its own, made on the first
/// probe (a process starts serving its probes before Redis is up).
pub fn redis_ready(redis: crate::streams::Redis) -> Check {
    let conn = Arc::new(tokio::sync::OnceCell::new());
    check(move || {
        let (redis, conn) = (redis.clone(), Arc::clone(&conn));
        async move {
            let mut conn = conn
                .get_or_try_init(|| redis.shared())
                .await
                .map_err(|e| format!("redis does not answer: {e}"))?
                .clone();
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| format!("redis does not answer: {e}"))
        }
    })
}

/// A [`Check`] that both `a` and `b` pass.
pub fn both(a: Check, b: Check) -> Check {
    check(move || {
        let (a, b) = (a(), b());
        async move {
            a.await?;
            b.await
        }
    })
}
