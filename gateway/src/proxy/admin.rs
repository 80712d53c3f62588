//! The admin listener: a separate HTTP address for operators, every request authenticated with a bearer
//! token (it refuses to start without one).
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/apps` | apps with their instances, health, drain state and live connection counts |
//! | `GET /v1/instances` | every instance, the same fields |
//! | `POST /v1/instances/{id}/drain` | stop sending new connections to the instance |
//! | `POST /v1/instances/{id}/undrain` | send new connections to it again |
//! | `PUT /v1/apps/{id}/policy` | the app owner's signed policy (body: the JSON document from `gateway app sign-policy`); kept if newer than the one in force |
//! | `POST /v1/certificates/reload` | reload the TLS certificates now |
//! | `GET /metrics` | Prometheus text format |
//!
//! Errors are JSON objects `{"error": "..."}` with a reason a person can act on.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::server::Proxy;

/// Why the admin listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No bearer token is configured.
    #[error(
        "the admin listener needs a bearer token (proxy.admin.token or proxy.admin.token_file)"
    )]
    NoToken,
    /// The token is too short to resist guessing.
    #[error("the admin bearer token must be at least 16 characters")]
    WeakToken,
    /// Serving failed.
    #[error("admin listener: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AdminState {
    proxy: Arc<Proxy>,
    token: Arc<str>,
}

/// One instance as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct InstanceStatus {
    /// The instance id.
    pub instance_id: String,
    /// Its app.
    pub app_id: String,
    /// Its tunnel address.
    pub address: std::net::IpAddr,
    /// Exposed ports; `true` when the port gets a PROXY protocol header.
    pub ports: BTreeMap<u16, bool>,
    /// Handshake within the health window.
    pub healthy: bool,
    /// Drained by an operator.
    pub drained: bool,
    /// Seconds since the last tunnel handshake.
    pub since_handshake_secs: Option<u64>,
    /// Open client connections relayed to it.
    pub connections: usize,
}

/// One app as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct AppStatus {
    /// The app id.
    pub app_id: String,
    /// Open client connections.
    pub connections: usize,
    /// The per-app limit.
    pub max_connections: usize,
    /// Its instances.
    pub instances: Vec<InstanceStatus>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(
    State(state): State<AdminState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if constant_time_eq(t.trim().as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => error(StatusCode::UNAUTHORIZED, "bearer token not accepted"),
        None => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing Authorization: Bearer <token>",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

fn instance_statuses(proxy: &Proxy) -> Vec<InstanceStatus> {
    let per_instance = proxy.connections().per_instance();
    let health: BTreeMap<String, (bool, bool)> = proxy
        .instance_health()
        .into_iter()
        .map(|h| (h.instance_id, (h.healthy, h.drained)))
        .collect();
    proxy
        .directory()
        .instances()
        .into_iter()
        .map(|i| {
            let (healthy, drained) = health.get(&i.instance_id).copied().unwrap_or_default();
            InstanceStatus {
                connections: per_instance.get(&i.instance_id).copied().unwrap_or(0),
                healthy,
                drained,
                instance_id: i.instance_id,
                app_id: i.app_id,
                address: i.address,
                ports: i.ports,
                since_handshake_secs: i.since_handshake_secs,
            }
        })
        .collect()
}

async fn apps(State(state): State<AdminState>) -> Json<Vec<AppStatus>> {
    let per_app = state.proxy.connections().per_app();
    let mut apps: BTreeMap<String, AppStatus> = BTreeMap::new();
    for i in instance_statuses(&state.proxy) {
        apps.entry(i.app_id.clone())
            .or_insert_with(|| AppStatus {
                app_id: i.app_id.clone(),
                connections: per_app.get(&i.app_id).copied().unwrap_or(0),
                max_connections: state.proxy.connections().max_per_app(),
                instances: Vec::new(),
            })
            .instances
            .push(i);
    }
    Json(apps.into_values().collect())
}

async fn instances(State(state): State<AdminState>) -> Json<Vec<InstanceStatus>> {
    Json(instance_statuses(&state.proxy))
}

fn known_instance(proxy: &Proxy, id: &str) -> bool {
    proxy
        .directory()
        .instances()
        .iter()
        .any(|i| i.instance_id == id)
}

fn drain_store_failed(id: &str, e: super::limits::DrainStoreError) -> Response {
    tracing::error!(instance = %id, error = %e, "drain state not stored; unchanged");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{e}; the drain state is unchanged"),
    )
}

/// Drains (`drained`) or undrains instance `id`. The drain state is written to the registry's database before it
/// takes effect, on the blocking pool, so a slow disk never holds up an async worker.
async fn set_drained(state: AdminState, id: String, drained: bool) -> Response {
    let id = id.to_ascii_lowercase();
    let known =
        known_instance(&state.proxy, &id) || (!drained && state.proxy.drains().is_drained(&id));
    if !known {
        return error(StatusCode::NOT_FOUND, format!("no instance with id {id}"));
    }
    let (proxy, instance) = (state.proxy.clone(), id.clone());
    let changed = tokio::task::spawn_blocking(move || {
        if drained {
            proxy.drains().drain(&instance)
        } else {
            proxy.drains().undrain(&instance)
        }
    })
    .await;
    let changed = match changed {
        Ok(Ok(changed)) => changed,
        Ok(Err(e)) => return drain_store_failed(&id, e),
        Err(e) => {
            tracing::error!(instance = %id, error = %e, "the drain task failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("changing the drain state failed: {e}"),
            );
        }
    };
    if drained {
        tracing::info!(instance = %id, changed, "instance drained");
    } else {
        tracing::info!(instance = %id, changed, "instance undrained");
    }
    Json(serde_json::json!({ "instance_id": id, "drained": drained, "changed": changed }))
        .into_response()
}

async fn drain(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    set_drained(state, id, true).await
}

async fn undrain(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    set_drained(state, id, false).await
}

/// Hands an app owner's signed policy to the registry, on the blocking pool (it writes to the database). An old
/// or identical version changes nothing and is answered `installed: false`; the operator's token lets them deliver
/// a policy, never make one (only the owner's key signs).
async fn put_app_policy(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let id = id.to_ascii_lowercase();
    if let Err(e) = id.parse::<protocol::control::AppId>() {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let Some(intake) = state.proxy.app_policies().get().cloned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway takes no app policies",
        );
    };
    let app = id.clone();
    let offered = tokio::task::spawn_blocking(move || intake.offer(&app, &body)).await;
    use super::app_policy::PolicyRejected;
    match offered {
        Ok(Ok(accepted)) => {
            tracing::info!(app = %id, version = accepted.version, installed = accepted.installed,
                "app policy offered through the admin API");
            Json(serde_json::json!({
                "app_id": id,
                "version": accepted.version,
                "installed": accepted.installed,
            }))
            .into_response()
        }
        Ok(Err(PolicyRejected::Invalid(why))) => error(StatusCode::UNPROCESSABLE_ENTITY, why),
        Ok(Err(PolicyRejected::Conflict(why))) => error(StatusCode::CONFLICT, why),
        Ok(Err(PolicyRejected::Internal(why))) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
        Err(e) => {
            tracing::error!(app = %id, error = %e, "the app policy task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the app policy task failed: {e}"),
            )
        }
    }
}

async fn reload_certificates(State(state): State<AdminState>) -> Response {
    match state.proxy.certificates().reload() {
        Ok(()) => {
            let names = state.proxy.certificates().names();
            tracing::info!(?names, "certificates reloaded by admin request");
            Json(serde_json::json!({ "reloaded": true, "names": names })).into_response()
        }
        Err(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload failed, the previous certificates stay in use: {e}"),
        ),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.proxy.render_metrics(),
    )
        .into_response()
}

/// The admin routes, every one behind the bearer token.
pub fn router(proxy: Arc<Proxy>, token: &str) -> Result<Router, AdminError> {
    if token.is_empty() {
        return Err(AdminError::NoToken);
    }
    if token.len() < 16 {
        return Err(AdminError::WeakToken);
    }
    let state = AdminState {
        proxy,
        token: Arc::from(token),
    };
    Ok(Router::new()
        .route("/v1/apps", get(apps))
        .route("/v1/instances", get(instances))
        .route("/v1/instances/{id}/drain", post(drain))
        .route("/v1/instances/{id}/undrain", post(undrain))
        .route("/v1/apps/{id}/policy", put(put_app_policy))
        .route("/v1/certificates/reload", post(reload_certificates))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state))
}

/// Serves the admin API on `listener` until `shutdown` is cancelled. `token` of `None` refuses to start.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    token: Option<String>,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let token = token.ok_or(AdminError::NoToken)?;
    serve_router(listener, router(proxy, &token)?, shutdown).await
}

/// Serves `app` (from [`router`]) on `listener` until `shutdown` is cancelled.
pub(crate) async fn serve_router(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
