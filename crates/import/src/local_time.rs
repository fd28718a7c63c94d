//! Beijing local time to UTC.
//!
//! The data set stamps each row with the local hour in China Standard Time: UTC+8 all year round, because China
//! has not observed daylight saving time since 1991. Every local hour therefore exists exactly once and maps to
//! one UTC instant eight hours earlier.

use chrono::NaiveDate;

/// Offset of China Standard Time from UTC, in milliseconds.
const CHINA_STANDARD_TIME_OFFSET_MS: i64 = 8 * 3_600_000;

/// UTC epoch milliseconds of the start of local hour `hour` on `year-month-day` in China Standard Time, or `None`
/// when that date or hour does not exist (month 13, 29 February of a common year, hour 24, …).
pub(crate) fn beijing_hour_to_utc_ms(year: i32, month: u32, day: u32, hour: u32) -> Option<i64> {
    let local = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, 0, 0)?;
    Some(local.and_utc().timestamp_millis() - CHINA_STANDARD_TIME_OFFSET_MS)
}

#[cfg(test)]
mod tests {
    use super::beijing_hour_to_utc_ms;
    use chrono::{DateTime, SecondsFormat};

    /// RFC 3339 rendering of a converted local hour, so expectations read as wall-clock times.
    fn utc(year: i32, month: u32, day: u32, hour: u32) -> String {
        let ms = beijing_hour_to_utc_ms(year, month, day, hour).expect("a valid local hour");
        DateTime::from_timestamp_millis(ms)
            .expect("in chrono's range")
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    #[test]
    fn first_row_of_the_data_set_is_the_previous_afternoon_in_utc() {
        // 2013-03-01 00:00 at UTC+8 is 2013-02-28 16:00 UTC.
        // 2013-03-01T00:00:00Z = 1_356_998_400 (2013-01-01) + 59 days * 86_400 = 1_362_096_000 s;
        // eight hours earlier is 1_362_096_000 - 28_800 = 1_362_067_200 s.
        assert_eq!(
            beijing_hour_to_utc_ms(2013, 3, 1, 0),
            Some(1_362_067_200_000)
        );
        assert_eq!(utc(2013, 3, 1, 0), "2013-02-28T16:00:00Z");
    }

    #[test]
    fn eight_in_the_morning_is_midnight_utc_of_the_same_day() {
        assert_eq!(utc(2013, 3, 1, 8), "2013-03-01T00:00:00Z");
        assert_eq!(utc(2013, 3, 1, 23), "2013-03-01T15:00:00Z");
    }

    #[test]
    fn early_hours_of_new_year_fall_in_the_previous_utc_year() {
        assert_eq!(utc(2014, 1, 1, 3), "2013-12-31T19:00:00Z");
    }

    #[test]
    fn leap_day_exists_in_2016() {
        assert_eq!(utc(2016, 2, 29, 12), "2016-02-29T04:00:00Z");
    }

    #[test]
    fn last_row_of_the_data_set_converts() {
        assert_eq!(utc(2017, 2, 28, 23), "2017-02-28T15:00:00Z");
    }

    #[test]
    fn nonexistent_dates_and_hours_are_refused() {
        assert_eq!(beijing_hour_to_utc_ms(2015, 2, 29, 0), None);
        assert_eq!(beijing_hour_to_utc_ms(2013, 13, 1, 0), None);
        assert_eq!(beijing_hour_to_utc_ms(2013, 0, 1, 0), None);
        assert_eq!(beijing_hour_to_utc_ms(2013, 4, 31, 0), None);
        assert_eq!(beijing_hour_to_utc_ms(2013, 3, 1, 24), None);
    }
}
