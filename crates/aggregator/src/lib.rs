//! The aggregator role ("time series" service): bus → raw readings and 1m/1h/1d rollups in the store,
//! exactly once.
//!
//! Map of the crate:
//! - [`StorePositions`] — the bus's [`PositionSource`]: partition positions live in the store.
//! - [`run`] — the one loop: poll a batch → decode → deduplicate → apply with its position advance in one
//!   transaction → tell the bus. A fenced batch (another consumer advanced the partition first) is dropped and
//!   the partition re-read from the stored position.
//!
//! The loop is blocking (librdkafka's rebalance callbacks run inside `poll`, where the positions are loaded);
//! run it on a blocking thread. It returns after the batch in flight is committed once `shutdown` fires.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reporting_bus::{BatchLimits, Consumer, Message, PositionSource};
use reporting_core::dedupe::last_write_wins;
use reporting_core::reading::Reading;
use reporting_core::record::{decode, RecordError};
use reporting_observe::logging::error_chain;
use reporting_observe::names;
use reporting_store::{ApplyBatch, ApplyOutcome, PositionAdvance, Store};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Settings of the aggregator loop.
#[derive(Debug, Clone)]
pub struct AggregatorSettings {
    /// Consumer group (the key of stored positions).
    pub group: String,
    /// Topic read.
    pub topic: String,
    /// Size of a batch (records, payload bytes) and how long a poll waits for the first record.
    pub batch: BatchLimits,
}

/// How the loop is doing, for `/readyz`: a store that keeps failing stalls the whole pipeline and must show.
#[derive(Clone, Default)]
pub struct Health {
    failing_since: Arc<Mutex<Option<(Instant, String)>>>,
}

