//! Last-write-wins deduplication of a batch by reading identity.

use std::collections::HashMap;

use crate::reading::Reading;

/// Keeps, for each identity `(tenant, device, metric, ts)`, the reading that comes last in `batch` (the batch is
/// in bus offset order, so "last" is the latest write). The survivors keep their relative order.
pub fn last_write_wins(batch: Vec<Reading>) -> Vec<Reading> {
    let mut last_index: HashMap<(&str, &str, &str, i64), usize> =
        HashMap::with_capacity(batch.len());
    for (i, r) in batch.iter().enumerate() {
        last_index.insert((&r.tenant, &r.device, &r.metric, r.ts_ms), i);
    }
    if last_index.len() == batch.len() {
        return batch;
    }
    let keep: Vec<bool> = {
        let mut keep = vec![false; batch.len()];
        for i in last_index.values() {
            keep[*i] = true;
        }
        keep
    };
    batch
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(device: &str, ts_ms: i64, value: f64) -> Reading {
        Reading {
            tenant: "t".into(),
            device: device.into(),
            metric: "m".into(),
            ts_ms,
            value,
        }
    }

    #[test]
    fn later_write_of_the_same_identity_wins() {
        let out = last_write_wins(vec![
            r("a", 1, 1.0),
            r("b", 1, 2.0),
            r("a", 1, 3.0),
            r("a", 2, 4.0),
        ]);
        assert_eq!(out, vec![r("b", 1, 2.0), r("a", 1, 3.0), r("a", 2, 4.0)]);
    }

    #[test]
    fn batch_without_duplicates_is_unchanged() {
        let batch = vec![r("a", 1, 1.0), r("a", 2, 1.0), r("b", 1, 1.0)];
        assert_eq!(last_write_wins(batch.clone()), batch);
    }
}
