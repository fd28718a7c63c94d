//! Mergeable rollups: count, sum, min, max, first and last (by event time, each with its timestamp).
//!
//! A rollup of rollups equals the rollup of the raw readings, so a minute is folded from raw readings, an hour
//! from its minutes and a day from its hours. Averages are `sum / count` at read time, never an average of
//! averages. Sums use Neumaier's compensated summation so the order of folding barely matters.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::time::Interval;

/// The summary of the readings in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollup {
    /// Number of readings (≥ 1 for a stored rollup).
    pub count: i64,
    /// Sum of the values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Timestamp (epoch ms) of the earliest reading.
    pub first_ts: i64,
    /// Value of the earliest reading.
    pub first: f64,
    /// Timestamp (epoch ms) of the latest reading.
    pub last_ts: i64,
    /// Value of the latest reading.
    pub last: f64,
}

impl Rollup {
    /// The rollup of a single reading.
    pub fn of_reading(ts_ms: i64, value: f64) -> Rollup {
        Rollup {
            count: 1,
            sum: value,
            min: value,
            max: value,
            first_ts: ts_ms,
            first: value,
            last_ts: ts_ms,
            last: value,
        }
    }

    /// Mean of the values (`sum / count`).
    pub fn avg(&self) -> f64 {
        self.sum / self.count as f64
    }

    /// Merges two rollups (associative and commutative; the sum is a plain addition — use [`RollupFold`]
    /// to fold many with compensation).
    pub fn merge(&self, other: &Rollup) -> Rollup {
        let mut fold = RollupFold::default();
        fold.push(self);
        fold.push(other);
        // A fold of two rollups always yields one.
        fold.finish().unwrap_or(*self)
    }
}

/// Neumaier's compensated sum.
#[derive(Debug, Default, Clone, Copy)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    /// Adds one term.
    pub fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    /// The compensated total.
    pub fn total(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Folds rollups (or readings) into one rollup with a compensated sum.
#[derive(Debug, Default, Clone)]
pub struct RollupFold {
    acc: Option<Rollup>,
    sum: CompensatedSum,
}

impl RollupFold {
    /// Adds one reading.
    pub fn push_reading(&mut self, ts_ms: i64, value: f64) {
        self.push(&Rollup::of_reading(ts_ms, value));
    }

    /// Adds one rollup.
    pub fn push(&mut self, r: &Rollup) {
        self.sum.add(r.sum);
        let Some(acc) = self.acc.as_mut() else {
            self.acc = Some(*r);
            return;
        };
        acc.count += r.count;
        acc.min = acc.min.min(r.min);
        acc.max = acc.max.max(r.max);
        if earlier(r.first_ts, r.first, acc.first_ts, acc.first) {
            acc.first_ts = r.first_ts;
            acc.first = r.first;
        }
        if later(r.last_ts, r.last, acc.last_ts, acc.last) {
            acc.last_ts = r.last_ts;
            acc.last = r.last;
        }
    }

    /// The folded rollup, or `None` when nothing was pushed.
    pub fn finish(&self) -> Option<Rollup> {
        self.acc.map(|mut r| {
            r.sum = self.sum.total();
            r
        })
    }
}

/// `(ts, v)` comes before `(ts0, v0)`; equal times (only possible for identical identities) break by value so
/// the result does not depend on the order of merging.
fn earlier(ts: i64, v: f64, ts0: i64, v0: f64) -> bool {
    match ts.cmp(&ts0) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => v.total_cmp(&v0) == Ordering::Less,
    }
}

fn later(ts: i64, v: f64, ts0: i64, v0: f64) -> bool {
    match ts.cmp(&ts0) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => v.total_cmp(&v0) == Ordering::Greater,
    }
}

