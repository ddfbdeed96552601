//! The admin HTTP server: `GET /metrics` (Prometheus text), `GET /live`, `GET /ready`.
//!
//! Whoever reaches the port gets at most [`MAX_CONNECTIONS`] connections (the
//! next ones wait in the listen backlog) and [`HEADER_READ_TIMEOUT`] to send a
//! request's headers: a slow or idle client cannot pin the process's sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::observe::metrics;
use crate::observe::readiness::{NotReady, Readiness};

/// Connections served at once; a scrape and a few probes need a handful.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send a request's headers (and an idle
/// keep-alive connection to send the next one).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

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
    let listener = TcpListener::bind(listen).await.map_err(|source| ListenError { listen, source })?;
    tracing::info!(%listen, "admin server listening");
    Ok(tokio::spawn(serve_on(listener, readiness, shutdown)))
}

async fn serve_on(listener: TcpListener, readiness: Readiness, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render()) }))
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(move || async move { ready(&readiness) }));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => return,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "admin server cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn server() -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve_on(listener, Readiness::new(1), stop.clone()));
        (addr, stop)
    }

    async fn live(stream: &mut TcpStream) -> String {
        stream.write_all(b"GET /live HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let (addr, stop) = server().await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /live HTTP/1.1\r\nx-slow: ").await.unwrap();
        // Time is the feature: closed after HEADER_READ_TIMEOUT (5 s), with a margin for a busy machine.
        let mut buf = Vec::new();
        let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 4, slow.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection is still open after {:?}", HEADER_READ_TIMEOUT * 4);
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_free_one() {
        let (addr, stop) = server().await;
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET /live HTTP/1.1\r\n").await.unwrap();
            held.push(stream);
        }
        let mut late = TcpStream::connect(addr).await.unwrap();
        let answer = tokio::spawn(async move { live(&mut late).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!answer.is_finished(), "answered while {MAX_CONNECTIONS} connections were open");
        drop(held);
        let answer = tokio::time::timeout(Duration::from_secs(10), answer).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        stop.cancel();
    }
}
