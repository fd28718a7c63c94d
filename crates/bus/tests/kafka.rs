//! The Kafka bus against the real broker of `REPORTING_TEST_KAFKA` (started by `scripts/test`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reporting_bus::kafka::{ensure_topic, KafkaConsumer, KafkaPublisher, KafkaSettings};
use reporting_bus::{
    BatchLimits, Consumer as _, Message, OutRecord, PositionSource, Publisher as _,
};

/// A store that holds no positions yet: every partition starts at its beginning.
struct NothingStored;

impl PositionSource for NothingStored {
    fn positions(&self, _partitions: &[i32]) -> Result<HashMap<i32, i64>, String> {
        Ok(HashMap::new())
    }
}

/// A store that cannot be reached, until its owner starts shutting down.
#[derive(Default)]
struct Unreachable {
    stopping: AtomicBool,
    asked: AtomicUsize,
}

impl PositionSource for Unreachable {
    fn positions(&self, _partitions: &[i32]) -> Result<HashMap<i32, i64>, String> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Err("connection refused".into())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

fn settings() -> KafkaSettings {
    KafkaSettings {
        brokers: reporting_testkit::kafka_brokers(),
        topic: reporting_testkit::unique_name("late_topic"),
        properties: Default::default(),
    }
}

const LIMITS: BatchLimits = BatchLimits {
    max_messages: 100,
    max_bytes: 1 << 20,
    linger: Duration::from_millis(200),
};

/// Polls `consumer` for `period`, returning what it read.
fn poll_for(consumer: &mut KafkaConsumer, period: Duration) -> Vec<Message> {
    let until = Instant::now() + period;
    let mut read = Vec::new();
    while Instant::now() < until {
        read.extend(consumer.poll_batch(&LIMITS).expect("poll").messages);
    }
    read
}

/// An aggregator may start before anyone created its topic (separate pods start in any order; a freshly
/// created topic can also be missing from a broker's metadata for a moment). It must pick the topic up soon
/// after it appears, not at librdkafka's periodic metadata refresh (five minutes by default); librdkafka 2.x
/// re-queries missing subscribed topics on its own, and this test keeps it so.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_started_before_its_topic_exists_reads_it_soon_after_it_is_created() {
    reporting_testkit::init_logs();
    let settings = settings();
    let group = reporting_testkit::unique_name("late_group");
    let mut consumer =
        KafkaConsumer::new(&settings, &group, Arc::new(NothingStored)).expect("consumer");
    // Long enough to join the group and learn that the topic does not exist.
    let mut consumer = tokio::task::spawn_blocking(move || {
        let early = poll_for(&mut consumer, Duration::from_secs(5));
        assert!(
            early.is_empty(),
            "nothing can be read before the topic exists"
        );
        consumer
    })
    .await
    .expect("poll task");

    ensure_topic(&settings, 2, 1).await.expect("create topic");
    let publisher = KafkaPublisher::new(&settings, Duration::from_secs(30)).expect("producer");
    let records: Vec<OutRecord> = (0..10u8)
        .map(|i| OutRecord {
            key: vec![b'k', i],
            value: vec![i],
        })
        .collect();
    publisher.publish(records).await.expect("publish");

    // Well under the five-minute periodic refresh, well over a re-query and a rebalance.
    let read = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + Duration::from_secs(90);
        let mut read = Vec::new();
        while read.len() < 10 && Instant::now() < until {
            read.extend(poll_for(&mut consumer, Duration::from_secs(1)));
        }
        read
    })
    .await
    .expect("poll task");
    let mut values: Vec<u8> = read.iter().flat_map(|m| m.value.clone()).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (0..10u8).collect::<Vec<_>>(),
        "every published record is read once the topic exists"
    );
}

/// The partitions of a consumer are assigned inside librdkafka's poll, where the stored positions are loaded and
/// retried while the store is down. A shutdown meanwhile must end that retrying (the pod would otherwise ignore
/// SIGTERM until it is killed), and nothing may be read without positions.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_retrying_an_unreachable_store_gives_up_when_shutting_down_and_reads_nothing() {
    reporting_testkit::init_logs();
    let settings = settings();
    ensure_topic(&settings, 2, 1).await.expect("create topic");
    let publisher = KafkaPublisher::new(&settings, Duration::from_secs(30)).expect("producer");
    let records = vec![OutRecord {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    }];
    publisher.publish(records).await.expect("publish");

    let source = Arc::new(Unreachable::default());
    let group = reporting_testkit::unique_name("unreachable_group");
    let mut consumer = KafkaConsumer::new(&settings, &group, source.clone()).expect("consumer");
    let owner = source.clone();
    // A plain thread, not the runtime's blocking pool: if the consumer never returns, the test must still end.
    let (done, polling) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut read = Vec::new();
        let mut assigned = Vec::new();
        // Polls until the first poll that began after the owner started stopping has returned.
        loop {
            let stopping_before = owner.stopping();
            let polled = consumer.poll_batch(&LIMITS).expect("poll");
            read.extend(polled.messages);
            assigned.extend(polled.assigned);
            if stopping_before {
                let _receiver_gone = done.send((read, assigned));
                return;
            }
        }
    });
    reporting_testkit::wait_until(
        "the consumer to ask the unreachable store for positions twice",
        Duration::from_secs(60),
        || async { (source.asked.load(Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    source.stopping.store(true, Ordering::SeqCst);
    let (read, assigned) = tokio::time::timeout(Duration::from_secs(60), polling)
        .await
        .expect("the consumer kept retrying after shutdown began")
        .expect("the polling thread panicked");
    assert!(read.is_empty(), "nothing is read without stored positions");
    assert!(assigned.is_empty(), "no partition is reported assigned");
}
