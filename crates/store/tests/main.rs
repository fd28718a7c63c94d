//! Store scenarios, each written once and run against SQLite and PostgreSQL.

use std::sync::Arc;

use reporting_core::reading::Reading;
use reporting_core::rollup::Rollup;
use reporting_core::time::{Interval, DAY_MS, HOUR_MS, MINUTE_MS};
use reporting_observe::logging::error_chain;
use reporting_store::postgres::PostgresStore;
use reporting_store::sqlite::SqliteStore;
use reporting_store::{ApplyBatch, ApplyOutcome, PositionAdvance, SeriesQuery, Store};

/// Runs a scenario against both backends: `mod $name { on_sqlite, on_postgres }`.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = super::sqlite(&dir).await;
                super::$name(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let store = super::postgres().await;
                super::$name(store).await;
            }
        }
    };
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let store = SqliteStore::open(&dir.path().join("test.sqlite")).expect("open sqlite");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

async fn postgres() -> Arc<dyn Store> {
    let url = reporting_testkit::postgres_database().await;
    let store = PostgresStore::connect(&url, 4).expect("connect");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

// 2020-01-01T00:00:00Z
const T0: i64 = 1_577_836_800_000;

fn reading(metric: &str, ts_ms: i64, value: f64) -> Reading {
    Reading {
        tenant: "t".into(),
        device: "dev".into(),
        metric: metric.into(),
        ts_ms,
        value,
    }
}

fn batch(partition: i32, expected: Option<i64>, next: i64, readings: Vec<Reading>) -> ApplyBatch {
    ApplyBatch {
        group: "g".into(),
        topic: "readings".into(),
        advances: vec![PositionAdvance {
            partition,
            expected,
            next,
        }],
        readings,
    }
}

async fn buckets(
    store: &Arc<dyn Store>,
    metric: &str,
    interval: Interval,
) -> Vec<reporting_store::Bucket> {
    store
        .series(SeriesQuery {
            tenant: "t".into(),
            device: "dev".into(),
            metric: metric.into(),
            interval,
            from_ms: None,
            to_ms: None,
            limit: 1000,
        })
        .await
        .expect("series")
}

async fn rollups_are_computed_at_every_level(store: Arc<dyn Store>) {
    // Hand-worked: three readings in minute 0 (2, 8, 5), one in minute 1 (−1), one the next day (100).
    let rs = vec![
        reading("m", T0 + 10_000, 8.0),
        reading("m", T0, 2.0),
        reading("m", T0 + 59_999, 5.0),
        reading("m", T0 + MINUTE_MS, -1.0),
        reading("m", T0 + DAY_MS + HOUR_MS, 100.0),
    ];
    let out = store.apply(batch(0, None, 5, rs)).await.expect("apply");
    assert_eq!(out, ApplyOutcome::Applied { changed: 5 });

    let minutes = buckets(&store, "m", Interval::Minute).await;
    assert_eq!(minutes.len(), 3);
    let m0 = minutes[0].rollup;
    assert_eq!(
        (minutes[0].start_ms, m0.count, m0.sum, m0.min, m0.max),
        (T0, 3, 15.0, 2.0, 8.0)
    );
    assert_eq!(
        (m0.first_ts, m0.first, m0.last_ts, m0.last),
        (T0, 2.0, T0 + 59_999, 5.0)
    );

    let hours = buckets(&store, "m", Interval::Hour).await;
    assert_eq!(hours.len(), 2);
    let h0 = hours[0].rollup;
    assert_eq!(
        (h0.count, h0.sum, h0.min, h0.max, h0.last),
        (4, 14.0, -1.0, 8.0, -1.0)
    );

    let days = buckets(&store, "m", Interval::Day).await;
    assert_eq!(
        days.iter()
            .map(|b| (b.start_ms, b.rollup.count))
            .collect::<Vec<_>>(),
        vec![(T0, 4), (T0 + DAY_MS, 1)]
    );
    assert_eq!(days[1].rollup.sum, 100.0);
}
on_both_backends!(rollups_are_computed_at_every_level);

async fn replayed_reading_is_counted_once(store: Arc<dyn Store>) {
    let rs = vec![reading("m", T0, 1.0), reading("m", T0 + 1000, 2.0)];
    store
        .apply(batch(0, None, 2, rs.clone()))
        .await
        .expect("first");
    let again = store.apply(batch(0, Some(2), 4, rs)).await.expect("replay");
    assert_eq!(again, ApplyOutcome::Applied { changed: 0 });
    let day = buckets(&store, "m", Interval::Day).await;
    assert_eq!((day[0].rollup.count, day[0].rollup.sum), (2, 3.0));
}
on_both_backends!(replayed_reading_is_counted_once);

async fn new_value_for_an_identity_corrects_every_level_including_min_and_max(
    store: Arc<dyn Store>,
) {
    // Minute holds 1, 9, 4: max 9. Replacing 9 by 3 must bring max back to 4 and the sum to 8.
    let rs = vec![
        reading("m", T0, 1.0),
        reading("m", T0 + 1000, 9.0),
        reading("m", T0 + 2000, 4.0),
    ];
    store.apply(batch(0, None, 3, rs)).await.expect("first");
    let out = store
        .apply(batch(0, Some(3), 4, vec![reading("m", T0 + 1000, 3.0)]))
        .await
        .expect("correction");
    assert_eq!(out, ApplyOutcome::Applied { changed: 1 });
    for interval in Interval::ALL {
        let b = buckets(&store, "m", interval).await;
        assert_eq!(b.len(), 1, "{interval:?}");
        let r = b[0].rollup;
        assert_eq!(
            (r.count, r.sum, r.min, r.max),
            (3, 8.0, 1.0, 4.0),
            "{interval:?}"
        );
        assert_eq!((r.first, r.last), (1.0, 4.0), "{interval:?}");
    }
    // Replacing the first and last readings moves first/last values too.
    store
        .apply(batch(
            0,
            Some(4),
            5,
            vec![reading("m", T0, -7.0), reading("m", T0 + 2000, 70.0)],
        ))
        .await
        .expect("second correction");
    let r = buckets(&store, "m", Interval::Day).await[0].rollup;
    assert_eq!(
        (r.min, r.max, r.first, r.last, r.sum),
        (-7.0, 70.0, -7.0, 70.0, 66.0)
    );
}
on_both_backends!(new_value_for_an_identity_corrects_every_level_including_min_and_max);

async fn new_readings_in_a_later_batch_extend_stored_buckets_at_every_level(store: Arc<dyn Store>) {
    // Batch 1 stores 5 at 00:00:30, 20 at 00:30:00 and -3 at 00:45:00. Batch 2 adds 2 at 00:00:10 and 9 at
    // 00:00:50 (minute 0's new first and min, last and max), 1 at 00:10:00 (a new minute; hour 0 keeps min -3,
    // max 20 and last -3), 8 at 00:30:20 (minute 30's new min and last; it keeps max and first 20) and 7 at
    // 01:00:00 (a new hour; the day's new last).
    let first = vec![
        reading("m", T0 + 30_000, 5.0),
        reading("m", T0 + 30 * MINUTE_MS, 20.0),
        reading("m", T0 + 45 * MINUTE_MS, -3.0),
    ];
    store.apply(batch(0, None, 3, first)).await.expect("first");
    let second = vec![
        reading("m", T0 + 10_000, 2.0),
        reading("m", T0 + 50_000, 9.0),
        reading("m", T0 + 10 * MINUTE_MS, 1.0),
        reading("m", T0 + 30 * MINUTE_MS + 20_000, 8.0),
        reading("m", T0 + HOUR_MS, 7.0),
    ];
    let out = store
        .apply(batch(0, Some(3), 8, second))
        .await
        .expect("second");
    assert_eq!(out, ApplyOutcome::Applied { changed: 5 });

    let summary = |r: Rollup| {
        (
            r.count, r.sum, r.min, r.max, r.first_ts, r.first, r.last_ts, r.last,
        )
    };
    let minutes = buckets(&store, "m", Interval::Minute).await;
    let starts: Vec<i64> = minutes.iter().map(|b| b.start_ms - T0).collect();
    let m = MINUTE_MS;
    assert_eq!(starts, vec![0, 10 * m, 30 * m, 45 * m, 60 * m]);
    assert_eq!(
        summary(minutes[0].rollup),
        (3, 16.0, 2.0, 9.0, T0 + 10_000, 2.0, T0 + 50_000, 9.0)
    );
    assert_eq!(
        summary(minutes[2].rollup),
        (
            2,
            28.0,
            8.0,
            20.0,
            T0 + 30 * m,
            20.0,
            T0 + 30 * m + 20_000,
            8.0
        )
    );
    let hours = buckets(&store, "m", Interval::Hour).await;
    assert_eq!(
        summary(hours[0].rollup),
        (7, 42.0, -3.0, 20.0, T0 + 10_000, 2.0, T0 + 45 * m, -3.0)
    );
    assert_eq!(
        summary(hours[1].rollup),
        (1, 7.0, 7.0, 7.0, T0 + HOUR_MS, 7.0, T0 + HOUR_MS, 7.0)
    );
    let day = buckets(&store, "m", Interval::Day).await[0].rollup;
    assert_eq!(
        summary(day),
        (8, 49.0, -3.0, 20.0, T0 + 10_000, 2.0, T0 + HOUR_MS, 7.0)
    );
}
on_both_backends!(new_readings_in_a_later_batch_extend_stored_buckets_at_every_level);

async fn stale_consumer_is_fenced_and_writes_nothing(store: Arc<dyn Store>) {
    store
        .apply(batch(3, None, 10, vec![reading("m", T0, 1.0)]))
        .await
        .expect("first owner");
    // Two consumers both believe the position is 10 and both read offsets 10..20.
    let winner = store
        .apply(batch(3, Some(10), 20, vec![reading("m", T0 + 1000, 5.0)]))
        .await
        .expect("winner");
    assert_eq!(winner, ApplyOutcome::Applied { changed: 1 });
    let zombie = store
        .apply(batch(3, Some(10), 20, vec![reading("m", T0 + 2000, 50.0)]))
        .await
        .expect("zombie");
    assert_eq!(zombie, ApplyOutcome::Fenced { partition: 3 });
    // A second consumer that thinks no position exists is fenced too.
    let fresh = store
        .apply(batch(3, None, 20, vec![reading("m", T0 + 3000, 500.0)]))
        .await
        .expect("fresh");
    assert_eq!(fresh, ApplyOutcome::Fenced { partition: 3 });
    let day = buckets(&store, "m", Interval::Day).await[0].rollup;
    assert_eq!((day.count, day.sum), (2, 6.0));
    let positions = store
        .positions("g", "readings", &[3, 4])
        .await
        .expect("positions");
    assert_eq!(positions.into_iter().collect::<Vec<_>>(), vec![(3, 20)]);
}
on_both_backends!(stale_consumer_is_fenced_and_writes_nothing);

async fn concurrent_owners_of_a_partition_commit_exactly_one_batch(store: Arc<dyn Store>) {
    store
        .apply(batch(0, None, 1, vec![]))
        .await
        .expect("position row");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .apply(batch(0, Some(1), 2, vec![reading("m", T0 + i, 1.0)]))
                .await
                .expect("apply")
        }));
    }
    let mut applied = 0;
    for t in tasks {
        if matches!(t.await.expect("task"), ApplyOutcome::Applied { .. }) {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(buckets(&store, "m", Interval::Day).await[0].rollup.count, 1);
}
on_both_backends!(concurrent_owners_of_a_partition_commit_exactly_one_batch);

async fn migrations_run_twice_without_harm_and_lists_show_what_exists(store: Arc<dyn Store>) {
    store.migrate().await.expect("second migrate");
    store
        .apply(batch(
            0,
            None,
            2,
            vec![reading("b", T0, 1.0), reading("a", T0, 1.0)],
        ))
        .await
        .expect("apply");
    let devices = store.devices().await.expect("devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device, "dev");
    assert_eq!(
        store.metrics("t", Some("dev")).await.expect("metrics"),
        vec!["a".to_string(), "b".to_string()]
    );
    assert!(store
        .metrics("t", Some("other"))
        .await
        .expect("metrics")
        .is_empty());
    store.ping().await.expect("ping");
}
on_both_backends!(migrations_run_twice_without_harm_and_lists_show_what_exists);

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate_against_sslrootcert() {
    let url = reporting_testkit::postgres_database().await;
    let ca = reporting_testkit::postgres_ca();
    let tls = PostgresStore::connect(
        &with_params(&url, &format!("sslmode=verify-full&sslrootcert={ca}")),
        2,
    )
    .expect("pool");
    tls.migrate().await.expect("migrate over TLS");
    assert!(tls.connection_is_encrypted().await.expect("ask the server"));
    // Without sslmode the same server is reached in plain TCP.
    let plain = PostgresStore::connect(&url, 1).expect("pool");
    assert!(!plain
        .connection_is_encrypted()
        .await
        .expect("ask the server"));
}

#[tokio::test]
async fn postgres_over_tls_refuses_a_server_certificate_from_another_ca() {
    let url = reporting_testkit::postgres_database().await;
    let other = reporting_testkit::postgres_other_ca();
    let store = PostgresStore::connect(
        &with_params(&url, &format!("sslmode=require&sslrootcert={other}")),
        1,
    )
    .expect("pool");
    let err = store.migrate().await.expect_err("an untrusted certificate");
    let chain = error_chain(&err);
    assert!(chain.contains("certificate verify failed"), "{chain}");
}

#[tokio::test]
async fn postgres_tls_settings_that_cannot_work_are_refused_before_connecting() {
    let url = reporting_testkit::postgres_database().await;
    let missing = PostgresStore::connect(
        &with_params(&url, "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        1,
    )
    .err()
    .expect("a missing root file");
    assert!(
        error_chain(&missing).contains("/nonexistent/ca.pem is not a readable file"),
        "{}",
        error_chain(&missing)
    );
    let plain_with_roots = PostgresStore::connect(&with_params(&url, "sslrootcert=/ca.pem"), 1)
        .err()
        .expect("roots without TLS");
    assert!(
        error_chain(&plain_with_roots).contains("sslmode"),
        "{}",
        error_chain(&plain_with_roots)
    );
}
