//! Which buckets a batch touched, level by level, and how each is brought up to date.
//!
//! A changed reading `(series, ts)` touches its minute; a touched minute touches its hour, a touched hour its
//! day. Two ways to bring a touched bucket up to date:
//! - **recompute** it from the level below (raw readings for minutes): always exact, and needed wherever a
//!   reading was *replaced* — min, max, first or last may move back, which no delta can express;
//! - **merge** the batch's own rollup of the bucket into the stored one ([`plan`]): exact when every changed
//!   reading in the bucket is *new*, since a rollup of a union of disjoint sets is the merge of their rollups.
//!   It spares reading the level below back.
//!
//! A bucket holding a replaced reading (or a recomputed bucket below it) is recomputed; every other touched
//! bucket is merged.

use std::collections::{BTreeMap, BTreeSet};

use reporting_core::rollup::{fold_into_buckets, Rollup};
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

/// How one rollup level is brought up to date after a batch.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct LevelPlan {
    /// Buckets to recompute from the level below (after that level is written).
    pub(crate) recompute: BTreeSet<(i64, i64)>,
    /// Buckets to merge with the stored rollup (inserted when absent): the rollup of the batch's new readings in
    /// each. Disjoint from `recompute`.
    pub(crate) merge: BTreeMap<(i64, i64), Rollup>,
}

