//! Millisecond timestamps and the bucket intervals of the rollups.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};

/// Milliseconds in one minute.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Milliseconds in one UTC day.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// A rollup level. Buckets are aligned to the Unix epoch in UTC, so a day bucket is a UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Interval {
    /// Every level, finest first.
    pub const ALL: [Interval; 3] = [Interval::Minute, Interval::Hour, Interval::Day];

    /// Length of one bucket in milliseconds.
    pub fn len_ms(self) -> i64 {
        match self {
            Interval::Minute => MINUTE_MS,
            Interval::Hour => HOUR_MS,
            Interval::Day => DAY_MS,
        }
    }

    /// Start of the bucket holding `ts_ms` (floor, also for times before 1970).
    pub fn bucket_start(self, ts_ms: i64) -> i64 {
        ts_ms - ts_ms.rem_euclid(self.len_ms())
    }

    /// The short name used in URLs and reports: `1m`, `1h`, `1d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Minute => "1m",
            Interval::Hour => "1h",
            Interval::Day => "1d",
        }
    }

    /// Parses `1m`, `1h` or `1d`.
    pub fn parse(s: &str) -> Option<Interval> {
        match s {
            "1m" => Some(Interval::Minute),
            "1h" => Some(Interval::Hour),
            "1d" => Some(Interval::Day),
            _ => None,
        }
    }
}

/// Why [`parse_rfc3339`] refused a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeRefusal {
    /// Not an RFC 3339 date-time.
    NotRfc3339,
    /// A valid RFC 3339 time in a leap second (`…T23:59:60Z`): UTC milliseconds have no place for it, and it
    /// would land on the next second's identity.
    LeapSecond,
}

/// Parses an RFC 3339 timestamp (any offset) into epoch milliseconds, truncating below the millisecond.
pub fn parse_rfc3339(s: &str) -> Result<i64, TimeRefusal> {
    let t = DateTime::parse_from_rfc3339(s).map_err(|_| TimeRefusal::NotRfc3339)?;
    if t.nanosecond() >= 1_000_000_000 {
        return Err(TimeRefusal::LeapSecond);
    }
    Ok(t.timestamp_millis())
}

/// [`parse_rfc3339`] when the reason for a refusal does not matter.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    parse_rfc3339(s).ok()
}

/// Formats epoch milliseconds as RFC 3339 in UTC with millisecond precision when needed (`…Z`).
pub fn format_rfc3339_ms(ts_ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ts_ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => ts_ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_start_floors_to_the_interval() {
        // 2013-03-01T00:59:59.999Z = 1362099599999 ms; its hour starts at 1362096000000 (00:00).
        assert_eq!(
            Interval::Hour.bucket_start(1_362_099_599_999),
            1_362_096_000_000
        );
        assert_eq!(
            Interval::Minute.bucket_start(1_362_096_061_000),
            1_362_096_060_000
        );
        assert_eq!(
            Interval::Day.bucket_start(1_362_099_599_999),
            1_362_096_000_000
        );
    }

    #[test]
    fn bucket_start_floors_times_before_the_epoch() {
        assert_eq!(Interval::Minute.bucket_start(-1), -60_000);
        assert_eq!(Interval::Day.bucket_start(-DAY_MS), -DAY_MS);
    }

    #[test]
    fn rfc3339_with_offset_is_converted_to_utc_milliseconds() {
        // Beijing midnight is 16:00 the day before in UTC.
        let expected = parse_rfc3339_ms("2013-02-28T16:00:00Z");
        assert_eq!(parse_rfc3339_ms("2013-03-01T00:00:00+08:00"), expected);
        assert_eq!(expected, Some(1_362_067_200_000));
        assert_eq!(
            parse_rfc3339_ms("2013-03-01T00:00:00.1239Z"),
            Some(1_362_096_000_123)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn formatting_round_trips_milliseconds() {
        assert_eq!(format_rfc3339_ms(1_362_067_200_000), "2013-02-28T16:00:00Z");
        assert_eq!(
            format_rfc3339_ms(1_362_067_200_123),
            "2013-02-28T16:00:00.123Z"
        );
        assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(-1)), Some(-1));
    }

    #[test]
    fn a_leap_second_is_refused_rather_than_folded_into_the_next_second() {
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            Err(TimeRefusal::LeapSecond)
        );
        assert_eq!(parse_rfc3339_ms("2016-12-31T23:59:60Z"), None);
        assert_eq!(parse_rfc3339_ms("2016-12-31T23:59:60.500+00:00"), None);
        // 2017-01-01T00:00:00Z = 1483228800 s
        assert_eq!(
            parse_rfc3339_ms("2017-01-01T00:00:00Z"),
            Some(1_483_228_800_000)
        );
        assert_eq!(parse_rfc3339("2017-01-01"), Err(TimeRefusal::NotRfc3339));
    }
}
