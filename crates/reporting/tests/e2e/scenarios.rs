//! In-process scenarios on both backends.

use reporting::app::{self, Listeners, Resources, Roles};
use reporting_core::time::Interval;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::oracle::{self, Level};
use crate::system::{self, get_json, get_text, on_both_backends, post, Backend, System};

async fn imported_stations_match_the_csv_and_a_second_import_changes_nothing(backend: Backend) {
    let system = System::start(backend).await;
    let files = system::station_files();
    let days = oracle::expected_rollups(&files, Level::Day);
    let hours = oracle::expected_rollups(&files, Level::Hour);

    let summary = system::import(&system.ingest_url, &files, 5000).await;
    assert_eq!(
        summary.accepted,
        system::total_count(&days),
        "every non-NA reading is accepted"
    );
    assert_eq!(summary.rejected(), 0);
    system.caught_up().await;

    let mut problems = system::api_mismatches(&system.api_url, &days, Level::Day).await;
    problems.extend(system::api_mismatches(&system.api_url, &hours, Level::Hour).await);
    assert!(
        problems.is_empty(),
        "{} mismatches, first: {:#?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );

    let before = snapshot(&system).await;
    let again = system::import(&system.ingest_url, &files, 5000).await;
    assert_eq!(again.accepted, summary.accepted);
    system.caught_up().await;
    let after = snapshot(&system).await;
    assert!(
        before == after,
        "a second import of the same files changed rollups"
    );
    system.stop().await;
}
on_both_backends!(imported_stations_match_the_csv_and_a_second_import_changes_nothing);

/// Every minute and day rollup of the system.
async fn snapshot(system: &System) -> Vec<reporting_store::SnapshotRow> {
    let mut rows = system
        .store()
        .snapshot(Interval::Minute)
        .await
        .expect("snapshot");
    rows.extend(
        system
            .store()
            .snapshot(Interval::Day)
            .await
            .expect("snapshot"),
    );
    rows
}

fn reading(device: &str, timestamp: &str, value: f64) -> Value {
    json!({ "device": device, "metric": "temp", "timestamp": timestamp, "value": value })
}

async fn bucket(system: &System, device: &str, interval: &str) -> Value {
    let (status, body) = get_json(&format!(
        "{}/v1/series?device={device}&metric=temp&interval={interval}",
        system.api_url
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let buckets = body["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 1, "{interval}: {body}");
    buckets[0].clone()
}

async fn new_value_for_a_reading_corrects_its_minute_hour_and_day_including_min_and_max(
    backend: Backend,
) {
    let system = System::start(backend).await;
    let first = json!([
        reading("s1", "2024-05-01T10:00:10Z", 5.0),
        reading("s1", "2024-05-01T10:00:20Z", 9.0),
        reading("s1", "2024-05-01T10:00:40Z", 1.0),
        reading("s1", "2024-05-01T10:30:00Z", 4.0),
    ]);
    let (status, body) = system.send(&first).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(4)),
        "{body}"
    );
    system.caught_up().await;
    let day = bucket(&system, "s1", "1d").await;
    assert_eq!(
        (
            day["max"].as_f64(),
            day["min"].as_f64(),
            day["sum"].as_f64()
        ),
        (Some(9.0), Some(1.0), Some(19.0))
    );

    // The device re-sends two readings with new values: 9 → 2 (the max leaves) and 1 → -3 (a new min).
    let correction = json!([
        reading("s1", "2024-05-01T10:00:20Z", 2.0),
        reading("s1", "2024-05-01T10:00:40Z", -3.0)
    ]);
    let (status, _) = system.send(&correction).await;
    assert_eq!(status, 200);
    system.caught_up().await;

    // Hand-worked: minute 10:00 holds 5, 2, -3; the hour and the day add 4 at 10:30.
    let (status, all_minutes) = get_json(&format!(
        "{}/v1/series?device=s1&metric=temp&interval=1m&to=2024-05-01T10:01:00Z",
        system.api_url
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(all_minutes["buckets"].as_array().map(Vec::len), Some(1));
    let m = &all_minutes["buckets"][0];
    assert_eq!(
        (
            m["count"].as_u64(),
            m["sum"].as_f64(),
            m["min"].as_f64(),
            m["max"].as_f64()
        ),
        (Some(3), Some(4.0), Some(-3.0), Some(5.0))
    );
    assert_eq!(
        (m["first"].as_f64(), m["last"].as_f64()),
        (Some(5.0), Some(-3.0))
    );
    for interval in ["1h", "1d"] {
        let b = bucket(&system, "s1", interval).await;
        assert_eq!(
            (
                b["count"].as_u64(),
                b["sum"].as_f64(),
                b["min"].as_f64(),
                b["max"].as_f64(),
                b["avg"].as_f64()
            ),
            (Some(4), Some(8.0), Some(-3.0), Some(5.0), Some(2.0)),
            "{interval}: {b}"
        );
        assert_eq!(
            (b["first"].as_f64(), b["first_at"].as_str()),
            (Some(5.0), Some("2024-05-01T10:00:10Z"))
        );
        assert_eq!(
            (b["last"].as_f64(), b["last_at"].as_str()),
            (Some(4.0), Some("2024-05-01T10:30:00Z"))
        );
    }
    system.stop().await;
}
on_both_backends!(new_value_for_a_reading_corrects_its_minute_hour_and_day_including_min_and_max);

async fn bad_input_gets_a_specific_answer_and_valid_readings_in_the_request_are_kept(
    backend: Backend,
) {
    let system = System::start(backend).await;
    let url = format!("{}/v1/readings", system.ingest_url);
    let ok_time = "\"2024-05-01T10:00:00Z\"";
    let element = |value: &str| {
        format!(r#"{{"device":"bad-input","metric":"temp","timestamp":{ok_time},"value":{value}}}"#)
    };
    let mut body: Vec<u8> = b"[".to_vec();
    let elements: Vec<Vec<u8>> = vec![
        element("1.5").into_bytes(),      // 0 ok
        element("NaN").into_bytes(),      // 1
        element("Infinity").into_bytes(), // 2
        element("1e999").into_bytes(),    // 3
        br#"{"device":"bad-input","timestamp":"2024-05-01T10:00:01Z"}"#.to_vec(), // 4
        br#"{"device":"bad-input","metric":"temp","timestamp":"2033-01-01T00:00:00Z","value":1}"#
            .to_vec(), // 5
        br#"{"device":"bad-input","metric":"temp","timestamp":1714557600,"value":1}"#.to_vec(), // 6 seconds
        b"{\"device\":\"bad-\xff\",\"metric\":\"temp\",\"timestamp\":0,\"value\":1}".to_vec(),  // 7
        br#"{"device":"bad-input","metric":"temp","timestamp":1714557660000,"value":2.5}"#.to_vec(), // 8 ok (ms)
        br#"{"device":,"metric":"temp"}"#.to_vec(), // 9
        br#"{"device":"bad-input","metric":"temp","timestamp":1714557660000,"value":1.7e308}"#
            .to_vec(), // 10 too big to sum
    ];
    body.extend(elements.join(&b","[..]));
    body.push(b']');
    let (status, answer) = post(&url, "application/json", body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");

    // Names are any text: quotes, backslashes and escapes are kept through the bus and the store (a record
    // with such a name was once accepted and then lost by the aggregator, with every reading it carried).
    let odd = json!([
        {"device": "back\\slash \"dev\"", "metric": "deg\"C", "timestamp": 1714557660000_i64, "value": 3.0},
        {"device": "back\\slash \"dev\"", "metric": "plain", "timestamp": 1714557660000_i64, "value": 4.0},
    ]);
    let (status, odd_answer) = system.send(&odd).await;
    assert_eq!(
        (status, &odd_answer["accepted"]),
        (200, &json!(2)),
        "{odd_answer}"
    );
    system.caught_up().await;
    let api = &system.api_url;
    let (status, metrics) = get_json(&format!(
        "{api}/v1/metrics?device={}",
        system::encode("back\\slash \"dev\"")
    ))
    .await;
    assert_eq!(status, 200, "{metrics}");
    assert_eq!(metrics["metrics"], json!(["deg\"C", "plain"]), "{metrics}");
    let (_, series) = get_json(&format!(
        "{api}/v1/series?device={}&metric={}&interval=1d",
        system::encode("back\\slash \"dev\""),
        system::encode("deg\"C")
    ))
    .await;
    assert_eq!(series["buckets"][0]["sum"], json!(3.0), "{series}");
    let reasons: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect();
    let expected: Vec<(u64, String)> = [
        (1, "non_finite_value"),
        (2, "non_finite_value"),
        (3, "value_out_of_range"),
        (4, "missing_field"),
        (5, "timestamp_in_future"),
        (6, "timestamp_too_old"),
        (7, "invalid_utf8"),
        (9, "invalid_json"),
        (10, "value_out_of_range"),
    ]
    .iter()
    .map(|(i, r)| (*i, r.to_string()))
    .collect();
    assert_eq!(reasons, expected, "{answer}");
    let message = |i: usize| {
        answer["rejected"][i]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(message(2).contains("1e999"), "{}", message(2));
    assert!(
        message(3).contains("metric") && message(3).contains("value"),
        "{}",
        message(3)
    );
    assert!(message(5).contains("epoch seconds"), "{}", message(5));

    // Whole-request errors say what is wrong and how much is allowed.
    let limit = system.config.ingest.max_body_bytes;
    let (status, big) = post(&url, "application/json", vec![b' '; limit + 1]).await;
    assert_eq!(
        (status, big["error"].as_str()),
        (413, Some("body_too_large"))
    );
    assert!(
        big["message"]
            .as_str()
            .unwrap_or("")
            .contains(&limit.to_string()),
        "{big}"
    );
    let (status, broken) = post(&url, "application/json", br#"[{"device":"x","#.to_vec()).await;
    assert_eq!(
        (status, broken["error"].as_str()),
        (400, Some("invalid_body")),
        "{broken}"
    );
    let (status, not_utf8) = post(&url, "application/json", b"\xff\xfe\x00".to_vec()).await;
    assert_eq!(
        (status, not_utf8["error"].as_str()),
        (400, Some("invalid_body")),
        "{not_utf8}"
    );
    let (status, media) = post(&url, "text/plain", b"hello".to_vec()).await;
    assert_eq!(
        (status, media["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, none) = post(&url, "application/json", element("1").into_bytes()).await;
    assert_eq!(
        (status, none["error"].as_str()),
        (400, Some("invalid_body")),
        "an object is not an array: {none}"
    );

    let (status, empty) = post(&url, "application/json", b"  ".to_vec()).await;
    assert_eq!(
        (status, empty["accepted"].as_u64()),
        (200, Some(0)),
        "an empty body is an empty batch: {empty}"
    );

    // NDJSON: a bad line is rejected on its own.
    let ndjson = format!(
        "{}\n{}\n\n{}\n",
        element("3"),
        element("NaN"),
        r#"{"device":"bad-input","metric":"temp","timestamp":"2024-05-01T10:02:00Z","value":4}"#
    );
    let (status, nd) = post(&url, "application/x-ndjson", ndjson.into_bytes()).await;
    assert_eq!((status, nd["accepted"].as_u64()), (200, Some(2)), "{nd}");
    assert_eq!(
        (
            nd["rejected"][0]["index"].as_u64(),
            nd["rejected"][0]["reason"].as_str()
        ),
        (Some(1), Some("non_finite_value"))
    );

    // Everything valid arrived: 1.5 at 10:00 (replaced by 3 from the NDJSON request), 2.5 at 10:01, 4 at 10:02.
    system.caught_up().await;
    let (status, series) = get_json(&format!(
        "{}/v1/series?device=bad-input&metric=temp&interval=1h",
        system.api_url
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            series["buckets"][0]["count"].as_u64(),
            series["buckets"][0]["sum"].as_f64()
        ),
        (Some(3), Some(9.5)),
        "{series}"
    );

    // Every rejection is counted in the metrics.
    let (_, metrics) = get_text(&format!("{}/metrics", system.admin_url)).await;
    for reason in [
        "non_finite_value",
        "value_out_of_range",
        "missing_field",
        "timestamp_in_future",
        "invalid_utf8",
    ] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("reporting_ingest_readings_rejected_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .unwrap_or_else(|| panic!("no rejection counter for {reason}"));
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("counter value");
        assert!(n >= 1.0, "{line}");
    }
    assert!(metrics.contains("reporting_ingest_requests_rejected_total{reason=\"body_too_large\"}"));
    system.stop().await;
}
on_both_backends!(bad_input_gets_a_specific_answer_and_valid_readings_in_the_request_are_kept);

async fn reports_api_answers_csv_lists_and_clear_errors(backend: Backend) {
    let system = System::start(backend).await;
    let body = json!([
        reading("r1", "2024-05-01T10:00:00Z", 2.0),
        reading("r1", "2024-05-02T10:00:00Z", 6.0)
    ]);
    system.send(&body).await;
    system.caught_up().await;
    let api = &system.api_url;
    let (status, csv) = get_text(&format!(
        "{api}/v1/series?device=r1&metric=temp&interval=1d&format=csv"
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        csv,
        "start,count,sum,min,max,avg,first,first_at,last,last_at\n\
         2024-05-01T00:00:00Z,1,2,2,2,2,2,2024-05-01T10:00:00Z,2,2024-05-01T10:00:00Z\n\
         2024-05-02T00:00:00Z,1,6,6,6,6,6,2024-05-02T10:00:00Z,6,2024-05-02T10:00:00Z\n"
    );
    let (_, ranged) = get_json(&format!("{api}/v1/series?device=r1&metric=temp&interval=1d&from=2024-05-02T00:00:00Z&to=1714694400000")).await;
    assert_eq!(
        ranged["buckets"].as_array().map(Vec::len),
        Some(1),
        "{ranged}"
    );
    let (_, devices) = get_json(&format!("{api}/v1/devices")).await;
    assert_eq!(
        devices["devices"],
        json!([{ "tenant": "default", "device": "r1" }])
    );
    let (_, metrics) = get_json(&format!("{api}/v1/metrics?device=r1")).await;
    assert_eq!(metrics["metrics"], json!(["temp"]));
    let (status, bad) = get_json(&format!("{api}/v1/series?metric=temp&interval=2h")).await;
    assert_eq!(status, 400);
    let message = bad["message"].as_str().unwrap_or("");
    assert!(
        message.contains("device is required") && message.contains("interval"),
        "{bad}"
    );
    let (status, missing) = get_json(&format!("{api}/v1/series?device=r1&metric=humidity")).await;
    assert_eq!(
        (status, missing["error"].as_str()),
        (404, Some("unknown_series"))
    );
    system.stop().await;
}
on_both_backends!(reports_api_answers_csv_lists_and_clear_errors);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_kafka_makes_ingest_answer_503_and_acknowledge_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = system::config_for(Backend::Embedded, dir.path()).await;
    config.bus.brokers = Some("127.0.0.1:9".into());
    config.bus.publish_timeout_secs = 2;
    let roles = Roles {
        ingest: true,
        aggregator: false,
        api: false,
        prepare: false,
    };
    let system = System::start_with(config, roles, Some(dir)).await;
    let body = json!([reading("x", "2024-05-01T10:00:00Z", 1.0)]);
    let (status, answer) = system.send(&body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("bus_unavailable")),
        "{answer}"
    );
    assert!(answer.get("accepted").is_none());
    // The pod stays in its Service (answering 503 with a reason beats refusing connections); /readyz names
    // the broken dependency.
    let (ready, report) = get_json(&format!("{}/readyz", system.admin_url)).await;
    assert_eq!(ready, 200, "{report}");
    assert_ne!(report["checks"]["bus"], "ok", "{report}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_refuses_to_start_when_its_log_was_deleted_behind_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = system::config_for(Backend::Embedded, dir.path()).await;
    let all = Roles::ALL;
    let system = System::start_with(config.clone(), all, None).await;
    let body = json!([
        reading("d1", "2024-05-01T10:00:00Z", 1.0),
        reading("d2", "2024-05-01T10:00:00Z", 2.0)
    ]);
    system.send(&body).await;
    system.caught_up().await;
    system.stop().await;

    std::fs::remove_dir_all(dir.path().join("log")).expect("delete the log");
    let resources = Resources::open(&config, all).await.expect("open");
    let listeners = Listeners {
        admin: app::bind("admin", "127.0.0.1:0").await.expect("bind"),
        ingest: Some(app::bind("ingest", "127.0.0.1:0").await.expect("bind")),
        api: Some(app::bind("api", "127.0.0.1:0").await.expect("bind")),
    };
    let started = app::run(config, all, resources, listeners, CancellationToken::new()).await;
    let error = format!("{:#}", started.expect_err("must refuse to start"));
    assert!(error.contains("behind the store"), "{error}");
}
