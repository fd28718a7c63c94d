//! The bus boundary: where acknowledged readings become durable and from where the aggregator reads them.
//!
//! Map of the crate:
//! - [`Publisher`] — publishes records; `Ok` means every record is durable (Kafka `acks=all` with the
//!   idempotent producer; embedded log: written and fsynced).
//! - [`Consumer`] — a blocking, batch-at-a-time reader that reports partition assignments together with the
//!   positions the store holds for them (the store, not the bus, owns positions: see ARCHITECTURE.md).
//! - [`embedded`] — a durable log of length-prefixed, checksummed records in one file per partition.
//! - [`kafka`] — Apache Kafka through librdkafka.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use thiserror::Error;

pub mod embedded;
pub mod kafka;

/// A record to publish: the key decides the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Partitioning key (`tenant/device`).
    pub key: Vec<u8>,
    /// Encoded readings (see `reporting_core::record`).
    pub value: Vec<u8>,
}

/// A record read back from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset within the partition.
    pub offset: i64,
    /// The record value.
    pub value: Vec<u8>,
}

/// What one poll returned. Assignment changes come before messages and apply to them.
#[derive(Debug, Default)]
pub struct Polled {
    /// Partitions newly assigned to this consumer, with the next offset the store holds (`None`: no position
    /// stored, the consumer starts at the beginning of the partition).
    pub assigned: Vec<(i32, Option<i64>)>,
    /// Partitions taken away from this consumer; any message of theirs still pending must be dropped.
    pub revoked: Vec<i32>,
    /// Messages, in offset order within each partition.
    pub messages: Vec<Message>,
}

/// How much one poll may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most messages.
    pub max_messages: usize,
    /// Most payload bytes (at least one message is returned even if it is larger).
    pub max_bytes: usize,
    /// How long to wait for the first message.
    pub linger: Duration,
}

/// Loads the stored next offsets of partitions; implemented by the aggregator over the store.
pub trait PositionSource: Send + Sync {
    /// Next offset to read for each partition that has a stored position (absent: none stored).
    fn positions(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, String>;

    /// True once the owner is shutting down: a consumer that keeps failing to load positions gives up then and
    /// leaves its partitions unassigned, instead of retrying until the store comes back.
    fn stopping(&self) -> bool {
        false
    }
}

/// Publishes records durably.
pub trait Publisher: Send + Sync {
    /// Publishes all records; `Ok` only when every one of them is durable.
    fn publish(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Result<(), BusError>>;
    /// Checks that the bus can take writes (readiness).
    fn check_ready(&self) -> BoxFuture<'_, Result<(), BusError>>;
}

/// A blocking batch consumer. Call it from a blocking thread, not from an async task.
pub trait Consumer: Send {
    /// Waits up to `limits.linger` for messages and returns what fits in `limits` (possibly none).
    fn poll_batch(&mut self, limits: &BatchLimits) -> Result<Polled, BusError>;
    /// Moves the read position of an assigned partition (`None`: to the beginning).
    fn seek(&mut self, partition: i32, next_offset: Option<i64>) -> Result<(), BusError>;
    /// Tells the bus how far the store has applied a partition (informational: lag dashboards).
    fn applied(&mut self, partition: i32, next_offset: i64);
    /// Records not yet read per assigned partition, as far as the bus knows.
    fn lag(&mut self) -> Vec<(i32, i64)>;
}

/// Bus failures.
#[derive(Debug, Error)]
pub enum BusError {
    /// The bus could not make the records durable; nothing may be acknowledged. Retrying is safe.
    #[error("bus unavailable: {context}")]
    Unavailable {
        /// What was being done.
        context: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Local I/O on the embedded log failed.
    #[error("embedded log I/O failed: {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A Kafka client operation failed.
    #[error("kafka: {context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The embedded log is already open in another process.
    #[error("embedded log at {0} is locked by another process")]
    Locked(String),
}

impl BusError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BusError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        BusError::Kafka {
            context: context.into(),
            source,
        }
    }
}
