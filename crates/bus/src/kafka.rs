//! Apache Kafka through librdkafka: an idempotent `acks=all` producer, a consumer whose partition positions
//! come from the store, and topic creation.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use reporting_core::record::FORMAT_NAME;

use crate::{
    BatchLimits, BusError, Consumer, Message, OutRecord, Polled, PositionSource, Publisher,
};

/// Connection settings shared by producer, consumer and admin client.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topic of the readings.
    pub topic: String,
    /// Extra librdkafka properties (TLS, SASL, …); applied last.
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Creates the topic with `partitions` partitions unless it exists.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    partitions: i32,
    replication: i32,
) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()
        .create()
        .map_err(|e| BusError::kafka("creating the admin client", e))?;
    let topic = NewTopic::new(
        &settings.topic,
        partitions,
        TopicReplication::Fixed(replication),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &opts)
        .await
        .map_err(|e| BusError::kafka(format!("creating topic {}", settings.topic), e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(BusError::kafka(
                    format!("creating topic {name}"),
                    KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}

/// The durable producer.
pub struct KafkaPublisher {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl KafkaPublisher {
    /// A producer with `acks=all` and idempotence on; a publish that is not durable within `timeout` fails.
    pub fn new(settings: &KafkaSettings, timeout: Duration) -> Result<Self, BusError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &settings.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // Java's partitioner, so other clients writing the same keys agree on partitions.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", timeout.as_millis().to_string());
        for (k, v) in &settings.properties {
            c.set(k, v);
        }
        let producer: FutureProducer = c
            .create()
            .map_err(|e| BusError::kafka("creating the producer", e))?;
        Ok(KafkaPublisher {
            producer,
            topic: settings.topic.clone(),
            timeout,
        })
    }
}

impl Publisher for KafkaPublisher {
    fn publish(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Result<(), BusError>> {
        async move {
            let sends = records.iter().map(|r| {
                let headers = OwnedHeaders::new().insert(Header {
                    key: "format",
                    value: Some(FORMAT_NAME),
                });
                let record = FutureRecord::to(&self.topic)
                    .key(&r.key)
                    .payload(&r.value)
                    .headers(headers);
                self.producer
                    .send(record, Timeout::After(self.timeout))
                    .map(|res| {
                        res.map(|_| ()).map_err(|(e, _)| BusError::Unavailable {
                            context: "kafka did not acknowledge a record".into(),
                            source: Some(Box::new(e)),
                        })
                    })
            });
            try_join_all(sends).await.map(|_| ())
        }
        .boxed()
    }

    fn check_ready(&self) -> BoxFuture<'_, Result<(), BusError>> {
        let client = self.producer.clone();
        let topic = self.topic.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                client
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(3))
                    .map(|_| ())
                    .map_err(|e| BusError::kafka("fetching metadata", e))
            })
            .await
            .map_err(|e| BusError::Unavailable {
                context: "metadata task failed".into(),
                source: Some(Box::new(e)),
            })?
        }
        .boxed()
    }
}

enum Event {
    Assigned(Vec<(i32, Option<i64>)>),
    Revoked(Vec<i32>),
}

/// Rebalance handling: on assignment, positions come from the store and the consumer starts there.
struct Context {
    topic: String,
    source: Arc<dyn PositionSource>,
    events: Mutex<Vec<Event>>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let Some(stored) = self.load_positions(&partitions) else {
                    tracing::warn!(partitions = ?partitions, "shutting down before stored positions could be loaded; partitions left unassigned");
                    if let Err(e) = base_consumer.unassign() {
                        tracing::error!(error = %e, "unassigning partitions failed");
                    }
                    return;
                };
                let mut assigned = Vec::new();
                for p in &partitions {
                    let pos = stored.get(p).copied();
                    let offset = pos.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&self.topic, *p, offset) {
                        tracing::error!(partition = *p, error = %e, "could not set the start offset");
                    }
                    assigned.push((*p, pos));
                }
                if let Err(e) = base_consumer.assign(tpl) {
                    tracing::error!(error = %e, "assigning partitions failed");
                }
                tracing::info!(partitions = ?partitions, "partitions assigned");
                self.events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Event::Assigned(assigned));
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(e) = base_consumer.unassign() {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
                tracing::info!(partitions = ?partitions, "partitions revoked");
                self.events
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Event::Revoked(partitions));
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                if let Err(e) = base_consumer.unassign() {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
            }
        }
    }
}

