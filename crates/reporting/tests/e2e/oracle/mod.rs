//! Independent oracle for the end-to-end tests: the rollups Reporting should serve, computed straight from the
//! Beijing air-quality CSV files with no reporting crate involved.
//!
//! The rules, restated from the data set's README and the importer's contract:
//! - a station is a device; each of the numeric columns `PM2.5 PM10 SO2 NO2 CO O3 TEMP PRES DEWP RAIN WSPM` is a
//!   metric (`No` and `wd` are not);
//! - `year,month,day,hour` is local time in China Standard Time (UTC+8, no daylight saving), converted to UTC;
//! - a value that is `NA` or empty is missing and contributes nothing (it is never zero);
//! - a row contributes nothing at all when its date does not exist, its station is empty, its field count differs
//!   from the header's, it is not UTF-8, or one of its metric values is neither missing nor a finite number;
//! - a reading's identity is (station, metric, UTC timestamp): the same reading seen twice (the same file imported
//!   twice) counts once; two different values for one identity make the expectation ambiguous and panic here;
//! - buckets are aligned to UTC hours or UTC days; first/last are the values at the earliest/latest timestamp.
//!
//! Use: `expected_rollups(&files, Level::Day)`, then for each series `compare_series(&expected, station, metric,
//! .., &body["buckets"])` (or narrow the window with a range of bucket starts), and assert the mismatch list is
//! empty.

// Each end-to-end test uses a part of the oracle.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::RangeBounds;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, TimeZone};
use serde_json::Value;

/// The metric columns of the data set.
pub(crate) const METRICS: [&str; 11] = [
    "PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN", "WSPM",
];

/// Relative tolerance for sums (and averages), which the system may add up in a different order.
pub(crate) const SUM_TOLERANCE: f64 = 1e-9;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// UTC hours; the API's `interval=1h`.
    Hour,
    /// UTC days; the API's `interval=1d`.
    Day,
}

impl Level {
    /// Bucket width in milliseconds.
    pub(crate) fn width_ms(self) -> i64 {
        match self {
            Level::Hour => HOUR_MS,
            Level::Day => DAY_MS,
        }
    }

    /// The API's `interval` parameter for this level.
    pub(crate) fn interval(self) -> &'static str {
        match self {
            Level::Hour => "1h",
            Level::Day => "1d",
        }
    }
}

/// The expected rollup of one bucket of one series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expected {
    pub(crate) count: u64,
    /// Sum in ascending time order.
    pub(crate) sum: f64,
    /// Sum of absolute values: the scale of the rounding error any summation order can make, so the sum tolerance
    /// is `SUM_TOLERANCE * abs_sum` (equal to a relative tolerance on `sum` when all values have one sign, and
    /// still meaningful when positive and negative values cancel).
    pub(crate) abs_sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// Value at the earliest timestamp in the bucket, and that timestamp (UTC epoch ms).
    pub(crate) first: f64,
    pub(crate) first_at: i64,
    /// Value at the latest timestamp in the bucket, and that timestamp (UTC epoch ms).
    pub(crate) last: f64,
    pub(crate) last_at: i64,
}

/// (station, metric, bucket start in UTC epoch ms).
pub(crate) type Key = (String, String, i64);

/// Every reading of a set of files: (station, metric) → UTC epoch ms → value, each identity once.
pub(crate) type Readings = BTreeMap<(String, String), BTreeMap<i64, f64>>;

/// The expected rollups of every (station, metric, bucket) in `files` (plain or gzip CSV).
pub(crate) fn expected_rollups(files: &[PathBuf], level: Level) -> BTreeMap<Key, Expected> {
    let mut readings = Readings::new();
    for path in files {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("oracle: cannot read {}: {e}", path.display()));
        if bytes.starts_with(&[0x1f, 0x8b]) {
            add_csv(&mut readings, flate2::read::MultiGzDecoder::new(&bytes[..]));
        } else {
            add_csv(&mut readings, &bytes[..]);
        }
    }
    rollups(&readings, level)
}