impl Health {
    /// `Err` once applying batches has failed without a success for longer than `grace`.
    pub fn check(&self, grace: Duration) -> Result<(), String> {
        match &*self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some((since, error)) if since.elapsed() > grace => Err(format!(
                "applying batches has failed for {} s, the aggregator is stalled: {error}",
                since.elapsed().as_secs()
            )),
            _ => Ok(()),
        }
    }

    fn failed(&self, error: String) {
        let mut state = self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match state.as_mut() {
            Some((_, last)) => *last = error,
            None => *state = Some((Instant::now(), error)),
        }
    }

    fn recovered(&self) {
        *self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Loads partition positions from the store (blocking; called from the consumer's thread).
pub struct StorePositions {
    store: Arc<dyn Store>,
    group: String,
    topic: String,
    handle: Handle,
    shutdown: CancellationToken,
}

impl StorePositions {
    /// Positions of `group` on `topic` in `store`; `handle` runs the async store calls; once `shutdown` fires,
    /// the consumer stops retrying an unreachable store.
    pub fn new(
        store: Arc<dyn Store>,
        group: &str,
        topic: &str,
        handle: Handle,
        shutdown: CancellationToken,
    ) -> Self {
        StorePositions {
            store,
            group: group.to_owned(),
            topic: topic.to_owned(),
            handle,
            shutdown,
        }
    }
}

impl PositionSource for StorePositions {
    fn positions(&self, partitions: &[i32]) -> Result<HashMap<i32, i64>, String> {
        self.handle
            .block_on(self.store.positions(&self.group, &self.topic, partitions))
            .map_err(|e| error_chain(&e))
    }

    fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// A batch ready to apply.
struct Prepared {
    advances: Vec<PositionAdvance>,
    readings: Vec<Reading>,
    consumed: usize,
}

/// Turns polled messages into position advances and deduplicated readings. Messages below a partition's
/// expected position were already applied and are skipped; partitions not assigned are ignored.
fn prepare(messages: Vec<Message>, expected: &HashMap<i32, Option<i64>>) -> Prepared {
    let mut by_partition: BTreeMap<i32, Vec<Message>> = BTreeMap::new();
    for m in messages {
        let Some(exp) = expected.get(&m.partition) else {
            continue;
        };
        if m.offset < exp.unwrap_or(0) {
            continue;
        }
        by_partition.entry(m.partition).or_default().push(m);
    }
    let mut advances = Vec::new();
    let mut readings = Vec::new();
    for (partition, mut msgs) in by_partition {
        msgs.sort_by_key(|m| m.offset);
        let exp = expected.get(&partition).copied().flatten();
        if let (Some(e), Some(first)) = (exp, msgs.first()) {
            if first.offset > e {
                tracing::warn!(
                    partition,
                    expected = e,
                    first = first.offset,
                    "offsets skipped on the bus (retention or compaction?)"
                );
            }
        }
        let next = msgs.last().map_or(0, |m| m.offset + 1);
        for m in &msgs {
            match decode(&m.value) {
                Ok(rs) => readings.extend(rs),
                Err(e) => {
                    let reason = match e {
                        RecordError::Malformed(_) => "malformed",
                        RecordError::UnsupportedVersion(_) => "unsupported_version",
                    };
                    metrics::counter!(names::UNDECODABLE_RECORDS, "reason" => reason).increment(1);
                    tracing::error!(
                        partition,
                        offset = m.offset,
                        error = &e as &dyn std::error::Error,
                        "skipping a record that cannot be decoded"
                    );
                }
            }
        }
        advances.push(PositionAdvance {
            partition,
            expected: exp,
            next,
        });
    }
    let consumed = readings.len();
    Prepared {
        advances,
        readings: last_write_wins(readings),
        consumed,
    }
}

/// Runs the aggregator loop until `shutdown` is cancelled. Store failures are retried (the batch is never
/// skipped: skipping would lose readings); bus poll failures are logged and polled again.
pub fn run(
    consumer: &mut dyn Consumer,
    store: Arc<dyn Store>,
    handle: &Handle,
    settings: &AggregatorSettings,
    health: &Health,
    shutdown: &CancellationToken,
) {
    let mut expected: HashMap<i32, Option<i64>> = HashMap::new();
    tracing::info!(group = %settings.group, topic = %settings.topic, "aggregator started");
    while !shutdown.is_cancelled() {
        let polled = match consumer.poll_batch(&settings.batch) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "polling the bus failed"
                );
                pause(shutdown, Duration::from_secs(1));
                continue;
            }
        };
        for p in &polled.revoked {
            expected.remove(p);
            // Another member reports this partition now; a stale value here would be added to its own.
            metrics::gauge!(names::CONSUMER_LAG, "partition" => p.to_string()).set(0.0);
        }
        for (p, pos) in &polled.assigned {
            expected.insert(*p, *pos);
        }
        report_lag(consumer);
        if polled.messages.is_empty() {
            continue;
        }
        let prepared = prepare(polled.messages, &expected);
        if prepared.advances.is_empty() {
            continue;
        }
        let batch = ApplyBatch {
            group: settings.group.clone(),
            topic: settings.topic.clone(),
            advances: prepared.advances.clone(),
            readings: prepared.readings,
        };
        let Some(outcome) = apply_with_retry(&store, handle, batch, health, shutdown) else {
            break;
        };
        match outcome {
            ApplyOutcome::Applied { changed } => {
                for a in &prepared.advances {
                    expected.insert(a.partition, Some(a.next));
                    consumer.applied(a.partition, a.next);
                }
                metrics::counter!(names::READINGS_APPLIED).increment(changed as u64);
                metrics::counter!(names::READINGS_CONSUMED).increment(prepared.consumed as u64);
            }
            ApplyOutcome::Fenced { partition } => {
                metrics::counter!(names::FENCED_BATCHES).increment(1);
                tracing::warn!(partition, "batch fenced: another consumer advanced the partition; re-reading from the stored position");
                let partitions: Vec<i32> = prepared.advances.iter().map(|a| a.partition).collect();
                resync(
                    consumer,
                    &store,
                    handle,
                    settings,
                    &partitions,
                    &mut expected,
                    shutdown,
                );
            }
        }
    }
    tracing::info!("aggregator stopped");
}

