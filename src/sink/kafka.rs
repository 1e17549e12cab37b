//! `KafkaSink`: rdkafka's idempotent producer (`acks=all`), with the bundled
//! librdkafka built from source.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{AckFuture, OutboundMessage, Sink, SinkError, SinkErrorKind};
use crate::config::KafkaConfig;

/// Publishes to Kafka (or any Kafka-protocol broker).
pub struct KafkaSink {
    producer: FutureProducer,
    config: KafkaConfig,
}

impl KafkaSink {
    pub fn new(config: &KafkaConfig) -> Result<Self, SinkError> {
        let producer: FutureProducer = client_config(config)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &config.compression)
            .set("linger.ms", config.linger_ms.to_string())
            .set("batch.size", config.batch_bytes.to_string())
            .set("message.timeout.ms", config.message_timeout_ms.to_string())
            .create()
            .map_err(|e| {
                SinkError::new(
                    SinkErrorKind::Config,
                    format!("cannot create Kafka producer: {e}"),
                )
            })?;
        Ok(KafkaSink {
            producer,
            config: config.clone(),
        })
    }
}

/// Common client settings; user properties last so they can override ours.
fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c.set(
        "client.id",
        concat!("studio-relay/", env!("CARGO_PKG_VERSION")),
    );
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

/// Maps librdkafka errors to what the caller should do about them.
pub fn classify(e: &KafkaError) -> SinkErrorKind {
    use RDKafkaErrorCode::*;
    match e.rdkafka_error_code() {
        Some(
            MessageSizeTooLarge
            | InvalidTopic
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
        if !self.config.create_topics {
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
                NewTopic::new(
                    d,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
                .set("cleanup.policy", &self.config.cleanup_policy)
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(topics.iter(), &opts)
            .await
            .map_err(|e| SinkError::new(classify(&e), format!("create topics: {e}")))?;
        for r in results {
            match r {
                Ok(name) => tracing::info!(topic = %name, "Kafka topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(SinkError::new(
                        SinkErrorKind::Config,
                        format!("cannot create topic {name}: {code}"),
                    ))
                }
            }
        }
        Ok(())
    }

    async fn send(&self, m: OutboundMessage) -> Result<AckFuture, SinkError> {
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
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(3))?;
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
}
