//! What to import, where to, and how hard to push.

use std::path::PathBuf;
use std::time::Duration;

use crate::ImportError;

/// Readings per `POST /v1/readings` request unless told otherwise. About 100 bytes of JSON each, so a default batch
/// is roughly 0.5 MB, well under ingest's default `max_body_bytes` of 8 MiB.
pub const DEFAULT_BATCH_SIZE: usize = 5000;

/// Requests in flight at once unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// How to import. Build with [`ImportOptions::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Base URL of the ingest role, e.g. `http://127.0.0.1:8080`; `/v1/readings` is appended. Plain `http` only.
    pub url: String,
    /// CSV files, plain or gzip-compressed (by `.gz` extension or gzip magic bytes), read in this order.
    pub files: Vec<PathBuf>,
    /// Readings per request; at least 1.
    pub batch_size: usize,
    /// Requests in flight at once; at least 1.
    pub concurrency: usize,
    /// Tenant named on every reading; `None` leaves it to ingest's default tenant.
    pub tenant: Option<String>,
    /// Draw a progress bar per file on stderr. Ignored (no bar) when stderr is not a terminal.
    pub progress: bool,
    /// How requests that meet a 503 or a connection failure are retried.
    pub retry: Retry,
}

impl ImportOptions {
    /// Options for importing `files` into the ingest role at `url`, with the default batch size, concurrency and
    /// retry policy, no tenant and no progress bar.
    pub fn new(url: impl Into<String>, files: Vec<PathBuf>) -> ImportOptions {
        ImportOptions {
            url: url.into(),
            files,
            batch_size: DEFAULT_BATCH_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            tenant: None,
            progress: false,
            retry: Retry::default(),
        }
    }

    /// Checks the ranges the fields document.
    pub(crate) fn validate(&self) -> Result<(), ImportError> {
        let invalid = |option, problem| Err(ImportError::InvalidOption { option, problem });
        if self.files.is_empty() {
            return invalid("files", "no files to import");
        }
        if self.batch_size == 0 {
            return invalid("batch_size", "must be at least 1");
        }
        if self.concurrency == 0 {
            return invalid("concurrency", "must be at least 1");
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts", "must be at least 1");
        }
        Ok(())
    }
}

/// Bounded retry with exponential backoff, for a 503 from ingest or a failure to reach it. Retrying a batch is safe
/// because ingest counts a replayed reading once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Attempts per batch including the first; at least 1. When all fail, the import fails.
    pub max_attempts: u32,
    /// Pause before the second attempt; doubled before each further attempt.
    pub initial_backoff: Duration,
    /// Upper bound of the pause between attempts.
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// Eight attempts, pausing 0.2 s, 0.4 s, … up to 5 s between them: about 16 s before giving up.
    fn default() -> Retry {
        Retry {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// The pause after failed attempt number `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_pause_up_to_the_cap() {
        let retry = Retry::default();
        let pauses: Vec<u64> = (1..=7)
            .map(|attempt| retry.backoff(attempt).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [200, 400, 800, 1600, 3200, 5000, 5000]);
        // 200 + 400 + 800 + 1600 + 3200 + 5000 + 5000 = 16.2 s of pauses between eight attempts.
        assert_eq!(pauses.iter().sum::<u64>(), 16_200);
    }

    #[test]
    fn backoff_does_not_overflow_after_many_attempts() {
        assert_eq!(Retry::default().backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn zero_batch_size_is_refused() {
        let mut options = ImportOptions::new("http://127.0.0.1:8080", vec![PathBuf::from("a.csv")]);
        options.batch_size = 0;
        assert!(matches!(
            options.validate(),
            Err(ImportError::InvalidOption {
                option: "batch_size",
                ..
            })
        ));
    }

    #[test]
    fn defaults_are_valid() {
        let options = ImportOptions::new("http://127.0.0.1:8080", vec![PathBuf::from("a.csv")]);
        assert!(options.validate().is_ok());
        assert_eq!((options.batch_size, options.concurrency), (5000, 4));
    }
}
