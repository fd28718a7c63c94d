//! End-to-end tests of the `reporting` binary's roles. Each scenario is written once and runs against the
//! embedded backends (log + SQLite) and against Kafka + PostgreSQL (started by `scripts/test`).

mod oracle;
mod processes;
mod scenarios;
mod system;
