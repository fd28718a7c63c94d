//! Importer of the Beijing multi-site air-quality CSV files: a client of the ingest HTTP API
//! (`POST {url}/v1/readings`).
//!
//! Each row of a file gives one reading per numeric column (`PM2.5`, `PM10`, `SO2`, `NO2`, `CO`, `O3`, `TEMP`,
//! `PRES`, `DEWP`, `RAIN`, `WSPM`) with the `station` column as the device and the local hour (UTC+8) converted to
//! UTC as the timestamp. Missing values (`NA`) are skipped, malformed rows are counted and skipped, and the import
//! goes on; only I/O failures and whole-request refusals by ingest stop it.
//!
//! Map of the crate:
//! - [`import`] (here) — the one loop: a blocking reader fills a bounded channel with batches, the async side keeps
//!   up to [`ImportOptions::concurrency`] requests in flight and adds up the answers into an [`ImportSummary`].
//! - `options` — [`ImportOptions`], [`Retry`] and the defaults.
//! - `source` — opening files (plain or gzip), progress bars, CSV rows into batches of readings.
//! - `row` — the pure mapping of one CSV row to readings, and why a row can be malformed.
//! - `local_time` — the pure conversion of a Beijing local hour to UTC.
//! - `client` — posting one batch, retrying a 503 or an unreachable ingest with backoff.
//! - `summary` — [`ImportSummary`] and its human-readable [`Display`](std::fmt::Display).
//! - `error` — [`ImportError`].

mod client;
mod error;
mod local_time;
mod options;
mod row;
mod source;
mod summary;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use crate::error::ImportError;
pub use crate::options::{ImportOptions, Retry, DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY};
pub use crate::summary::ImportSummary;

use crate::client::{BatchOutcome, IngestClient};
use crate::row::Reading;
use crate::source::Source;

/// Imports every file of `opts.files` into the ingest role at `opts.url` and returns what happened.
///
/// Fails before sending anything when an option is invalid or a file cannot be opened. Afterwards it fails on the
/// first file that cannot be read or request that ingest refuses as a whole (413, 400, 415, other statuses) or
/// still answers 503 after the retries of `opts.retry`; batches already accepted stay accepted, and importing the
/// same files again is safe because ingest counts a replayed reading once.
pub async fn import(opts: &ImportOptions) -> Result<ImportSummary, ImportError> {
    opts.validate()?;
    for path in &opts.files {
        std::fs::metadata(path).map_err(|source| ImportError::Open {
            path: path.clone(),
            source,
        })?;
    }
    let client = Arc::new(IngestClient::new(&opts.url, opts.retry.clone())?);
    let started = Instant::now();
    tracing::info!(
        files = opts.files.len(),
        endpoint = client.endpoint(),
        batch_size = opts.batch_size,
        concurrency = opts.concurrency,
        "import started"
    );

    let (batches, mut received) = mpsc::channel(opts.concurrency);
    let show_progress = opts.progress && std::io::stderr().is_terminal();
    let source = Source::new(opts.batch_size, opts.tenant.clone(), show_progress, batches);
    let files = opts.files.clone();
    let reader = tokio::task::spawn_blocking(move || source.read_all(&files));

    let mut sent = BatchOutcome::default();
    let sending = send_all(client, &mut received, opts.concurrency, &mut sent).await;
    // Dropping the receiver makes a reader that is still running stop at its next batch.
    drop(received);
    let read = reader.await.map_err(ImportError::Task)?;
    sending?;
    let read = read?;

    let summary = ImportSummary {
        files: read.files,
        rows: read.rows,
        readings_sent: sent.sent,
        accepted: sent.accepted,
        rejected_by_reason: sent.rejected_by_reason,
        skipped_missing: read.skipped_missing,
        malformed_rows_by_reason: read.malformed_rows_by_reason,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        files = summary.files,
        rows = summary.rows,
        readings_sent = summary.readings_sent,
        accepted = summary.accepted,
        rejected = summary.rejected(),
        skipped_missing = summary.skipped_missing,
        malformed_rows = summary.malformed_rows(),
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "import finished"
    );
    Ok(summary)
}

/// Posts every batch from `batches` with at most `concurrency` requests in flight, adding each answer to `total`.
/// On the first failure it cancels the requests in flight, waits for them to end, and returns the failure.
async fn send_all(
    client: Arc<IngestClient>,
    batches: &mut mpsc::Receiver<Vec<Reading>>,
    concurrency: usize,
    total: &mut BatchOutcome,
) -> Result<(), ImportError> {
    let mut in_flight = JoinSet::new();
    let result = async {
        while let Some(batch) = batches.recv().await {
            while in_flight.len() >= concurrency {
                if let Some(joined) = in_flight.join_next().await {
                    add(total, joined)?;
                }
            }
            let client = Arc::clone(&client);
            in_flight.spawn(async move { client.send(&batch).await });
        }
        while let Some(joined) = in_flight.join_next().await {
            add(total, joined)?;
        }
        Ok(())
    }
    .await;
    in_flight.shutdown().await;
    result
}

/// Adds one finished request's outcome to `total`, or returns its failure.
fn add(
    total: &mut BatchOutcome,
    joined: Result<Result<BatchOutcome, ImportError>, tokio::task::JoinError>,
) -> Result<(), ImportError> {
    let outcome = joined.map_err(ImportError::Task)??;
    total.sent += outcome.sent;
    total.accepted += outcome.accepted;
    for (reason, count) in outcome.rejected_by_reason {
        *total.rejected_by_reason.entry(reason).or_default() += count;
    }
    Ok(())
}
