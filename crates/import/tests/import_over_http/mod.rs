//! `import` end to end against the fake ingest: what is sent, how answers are counted, how failures end it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reporting_import::{import, ImportError, ImportOptions, Retry};
use serde_json::{json, Value};

use crate::fake_ingest::FakeIngest;

/// Three rows: the first complete, the second with PM2.5 and WSPM missing, the third dated 31 April (malformed).
const SMALL_CSV: &str = r#""No","year","month","day","hour","PM2.5","PM10","SO2","NO2","CO","O3","TEMP","PRES","DEWP","RAIN","wd","WSPM","station"
1,2013,3,1,0,4,4,4,7,300,77,-0.7,1023,-18.8,0,"NNW",4.4,"Aotizhongxin"
2,2013,3,1,1,NA,8,4,7,300,77,-1.1,1023.2,-18.2,0,"N",NA,"Aotizhongxin"
3,2013,4,31,2,7,7,5,10,300,73,-1.1,1023.5,-18.2,0,"NNW",5.6,"Aotizhongxin"
"#;

/// Readings in [`SMALL_CSV`]: 11 from the first row, 9 from the second.
const SMALL_CSV_READINGS: usize = 20;

/// 2013-03-01 00:00 at UTC+8 = 2013-02-28T16:00:00Z = 1_362_067_200_000 ms; the next hour is 3_600_000 ms later.
const FIRST_HOUR_MS: i64 = 1_362_067_200_000;
const SECOND_HOUR_MS: i64 = FIRST_HOUR_MS + 3_600_000;

fn small_csv(dir: &Path) -> PathBuf {
    let path = dir.join("small.csv");
    std::fs::write(&path, SMALL_CSV).expect("writable temp dir");
    path
}

/// Options with tiny pauses between retries so that failure tests finish quickly.
fn options(url: &str, files: Vec<PathBuf>) -> ImportOptions {
    let mut options = ImportOptions::new(url, files);
    options.retry = Retry {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    options
}

/// `(metric, timestamp, value)` of the answered readings, sorted.
fn sent(ingest: &FakeIngest) -> Vec<(String, i64, f64)> {
    let mut readings: Vec<(String, i64, f64)> = ingest
        .answered()
        .iter()
        .map(|r| {
            let metric = r["metric"].as_str().expect("metric").to_owned();
            (
                metric,
                r["timestamp"].as_i64().expect("epoch ms"),
                r["value"].as_f64().expect("value"),
            )
        })
        .collect();
    readings.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    readings
}

#[tokio::test]
async fn every_reading_of_a_small_file_reaches_ingest_at_its_utc_instant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest = FakeIngest::accepting().await;
    let mut opts = options(&ingest.url, vec![small_csv(dir.path())]);
    opts.batch_size = 3;
    opts.concurrency = 2;

    let summary = import(&opts).await.expect("import succeeds");

    assert_eq!(summary.files, 1);
    assert_eq!(summary.rows, 3);
    assert_eq!(summary.readings_sent, SMALL_CSV_READINGS as u64);
    assert_eq!(summary.accepted, SMALL_CSV_READINGS as u64);
    assert_eq!(summary.rejected(), 0);
    assert_eq!(summary.skipped_missing, 2);
    assert_eq!(summary.malformed_rows_by_reason.get("bad_date"), Some(&1));
    // 20 readings in batches of 3: six full batches and one of 2.
    assert_eq!(ingest.requests(), 7);

    let readings = sent(&ingest);
    assert_eq!(readings.len(), SMALL_CSV_READINGS);
    let pm25: Vec<_> = readings.iter().filter(|r| r.0 == "PM2.5").collect();
    assert_eq!(
        pm25,
        [&("PM2.5".to_owned(), FIRST_HOUR_MS, 4.0)],
        "the NA of the second row is not sent"
    );
    let pres: Vec<_> = readings.iter().filter(|r| r.0 == "PRES").collect();
    assert_eq!(
        pres,
        [
            &("PRES".to_owned(), FIRST_HOUR_MS, 1023.0),
            &("PRES".to_owned(), SECOND_HOUR_MS, 1023.2)
        ]
    );
    assert!(readings.iter().all(|r| r.0 != "wd" && r.0 != "No"));
    let first = &ingest.answered()[0];
    assert_eq!(first["device"], json!("Aotizhongxin"));
    assert!(first.get("tenant").is_none(), "no tenant unless asked for");
}

#[tokio::test]
async fn tenant_option_names_the_tenant_on_every_reading() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest = FakeIngest::accepting().await;
    let mut opts = options(&ingest.url, vec![small_csv(dir.path())]);
    opts.tenant = Some("acme".to_owned());

    import(&opts).await.expect("import succeeds");

    assert!(ingest
        .answered()
        .iter()
        .all(|r| r["tenant"] == json!("acme")));
}

