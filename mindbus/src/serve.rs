//! The HTTP connection loop of every MindBus listener: what `axum::serve` does, plus the limits a server facing the network
//! needs. A client that trickles its headers, opens a connection and sends nothing, or
//! keeps one alive without a next request, is cut off after `header_timeout_ms`; a
//! connection past `max_connections` is closed as soon as it is accepted, so no client can
//! take every file descriptor; a client that takes no bytes of a response for
//! `write_timeout_ms` (one that stopped reading an event stream) is cut off.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long connections may go on after `shutdown` before they are dropped.
const DRAIN: Duration = Duration::from_secs(10);

/// What one listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// To send a request's headers, or start the next request on a kept-alive connection.
    pub header_timeout: Duration,
    /// To take the next bytes of a response.
    pub write_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` fires, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let header_timeout = limits.header_timeout;
    let slots = Arc::new(Semaphore::new(
        limits.connections.min(Semaphore::MAX_PERMITS),
    ));
    let connections = TaskTracker::new();
    // HTTP/1.1 only: HTTP/2 has no header timeout, so an idle HTTP/2 connection would hold
    // its slot for ever (a TLS-terminating proxy in front speaks HTTP/2 to clients).
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!(crate::telemetry::metrics::HTTP_CONNECTIONS_REFUSED).increment(1);
            continue;
        };
        let (builder, app, shutdown) = (Arc::clone(&builder), app.clone(), shutdown.clone());
        connections.spawn(async move {
            // Nothing in time: closed (hyper's header timeout runs only once bytes come).
            let mut byte = [0u8; 1];
            let first = tokio::time::timeout(header_timeout, stream.peek(&mut byte)).await;
            if !matches!(first, Ok(Ok(1..))) {
                return drop(slot);
            }
            let mut stream = TimeoutStream::new(stream);
            stream.set_write_timeout(Some(limits.write_timeout));
            let service = TowerToHyperService::new(app);
            let io = TokioIo::new(Box::pin(stream));
            let mut connection = pin!(builder.serve_connection_with_upgrades(io, service));
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, connection).await;
                }
            }
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
}