/// The plan for minutes, hours and days (in [`Interval::ALL`] order) after a batch stored `inserted` readings
/// `(series_id, ts, value)` that were new and replaced the values of `replaced` `(series_id, ts)`.
pub(crate) fn plan(inserted: &[(i64, i64, f64)], replaced: &[(i64, i64)]) -> Vec<LevelPlan> {
    let mut levels: Vec<LevelPlan> = Vec::with_capacity(Interval::ALL.len());
    for interval in Interval::ALL {
        let (recompute, merge) = match levels.last() {
            None => (
                touched(interval, replaced.iter().copied()),
                fold_into_buckets(
                    interval,
                    inserted
                        .iter()
                        .map(|&(sid, ts, value)| (sid, ts, Rollup::of_reading(ts, value))),
                ),
            ),
            Some(below) => (
                touched(interval, below.recompute.iter().copied()),
                fold_into_buckets(
                    interval,
                    below
                        .merge
                        .iter()
                        .map(|(&(sid, start), r)| (sid, start, *r)),
                ),
            ),
        };
        let merge = merge
            .into_iter()
            .filter(|(bucket, _)| !recompute.contains(bucket))
            .collect();
        levels.push(LevelPlan { recompute, merge });
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
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

    #[test]
    fn a_replaced_reading_recomputes_its_buckets_and_new_readings_elsewhere_merge() {
        // Series 1: a new reading at 00:00:10 and a replaced one at 00:01:00 (same hour and day).
        // Series 2: two new readings in one minute of the next day.
        let inserted = [(1, 10_000, 4.0), (2, DAY_MS + 5, 1.0), (2, DAY_MS + 7, 3.0)];
        let replaced = [(1, MINUTE_MS)];
        let [minutes, hours, days] =
            <[LevelPlan; 3]>::try_from(plan(&inserted, &replaced)).expect("three levels");

        assert_eq!(minutes.recompute, BTreeSet::from([(1, MINUTE_MS)]));
        let merged: Vec<_> = minutes.merge.keys().copied().collect();
        assert_eq!(merged, vec![(1, 0), (2, DAY_MS)]);
        let two = minutes.merge[&(2, DAY_MS)];
        assert_eq!((two.count, two.sum, two.min, two.max), (2, 4.0, 1.0, 3.0));
        assert_eq!((two.first_ts, two.last_ts), (DAY_MS + 5, DAY_MS + 7));

        // Hour 0 of series 1 holds a recomputed minute: recomputed, not merged (its new minute is read back).
        assert_eq!(hours.recompute, BTreeSet::from([(1, 0)]));
        assert_eq!(
            hours.merge.keys().copied().collect::<Vec<_>>(),
            vec![(2, DAY_MS)]
        );
        assert_eq!(days.recompute, BTreeSet::from([(1, 0)]));
        assert_eq!(days.merge[&(2, DAY_MS)].count, 2);
    }

    #[test]
    fn a_batch_of_duplicates_only_plans_nothing() {
        assert!(plan(&[], &[]).iter().all(|l| *l == LevelPlan::default()));
    }

    /// Rollups of every level from scratch: the independent computation the plan is checked against.
    fn from_scratch(raw: &BTreeMap<(i64, i64), f64>) -> Vec<BTreeMap<(i64, i64), Rollup>> {
        Interval::ALL
            .iter()
            .map(|&interval| {
                fold_into_buckets(
                    interval,
                    raw.iter()
                        .map(|(&(sid, ts), &v)| (sid, ts, Rollup::of_reading(ts, v))),
                )
            })
            .collect()
    }

    fn same(a: &Rollup, b: &Rollup) -> bool {
        let scale = 1e-12 * (a.sum.abs() + b.sum.abs() + 1.0);
        a.count == b.count
            && (a.sum - b.sum).abs() <= scale
            && (a.min, a.max, a.first_ts, a.first, a.last_ts, a.last)
                == (b.min, b.max, b.first_ts, b.first, b.last_ts, b.last)
    }

    proptest! {
        /// Stored rollups brought up to date by the plan (merge, or recompute from the updated level below)
        /// equal rollups computed from scratch over the stored readings after the batch.
        #[test]
        fn plan_applied_to_stored_rollups_equals_a_recomputation_from_scratch(
            before in proptest::collection::btree_map((0i64..3, 0i64..400), -50i32..50, 0..40),
            batch in proptest::collection::btree_map((0i64..3, 0i64..400), -50i32..50, 0..40),
        ) {
            // 400 slots: 100 minutes 28.8 minutes apart over two days, four seconds in each, so readings share
            // minutes, hours and days, and the batch often repeats or replaces a stored reading; small integer
            // values.
            let at = |slot: i64| slot / 4 * 1_728_000 + slot % 4 * 7_000;
            let before: BTreeMap<(i64, i64), f64> =
                before.into_iter().map(|((s, t), v)| ((s, at(t)), f64::from(v))).collect();
            let batch: BTreeMap<(i64, i64), f64> =
                batch.into_iter().map(|((s, t), v)| ((s, at(t)), f64::from(v))).collect();
            let mut stored = from_scratch(&before);
            let mut raw = before.clone();
            let (mut inserted, mut replaced) = (Vec::new(), Vec::new());
            for (&(sid, ts), &v) in &batch {
                match raw.insert((sid, ts), v) {
                    None => inserted.push((sid, ts, v)),
                    Some(old) if old != v => replaced.push((sid, ts)),
                    Some(_) => {}
                }
            }
            let levels = plan(&inserted, &replaced);
            for (i, (level, interval)) in levels.iter().zip(Interval::ALL).enumerate() {
                for bucket in &level.recompute {
                    let below: Vec<(i64, i64, Rollup)> = match i {
                        0 => raw.iter()
                            .filter(|(&(sid, ts), _)| (sid, interval.bucket_start(ts)) == *bucket)
                            .map(|(&(sid, ts), &v)| (sid, ts, Rollup::of_reading(ts, v)))
                            .collect(),
                        _ => stored[i - 1].iter()
                            .filter(|(&(sid, start), _)| (sid, interval.bucket_start(start)) == *bucket)
                            .map(|(&(sid, start), r)| (sid, start, *r))
                            .collect(),
                    };
                    let fresh = fold_into_buckets(interval, below);
                    prop_assert_eq!(fresh.len(), 1, "a recomputed bucket holds readings");
                    stored[i].extend(fresh);
                }
                for (bucket, delta) in &level.merge {
                    prop_assert!(!level.recompute.contains(bucket));
                    let merged = match stored[i].get(bucket) {
                        Some(old) => old.merge(delta),
                        None => *delta,
                    };
                    stored[i].insert(*bucket, merged);
                }
            }
            let want = from_scratch(&raw);
            for (got, want) in stored.iter().zip(&want) {
                prop_assert_eq!(got.len(), want.len());
                for (bucket, w) in want {
                    let g = got.get(bucket);
                    prop_assert!(g.is_some_and(|g| same(g, w)), "{:?}: {:?} != {:?}", bucket, g, w);
                }
            }
        }
    }
}
