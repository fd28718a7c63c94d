//! The ingest role: `POST /v1/readings` → validation per reading → durable on the bus → acknowledgement.
//!
//! Map of the crate:
//! - [`IngestSettings`] — body limit, timestamp window, default tenant.
//! - [`router`] — the HTTP routes; [`serve`] runs them on a bound listener until shutdown.
//! - `handler` — reading the body within its limit, splitting, validating, publishing, answering.
//!
//! A reading is acknowledged (counted in `accepted`) only after the bus reported it durable. When the bus
//! fails, the request fails with 503 and nothing in it is acknowledged; retrying is safe because the store
//! counts each identity once.

use std::future::Future;
use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use reporting_bus::Publisher;
use reporting_core::clock::Clock;
use reporting_core::validate::Limits;
use tokio::net::TcpListener;

mod handler;

/// Settings of the ingest role.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Largest accepted request body in bytes; larger ones are refused whole with 413.
    pub max_body_bytes: usize,
    /// Timestamp window and name limits for each reading.
    pub limits: Limits,
    /// Tenant of readings that name none.
    pub default_tenant: String,
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct IngestState {
    /// Settings.
    pub settings: Arc<IngestSettings>,
    /// Where readings become durable.
    pub publisher: Arc<dyn Publisher>,
    /// Source of "now" for the timestamp window.
    pub clock: Arc<dyn Clock>,
}

/// The ingest routes.
pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/readings", post(handler::post_readings))
        .with_state(state)
        .layer(axum::middleware::from_fn(|req, next| {
            reporting_observe::admin::count_requests("ingest", req, next)
        }))
}

/// Serves the ingest routes on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: IngestState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    preregister_metrics();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Registers the ingest counters at zero for every known reason, so dashboards and alerts see the series
/// before the first rejection.
fn preregister_metrics() {
    use reporting_observe::names;
    metrics::counter!(names::INGEST_ACCEPTED).increment(0);
    for reason in reporting_core::validate::RejectReason::ALL {
        metrics::counter!(names::INGEST_REJECTED, "reason" => reason.as_str()).increment(0);
    }
    for reason in [
        "body_too_large",
        "invalid_body",
        "unsupported_media_type",
        "bus_unavailable",
    ] {
        metrics::counter!(names::INGEST_REQUESTS_REJECTED, "reason" => reason).increment(0);
    }
}
