//! The store boundary: raw readings, rollups and consumer positions, in PostgreSQL or SQLite.
//!
//! Map of the crate:
//! - [`Store`] — the one interface both backends implement; this crate owns every line of SQL.
//! - [`migrations`] — versioned schema migrations per backend, applied by `reporting migrate`.
//! - [`postgres`] — PostgreSQL (production), array-based set statements, one transaction per batch.
//! - `pg_tls` — TLS to PostgreSQL from libpq's URL parameters (`sslmode`, `sslrootcert`), verified with OpenSSL.
//! - [`sqlite`] — SQLite (embedded mode), WAL with `synchronous=FULL`.
//! - `recompute` — which minute, hour and day buckets a batch touched.
//!
//! The exactly-once contract of [`Store::apply`]: the position advance (a compare-and-set on the stored next
//! offset) runs first in the same transaction as the rows it produced. If another consumer moved a partition
//! on, the batch is [`ApplyOutcome::Fenced`] and nothing is written.

use std::collections::HashMap;

use futures::future::BoxFuture;
use reporting_core::reading::Reading;
use reporting_core::rollup::Rollup;
use reporting_core::time::Interval;
use thiserror::Error;

pub mod migrations;
mod pg_tls;
pub mod postgres;
mod recompute;
pub mod sqlite;

/// Moves one partition's stored position from `expected` to `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionAdvance {
    /// The partition.
    pub partition: i32,
    /// The position this consumer believes is stored (`None`: no row yet).
    pub expected: Option<i64>,
    /// The next offset after the batch.
    pub next: i64,
}

/// One aggregator batch: position advances and the readings read below them.
#[derive(Debug, Clone)]
pub struct ApplyBatch {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Position advances, at most one per partition.
    pub advances: Vec<PositionAdvance>,
    /// Readings, deduplicated by identity (last write wins) before the call.
    pub readings: Vec<Reading>,
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Committed; `changed` readings were new or changed value (replays change nothing).
    Applied {
        /// Readings inserted or updated.
        changed: usize,
    },
    /// Another consumer advanced `partition` first; nothing was written.
    Fenced {
        /// The partition whose compare-and-set failed.
        partition: i32,
    },
}

/// A report query for one series.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    /// Tenant.
    pub tenant: String,
    /// Device.
    pub device: String,
    /// Metric.
    pub metric: String,
    /// Rollup level.
    pub interval: Interval,
    /// Inclusive lower bound on bucket start (epoch ms).
    pub from_ms: Option<i64>,
    /// Exclusive upper bound on bucket start (epoch ms).
    pub to_ms: Option<i64>,
    /// Most buckets to return.
    pub limit: usize,
}

/// One bucket of a report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Bucket start (epoch ms).
    pub start_ms: i64,
    /// Its rollup.
    pub rollup: Rollup,
}

/// One rollup of a [`Store::snapshot`]: `(tenant, device, metric, bucket)`.
pub type SnapshotRow = (String, String, String, Bucket);

/// A device known to the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Device {
    /// Tenant.
    pub tenant: String,
    /// Device name.
    pub device: String,
}

/// The storage interface of raw readings, rollups and consumer positions.
pub trait Store: Send + Sync {
    /// Applies pending migrations.
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Stored next offsets for `partitions` of `topic` in `group` (absent: none stored).
    fn positions<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
        partitions: &'a [i32],
    ) -> BoxFuture<'a, Result<HashMap<i32, i64>, StoreError>>;
    /// Applies a batch exactly once (see the crate doc).
    fn apply(&self, batch: ApplyBatch) -> BoxFuture<'_, Result<ApplyOutcome, StoreError>>;
    /// Buckets of one series, oldest first.
    fn series(&self, query: SeriesQuery) -> BoxFuture<'_, Result<Vec<Bucket>, StoreError>>;
    /// Every rollup of a level, ordered by series and bucket (tests and exports).
    fn snapshot(&self, interval: Interval) -> BoxFuture<'_, Result<Vec<SnapshotRow>, StoreError>>;
    /// Devices with stored readings.
    fn devices(&self) -> BoxFuture<'_, Result<Vec<Device>, StoreError>>;
    /// Metric names of a tenant, optionally of one device.
    fn metrics<'a>(
        &'a self,
        tenant: &'a str,
        device: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// Checks the store answers (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A PostgreSQL statement or connection failed.
    #[error("postgres: {context}")]
    Postgres {
        /// What was being done.
        context: &'static str,
        /// The driver error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No PostgreSQL connection could be had from the pool.
    #[error("postgres connection pool: {context}")]
    Pool {
        /// What was being done.
        context: &'static str,
        /// The pool error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A SQLite statement failed.
    #[error("sqlite: {context}")]
    Sqlite {
        /// What was being done.
        context: &'static str,
        /// The driver error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL URL could not be parsed.
    #[error("invalid postgres URL")]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// The TLS parameters of the PostgreSQL URL (`sslmode`, `sslrootcert`) are inconsistent or unusable.
    #[error("postgres URL TLS settings: {0}")]
    InvalidTls(String),
    /// Setting up TLS failed (e.g. an unreadable or invalid root certificate file).
    #[error("{context}")]
    Tls {
        /// What was being done.
        context: &'static str,
        /// The OpenSSL error.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// A timestamp is outside what the store can represent.
    #[error("timestamp {0} ms is out of range")]
    TimestampOutOfRange(i64),
    /// A blocking store task panicked or was cancelled.
    #[error("store task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The database schema is newer than this build.
    #[error("database schema version {found} is newer than this build knows ({known}); upgrade reporting")]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this build has.
        known: i64,
    },
}

impl StoreError {
    /// Whether retrying the same call later may succeed (connection trouble, serialization failures).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool { .. } | StoreError::Task(_) => true,
            StoreError::Postgres { source, .. } => {
                source.is_closed()
                    || source.code().is_none()
                    || source.code().is_some_and(|c| {
                        let c = c.code();
                        c.starts_with("08") || c == "40001" || c == "40P01" || c.starts_with("57")
                    })
            }
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}
