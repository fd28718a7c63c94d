//! What every role shows operators: metrics, logs and the admin endpoints.
//!
//! Map of the crate:
//! - [`names`] — every Prometheus metric name, defined once.
//! - [`metrics_handle`] — the process-wide Prometheus recorder (installed on first use).
//! - [`logging`] — flat JSON log lines that survive fluent-bit → GELF → Graylog, or human-readable text.
//! - [`admin`] — `/healthz`, `/readyz` and `/metrics`, plus the HTTP request counter middleware.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub mod admin;
pub mod logging;

/// Metric names (Prometheus conventions: `_total` counters, `_seconds` durations).
pub mod names {
    /// Readings accepted by ingest (durable on the bus).
    pub const INGEST_ACCEPTED: &str = "reporting_ingest_readings_accepted_total";
    /// Readings rejected by ingest, label `reason`.
    pub const INGEST_REJECTED: &str = "reporting_ingest_readings_rejected_total";
    /// Whole requests refused by ingest, label `reason`.
    pub const INGEST_REQUESTS_REJECTED: &str = "reporting_ingest_requests_rejected_total";
    /// Time to make a request's records durable on the bus.
    pub const BUS_PUBLISH_SECONDS: &str = "reporting_bus_publish_seconds";
    /// Records not yet applied per partition, label `partition`.
    pub const CONSUMER_LAG: &str = "reporting_aggregator_consumer_lag";
    /// Readings per applied batch.
    pub const FLUSH_BATCH_READINGS: &str = "reporting_aggregator_flush_batch_readings";
    /// Time to apply one batch to the store.
    pub const FLUSH_SECONDS: &str = "reporting_aggregator_flush_seconds";
    /// Readings applied (new or changed) by the aggregator.
    pub const READINGS_APPLIED: &str = "reporting_aggregator_readings_applied_total";
    /// Readings read from the bus by the aggregator (including replays that changed nothing).
    pub const READINGS_CONSUMED: &str = "reporting_aggregator_readings_consumed_total";
    /// Batches refused because another consumer advanced the partition first.
    pub const FENCED_BATCHES: &str = "reporting_aggregator_fenced_batches_total";
    /// Bus records the aggregator could not decode, label `reason` (counted, logged, skipped).
    pub const UNDECODABLE_RECORDS: &str = "reporting_aggregator_undecodable_records_total";
    /// Store errors that made the aggregator retry a batch.
    pub const STORE_RETRIES: &str = "reporting_aggregator_store_retries_total";
    /// HTTP requests served, labels `role`, `route`, `status`.
    pub const HTTP_REQUESTS: &str = "reporting_http_requests_total";
}

/// The process-wide Prometheus handle; the recorder is installed the first time this is called.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 100.0, 1_000.0, 5_000.0, 20_000.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle then still renders ours (empty).
            let _ignored = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
