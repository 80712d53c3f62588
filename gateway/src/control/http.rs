//! The control listener's HTTP server and routes: `POST /v1/register`, `GET /v1/attestation`, and typed errors
//! for everything else (unknown path, wrong method, oversized or mistyped body, too many requests).
//!
//! [`serve`] speaks HTTP/1.1 (agents need nothing else) on each connection of a [`TlsListener`], with a
//! header-read timeout: a request's head must arrive whole within it, and so must the next request's on a
//! kept-alive connection, so a client that trickles a request line or headers (slowloris) or sits on an idle
//! connection is cut off. The body has `request_timeout` ([`ControlState`]), and a connection on which nothing
//! moves at all ends at the listener's idle timeout. Each connection is served by a task the server owns; on
//! shutdown it stops accepting, lets every connection finish the request it is serving, and returns when all
//! have closed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::control::{ErrorBody, ErrorCode, ATTESTATION_PATH, REGISTER_PATH};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::listener::TlsListener;
use super::peer::ControlPeer;
use super::rate::RateLimiter;
use super::service::ControlService;

/// Serves `app` on every connection `listener` yields until `stop` is cancelled, then waits for the open
/// connections to finish (see the module documentation). Each request carries its connection's
/// [`ControlPeer`] as axum's `ConnectInfo`.
pub async fn serve(
    mut listener: TlsListener,
    app: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut connections = JoinSet::new();
    loop {
        let (io, peer) = tokio::select! {
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = stop.cancelled() => break,
        };
        let remote = peer.remote;
        let service =
            TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        let connection = http.serve_connection(TokioIo::new(io), service);
        let stop = stop.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%remote, error = %e, "control connection ended");
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Everything the routes need.
#[derive(Clone)]
pub struct ControlState {
    /// The registration service.
    pub service: ControlService,
    /// Per-source rate limits.
    pub limiter: Arc<RateLimiter>,
    /// Largest accepted body, in bytes.
    pub max_body_bytes: usize,
    /// Time allowed to receive a body and answer.
    pub request_timeout: Duration,
    /// Produces the gateway's attestation document served on `GET /v1/attestation`.
    pub attestation: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

impl std::fmt::Debug for ControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlState")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// An error answer: the typed body with its HTTP status.
#[derive(Debug)]
pub struct ErrorResponse(pub ErrorBody, pub Option<Duration>);

impl From<ErrorBody> for ErrorResponse {
    fn from(body: ErrorBody) -> Self {
        Self(body, None)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.0)).into_response();
        if let Some(wait) = self.1 {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// The routes of the control listener.
pub fn router(state: ControlState) -> Router {
    Router::new()
        .route(REGISTER_PATH, post(register).fallback(method_not_allowed))
        .route(
            ATTESTATION_PATH,
            get(attestation).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(state)
}

fn rate_check(state: &ControlState, peer: &ControlPeer) -> Result<(), ErrorResponse> {
    state
        .limiter
        .check(peer.remote.ip(), Instant::now())
        .map_err(|wait| {
            tracing::info!(remote = %peer.remote, "control request rate limited");
            ErrorResponse(
                ErrorBody::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many requests from {}; retry in {} ms",
                        peer.remote.ip(),
                        wait.as_millis().max(1)
                    ),
                ),
                Some(wait),
            )
        })
}

fn too_large(max: usize) -> ErrorResponse {
    ErrorBody::new(
        ErrorCode::BodyTooLarge,
        format!("request body exceeds the limit of {max} bytes"),
    )
    .into()
}

async fn read_body(body: Body, max: usize) -> Result<Bytes, ErrorResponse> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ErrorResponse::from(ErrorBody::new(
                ErrorCode::MalformedRequest,
                format!("cannot read request body: {e}"),
            ))
        })?;
        if buf.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

async fn register(
    State(state): State<ControlState>,
    ConnectInfo(peer): ConnectInfo<ControlPeer>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ErrorResponse> {
    rate_check(&state, &peer)?;
    let max = state.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large(max));
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/json")
    {
        return Err(ErrorBody::new(
            ErrorCode::UnsupportedMediaType,
            format!("request body must be application/json, not {content_type:?}"),
        )
        .into());
    }
    let bytes = tokio::time::timeout(state.request_timeout, read_body(body, max))
        .await
        .map_err(|_| {
            ErrorResponse::from(ErrorBody::new(
                ErrorCode::MalformedRequest,
                "request body not received in time",
            ))
        })??;
    let service = state.service.clone();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let remote = peer.remote;
    let result = tokio::task::spawn_blocking(move || {
        service.register(&bytes, peer.attestation.as_deref(), now)
    })
    .await;
    match result {
        Ok(Ok(answer)) => Ok(Json(answer).into_response()),
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "registration refused");
            Err(e.into())
        }
        Err(e) => {
            tracing::error!(error = %e, "registration task failed");
            Err(ErrorBody::new(
                ErrorCode::Internal,
                "registration failed inside the gateway; retry later",
            )
            .into())
        }
    }
}

async fn attestation(
    State(state): State<ControlState>,
    ConnectInfo(peer): ConnectInfo<ControlPeer>,
) -> Result<Response, ErrorResponse> {
    rate_check(&state, &peer)?;
    Ok(Json((state.attestation)()).into_response())
}

async fn not_found() -> ErrorResponse {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!("no such endpoint; the control listener serves POST {REGISTER_PATH} and GET {ATTESTATION_PATH}"),
    )
    .into()
}

async fn method_not_allowed() -> ErrorResponse {
    ErrorBody::new(
        ErrorCode::MethodNotAllowed,
        format!("method not allowed; use POST {REGISTER_PATH} or GET {ATTESTATION_PATH}"),
    )
    .into()
}