impl Context {
    /// Loads stored positions, retrying while the store is unreachable: without them no partition may be read.
    /// `None` when the source is stopping first.
    fn load_positions(&self, partitions: &[i32]) -> Option<HashMap<i32, i64>> {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.source.positions(partitions) {
                Ok(p) => return Some(p),
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "loading stored positions failed");
                    let until = Instant::now() + wait;
                    while Instant::now() < until {
                        if self.source.stopping() {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// A member of the aggregator's consumer group.
pub struct KafkaConsumer {
    consumer: BaseConsumer<Context>,
    topic: String,
    assigned: HashMap<i32, i64>,
    last_lag_check: Option<Instant>,
    lag: Vec<(i32, i64)>,
}

impl KafkaConsumer {
    /// Joins `group` on the topic; `source` provides the stored positions at every assignment.
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        source: Arc<dyn PositionSource>,
    ) -> Result<Self, BusError> {
        let mut c = settings.client_config();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "range");
        for (k, v) in &settings.properties {
            c.set(k, v);
        }
        let context = Context {
            topic: settings.topic.clone(),
            source,
            events: Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<Context> = c
            .create_with_context(context)
            .map_err(|e| BusError::kafka("creating the consumer", e))?;
        consumer
            .subscribe(&[&settings.topic])
            .map_err(|e| BusError::kafka(format!("subscribing to {}", settings.topic), e))?;
        Ok(KafkaConsumer {
            consumer,
            topic: settings.topic.clone(),
            assigned: HashMap::new(),
            last_lag_check: None,
            lag: Vec::new(),
        })
    }

    fn drain_events(&mut self, polled: &mut Polled) {
        let events = std::mem::take(
            &mut *self
                .consumer
                .context()
                .events
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for event in events {
            match event {
                Event::Assigned(ps) => {
                    for (p, pos) in &ps {
                        self.assigned.insert(*p, pos.unwrap_or(0));
                        polled.revoked.retain(|r| r != p);
                    }
                    polled.assigned.extend(ps);
                }
                Event::Revoked(ps) => {
                    for p in &ps {
                        self.assigned.remove(p);
                        polled.assigned.retain(|(a, _)| a != p);
                        polled.messages.retain(|m| m.partition != *p);
                    }
                    polled.revoked.extend(ps);
                }
            }
        }
    }
}

impl Consumer for KafkaConsumer {
    fn poll_batch(&mut self, limits: &BatchLimits) -> Result<Polled, BusError> {
        let mut polled = Polled::default();
        let deadline = Instant::now() + limits.linger;
        let mut bytes = 0usize;
        while polled.messages.len() < limits.max_messages && bytes < limits.max_bytes {
            let now = Instant::now();
            // Once something arrived, only drain what is already fetched.
            let wait = if polled.messages.is_empty() {
                deadline.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            let next = self.consumer.poll(wait).map(|r| {
                r.map(|m| Message {
                    partition: m.partition(),
                    offset: m.offset(),
                    value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                })
            });
            self.drain_events(&mut polled);
            match next {
                None => {
                    if !polled.messages.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Ok(m)) => {
                    if self.assigned.contains_key(&m.partition) {
                        bytes += m.value.len();
                        polled.messages.push(m);
                    }
                }
            }
        }
        Ok(polled)
    }

    fn seek(&mut self, partition: i32, next_offset: Option<i64>) -> Result<(), BusError> {
        let offset = next_offset.map_or(Offset::Beginning, Offset::Offset);
        self.consumer
            .seek(&self.topic, partition, offset, Duration::from_secs(10))
            .map_err(|e| BusError::kafka(format!("seeking partition {partition}"), e))?;
        self.assigned.insert(partition, next_offset.unwrap_or(0));
        Ok(())
    }

    fn applied(&mut self, partition: i32, next_offset: i64) {
        self.assigned.insert(partition, next_offset);
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&self.topic, partition, Offset::Offset(next_offset))
            .is_ok()
        {
            // Informational only (for Kafka's own lag tools); the store holds the authoritative position.
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "informational offset commit failed");
            }
        }
    }

    fn lag(&mut self) -> Vec<(i32, i64)> {
        let stale = self
            .last_lag_check
            .is_none_or(|t| t.elapsed() > Duration::from_secs(5));
        if stale {
            self.last_lag_check = Some(Instant::now());
            let mut lag = Vec::new();
            for (p, next) in &self.assigned {
                if let Ok((_, high)) =
                    self.consumer
                        .fetch_watermarks(&self.topic, *p, Duration::from_secs(1))
                {
                    lag.push((*p, (high - next).max(0)));
                }
            }
            lag.sort_unstable();
            self.lag = lag;
        }
        self.lag.clone()
    }
}

/// The next offset (high watermark) of every partition of the topic. Blocking.
pub fn end_offsets(settings: &KafkaSettings) -> Result<HashMap<i32, i64>, BusError> {
    let consumer: BaseConsumer = settings
        .client_config()
        .create()
        .map_err(|e| BusError::kafka("creating a metadata client", e))?;
    let metadata = consumer
        .fetch_metadata(Some(&settings.topic), Duration::from_secs(10))
        .map_err(|e| BusError::kafka(format!("fetching metadata of {}", settings.topic), e))?;
    let mut out = HashMap::new();
    for topic in metadata.topics() {
        for p in topic.partitions() {
            let (_, high) = consumer
                .fetch_watermarks(&settings.topic, p.id(), Duration::from_secs(10))
                .map_err(|e| {
                    BusError::kafka(format!("fetching watermarks of partition {}", p.id()), e)
                })?;
            out.insert(p.id(), high);
        }
    }
    Ok(out)
}
