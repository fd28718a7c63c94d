//! The reports API: series per bucket (JSON or CSV), devices and metrics.
//!
//! Map of the crate:
//! - [`router`] / [`serve`] — the routes on a bound listener.
//! - `query` — parsing and checking the query string (every problem named in a 400).
//! - `series` — `GET /v1/series` and its JSON and CSV bodies.

use std::future::Future;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use reporting_store::Store;
use tokio::net::TcpListener;

mod query;
mod series;

/// Settings of the API role.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Tenant used when a request names none.
    pub default_tenant: String,
    /// Most buckets one series request may return.
    pub max_buckets: usize,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Settings.
    pub settings: Arc<ApiSettings>,
    /// Where the rollups are.
    pub store: Arc<dyn Store>,
}

/// The API routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/series", get(series::get_series))
        .route("/v1/devices", get(series::get_devices))
        .route("/v1/metrics", get(series::get_metrics))
        .with_state(state)
        .layer(axum::middleware::from_fn(|req, next| {
            reporting_observe::admin::count_requests("api", req, next)
        }))
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error answer: `{"error": code, "message": …}`.
pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message.into() })),
    )
        .into_response()
}

pub(crate) fn store_failed(e: &reporting_store::StoreError) -> Response {
    tracing::error!(error = e as &dyn std::error::Error, "store query failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the store could not answer; retry later",
    )
}
