//! The one error type of the crate.

use std::path::PathBuf;

/// Why an import stopped. Malformed rows and readings that ingest rejects are not errors: they are counted in the
/// [`ImportSummary`](crate::ImportSummary) and the import goes on.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// An option is out of range (zero batch size or concurrency, no files).
    #[error("invalid import option {option}: {problem}")]
    InvalidOption {
        /// The option's field name in [`ImportOptions`](crate::ImportOptions).
        option: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// The ingest URL does not parse or is not plain `http` (this client is built without TLS).
    #[error("invalid ingest URL {url:?}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A file could not be opened or its size read.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A file could not be read to the end (I/O error, corrupt gzip stream).
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The CSV reader's error, which wraps the I/O or decompression error.
        #[source]
        source: csv::Error,
    },

    /// A file's header lacks a column that every reading needs.
    #[error("{} has no {column:?} column; is it a Beijing air-quality CSV file?", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column's name.
        column: &'static str,
    },

    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),

    /// A batch could not be encoded as JSON.
    #[error("cannot encode a batch of readings as JSON")]
    Encode(#[source] serde_json::Error),

    /// The ingest endpoint could not be reached, or the exchange broke off, on every attempt. Retrying later may
    /// succeed.
    #[error("cannot reach ingest at {url} (gave up after {attempts} attempts)")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },

    /// Ingest answered 503 (its bus is unavailable) on every attempt. Nothing of the last batch was acknowledged;
    /// retrying later is safe because ingest counts a replayed reading once.
    #[error("ingest at {url} stayed unavailable (503) for {attempts} attempts: {body}")]
    Unavailable {
        /// The endpoint.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The start of the last response body.
        body: String,
    },

    /// Ingest refused a batch as too large (413). Lower the batch size below ingest's `max_body_bytes`.
    #[error("ingest at {url} refused a batch of {readings} readings as too large (413); lower the batch size: {body}")]
    BodyTooLarge {
        /// The endpoint.
        url: String,
        /// The number of readings in the refused batch.
        readings: usize,
        /// The start of the response body, which names ingest's limit.
        body: String,
    },

    /// Ingest refused a whole request with a status other than 200, 422, 413 and 503 (e.g. 400, 415, 404, 500).
    #[error("ingest at {url} refused a request with status {status}: {body}")]
    Refused {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },

    /// Ingest answered 200 or 422 with a body that is not `{"accepted":N,"rejected":[…]}`.
    #[error("ingest at {url} answered status {status} with an unexpected body")]
    InvalidResponse {
        /// The endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The JSON decoding error.
        #[source]
        source: serde_json::Error,
    },

    /// A reading or sending task panicked or was cancelled.
    #[error("an import task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl ImportError {
    /// Whether running the same import again later may succeed without changing anything: ingest was unreachable
    /// or unavailable. Re-importing is safe because ingest counts a replayed reading once.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ImportError::Unreachable { .. } | ImportError::Unavailable { .. }
        )
    }
}
