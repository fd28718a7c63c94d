//! The `reporting` binary's library: configuration, wiring and the command line, kept out of `main` so
//! tests can start the same roles in-process.
//!
//! Map of the crate:
//! - [`config`] — typed, layered configuration and its validation.
//! - [`app`] — opening the bus and store, running roles, ordered graceful shutdown.
//! - [`cli`] — the command line (`up`, `ingest`, `aggregator`, `api`, `migrate`, `import`, `config`).

pub mod app;
pub mod cli;
pub mod config;