/// Adds the readings of one CSV text (header first) to `readings`.
pub(crate) fn add_csv(readings: &mut Readings, input: impl Read) {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = reader.headers().expect("oracle: a CSV header").clone();
    let column = |name: &str| header.iter().position(|h| h == name);
    let year = column("year").expect("oracle: a year column");
    let month = column("month").expect("oracle: a month column");
    let day = column("day").expect("oracle: a day column");
    let hour = column("hour").expect("oracle: an hour column");
    let station = column("station").expect("oracle: a station column");
    let metrics: Vec<(&str, usize)> = METRICS
        .iter()
        .filter_map(|&m| column(m).map(|i| (m, i)))
        .collect();
    let china_standard_time = FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");

    for record in reader.records() {
        // Rows of the wrong length or not in UTF-8 contribute nothing; anything else (I/O) is the test's problem.
        let record = match record {
            Ok(record) => record,
            Err(e)
                if matches!(
                    e.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ) =>
            {
                continue;
            }
            Err(e) => panic!("oracle: cannot read CSV: {e}"),
        };
        let local = NaiveDate::from_ymd_opt(
            record[year].parse().unwrap_or(-1),
            record[month].parse().unwrap_or(0),
            record[day].parse().unwrap_or(0),
        )
        .and_then(|date| date.and_hms_opt(record[hour].parse().unwrap_or(99), 0, 0));
        let Some(local) = local else { continue };
        let utc_ms = china_standard_time
            .from_local_datetime(&local)
            .single()
            .expect("UTC+8 has no gaps or folds")
            .timestamp_millis();
        if record[station].is_empty() {
            continue;
        }

        let mut values = Vec::new();
        let mut malformed = false;
        for &(metric, index) in &metrics {
            let text = &record[index];
            if text.is_empty() || text == "NA" {
                continue;
            }
            match text.parse::<f64>() {
                Ok(value) if value.is_finite() => values.push((metric, value)),
                _ => malformed = true,
            }
        }
        if malformed {
            continue;
        }

        for (metric, value) in values {
            let series = readings
                .entry((record[station].to_owned(), metric.to_owned()))
                .or_default();
            if let Some(&seen) = series.get(&utc_ms) {
                assert!(
                    seen == value,
                    "oracle: {}/{metric} at {} has two values, {seen} and {value}",
                    &record[station],
                    rfc3339(utc_ms)
                );
            }
            series.insert(utc_ms, value);
        }
    }
}

/// Folds readings into buckets of `level`, in ascending time order within each series.
pub(crate) fn rollups(readings: &Readings, level: Level) -> BTreeMap<Key, Expected> {
    let width = level.width_ms();
    let mut out = BTreeMap::new();
    for ((station, metric), series) in readings {
        for (&at, &value) in series {
            let start = at.div_euclid(width) * width;
            out.entry((station.clone(), metric.clone(), start))
                .and_modify(|e: &mut Expected| {
                    e.count += 1;
                    e.sum += value;
                    e.abs_sum += value.abs();
                    e.min = e.min.min(value);
                    e.max = e.max.max(value);
                    // Ascending time: every later reading is the new last; the first stays.
                    e.last = value;
                    e.last_at = at;
                })
                .or_insert(Expected {
                    count: 1,
                    sum: value,
                    abs_sum: value.abs(),
                    min: value,
                    max: value,
                    first: value,
                    first_at: at,
                    last: value,
                    last_at: at,
                });
        }
    }
    out
}

/// The (station, metric) pairs that have at least one bucket.
pub(crate) fn series_names(expected: &BTreeMap<Key, Expected>) -> BTreeSet<(String, String)> {
    expected
        .keys()
        .map(|(station, metric, _)| (station.clone(), metric.clone()))
        .collect()
}

/// The expected buckets of one series whose start lies in `starts` (`..` for all), by start.
pub(crate) fn series(
    expected: &BTreeMap<Key, Expected>,
    station: &str,
    metric: &str,
    starts: impl RangeBounds<i64>,
) -> BTreeMap<i64, Expected> {
    let lowest = (station.to_owned(), metric.to_owned(), i64::MIN);
    let highest = (station.to_owned(), metric.to_owned(), i64::MAX);
    let mut out = BTreeMap::new();
    for ((_, _, start), e) in expected.range(lowest..=highest) {
        if starts.contains(start) {
            out.insert(*start, e.clone());
        }
    }
    out
}

