//! "Lose nothing": the restart checkpoint kept in the broker (a
//! NATS KV bucket, a compacted Kafka topic) and the event ids read back from
//! the broker after a restart, against real brokers started by the harness.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use studio_relay::config::{CheckpointMode, Config, KafkaConfig, NatsConfig};
use studio_relay::ops::Metrics;
use studio_relay::relay::checkpoint::{
    self, CheckpointErrorKind, CheckpointState, CheckpointStore, ClockMark,
};
use studio_relay::sink::{JetStreamSink, KafkaSink, OutboundMessage, Sink};

fn config(key: &str) -> Config {
    let mut c = Config::default();
    c.relay.checkpoint = CheckpointMode::Broker;
    c.relay.checkpoint_store = "cp-test".into();
    c.relay.checkpoint_key = key.into();
    c
}

fn state(pairs: &[(&str, i64)]) -> CheckpointState {
    pairs
        .iter()
        .map(|(t, ms)| {
            (
                t.to_string(),
                ClockMark {
                    upstream_ms: *ms,
                    seen_at_ms: ms + 1,
                },
            )
        })
        .collect()
}

async fn open(sink: &dyn Sink, key: &str) -> CheckpointStore {
    checkpoint::open(&config(key), sink, &Metrics::new())
        .await
        .expect("store opens")
        .expect("a broker sink keeps a checkpoint")
}

/// Save, overwrite, a second key beside it; then a fresh client (what a
/// restarted process does) sees the last save of each key.
async fn keeps_the_last_save_per_key(connect: impl AsyncFn() -> Arc<dyn Sink>) {
    let sink = connect().await;
    let a = open(sink.as_ref(), "relay-a").await;
    let b = open(sink.as_ref(), "relay-b").await;
    assert!(a.load().await.unwrap().is_empty(), "nothing saved yet");
    a.save(&state(&[("acme", 100)])).await.unwrap();
    a.save(&state(&[("acme", 200), ("other", 50)]))
        .await
        .unwrap();
    b.save(&state(&[("acme", 7)])).await.unwrap();
    drop((a, b, sink));

    let fresh = connect().await;
    let a = open(fresh.as_ref(), "relay-a").await;
    assert_eq!(
        a.load().await.unwrap(),
        state(&[("acme", 200), ("other", 50)])
    );
    let b = open(fresh.as_ref(), "relay-b").await;
    assert_eq!(b.load().await.unwrap(), state(&[("acme", 7)]));
    assert!(
        a.location().contains("relay.checkpoint_key \"relay-a\""),
        "{}",
        a.location()
    );
}

