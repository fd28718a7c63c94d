//! A reading and its identity.

use std::fmt;

/// One measurement sent by a device.
///
/// Identity is `(tenant, device, metric, ts_ms)`: a second reading with the same identity replaces the first
/// (last write wins); sending the same reading twice counts it once.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Tenant owning the device.
    pub tenant: String,
    /// Device (for the Beijing data: the station).
    pub device: String,
    /// Metric name, e.g. `PM2.5`.
    pub metric: String,
    /// Event time in milliseconds since the Unix epoch, UTC.
    pub ts_ms: i64,
    /// The value; always finite (validated at ingest).
    pub value: f64,
}

/// The series a reading belongs to: `(tenant, device, metric)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// Tenant owning the device.
    pub tenant: String,
    /// Device name.
    pub device: String,
    /// Metric name.
    pub metric: String,
}

impl Reading {
    /// The series this reading belongs to.
    pub fn series(&self) -> SeriesKey {
        SeriesKey {
            tenant: self.tenant.clone(),
            device: self.device.clone(),
            metric: self.metric.clone(),
        }
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.device, self.metric)
    }
}