/// Mismatches between the expected buckets of one series (those whose start is in `starts`) and the API's
/// `buckets` array of `/v1/series`; empty when they agree.
pub(crate) fn compare_series(
    expected: &BTreeMap<Key, Expected>,
    station: &str,
    metric: &str,
    starts: impl RangeBounds<i64>,
    buckets: &Value,
) -> Vec<String> {
    compare_buckets(
        &format!("{station}/{metric}"),
        &series(expected, station, metric, starts),
        buckets,
    )
}

/// Mismatches between `expected` (bucket start → rollup) and an API `buckets` array, each a sentence naming
/// `series`, the bucket and the field. Counts, min, max, first, last and their timestamps must be equal; sum and
/// avg within [`SUM_TOLERANCE`] relative to the sum of absolute values.
pub(crate) fn compare_buckets(
    series: &str,
    expected: &BTreeMap<i64, Expected>,
    buckets: &Value,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(buckets) = buckets.as_array() else {
        return vec![format!("{series}: buckets is not an array: {buckets}")];
    };

    let mut actual: BTreeMap<i64, &Value> = BTreeMap::new();
    for bucket in buckets {
        match timestamp(&bucket["start"]) {
            Some(start) => {
                if actual.insert(start, bucket).is_some() {
                    problems.push(format!("{series}: bucket {} appears twice", rfc3339(start)));
                }
            }
            None => problems.push(format!(
                "{series}: bucket without an RFC 3339 start: {bucket}"
            )),
        }
    }

    for (&start, e) in expected {
        let at = rfc3339(start);
        let Some(bucket) = actual.get(&start) else {
            problems.push(format!(
                "{series}: bucket {at} is missing (expected count {})",
                e.count
            ));
            continue;
        };
        let tolerance = SUM_TOLERANCE * e.abs_sum;
        let near = |field: &str, want: f64, tolerance: f64| {
            bucket[field]
                .as_f64()
                .is_some_and(|got| (got - want).abs() <= tolerance)
        };
        let exact = |field: &str, want: f64| bucket[field].as_f64() == Some(want);
        let at_ms = |field: &str, want: i64| timestamp(&bucket[field]) == Some(want);
        let mut checks = vec![
            (
                "count",
                bucket["count"].as_u64() == Some(e.count),
                e.count.to_string(),
            ),
            (
                "sum",
                near("sum", e.sum, tolerance),
                format!("{} ± {tolerance:.1e}", e.sum),
            ),
            ("min", exact("min", e.min), e.min.to_string()),
            ("max", exact("max", e.max), e.max.to_string()),
            ("first", exact("first", e.first), e.first.to_string()),
            (
                "first_at",
                at_ms("first_at", e.first_at),
                rfc3339(e.first_at),
            ),
            ("last", exact("last", e.last), e.last.to_string()),
            ("last_at", at_ms("last_at", e.last_at), rfc3339(e.last_at)),
        ];
        if !bucket["avg"].is_null() {
            let (avg, tolerance) = (e.sum / e.count as f64, tolerance / e.count as f64);
            checks.push((
                "avg",
                near("avg", avg, tolerance),
                format!("{avg} ± {tolerance:.1e}"),
            ));
        }
        for (field, ok, want) in checks {
            if !ok {
                let got = &bucket[field];
                problems.push(format!(
                    "{series}: bucket {at}: {field} is {got}, expected {want}"
                ));
            }
        }
    }

    for start in actual.keys() {
        if !expected.contains_key(start) {
            problems.push(format!(
                "{series}: bucket {} is not expected",
                rfc3339(*start)
            ));
        }
    }
    problems
}

