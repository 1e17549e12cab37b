//! `KafkaSink`: rdkafka's idempotent producer (`acks=all`), with the bundled
//! librdkafka built from source.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use super::{
    AckFuture, EventIdScan, NewestIds, OutboundMessage, Sink, SinkError, SinkErrorKind, StateStore,
};
use crate::config::KafkaConfig;
use crate::ops::internal_events::{
    BrokerMessageLimitFound, KafkaBatchLargerThanTopicLimit, KafkaBrokerStatistics,
    KafkaCheckpointTopicNotCompacted, KafkaDeliverySettingWeakened, KafkaStatisticsReported,
    KafkaTopicCreated, KafkaTopicStatistics,
};
use crate::ops::Metrics;

/// How long loading a state value may read its topic.
const STATE_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long storing a state value may wait for its acknowledgement; a later
/// save replaces it anyway.
const STATE_PUT_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishes to Kafka (or any Kafka-protocol broker).
pub struct KafkaSink {
    producer: FutureProducer<ProducerContext>,
    config: KafkaConfig,
    /// A topic the relay writes to: the readiness probe asks the cluster
    /// about it alone, so a probe costs the same on a cluster of 10,000
    /// topics as on one of 3.
    probe_topic: Mutex<Option<String>>,
    limits: MessageLimits,
}

impl KafkaSink {
    /// A sink whose librdkafka statistics go nowhere (tests, tools).
    pub fn new(config: &KafkaConfig) -> Result<Self, SinkError> {
        Self::with_metrics(config, Arc::new(Metrics::new()))
    }

    /// A sink that reports librdkafka's statistics to `metrics`.
    pub fn with_metrics(config: &KafkaConfig, metrics: Arc<Metrics>) -> Result<Self, SinkError> {
        for w in weakened_delivery(&config.properties) {
            KafkaDeliverySettingWeakened {
                key: w.key,
                value: w.value,
                consequence: w.consequence,
            }
            .emit(&metrics);
        }
        let producer = producer_config(config)
            .create_with_context(ProducerContext { metrics })
            .map_err(|e| {
                SinkError::new(
                    SinkErrorKind::Config,
                    format!("cannot create Kafka producer: {e}"),
                )
            })?;
        Ok(KafkaSink {
            producer,
            config: config.clone(),
            probe_topic: Mutex::new(None),
            limits: MessageLimits::new(config),
        })
    }
}

/// The relay's producer settings, then the user's properties, so that any
/// of them can be tuned (and [`weakened_delivery`] says which ones hurt).
/// `murmur2_random` is the Java client's partitioner: the same key lands in
/// the same partition as it would from Kafka Streams, ksqlDB or a Java
/// producer, which joins and co-partitioned consumers rely on.
fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("compression.type", &config.compression)
        .set("linger.ms", config.linger_ms.to_string())
        .set("batch.size", config.batch_bytes.to_string())
        .set("message.timeout.ms", config.message_timeout_ms.to_string())
        .set(
            "statistics.interval.ms",
            config.statistics_interval.as_millis().to_string(),
        );
    with_user_properties(c, config)
}

/// Common client settings (admin clients, readers), user properties last.
fn client_config(config: &KafkaConfig) -> ClientConfig {
    with_user_properties(base_config(config), config)
}

fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c.set(
        "client.id",
        concat!("studio-relay/", env!("CARGO_PKG_VERSION")),
    );
    c
}

fn with_user_properties(mut c: ClientConfig, config: &KafkaConfig) -> ClientConfig {
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

/// A user property that overrides a delivery setting of the relay.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WeakenedSetting<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub consequence: &'static str,
}