fn nats_config(url: String) -> NatsConfig {
    NatsConfig {
        url,
        stream: "CP".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_kv_bucket_keeps_the_last_checkpoint_for_a_fresh_client() {
    let mut nats = support::NatsServer::start();
    let url = nats.url();
    keeps_the_last_save_per_key(async || {
        let sink = JetStreamSink::connect(&nats_config(url.clone()))
            .await
            .unwrap();
        let sink: Arc<dyn Sink> = Arc::new(sink);
        sink
    })
    .await;

    // The bucket keeps one value per key; garbage in it stops the load,
    // naming the key.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let kv = js.get_key_value("cp-test").await.unwrap();
    assert_eq!(kv.status().await.unwrap().history(), 1);
    kv.put("relay-a", Bytes::from_static(b"not json"))
        .await
        .unwrap();
    let sink = JetStreamSink::connect(&nats_config(nats.url()))
        .await
        .unwrap();
    let a = open(&sink, "relay-a").await;
    let e = a.load().await.unwrap_err();
    assert_eq!(e.kind, CheckpointErrorKind::Corrupt);
    assert!(
        e.to_string()
            .contains("relay.checkpoint_key \"relay-a\" in NATS KV bucket cp-test"),
        "{e}"
    );

    // The broker away: a save fails, retryably; once it is back, a later
    // save (the writer's next epoch) goes through.
    nats.stop();
    let e = a.save(&state(&[("acme", 300)])).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    nats.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = a.save(&state(&[("acme", 400)])).await {
        assert!(std::time::Instant::now() < deadline, "still failing: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.load().await.unwrap(), state(&[("acme", 400)]));

    // Core NATS has nowhere to keep it: no checkpoint, no error.
    let core = JetStreamSink::connect(&NatsConfig {
        jetstream: false,
        ..nats_config(nats.url())
    })
    .await
    .unwrap();
    assert!(checkpoint::open(&config("k"), &core, &Metrics::new())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_kafka_topic_keeps_the_last_checkpoint_for_a_fresh_client() {
    let kafka = support::KafkaBroker::start();
    let brokers = kafka.bootstrap();
    keeps_the_last_save_per_key(async || {
        // create_topics = false: the checkpoint topic is created all the same.
        let sink = KafkaSink::new(&KafkaConfig {
            brokers: brokers.clone(),
            ..Default::default()
        })
        .unwrap();
        let sink: Arc<dyn Sink> = Arc::new(sink);
        sink
    })
    .await;

    // The relay created it compacted, with one partition.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let configs = kafka.topic_configs("cp-test").await;
    assert_eq!(
        configs.get("cleanup.policy").map(String::as_str),
        Some("compact")
    );
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some("cp-test"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 1);
}

fn message(destination: &str, id: &str) -> OutboundMessage {
    OutboundMessage {
        destination: destination.into(),
        key: Some(id.into()),
        headers: vec![
            ("ce_id".into(), id.to_owned().into()),
            ("content-type".into(), "application/json".into()),
        ],
        payload: Bytes::from_static(b"{}"),
        event_id: id.into(),
    }
}

async fn publish(sink: &dyn Sink, destination: &str, ids: &[String]) {
    let mut acks = Vec::new();
    for id in ids {
        acks.push(sink.send(&message(destination, id)).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// Waits until the wall clock has left the current millisecond; returns
/// the new one.
async fn next_millisecond() -> i64 {
    let now = chrono::Utc::now().timestamp_millis();
    loop {
        let later = chrono::Utc::now().timestamp_millis();
        if later > now {
            return later;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Ids published before `since` are left out, the ones after come back
/// oldest first, and a limit keeps the newest.
async fn reads_back_the_ids_published_since(sink: &dyn Sink) {
    let (calls, queues) = ("ids.studio.calls.v1", "ids.studio.queues.v1");
    sink.prepare(&[calls.into(), queues.into()]).await.unwrap();
    let ids =
        |p: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{p}{i:031x}")).collect() };
    let before = ids("a", 5);
    publish(sink, calls, &before).await;
    // Broker timestamps have millisecond resolution: keep them apart.
    let since = next_millisecond().await;
    next_millisecond().await;
    let (after_calls, after_queues) = (ids("b", 6), ids("c", 4));
    publish(sink, calls, &after_calls).await;
    next_millisecond().await;
    publish(sink, queues, &after_queues).await;

    let dests = [
        calls.to_string(),
        queues.to_string(),
        "ids.studio.agents.v1".into(),
    ];
    let scan = sink
        .recent_event_ids(&dests, since, 1000, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(scan.complete);
    let mut want: Vec<String> = after_calls.iter().chain(&after_queues).cloned().collect();
    want.sort();
    let mut got = scan.ids.clone();
    got.sort();
    assert_eq!(got, want, "{}: the ids published since", sink.name());
    let mut newest = sink
        .recent_event_ids(&dests, since, 4, Duration::from_secs(30))
        .await
        .unwrap()
        .ids;
    newest.sort();
    assert_eq!(newest, after_queues, "{}: the newest 4", sink.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ids_already_on_nats_come_back() {
    let nats = support::NatsServer::start();
    let js = JetStreamSink::connect(&NatsConfig {
        stream_subjects: vec!["ids.studio.>".into()],
        ..nats_config(nats.url())
    })
    .await
    .unwrap();
    reads_back_the_ids_published_since(&js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ids_already_on_kafka_come_back() {
    let kafka = support::KafkaBroker::start();
    let k = KafkaSink::new(&KafkaConfig {
        brokers: kafka.bootstrap(),
        create_topics: true,
        partitions: 3,
        ..Default::default()
    })
    .unwrap();
    reads_back_the_ids_published_since(&k).await;
}

#[test]
fn checkpoint_values_are_the_documented_json() {
    let s: CheckpointState = BTreeMap::from([(
        "acme".to_string(),
        ClockMark {
            upstream_ms: 10,
            seen_at_ms: 20,
        },
    )]);
    let v: serde_json::Value = serde_json::from_slice(&checkpoint::encode(&s)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"tenants": {"acme": 10}, "seen_at": {"acme": 20}})
    );
}
