//! The pure core of Reporting: no I/O, no clocks read behind your back.
//!
//! Map of the crate:
//! - [`reading`] — a reading and its identity `(tenant, device, metric, timestamp)`.
//! - [`time`] — millisecond timestamps, RFC 3339 parsing/formatting and the [`time::Interval`] buckets.
//! - [`clock`] — the [`clock::Clock`] boundary (system clock, manual clock for tests).
//! - [`rollup`] — mergeable rollups (count, sum, min, max, first, last) and how they fold.
//! - [`body`] — splitting a request body (JSON array or NDJSON) into per-reading pieces.
//! - [`validate`] — turning one piece into a [`reading::Reading`] or a named [`validate::Rejection`].
//! - [`record`] — the versioned bus record format (`readings.v1`).
//! - [`dedupe`] — last-write-wins deduplication of a batch by reading identity.

pub mod body;
pub mod clock;
pub mod dedupe;
pub mod reading;
pub mod record;
pub mod rollup;
pub mod time;
pub mod validate;