/// The entries of `properties` that weaken what consumers are promised.
pub(crate) fn weakened_delivery(properties: &BTreeMap<String, String>) -> Vec<WeakenedSetting<'_>> {
    properties
        .iter()
        .filter_map(|(k, v)| {
            let value = v.trim().to_ascii_lowercase();
            let consequence = match k.as_str() {
                "acks" | "request.required.acks" if !matches!(value.as_str(), "all" | "-1") => {
                    "the broker acknowledges before every in-sync replica has the event, so a broker failure can lose acknowledged events"
                }
                "enable.idempotence" if value == "false" => {
                    "a retried send can be written twice and events of one key can be reordered"
                }
                "partitioner" if !matches!(value.as_str(), "murmur2_random" | "murmur2") => {
                    "keys no longer map to the partitions the Java client picks (Kafka Streams, ksqlDB joins)"
                }
                _ => return None,
            };
            Some(WeakenedSetting {
                key: k,
                value: v,
                consequence,
            })
        })
        .collect()
}

/// The producer's librdkafka context: statistics become metrics.
pub struct ProducerContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for ProducerContext {
    fn stats(&self, s: Statistics) {
        report_statistics(&s, &self.metrics);
    }
}

/// Turns one librdkafka statistics report into metrics. Bootstrap entries
/// (no node id yet) are left out: the same broker shows up again under its id.
fn report_statistics(s: &Statistics, metrics: &Metrics) {
    let micros = |w: &Option<rdkafka::statistics::Window>,
                  f: fn(&rdkafka::statistics::Window) -> i64| {
        Duration::from_micros(w.as_ref().map(f).unwrap_or(0).max(0) as u64)
    };
    let brokers: Vec<KafkaBrokerStatistics<'_>> = s
        .brokers
        .values()
        .filter(|b| b.nodeid >= 0)
        .map(|b| KafkaBrokerStatistics {
            broker: &b.nodename,
            up: b.state == "UP",
            rtt_avg: micros(&b.rtt, |w| w.avg),
            rtt_p99: micros(&b.rtt, |w| w.p99),
            in_flight: b.waitresp_cnt,
            transmit_errors: b.txerrs,
            receive_errors: b.rxerrs,
            timeouts: b.req_timeouts,
        })
        .collect();
    let topics: Vec<KafkaTopicStatistics<'_>> = s
        .topics
        .values()
        .filter(|t| t.batchcnt.cnt > 0)
        .map(|t| KafkaTopicStatistics {
            topic: &t.topic,
            batch_bytes_avg: t.batchsize.avg as f64,
            batch_messages_avg: t.batchcnt.avg as f64,
        })
        .collect();
    KafkaStatisticsReported {
        queue_messages: s.msg_cnt,
        queue_bytes: s.msg_size,
        brokers: &brokers,
        topics: &topics,
    }
    .emit(metrics);
}

/// A consumer that reads assigned partitions: no group is joined and no
/// offset committed (librdkafka wants a `group.id` all the same).
fn reader(config: &KafkaConfig) -> Result<BaseConsumer, SinkError> {
    client_config(config)
        .set("group.id", "studio-relay-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| {
            SinkError::new(
                SinkErrorKind::Config,
                format!("cannot create Kafka consumer: {e}"),
            )
        })
}

fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn kafka_err(what: &str, e: KafkaError) -> SinkError {
    SinkError::new(classify(&e), format!("{what}: {e}"))
}