/// UTC epoch ms as RFC 3339 with `Z`, e.g. `2013-02-28T16:00:00Z` (for query parameters and messages).
pub(crate) fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// An RFC 3339 string (or an integer of epoch ms) as UTC epoch ms.
fn timestamp(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_millis()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Station A, local time UTC+8 → UTC:
    //   row 1  2013-03-01 07:00 → 2013-02-28T23:00Z  PM2.5 10   TEMP -1.5
    //   row 2  2013-03-01 08:00 → 2013-03-01T00:00Z  PM2.5 NA   TEMP -0.5
    //   row 3  2013-03-01 09:00 → 2013-03-01T01:00Z  PM2.5 30   TEMP  0.5
    //   row 4  2013-03-01 10:00 → 2013-03-01T02:00Z  PM2.5 20   TEMP oops  (malformed: the whole row is out)
    //   row 5  2013-03-01 11:00 → 2013-03-01T03:00Z  PM2.5 5    TEMP  2
    //   row 6  2013-02-30 12:00   (no such date: out)
    // Station B:
    //   row 7  2013-03-01 08:00 → 2013-03-01T00:00Z  PM2.5 7    TEMP  1
    //   row 8  the same as row 7 again (a replay: counted once)
    const CSV: &str =
        "\"No\",\"year\",\"month\",\"day\",\"hour\",\"PM2.5\",\"TEMP\",\"wd\",\"station\"
1,2013,3,1,7,10,-1.5,\"N\",\"A\"
2,2013,3,1,8,NA,-0.5,\"N\",\"A\"
3,2013,3,1,9,30,0.5,\"NE\",\"A\"
4,2013,3,1,10,20,oops,\"N\",\"A\"
5,2013,3,1,11,5,2,\"N\",\"A\"
6,2013,2,30,12,1,1,\"N\",\"A\"
7,2013,3,1,8,7,1,\"N\",\"B\"
7,2013,3,1,8,7,1,\"N\",\"B\"
";

    // 2013-03-01T00:00:00Z = 1_362_096_000_000 ms (1_356_998_400 s for 2013-01-01 plus 59 days of 86_400 s).
    const MAR_1: i64 = 1_362_096_000_000;
    const FEB_28: i64 = MAR_1 - DAY_MS;
    /// The UTC hours of the readings: 2013-02-28T23:00Z, 2013-03-01T00:00Z, T01:00Z, T03:00Z.
    const T23: i64 = MAR_1 - HOUR_MS;
    const T00: i64 = MAR_1;
    const T01: i64 = MAR_1 + HOUR_MS;
    const T03: i64 = MAR_1 + 3 * HOUR_MS;

    fn key(station: &str, metric: &str, start: i64) -> Key {
        (station.to_owned(), metric.to_owned(), start)
    }

    /// An expected rollup from `count`, `[sum, abs_sum, min, max]`, `(first, first_at)`, `(last, last_at)`.
    fn rollup(count: u64, stats: [f64; 4], first: (f64, i64), last: (f64, i64)) -> Expected {
        let [sum, abs_sum, min, max] = stats;
        let (first, first_at, last, last_at) = (first.0, first.1, last.0, last.1);
        Expected {
            count,
            sum,
            abs_sum,
            min,
            max,
            first,
            first_at,
            last,
            last_at,
        }
    }

    fn expected(level: Level) -> BTreeMap<Key, Expected> {
        let mut readings = Readings::new();
        add_csv(&mut readings, CSV.as_bytes());
        rollups(&readings, level)
    }

    #[test]
    fn day_rollups_of_a_tiny_csv_match_the_hand_worked_values() {
        let want = BTreeMap::from([
            // A/PM2.5 on 28 Feb UTC: only row 1.
            (
                key("A", "PM2.5", FEB_28),
                rollup(1, [10.0, 10.0, 10.0, 10.0], (10.0, T23), (10.0, T23)),
            ),
            // A/PM2.5 on 1 Mar UTC: rows 3 and 5 (row 2 is NA, row 4 malformed): 30 + 5 = 35.
            (
                key("A", "PM2.5", MAR_1),
                rollup(2, [35.0, 35.0, 5.0, 30.0], (30.0, T01), (5.0, T03)),
            ),
            (
                key("A", "TEMP", FEB_28),
                rollup(1, [-1.5, 1.5, -1.5, -1.5], (-1.5, T23), (-1.5, T23)),
            ),
            // A/TEMP on 1 Mar UTC: rows 2, 3, 5: -0.5 + 0.5 + 2 = 2; |-0.5| + 0.5 + 2 = 3.
            (
                key("A", "TEMP", MAR_1),
                rollup(3, [2.0, 3.0, -0.5, 2.0], (-0.5, T00), (2.0, T03)),
            ),
            // B: row 7 once, though it appears twice.
            (
                key("B", "PM2.5", MAR_1),
                rollup(1, [7.0, 7.0, 7.0, 7.0], (7.0, T00), (7.0, T00)),
            ),
            (
                key("B", "TEMP", MAR_1),
                rollup(1, [1.0, 1.0, 1.0, 1.0], (1.0, T00), (1.0, T00)),
            ),
        ]);
        assert_eq!(expected(Level::Day), want);
    }

    #[test]
    fn hour_rollups_of_a_tiny_csv_have_one_bucket_per_reading() {
        let hours = expected(Level::Hour);
        let a_pm25: Vec<i64> = series(&hours, "A", "PM2.5", ..).into_keys().collect();
        assert_eq!(a_pm25, [T23, T01, T03]);
        let a_temp_t00 = rollup(1, [-0.5, 0.5, -0.5, -0.5], (-0.5, T00), (-0.5, T00));
        assert_eq!(hours[&key("A", "TEMP", T00)], a_temp_t00);
        // A/PM2.5: 3 hours, A/TEMP: 4 hours, B: 1 hour for each metric.
        assert_eq!(hours.len(), 3 + 4 + 1 + 1);
    }

    #[test]
    fn matching_buckets_give_no_mismatches_and_each_difference_is_named() {
        let days = expected(Level::Day);
        let mut buckets = json!([
            {"start": "2013-02-28T00:00:00Z", "count": 1, "sum": 10.0, "min": 10.0, "max": 10.0, "avg": 10.0,
             "first": 10.0, "first_at": "2013-02-28T23:00:00Z", "last": 10.0, "last_at": "2013-02-28T23:00:00Z"},
            {"start": "2013-03-01T00:00:00Z", "count": 2, "sum": 35.000000000001, "min": 5.0, "max": 30.0,
             "avg": 17.5, "first": 30.0, "first_at": "2013-03-01T01:00:00Z", "last": 5.0,
             "last_at": "2013-03-01T03:00:00Z"}
        ]);
        assert_eq!(
            compare_series(&days, "A", "PM2.5", .., &buckets),
            Vec::<String>::new()
        );
        // Only the second day, and only when asked for it.
        let second_only = json!([buckets[1].clone()]);
        assert_eq!(
            compare_series(&days, "A", "PM2.5", MAR_1.., &second_only),
            Vec::<String>::new()
        );

        buckets[1]["max"] = json!(29.0);
        buckets[1]["sum"] = json!(35.1);
        buckets[0]["start"] = json!("2013-02-27T00:00:00Z");
        let problems = compare_series(&days, "A", "PM2.5", .., &buckets);
        assert_eq!(
            problems,
            [
                "A/PM2.5: bucket 2013-02-28T00:00:00Z is missing (expected count 1)",
                "A/PM2.5: bucket 2013-03-01T00:00:00Z: sum is 35.1, expected 35 ± 3.5e-8",
                "A/PM2.5: bucket 2013-03-01T00:00:00Z: max is 29.0, expected 30",
                "A/PM2.5: bucket 2013-02-27T00:00:00Z is not expected",
            ]
        );
    }

    #[test]
    fn local_hours_convert_to_utc_eight_hours_earlier() {
        let mut readings = Readings::new();
        add_csv(
            &mut readings,
            "year,month,day,hour,CO,station\n2013,3,1,0,300,X\n2014,1,1,3,1.5,X\n".as_bytes(),
        );
        let times: Vec<String> = readings[&("X".to_owned(), "CO".to_owned())]
            .keys()
            .map(|&t| rfc3339(t))
            .collect();
        assert_eq!(times, ["2013-02-28T16:00:00Z", "2013-12-31T19:00:00Z"]);
    }
}
