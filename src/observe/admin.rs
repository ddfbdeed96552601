//! The admin HTTP server: `GET /metrics` (Prometheus text), `GET /live`, `GET /ready`.

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::observe::metrics;
use crate::observe::readiness::{NotReady, Readiness};

/// The admin address cannot be bound (in use, say).
#[derive(Debug, thiserror::Error)]
#[error("admin server cannot listen on {listen}: {source}")]
pub struct ListenError {
    listen: SocketAddr,
    source: std::io::Error,
}

/// Binds `listen` (failing fast if it cannot) and serves until `shutdown` fires.
pub async fn serve(
    listen: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ListenError> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|source| ListenError { listen, source })?;
    tracing::info!(%listen, "admin server listening");
    let app = Router::new()
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render()) }))
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(move || async move { ready(&readiness) }));
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
        if let Err(error) = served {
            tracing::error!(%error, "admin server failed");
        }
    }))
}

fn ready(readiness: &Readiness) -> impl IntoResponse {
    match readiness.check(std::time::Instant::now()) {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(NotReady::Joining) => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting to join the consumer group".to_string())
        }
        Err(NotReady::Draining) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: shutting down".to_string()),
        Err(NotReady::Registry) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the endpoint registry is not read to its end (or older than registry.max_lag)".to_string(),
        ),
        Err(NotReady::Held(for_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: a route has been held by a failing produce for {}s", for_.as_secs()),
        ),
    }
}
