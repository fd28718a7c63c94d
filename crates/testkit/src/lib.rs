//! Test support shared by the integration tests of every crate (never linked into the binary).
//!
//! - [`postgres_database`] — a fresh, empty database per test on the server named by `REPORTING_TEST_POSTGRES`.
//! - [`kafka_brokers`] and [`unique_name`] — the broker of `REPORTING_TEST_KAFKA` and per-test topic/group names.
//! - [`wait_until`] — poll a condition with a deadline instead of sleeping.
//!
//! The services come from `scripts/services/start` (run by `scripts/test`). A test that needs a service whose
//! variable is missing fails with a message saying so: it is never silently skipped.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A name unique to this process and call: `prefix_<pid>_<nanos>_<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: this test needs the real service. Run the tests with `scripts/test`, \
             or `eval \"$(scripts/services/start)\"` first"
        ),
    }
}

/// Bootstrap servers of the test Kafka broker.
pub fn kafka_brokers() -> String {
    required_env("REPORTING_TEST_KAFKA")
}

/// Creates a fresh database and returns its URL.
pub async fn postgres_database() -> String {
    let admin_url = required_env("REPORTING_TEST_POSTGRES");
    let name = unique_name("reporting_test");
    let (client, connection) =
        match tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to REPORTING_TEST_POSTGRES={admin_url}: {e}"),
        };
    let conn_task = tokio::spawn(connection);
    if let Err(e) = client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
    {
        panic!("creating test database {name}: {e}");
    }
    drop(client);
    let _closed = conn_task.await;
    match admin_url.rsplit_once('/') {
        Some((base, _db)) => format!("{base}/{name}"),
        None => panic!("REPORTING_TEST_POSTGRES must end with /<database>: {admin_url}"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