/// The partitions of `topic`; None when the broker does not know it.
/// The partitions of `topic`, waiting until `deadline` for it to show:
/// just created, a topic may take a moment to appear in metadata.
fn wait_for_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    deadline: Instant,
) -> Result<Vec<i32>, SinkError> {
    loop {
        if let Some(ps) = partitions_of(consumer, topic, left(deadline))? {
            return Ok(ps);
        }
        if Instant::now() >= deadline {
            return Err(SinkError::new(
                SinkErrorKind::Unavailable,
                format!("topic {topic} not found"),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn partitions_of(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<i32>>, SinkError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_err(&format!("metadata of {topic}"), e))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
        .filter(|ps| !ps.is_empty()))
}

/// One partition to read: `[start, end)` by offset.
struct Range {
    topic: String,
    partition: i32,
    start: i64,
    end: i64,
}

/// Reads every range, handing each message below its range's end to `f`,
/// until all are read or `deadline`; false when the deadline cut it short.
fn read_ranges(
    consumer: &BaseConsumer,
    ranges: &[Range],
    deadline: Instant,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<bool, SinkError> {
    let mut pending: std::collections::HashMap<(String, i32), i64> = ranges
        .iter()
        .filter(|r| r.start < r.end)
        .map(|r| ((r.topic.clone(), r.partition), r.end))
        .collect();
    if pending.is_empty() {
        return Ok(true);
    }
    let mut tpl = TopicPartitionList::new();
    for r in ranges.iter().filter(|r| r.start < r.end) {
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.start))
            .map_err(|e| kafka_err("assign", e))?;
    }
    consumer.assign(&tpl).map_err(|e| kafka_err("assign", e))?;
    while !pending.is_empty() {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let k = (m.topic().to_string(), m.partition());
                let Some(&end) = pending.get(&k) else {
                    continue;
                };
                if m.offset() < end {
                    f(&m);
                }
                if m.offset() + 1 >= end {
                    pending.remove(&k);
                }
            }
            // The end of a partition: offsets may have holes (compaction,
            // transaction markers), so compare positions with the ends.
            Some(Err(KafkaError::PartitionEOF(_))) => {
                let positions = consumer.position().map_err(|e| kafka_err("position", e))?;
                for e in positions.elements() {
                    let k = (e.topic().to_string(), e.partition());
                    if let (Some(&end), Offset::Offset(at)) = (pending.get(&k), e.offset()) {
                        if at >= end {
                            pending.remove(&k);
                        }
                    }
                }
            }
            Some(Err(e)) => return Err(kafka_err("read", e)),
        }
    }
    Ok(true)
}

/// A compacted Kafka topic as a key/value store (like Kafka Connect's
/// offsets topic): `put` produces key → value, `get` reads the topic from
/// its beginning to the high watermark and keeps the last value of the key.
pub struct KafkaStateStore {
    topic: String,
    producer: FutureProducer<ProducerContext>,
    config: KafkaConfig,
}

#[async_trait]
impl StateStore for KafkaStateStore {
    fn describe(&self) -> String {
        format!("Kafka topic {}", self.topic)
    }

    fn backend(&self) -> &'static str {
        "kafka"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        let (config, topic, key) = (self.config.clone(), self.topic.clone(), key.to_string());
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&config)?;
            let deadline = Instant::now() + STATE_READ_TIMEOUT;
            let partitions = wait_for_partitions(&consumer, &topic, deadline)?;
            let mut ranges = Vec::new();
            for partition in partitions {
                let (start, end) = consumer
                    .fetch_watermarks(&topic, partition, left(deadline))
                    .map_err(|e| kafka_err("watermarks", e))?;
                ranges.push(Range {
                    topic: topic.clone(),
                    partition,
                    start,
                    end,
                });
            }
            // One key lives in one partition; should the partition count have
            // changed, the newest timestamp wins.
            let mut last: Option<(i64, Option<Bytes>)> = None;
            let complete = read_ranges(&consumer, &ranges, deadline, |m| {
                if m.key() == Some(key.as_bytes()) {
                    let ts = m.timestamp().to_millis().unwrap_or(i64::MIN);
                    if last.as_ref().is_none_or(|(t, _)| ts >= *t) {
                        // A null value is a tombstone: deleted.
                        last = Some((ts, m.payload().map(Bytes::copy_from_slice)));
                    }
                }
            })?;
            if !complete {
                return Err(SinkError::new(
                    SinkErrorKind::Unavailable,
                    format!(
                        "reading topic {topic} to its end took longer than {STATE_READ_TIMEOUT:?}"
                    ),
                ));
            }
            Ok(last.and_then(|(_, v)| v))
        })
        .await
        .map_err(|e| SinkError::new(SinkErrorKind::Unavailable, e.to_string()))?
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), SinkError> {
        let record = FutureRecord::to(&self.topic)
            .key(key)
            .payload(value.as_ref());
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| kafka_err("produce", e))?;
        match tokio::time::timeout(STATE_PUT_TIMEOUT, delivery).await {
            Ok(Ok(Ok(_))) => Ok(()),
            Ok(Ok(Err((e, _)))) => Err(kafka_err("produce", e)),
            Ok(Err(_)) => Err(SinkError::new(
                SinkErrorKind::Unavailable,
                "producer dropped the message",
            )),
            Err(_) => Err(SinkError::new(
                SinkErrorKind::Unavailable,
                format!("not acknowledged within {STATE_PUT_TIMEOUT:?}"),
            )),
        }
    }
}

