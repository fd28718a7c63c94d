//! Test support shared by the integration tests of every crate (never linked into the binary).
//!
//! - [`postgres_database`] — a fresh, empty database per test on the server named by `REPORTING_TEST_POSTGRES`;
//!   [`postgres_ca`] and [`postgres_other_ca`] — the CA of its TLS certificate and an unrelated one.
//! - [`kafka_brokers`] and [`unique_name`] — the broker of `REPORTING_TEST_KAFKA` and per-test topic/group names.
//! - [`wait_until`] — poll a condition with a deadline instead of sleeping.
//! - [`wait_while_progressing`] — wait for work to finish however slow the machine is, failing only when it
//!   stops advancing.
//! - [`init_logs`] — the tests' tracing events, filtered by `REPORTING_TEST_LOG`, into the harness's captured
//!   output (printed for a failing test).
//!
//! The services come from `scripts/services/start` (run by `scripts/test`). A test that needs a service whose
//! variable is missing fails with a message saying so: it is never silently skipped.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
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

/// The CA certificate (PEM file) that signed the test PostgreSQL server's certificate.
pub fn postgres_ca() -> String {
    required_env("REPORTING_TEST_POSTGRES_CA")
}

/// A CA certificate (PEM file) unrelated to the test PostgreSQL server's certificate.
pub fn postgres_other_ca() -> String {
    required_env("REPORTING_TEST_POSTGRES_OTHER_CA")
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

/// Polls `remaining` every 200 ms until it reports nothing left. `remaining` returns how much work is left
/// (`None` when it could not tell) and a description of the state. A slow machine only makes this slower: it
/// panics when the amount left has not shrunk for `stall` (a call that hangs counts as no progress), with the
/// last description.
pub async fn wait_while_progressing<F, Fut>(what: &str, stall: Duration, mut remaining: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (Option<u64>, String)>,
{
    let mut least = u64::MAX;
    let mut last_progress = Instant::now();
    loop {
        let (left, state) = match tokio::time::timeout(stall, remaining()).await {
            Ok(report) => report,
            Err(_) => (None, format!("checking took longer than {stall:?}")),
        };
        match left {
            Some(0) => return,
            Some(n) if n < least => {
                least = n;
                last_progress = Instant::now();
            }
            _ => {}
        }
        if last_progress.elapsed() > stall {
            panic!("no progress for {stall:?} waiting for {what}: {state}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Routes tracing events of this test process to the test harness's output capture, so a failing test shows
/// what its in-process roles logged (threads spawned by a test, such as its runtime's, inherit its capture).
/// `REPORTING_TEST_LOG` is a tracing filter (`warn` when unset). Idempotent.
pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("REPORTING_TEST_LOG").unwrap_or_else(|_| "warn".into());
        // Another subscriber set by the test itself wins; nothing to do then.
        let _already = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}