/// Applies a batch, retrying store failures with backoff. `None` when shutdown came first (nothing applied).
fn apply_with_retry(
    store: &Arc<dyn Store>,
    handle: &Handle,
    batch: ApplyBatch,
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<ApplyOutcome> {
    let mut wait = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match handle.block_on(store.apply(batch.clone())) {
            Ok(outcome) => {
                health.recovered();
                metrics::histogram!(names::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::histogram!(names::FLUSH_BATCH_READINGS)
                    .record(batch.readings.len() as f64);
                return Some(outcome);
            }
            Err(e) => {
                health.failed(error_chain(&e));
                metrics::counter!(names::STORE_RETRIES).increment(1);
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    transient = e.is_transient(),
                    retry_in_ms = wait.as_millis() as u64,
                    "applying a batch failed; retrying the same batch"
                );
                if pause(shutdown, wait) {
                    return None;
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Re-reads stored positions of `partitions` and moves the consumer there.
fn resync(
    consumer: &mut dyn Consumer,
    store: &Arc<dyn Store>,
    handle: &Handle,
    settings: &AggregatorSettings,
    partitions: &[i32],
    expected: &mut HashMap<i32, Option<i64>>,
    shutdown: &CancellationToken,
) {
    loop {
        match handle.block_on(store.positions(&settings.group, &settings.topic, partitions)) {
            Ok(stored) => {
                for p in partitions {
                    if !expected.contains_key(p) {
                        continue;
                    }
                    let pos = stored.get(p).copied();
                    expected.insert(*p, pos);
                    if let Err(e) = consumer.seek(*p, pos) {
                        tracing::error!(
                            partition = *p,
                            error = &e as &dyn std::error::Error,
                            "seek failed"
                        );
                    }
                }
                return;
            }
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "reading positions failed"
                );
                if pause(shutdown, Duration::from_secs(1)) {
                    return;
                }
            }
        }
    }
}

fn report_lag(consumer: &mut dyn Consumer) {
    for (partition, lag) in consumer.lag() {
        metrics::gauge!(names::CONSUMER_LAG, "partition" => partition.to_string()).set(lag as f64);
    }
}

/// Sleeps up to `d`; true when shutdown fired meanwhile.
fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if shutdown.is_cancelled() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline - Instant::now()));
    }
    shutdown.is_cancelled()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reporting_core::record::encode;

    fn msg(partition: i32, offset: i64, device: &str, ts_ms: i64, value: f64) -> Message {
        let r = Reading {
            tenant: "t".into(),
            device: device.into(),
            metric: "m".into(),
            ts_ms,
            value,
        };
        Message {
            partition,
            offset,
            value: encode("t", device, &[&r]),
        }
    }

    #[test]
    fn prepare_skips_applied_offsets_and_advances_past_the_last() {
        let expected = HashMap::from([(0, Some(5)), (1, None)]);
        let messages = vec![
            msg(0, 4, "a", 1, 1.0),
            msg(0, 5, "a", 2, 2.0),
            msg(1, 0, "b", 1, 3.0),
            msg(2, 9, "c", 1, 4.0),
        ];
        let p = prepare(messages, &expected);
        assert_eq!(
            p.advances,
            vec![
                PositionAdvance {
                    partition: 0,
                    expected: Some(5),
                    next: 6
                },
                PositionAdvance {
                    partition: 1,
                    expected: None,
                    next: 1
                },
            ]
        );
        assert_eq!(
            p.readings.iter().map(|r| r.value).collect::<Vec<_>>(),
            vec![2.0, 3.0]
        );
    }

    #[test]
    fn prepare_keeps_the_last_write_of_an_identity_by_offset() {
        let expected = HashMap::from([(0, None)]);
        let p = prepare(
            vec![msg(0, 1, "a", 7, 2.0), msg(0, 0, "a", 7, 1.0)],
            &expected,
        );
        assert_eq!(p.readings.len(), 1);
        assert_eq!(p.readings[0].value, 2.0);
        assert_eq!(p.consumed, 2);
    }

    #[test]
    fn health_turns_bad_only_after_the_grace_period_and_recovers() {
        let health = Health::default();
        assert!(health.check(Duration::ZERO).is_ok());
        health.failed("constraint violated".into());
        assert!(health.check(Duration::from_secs(3600)).is_ok());
        let err = health.check(Duration::ZERO).expect_err("stalled");
        assert!(err.contains("constraint violated"), "{err}");
        health.recovered();
        assert!(health.check(Duration::ZERO).is_ok());
    }

    #[test]
    fn undecodable_record_advances_the_position_without_readings() {
        let expected = HashMap::from([(0, Some(0))]);
        let p = prepare(
            vec![Message {
                partition: 0,
                offset: 0,
                value: b"not json".to_vec(),
            }],
            &expected,
        );
        assert!(p.readings.is_empty());
        assert_eq!(p.advances[0].next, 1);
    }
}