impl KafkaSink {
    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, SinkError> {
        client_config(&self.config).create().map_err(|e| {
            SinkError::new(
                SinkErrorKind::Config,
                format!("cannot create Kafka admin client: {e}"),
            )
        })
    }

    /// The coordination topic, created unless it exists; its partition
    /// count is the number of shards.
    async fn ensure_shard_topic(
        &self,
        settings: &super::leases::GroupSettings,
    ) -> Result<u32, SinkError> {
        let admin = self.admin()?;
        let topic = NewTopic::new(
            &settings.topic,
            settings.shards as i32,
            TopicReplication::Fixed(self.config.checkpoint_replication_factor),
        );
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .map_err(|e| kafka_err(&format!("create topic {}", settings.topic), e))?;
        for r in results {
            match r {
                Ok(_) => KafkaTopicCreated {
                    topic: &settings.topic,
                    checkpoint: false,
                }
                .emit(),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(SinkError::new(
                        SinkErrorKind::Config,
                        format!("cannot create topic {}: {code}", settings.topic),
                    ))
                }
            }
        }
        let (config, name) = (self.config.clone(), settings.topic.clone());
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&config)?;
            let deadline = Instant::now() + STATE_READ_TIMEOUT;
            Ok(wait_for_partitions(&consumer, &name, deadline)?.len() as u32)
        })
        .await
        .map_err(|e| SinkError::new(SinkErrorKind::Unavailable, e.to_string()))?
    }

    /// Creates the compacted state topic unless it exists. The relay creates
    /// it even with `create_topics = false`: it is the relay's own state,
    /// not a topic consumers read (as Kafka Connect does with its offsets).
    async fn ensure_state_topic(&self, name: &str) -> Result<(), SinkError> {
        let admin = self.admin()?;
        let topic = NewTopic::new(
            name,
            1,
            TopicReplication::Fixed(self.config.checkpoint_replication_factor),
        )
        .set("cleanup.policy", "compact")
        // Compaction never touches the active segment, and a save comes
        // every couple of seconds: roll hourly so a load reads little.
        .set("segment.ms", "3600000");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .map_err(|e| kafka_err(&format!("create topic {name}"), e))?;
        for r in results {
            match r {
                Ok(_) => KafkaTopicCreated {
                    topic: name,
                    checkpoint: true,
                }
                .emit(),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    self.warn_unless_compacted(&admin, name).await
                }
                Err((_, code)) => {
                    // Not allowed to create topics, say: fine if it exists.
                    let producer = self.producer.clone();
                    let topic = name.to_string();
                    let exists = tokio::task::spawn_blocking(move || {
                        producer
                            .client()
                            .fetch_metadata(Some(&topic), Duration::from_secs(10))
                            .map(|md| {
                                md.topics()
                                    .iter()
                                    .any(|t| t.name() == topic && t.error().is_none())
                            })
                            .unwrap_or(false)
                    })
                    .await
                    .unwrap_or(false);
                    if !exists {
                        return Err(SinkError::new(
                            SinkErrorKind::Config,
                            format!(
                                "cannot create the checkpoint topic {name} ({code}); create it with \
                                 cleanup.policy=compact and 1 partition, or change relay.checkpoint"
                            ),
                        ));
                    }
                    self.warn_unless_compacted(&admin, name).await
                }
            }
        }
        Ok(())
    }

    /// A state topic that is not compacted loses its values to retention.
    async fn warn_unless_compacted(&self, admin: &AdminClient<DefaultClientContext>, name: &str) {
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let Ok(results) = admin
            .describe_configs([&ResourceSpecifier::Topic(name)], &opts)
            .await
        else {
            return;
        };
        let policy = results.into_iter().flatten().find_map(|r| {
            r.entries
                .into_iter()
                .find(|e| e.name == "cleanup.policy")
                .and_then(|e| e.value)
        });
        if let Some(p) = policy.filter(|p| !p.contains("compact")) {
            KafkaCheckpointTopicNotCompacted {
                topic: name,
                cleanup_policy: &p,
            }
            .emit();
        }
    }
}

