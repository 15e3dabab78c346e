//! The metrics HTTP server (hyper, HTTP/1.1): `GET /metrics` (or `/`), the
//! Prometheus text; `GET /status`, the [`Status`](super::Status) as JSON;
//! `GET /health`, 200 when the proxy is ready and 503 when not.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are
//! closed at once and counted in `anytun_http_refused_total`), one request
//! per connection, headers within 2 s and the whole exchange within 10 s.

use super::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time allowed for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for a whole connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `metrics` on `listener` until the task is aborted. Accept errors
/// (e.g. out of file descriptors) are logged and retried after a pause.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            metrics.count_http_refused();
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(answer(&metrics, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                // One request per connection: scrapes are seconds apart,
                // and no idle connection holds a slot.
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                log::debug!("metrics: connection ended: {e}");
            }
            drop(permit);
        });
    }
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// The answer to one request.
fn answer(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" | "/" => reply(StatusCode::OK, PROMETHEUS_TEXT, metrics.render()),
        "/status" => match serde_json::to_string(&metrics.status()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/health" if metrics.is_ready() => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/health" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /status or /health\n".into(),
        ),
    }
}
