//! The Kafka bus against the real broker of `REPORTING_TEST_KAFKA` (started by `scripts/test`).

use std::collections::HashMap;
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
