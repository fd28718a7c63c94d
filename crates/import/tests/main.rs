//! Integration tests of `reporting-import` against a scripted fake of the ingest HTTP API.

mod fake_ingest;
mod import_over_http;