/// Room kept under a Kafka limit for what [`OutboundMessage::size`] does not
/// count: the record's varint framing (at most 36 bytes plus 10 per
/// header) and the record batch header (61 bytes) the broker's limit
/// includes.
const RECORD_OVERHEAD: usize = 512;

/// librdkafka's `message.max.bytes` when the properties do not set it.
const PRODUCER_MAX_DEFAULT: usize = 1_000_000;

/// The largest message the producer and each topic take.
struct MessageLimits {
    /// The producer's `message.max.bytes`: librdkafka refuses a larger
    /// message itself.
    producer: usize,
    /// The topics whose `max.message.bytes` is lower, read at `prepare`.
    topics: std::sync::RwLock<std::collections::HashMap<String, usize>>,
}

impl MessageLimits {
    fn new(config: &KafkaConfig) -> Self {
        let producer = producer_config(config)
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(PRODUCER_MAX_DEFAULT);
        MessageLimits {
            producer,
            topics: Default::default(),
        }
    }

    /// The largest [`OutboundMessage::size`] `topic` takes.
    fn of(&self, topic: &str) -> usize {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let max = topics.get(topic).copied().unwrap_or(self.producer);
        max.saturating_sub(RECORD_OVERHEAD)
    }
}

impl KafkaSink {
    /// Reads `max.message.bytes` of the existing `topics`, keeping those
    /// below the producer's limit. Best effort: a broker that does not
    /// answer (or an ACL that forbids describing configs) leaves the
    /// producer's limit, and the broker's own refusal still dead-letters.
    async fn read_topic_limits(&self, topics: &[String]) {
        let Ok(admin) = self.admin() else {
            return;
        };
        let resources: Vec<_> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let Ok(results) = admin.describe_configs(&resources, &opts).await else {
            return;
        };
        let mut lower = std::collections::HashMap::new();
        for (topic, result) in topics.iter().zip(results) {
            let value = result.ok().and_then(|r| {
                r.entries
                    .into_iter()
                    .find(|e| e.name == "max.message.bytes")
                    .and_then(|e| e.value)
            });
            if let Some(max) = value.and_then(|v| v.parse::<usize>().ok()) {
                if (max as u64) < self.config.batch_bytes {
                    KafkaBatchLargerThanTopicLimit {
                        topic,
                        batch_bytes: self.config.batch_bytes,
                        topic_limit: max,
                    }
                    .emit();
                }
                if max < self.limits.producer {
                    lower.insert(topic.clone(), max);
                }
            }
        }
        for (topic, &bytes) in &lower {
            BrokerMessageLimitFound {
                sink: "kafka",
                setting: &format!("max.message.bytes of {topic}"),
                bytes,
            }
            .emit();
        }
        let mut topics = self
            .limits
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *topics = lower;
    }
}

