//! The admin endpoints every role serves on its admin port, and the request counter middleware.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde_json::json;

use crate::{metrics_handle, names};

/// A named readiness check (e.g. "store", "bus").
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What `/readyz` asks: the process must not be draining and every gating check must pass. Dependencies
/// (bus, store) are reported but do not gate: a pod whose Kafka or PostgreSQL is down keeps answering with a
/// clear 503 instead of vanishing from its Service, and the outage shows in the metrics and alerts.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check, bool)>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    /// Adds a check that must pass for the process to be ready.
    pub fn with_check(mut self, name: &'static str, check: Check) -> Self {
        self.checks.push((name, check, true));
        self
    }

    /// Adds a dependency check that is reported in `/readyz` but does not make the process unready.
    pub fn with_dependency(mut self, name: &'static str, check: Check) -> Self {
        self.checks.push((name, check, false));
        self
    }

    /// Marks the process as draining: `/readyz` answers 503 from now on so load balancers stop sending work.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    async fn report(&self) -> (bool, serde_json::Value) {
        let mut ok = !self.draining.load(Ordering::SeqCst);
        let mut results = serde_json::Map::new();
        for (name, check, gating) in &self.checks {
            let outcome = match tokio::time::timeout(Duration::from_secs(2), check()).await {
                Ok(Ok(())) => "ok".to_string(),
                Ok(Err(e)) => e,
                Err(_) => "timed out after 2 s".to_string(),
            };
            if *gating {
                ok &= outcome == "ok";
            }
            results.insert((*name).to_string(), outcome.into());
        }
        if self.draining.load(Ordering::SeqCst) {
            results.insert("draining".into(), true.into());
        }
        (ok, json!({ "ready": ok, "checks": results }))
    }
}

/// `/healthz` (process alive), `/readyz` (checks) and `/metrics` (Prometheus text).
pub fn router(readiness: Readiness) -> Router {
    let handle = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(r): State<Readiness>| async move {
                let (ok, body) = r.report().await;
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, Json(body))
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    handle.run_upkeep();
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
        .with_state(readiness)
}

/// Middleware counting requests by role, matched route and status.
pub async fn count_requests(role: &'static str, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    metrics::counter!(names::HTTP_REQUESTS, "role" => role, "route" => route, "status" => response.status().as_u16().to_string())
        .increment(1);
    response.into_response()
}