#[tokio::test]
async fn rejected_readings_are_counted_by_reason_and_the_import_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Rejects every RAIN reading; a batch of nothing but rejections is answered 422 as ingest does.
    let ingest = FakeIngest::start(|_, readings| {
        let rejected: Vec<Value> = readings
            .iter()
            .enumerate()
            .filter(|(_, r)| r["metric"] == json!("RAIN"))
            .map(|(index, _)| json!({"index": index, "reason": "no_rain_here", "message": "rain is not welcome"}))
            .collect();
        let accepted = readings.len() - rejected.len();
        let status = if accepted == 0 { 422 } else { 200 };
        (status, json!({"accepted": accepted, "rejected": rejected}).to_string())
    })
    .await;
    let mut opts = options(&ingest.url, vec![small_csv(dir.path())]);
    opts.batch_size = 1;

    let summary = import(&opts)
        .await
        .expect("rejections do not fail the import");

    assert_eq!(summary.readings_sent, SMALL_CSV_READINGS as u64);
    assert_eq!(summary.accepted, SMALL_CSV_READINGS as u64 - 2);
    assert_eq!(summary.rejected_by_reason.get("no_rain_here"), Some(&2));
    assert!(summary.to_string().contains("no_rain_here: 2"), "{summary}");
}

#[tokio::test]
async fn unavailable_ingest_is_retried_until_it_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest = FakeIngest::start(|n, readings| match n {
        0 | 1 => (503, r#"{"error":"bus unavailable"}"#.to_owned()),
        _ => (
            200,
            json!({"accepted": readings.len(), "rejected": []}).to_string(),
        ),
    })
    .await;
    let mut opts = options(&ingest.url, vec![small_csv(dir.path())]);
    opts.concurrency = 1;

    let summary = import(&opts).await.expect("the third attempt succeeds");

    assert_eq!(summary.accepted, SMALL_CSV_READINGS as u64);
    assert_eq!(ingest.requests(), 3);
    assert_eq!(ingest.answered().len(), SMALL_CSV_READINGS);
}

#[tokio::test]
async fn ingest_that_stays_unavailable_fails_the_import_after_bounded_attempts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest = FakeIngest::start(|_, _| (503, r#"{"error":"bus unavailable"}"#.to_owned())).await;
    let mut opts = options(&ingest.url, vec![small_csv(dir.path())]);
    opts.concurrency = 1;

    let error = import(&opts).await.expect_err("503 forever fails");

    assert!(
        matches!(error, ImportError::Unavailable { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(
        error
            .to_string()
            .contains("stayed unavailable (503) for 3 attempts"),
        "{error}"
    );
    assert_eq!(ingest.requests(), 3);
}

#[tokio::test]
async fn batch_refused_as_too_large_fails_the_import_with_advice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest =
        FakeIngest::start(|_, _| (413, r#"{"error":"body over 8388608 bytes"}"#.to_owned())).await;
    let opts = options(&ingest.url, vec![small_csv(dir.path())]);

    let error = import(&opts).await.expect_err("413 fails");

    assert!(
        matches!(error, ImportError::BodyTooLarge { readings: 20, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("lower the batch size"),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(ingest.requests(), 1, "a refused body is not retried");
}

#[tokio::test]
async fn bad_request_fails_the_import_without_retry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest =
        FakeIngest::start(|_, _| (400, r#"{"error":"not a JSON array"}"#.to_owned())).await;
    let opts = options(&ingest.url, vec![small_csv(dir.path())]);

    let error = import(&opts).await.expect_err("400 fails");

    assert!(
        matches!(error, ImportError::Refused { status: 400, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("not a JSON array"), "{error}");
    assert_eq!(ingest.requests(), 1);
}

#[tokio::test]
async fn unreachable_ingest_fails_after_bounded_attempts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        format!("http://{}", listener.local_addr().expect("bound"))
    };
    let opts = options(&closed, vec![small_csv(dir.path())]);

    let error = import(&opts).await.expect_err("nobody listens");

    assert!(
        matches!(error, ImportError::Unreachable { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn missing_file_fails_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ingest = FakeIngest::accepting().await;
    let opts = options(
        &ingest.url,
        vec![small_csv(dir.path()), dir.path().join("absent.csv")],
    );

    let error = import(&opts).await.expect_err("a file is missing");

    assert!(matches!(error, ImportError::Open { .. }), "{error:?}");
    assert_eq!(ingest.requests(), 0);
}

#[tokio::test]
async fn bundled_station_file_imports_completely() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/beijing-air-quality/PRSA_Data_Aotizhongxin_20130301-20170228.csv.gz");
    let ingest = FakeIngest::accepting().await;
    let opts = options(&ingest.url, vec![file]);

    let summary = import(&opts).await.expect("import succeeds");

    // Independent counts from the shell: `zcat FILE | tail -n +2 | awk -F, '{for(i=6;i<=15;i++) if ($i=="NA") na++;
    // if ($17=="NA") na++} END {print NR, na, NR*11-na}'` prints `35064 7190 378514`.
    assert_eq!(summary.files, 1);
    assert_eq!(summary.rows, 35_064);
    assert_eq!(summary.skipped_missing, 7_190);
    assert_eq!(summary.readings_sent, 378_514);
    assert_eq!(summary.accepted, 378_514);
    assert_eq!(summary.malformed_rows(), 0);
    assert!(summary.to_string().contains("readings/s"), "{summary}");
    assert_eq!(ingest.answered().len(), 378_514);
}