/// Maps librdkafka errors to what the caller should do about them.
pub fn classify(e: &KafkaError) -> SinkErrorKind {
    use RDKafkaErrorCode::*;
    match e.rdkafka_error_code() {
        Some(MessageSizeTooLarge) => SinkErrorKind::TooLarge,
        Some(
            InvalidTopic
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | InvalidMessage
            | InvalidRecord
            | UnknownTopicOrPartition
            | UnknownTopic,
        ) => SinkErrorKind::Rejected,
        Some(SaslAuthenticationFailed | Authentication) => SinkErrorKind::Config,
        _ => SinkErrorKind::Unavailable,
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn prepare(&self, destinations: &[String]) -> Result<(), SinkError> {
        if let Some(first) = destinations.first() {
            *self.probe_topic.lock().expect("probe topic lock") = Some(first.clone());
        }
        if !self.config.create_topics {
            self.read_topic_limits(destinations).await;
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> =
            client_config(&self.config).create().map_err(|e| {
                SinkError::new(
                    SinkErrorKind::Config,
                    format!("cannot create Kafka admin client: {e}"),
                )
            })?;
        let topics: Vec<NewTopic> = destinations
            .iter()
            .map(|d| {
                let topic = NewTopic::new(
                    d,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
                .set("cleanup.policy", &self.config.cleanup_policy);
                self.config
                    .topic_config
                    .iter()
                    .fold(topic, |t, (k, v)| t.set(k, v))
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(topics.iter(), &opts)
            .await
            .map_err(|e| SinkError::new(classify(&e), format!("create topics: {e}")))?;
        for r in results {
            match r {
                Ok(name) => KafkaTopicCreated {
                    topic: &name,
                    checkpoint: false,
                }
                .emit(),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(SinkError::new(
                        SinkErrorKind::Config,
                        format!("cannot create topic {name}: {code}"),
                    ))
                }
            }
        }
        self.read_topic_limits(destinations).await;
        Ok(())
    }

    fn max_message_bytes(&self, destination: &str) -> Option<usize> {
        Some(self.limits.of(destination))
    }

    async fn send(&self, m: &OutboundMessage) -> Result<AckFuture, SinkError> {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(&m.destination)
            .payload(m.payload.as_ref())
            .headers(headers);
        if let Some(k) = &m.key {
            record = record.key(k.as_str());
        }
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(Box::pin(async move {
                        match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(SinkError::new(classify(&e), e.to_string())),
                            Err(_) => Err(SinkError::new(
                                SinkErrorKind::Unavailable,
                                "producer dropped the message",
                            )),
                        }
                    }))
                }
                // The producer's own queue is full: wait for deliveries to free it (backpressure).
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(SinkError::new(classify(&e), e.to_string())),
            }
        }
    }

    async fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| SinkError::new(SinkErrorKind::Unavailable, e.to_string()))?
            .map_err(|e| SinkError::new(SinkErrorKind::Unavailable, format!("flush: {e}")))
    }

    async fn check_health(&self) -> Result<(), SinkError> {
        let producer = self.producer.clone();
        // One topic's metadata, not the whole cluster's: the probe runs every
        // few seconds. Only before any topic is known does it ask for all of them.
        let topic = self.probe_topic.lock().expect("probe topic lock").clone();
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(topic.as_deref(), Duration::from_secs(3))?;
            if md.brokers().is_empty() {
                return Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::BrokerTransportFailure,
                ));
            }
            Ok(())
        })
        .await
        .map_err(|e| SinkError::new(SinkErrorKind::Unavailable, e.to_string()))?
        .map_err(|e| {
            SinkError::new(
                SinkErrorKind::Unavailable,
                format!("metadata request failed: {e}"),
            )
        })
    }

    async fn state_store(&self, name: &str) -> Result<Option<Arc<dyn StateStore>>, SinkError> {
        self.ensure_state_topic(name).await?;
        Ok(Some(Arc::new(KafkaStateStore {
            topic: name.to_string(),
            producer: self.producer.clone(),
            config: self.config.clone(),
        })))
    }

    /// Leases as consumer-group membership on the coordination topic,
    /// created with `settings.shards` partitions when missing.
    async fn join_group(
        &self,
        settings: &super::leases::GroupSettings,
        leave: tokio_util::sync::CancellationToken,
    ) -> Result<Option<super::leases::Membership>, SinkError> {
        let shards = self.ensure_shard_topic(settings).await?;
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (has_left, left) = tokio::sync::oneshot::channel();
        super::kafka_group::join(client_config(&self.config), settings, tx, leave, has_left)?;
        Ok(Some(super::leases::Membership {
            shards,
            events,
            left,
            describe: format!(
                "Kafka consumer group {} on topic {}",
                settings.group, settings.topic
            ),
        }))
    }

    /// Kafka has no broker-side dedup: the ids come from the `ce_id` header
    /// of every message at or after `since_ms` (found per partition with
    /// ListOffsets by timestamp) up to the high watermark.
    async fn recent_event_ids(
        &self,
        destinations: &[String],
        since_ms: i64,
        limit: usize,
        timeout: Duration,
    ) -> Result<EventIdScan, SinkError> {
        let config = self.config.clone();
        let destinations = destinations.to_vec();
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&config)?;
            let deadline = Instant::now() + timeout;
            let mut tpl = TopicPartitionList::new();
            for topic in &destinations {
                // A topic not created yet holds nothing.
                for p in partitions_of(&consumer, topic, left(deadline))?.unwrap_or_default() {
                    tpl.add_partition_offset(topic, p, Offset::Offset(since_ms))
                        .map_err(|e| kafka_err("offsets", e))?;
                }
            }
            if tpl.count() == 0 {
                return Ok(EventIdScan {
                    complete: true,
                    ..Default::default()
                });
            }
            let found = consumer
                .offsets_for_times(tpl, left(deadline))
                .map_err(|e| kafka_err("offsets for times", e))?;
            let mut ranges = Vec::new();
            for e in found.elements() {
                let (low, high) = consumer
                    .fetch_watermarks(e.topic(), e.partition(), left(deadline))
                    .map_err(|err| kafka_err("watermarks", err))?;
                // End: nothing that new. A failed lookup reads the whole
                // partition (more work, bounded by limit and timeout). Some
                // brokers answer 0 instead of End: the same, slower.
                let start = match e.offset() {
                    Offset::Offset(o) if e.error().is_ok() => o.max(low),
                    Offset::End if e.error().is_ok() => high,
                    _ => low,
                };
                ranges.push(Range {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                    start,
                    end: high,
                });
            }
            let mut newest = NewestIds::new(limit);
            let complete = read_ranges(&consumer, &ranges, deadline, |m| {
                let at_ms = m.timestamp().to_millis().unwrap_or(i64::MAX);
                // Where the start was not found by time, older messages are
                // read too: they are not "since".
                if at_ms < since_ms {
                    return;
                }
                let header = |name: &str| {
                    m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .map(str::to_string)
                    })
                };
                if let Some(id) = header("ce_id") {
                    newest.push(at_ms, id, header(crate::encode::MATCH_KEY_HEADER));
                }
            })?;
            Ok(newest.into_scan(complete))
        })
        .await
        .map_err(|e| SinkError::new(SinkErrorKind::Unavailable, e.to_string()))?
    }
}