/// Folds timestamped items of many series into buckets of `interval`: `(series, ts, rollup)` →
/// `(series, bucket start) → rollup`. Use it with raw readings (`Rollup::of_reading`) for minutes, with minute
/// rollups (ts = minute start) for hours, and with hour rollups for days.
pub fn fold_into_buckets<K: Ord + Clone>(
    interval: Interval,
    items: impl IntoIterator<Item = (K, i64, Rollup)>,
) -> BTreeMap<(K, i64), Rollup> {
    let mut folds: BTreeMap<(K, i64), RollupFold> = BTreeMap::new();
    for (key, ts, rollup) in items {
        folds
            .entry((key, interval.bucket_start(ts)))
            .or_default()
            .push(&rollup);
    }
    let mut out = BTreeMap::new();
    for (k, fold) in folds {
        if let Some(r) = fold.finish() {
            out.insert(k, r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{HOUR_MS, MINUTE_MS};
    use proptest::prelude::*;

    #[test]
    fn hand_worked_minute_summarises_three_readings() {
        // 10:00:05 → 3.0, 10:00:01 → 5.0, 10:00:30 → -1.5 (arrival order differs from event order)
        let mut fold = RollupFold::default();
        fold.push_reading(5_000, 3.0);
        fold.push_reading(1_000, 5.0);
        fold.push_reading(30_000, -1.5);
        let r = fold.finish().expect("three readings");
        assert_eq!(r.count, 3);
        assert_eq!(r.sum, 6.5);
        assert_eq!((r.min, r.max), (-1.5, 5.0));
        assert_eq!((r.first_ts, r.first), (1_000, 5.0));
        assert_eq!((r.last_ts, r.last), (30_000, -1.5));
        assert_eq!(r.avg(), 6.5 / 3.0);
    }

    #[test]
    fn compensated_sum_keeps_small_terms_next_to_large_ones() {
        // 1e16 + 1 + 1 - 1e16 is 2 exactly; a naive left fold gives 0.
        let mut s = CompensatedSum::default();
        for x in [1e16, 1.0, 1.0, -1e16] {
            s.add(x);
        }
        assert_eq!(s.total(), 2.0);
    }

    #[test]
    fn folding_into_hours_groups_by_series_and_bucket() {
        let items = vec![
            ("a", 0, Rollup::of_reading(0, 1.0)),
            ("a", HOUR_MS - 1, Rollup::of_reading(HOUR_MS - 1, 2.0)),
            ("a", HOUR_MS, Rollup::of_reading(HOUR_MS, 4.0)),
            ("b", 10 * MINUTE_MS, Rollup::of_reading(10 * MINUTE_MS, 8.0)),
        ];
        let out = fold_into_buckets(Interval::Hour, items);
        assert_eq!(out.len(), 3);
        assert_eq!(out[&("a", 0)].sum, 3.0);
        assert_eq!(out[&("a", HOUR_MS)].count, 1);
        assert_eq!(out[&("b", 0)].first, 8.0);
    }

    fn readings() -> impl Strategy<Value = Vec<(i64, f64)>> {
        // Distinct timestamps within two days, values of mixed magnitude.
        prop::collection::btree_map(0i64..2 * 86_400_000, -1e6f64..1e6, 1..200)
            .prop_map(|m| m.into_iter().collect())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn fold_raw(rs: &[(i64, f64)]) -> Option<Rollup> {
        let mut f = RollupFold::default();
        for (t, v) in rs {
            f.push_reading(*t, *v);
        }
        f.finish()
    }

    fn same(a: &Rollup, b: &Rollup) -> bool {
        a.count == b.count
            && close(a.sum, b.sum)
            && a.min == b.min
            && a.max == b.max
            && (a.first_ts, a.first, a.last_ts, a.last) == (b.first_ts, b.first, b.last_ts, b.last)
    }

    proptest! {
        #[test]
        fn rollup_of_rollups_equals_rollup_of_raw(rs in readings()) {
            let raw = fold_raw(&rs).expect("non-empty");
            let minutes = fold_into_buckets(Interval::Minute, rs.iter().map(|(t, v)| ((), *t, Rollup::of_reading(*t, *v))));
            let hours = fold_into_buckets(Interval::Hour, minutes.iter().map(|((k, b), r)| (*k, *b, *r)));
            let days = fold_into_buckets(Interval::Day, hours.iter().map(|((k, b), r)| (*k, *b, *r)));
            let mut all = RollupFold::default();
            for r in days.values() {
                all.push(r);
            }
            let from_days = all.finish().expect("non-empty");
            prop_assert!(same(&raw, &from_days), "{raw:?} vs {from_days:?}");
            // and each day equals the direct fold of its own raw readings
            for ((_, day), r) in &days {
                let own: Vec<_> = rs.iter().copied().filter(|(t, _)| Interval::Day.bucket_start(*t) == *day).collect();
                prop_assert!(same(r, &fold_raw(&own).expect("day has readings")));
            }
        }

        #[test]
        fn merge_is_commutative_and_associative(a in readings(), b in readings(), c in readings()) {
            let (ra, rb, rc) = (fold_raw(&a).expect("a"), fold_raw(&b).expect("b"), fold_raw(&c).expect("c"));
            prop_assert!(same(&ra.merge(&rb), &rb.merge(&ra)));
            prop_assert!(same(&ra.merge(&rb).merge(&rc), &ra.merge(&rb.merge(&rc))));
        }
    }
}
