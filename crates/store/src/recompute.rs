//! Which buckets a batch touched, level by level.
//!
//! A changed reading `(series, ts)` touches its minute; a touched minute touches its hour, a touched hour its
//! day. Each touched bucket is recomputed from the level below (raw readings for minutes), so replacements —
//! where min, max, first or last may move back — stay exact.

use std::collections::BTreeSet;

use reporting_core::time::Interval;

/// `(series_id, bucket start)` of every bucket of `interval` holding one of `points` (`(series_id, ts)`).
pub(crate) fn touched(
    interval: Interval,
    points: impl IntoIterator<Item = (i64, i64)>,
) -> BTreeSet<(i64, i64)> {
    points
        .into_iter()
        .map(|(sid, ts)| (sid, interval.bucket_start(ts)))
        .collect()
}

/// The level a rollup level is folded from (`None` for minutes: raw readings).
pub(crate) fn source_of(interval: Interval) -> Option<Interval> {
    match interval {
        Interval::Minute => None,
        Interval::Hour => Some(Interval::Minute),
        Interval::Day => Some(Interval::Hour),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reporting_core::time::{DAY_MS, HOUR_MS, MINUTE_MS};

    #[test]
    fn readings_in_one_minute_touch_one_bucket_per_series() {
        let t = touched(
            Interval::Minute,
            [(1, 5), (1, MINUTE_MS - 1), (2, 5), (1, MINUTE_MS)],
        );
        assert_eq!(
            t.into_iter().collect::<Vec<_>>(),
            vec![(1, 0), (1, MINUTE_MS), (2, 0)]
        );
    }

    #[test]
    fn touched_minutes_touch_their_hours_and_days() {
        let minutes = [(7, 0), (7, 59 * MINUTE_MS), (7, HOUR_MS), (7, DAY_MS)];
        assert_eq!(touched(Interval::Hour, minutes).len(), 3);
        assert_eq!(touched(Interval::Day, minutes).len(), 2);
        assert_eq!(source_of(Interval::Day), Some(Interval::Hour));
    }
}