#[cfg(test)]
mod delivery_settings_tests {
    use super::*;

    fn config_with(properties: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn user_properties_override_the_relays_own_settings() {
        let c = producer_config(&config_with(&[("acks", "1"), ("linger.ms", "50")]));
        assert_eq!(c.get("acks"), Some("1"));
        assert_eq!(c.get("linger.ms"), Some("50"));
        let defaults = producer_config(&KafkaConfig::default());
        assert_eq!(defaults.get("acks"), Some("all"));
        assert_eq!(defaults.get("enable.idempotence"), Some("true"));
        assert_eq!(defaults.get("partitioner"), Some("murmur2_random"));
    }

    #[test]
    fn librdkafka_is_built_with_what_enterprise_clusters_need() {
        let native = ClientConfig::new()
            .create_native_config()
            .expect("native config");
        let features = native.get("builtin.features").expect("builtin.features");
        for wanted in [
            "ssl",
            "sasl_plain",
            "sasl_scram",
            "sasl_gssapi",
            "sasl_oauthbearer",
            "oidc",
            "zstd",
            "lz4",
        ] {
            assert!(
                features.split(',').any(|f| f == wanted),
                "librdkafka lacks {wanted}: {features}"
            );
        }
    }

    #[test]
    fn weakening_settings_are_named_and_harmless_ones_are_not() {
        let c = config_with(&[
            ("acks", "1"),
            ("enable.idempotence", "false"),
            ("partitioner", "consistent_random"),
            ("linger.ms", "50"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
        ]);
        let keys: Vec<_> = weakened_delivery(&c.properties)
            .iter()
            .map(|w| w.key)
            .collect();
        assert_eq!(keys, ["acks", "enable.idempotence", "partitioner"]);
        let safe = config_with(&[("acks", "-1"), ("enable.idempotence", "TRUE")]);
        assert!(weakened_delivery(&safe.properties).is_empty());
    }
}
