//! The Kafka ecosystem's conventions, on a real Apache Kafka broker:
//! partitioning that matches the Java client, per-topic config for created
//! topics, existing topics left as they are, and librdkafka's statistics on
//! `/metrics`.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use studio_relay::config::KafkaConfig;
use studio_relay::ops::Metrics;
use studio_relay::sink::{KafkaSink, OutboundMessage, Sink};
use support::KafkaBroker;

/// Kafka's `Utils.murmur2` (the Java client's partitioner hash), written
/// from its definition so the relay's partitions can be checked against it.
fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's default partition for a keyed record.
fn java_partition(key: &str, partitions: i32) -> i32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions
}

#[test]
fn murmur2_matches_the_java_clients_known_vectors() {
    // Hashes of Kafka's `Utils.murmur2`, as published with ports of it.
    for (key, want) in [
        ("1", -1_993_445_489),
        ("12", 126_087_238),
        ("123", -267_702_483),
        ("1234", -1_614_185_708),
        ("12345", -1_188_365_604),
    ] {
        assert_eq!(murmur2(key.as_bytes()), want, "murmur2({key:?})");
    }
}

fn kafka_config(broker: &KafkaBroker) -> KafkaConfig {
    KafkaConfig {
        brokers: broker.bootstrap(),
        linger_ms: 0,
        ..KafkaConfig::default()
    }
}

fn message(topic: &str, key: &str, n: usize) -> OutboundMessage {
    OutboundMessage {
        destination: topic.to_string(),
        key: Some(key.to_string()),
        headers: Vec::new(),
        payload: Bytes::from(format!("{{\"n\":{n}}}")),
        event_id: format!("id-{n}"),
    }
}

async fn send_all(sink: &KafkaSink, messages: &[OutboundMessage]) {
    let mut acks = Vec::new();
    for m in messages {
        acks.push(sink.send(m).await.expect("send accepted"));
    }
    for ack in acks {
        ack.await.expect("broker acknowledged");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn keys_land_in_the_partition_the_java_client_would_pick() {
    let broker = KafkaBroker::start();
    let topic = "telavox.studio.calls.v1";
    broker.create_topic(topic, 6);
    let sink = KafkaSink::new(&kafka_config(&broker)).unwrap();
    // Call ids and agent ids as the relay keys them, plus edge lengths.
    let keys: Vec<String> = (0..60)
        .map(|i| match i % 3 {
            0 => format!("{}", 1_700_000_000_000u64 + i * 7919),
            1 => format!("agent-{i}"),
            _ => "x".repeat(i as usize % 9 + 1),
        })
        .collect();
    let messages: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(n, k)| message(topic, k, n))
        .collect();
    runtime().block_on(send_all(&sink, &messages));

    let read = support::kafka_consume(
        &broker.bootstrap(),
        &[topic.to_string()],
        keys.len(),
        Duration::from_secs(60),
    );
    assert_eq!(read.len(), keys.len());
    let used: std::collections::BTreeSet<i32> = read.iter().map(|m| m.partition).collect();
    assert!(used.len() > 1, "keys should spread: {used:?}");
    for m in &read {
        let key = m.key.as_deref().expect("keyed");
        assert_eq!(
            m.partition,
            java_partition(key, 6),
            "key {key:?}: the relay's partition differs from the Java client's"
        );
    }
}

#[test]
fn created_topics_take_per_topic_config_and_existing_ones_are_left_alone() {
    let broker = KafkaBroker::start();
    // A topic the platform team created and sized beforehand.
    let existing = "telavox.studio.agents.v1";
    broker.create_topic(existing, 2);
    let before = runtime().block_on(broker.topic_configs(existing));

    let config = KafkaConfig {
        create_topics: true,
        partitions: 3,
        topic_config: BTreeMap::from([
            ("retention.ms".to_string(), "3600000".to_string()),
            ("min.insync.replicas".to_string(), "1".to_string()),
        ]),
        ..kafka_config(&broker)
    };
    let sink = KafkaSink::new(&config).unwrap();
    let created = "telavox.studio.queues.v1";
    let rt = runtime();
    rt.block_on(sink.prepare(&[created.to_string(), existing.to_string()]))
        .expect("prepare");

    let got = rt.block_on(broker.topic_configs(created));
    assert_eq!(got.get("retention.ms").map(String::as_str), Some("3600000"));
    assert_eq!(
        got.get("cleanup.policy").map(String::as_str),
        Some("delete")
    );
    assert_eq!(rt.block_on(broker.topic_configs(existing)), before);

    // The default replication factor (-1) is the cluster's own default, which
    // a single-node cluster can satisfy; so can the checkpoint topic's.
    rt.block_on(async {
        let store = sink
            .state_store("studio-relay.checkpoints")
            .await
            .expect("checkpoint topic created")
            .expect("Kafka keeps state");
        store
            .put("t", Bytes::from_static(b"{}"))
            .await
            .expect("checkpoint saved");
    });
}

#[test]
fn librdkafka_statistics_appear_on_metrics() {
    let broker = KafkaBroker::start();
    let topic = "telavox.studio.profile_live.v1";
    broker.create_topic(topic, 1);
    let metrics = Arc::new(Metrics::new());
    let config = KafkaConfig {
        statistics_interval: Duration::from_millis(200),
        ..kafka_config(&broker)
    };
    let sink = KafkaSink::with_metrics(&config, metrics.clone()).unwrap();
    let messages: Vec<_> = (0..20).map(|n| message(topic, "k", n)).collect();
    runtime().block_on(async {
        sink.prepare(&[topic.to_string()]).await.unwrap();
        send_all(&sink, &messages).await;
        sink.check_health().await.expect("broker reachable");
    });

    let wanted = [
        "studio_relay_kafka_broker_up{broker=\"127.0.0.1:",
        "studio_relay_kafka_broker_rtt_seconds{broker=\"127.0.0.1:",
        "studio_relay_kafka_batch_messages{topic=\"telavox.studio.profile_live.v1\"}",
        "studio_relay_kafka_producer_queue_messages",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics.render();
        let missing: Vec<_> = wanted.iter().filter(|w| !text.contains(**w)).collect();
        if missing.is_empty() {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("studio_relay_kafka_broker_up{") && l.ends_with(" 1")),
                "the broker is up: {text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "librdkafka statistics did not reach /metrics; missing {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
