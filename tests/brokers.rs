//! The sinks against real brokers started by the harness: publish, read back,
//! deduplicate, keep per-key order, and report broker health honestly.

mod support;

use std::time::Duration;

use bytes::Bytes;
use studio_relay::config::{KafkaConfig, NatsConfig};
use studio_relay::sink::{JetStreamSink, KafkaSink, OutboundMessage, Sink, StdoutSink};

fn message(destination: &str, key: &str, i: usize) -> OutboundMessage {
    OutboundMessage {
        destination: destination.into(),
        key: Some(key.into()),
        headers: vec![
            ("ce_id".into(), format!("id-{key}-{i}").into()),
            ("content-type".into(), "application/json".into()),
        ],
        payload: Bytes::from(format!("{{\"n\":{i},\"key\":\"{key}\"}}")),
        event_id: format!("id-{key}-{i}"),
    }
}

async fn publish_all(sink: &dyn Sink, messages: Vec<OutboundMessage>) {
    let mut acks = Vec::new();
    for m in messages {
        acks.push(sink.send(&m).await.expect("send accepted"));
    }
    for a in acks {
        a.await.expect("broker acknowledged");
    }
}

fn header<'a>(m: &'a support::ReceivedMessage, name: &str) -> &'a str {
    m.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_brokers_take_messages_and_give_them_back() {
    let nats = support::NatsServer::start();
    let kafka = support::KafkaBroker::start();

    let js = JetStreamSink::connect(&NatsConfig {
        url: nats.url(),
        stream: "T".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    js.prepare(&[]).await.unwrap();
    let kafka_sink = KafkaSink::new(&KafkaConfig {
        brokers: kafka.bootstrap(),
        create_topics: true,
        partitions: 3,
        ..Default::default()
    })
    .unwrap();
    kafka_sink
        .prepare(&["telavox.studio.calls.v1".into()])
        .await
        .unwrap();

    let msgs: Vec<_> = (0..50)
        .map(|i| message("telavox.studio.calls.v1", &format!("call-{}", i % 5), i))
        .collect();
    publish_all(&js, msgs.clone()).await;
    publish_all(&kafka_sink, msgs.clone()).await;

    let from_nats = support::nats_fetch_all(
        &nats.url(),
        "T",
        "telavox.studio.>",
        50,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(from_nats.len(), 50);
    assert_eq!(from_nats[7].payload, msgs[7].payload.to_vec());
    // CloudEvents NATS binding on NATS (`ce-`), Kafka binding on Kafka (`ce_`).
    assert_eq!(header(&from_nats[7], "ce-id"), "id-call-2-7");
    assert_eq!(
        header(&from_nats[7], "ce_id"),
        "",
        "no Kafka-style name on NATS"
    );
    assert_eq!(
        header(&from_nats[7], "ce-datacontenttype"),
        "application/json"
    );

    let from_kafka = support::kafka_consume(
        &kafka.bootstrap(),
        &["telavox.studio.calls.v1".into()],
        50,
        Duration::from_secs(30),
    );
    assert_eq!(from_kafka.len(), 50);
    // Per-key order: within a key, payload numbers increase in consumption order.
    for k in 0..5 {
        let key = format!("call-{k}");
        let ns: Vec<usize> = from_kafka
            .iter()
            .filter(|m| m.key.as_deref() == Some(&key))
            .map(|m| {
                header(m, "ce_id")
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(ns.len(), 10, "{key}");
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {ns:?}"
        );
        let partitions: std::collections::BTreeSet<i32> = from_kafka
            .iter()
            .filter(|m| m.key.as_deref() == Some(&key))
            .map(|m| m.partition)
            .collect();
        assert_eq!(
            partitions.len(),
            1,
            "{key} spread over partitions {partitions:?}"
        );
    }
    assert_eq!(header(&from_kafka[0], "content-type"), "application/json");
    assert_eq!(
        header(&from_kafka[0], "ce-id"),
        "",
        "no NATS-style name on Kafka"
    );
}

/// The stream as the server has it now.
async fn stream_config(url: &str, name: &str) -> async_nats::jetstream::stream::Config {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.get_stream(name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_jetstream_stream_is_used_as_it_is_and_never_altered() {
    use async_nats::jetstream::stream;
    let nats = support::NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // Another team's stream: shorter retention, an extra subject, memory.
    let theirs = stream::Config {
        name: "OWNED".into(),
        subjects: vec!["telavox.studio.>".into(), "audit.>".into()],
        max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(60),
        storage: stream::StorageType::Memory,
        ..Default::default()
    };
    js.create_stream(theirs).await.unwrap();
    let before = stream_config(&nats.url(), "OWNED").await;

    let sink = JetStreamSink::connect(&NatsConfig {
        url: nats.url(),
        stream: "OWNED".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    sink.prepare(&[
        "telavox.studio.calls.v1".into(),
        "telavox.studio.deadletter".into(),
    ])
    .await
    .expect("a stream capturing every destination is fine as it is");
    let after = stream_config(&nats.url(), "OWNED").await;
    assert_eq!(after.max_age, Duration::from_secs(3600));
    assert_eq!(after.duplicate_window, Duration::from_secs(60));
    assert_eq!(after.storage, stream::StorageType::Memory);
    assert_eq!(after.subjects, before.subjects);
    // And it is usable: a message sent through the sink is stored there.
    publish_all(&sink, vec![message("telavox.studio.calls.v1", "k", 1)]).await;
    let got = support::nats_fetch_all(
        &nats.url(),
        "OWNED",
        "telavox.studio.>",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(got.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_capture_the_destinations_stops_start_up_naming_them() {
    use async_nats::jetstream::stream;
    let nats = support::NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "NARROW".into(),
        subjects: vec!["telavox.studio.calls.*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let sink = JetStreamSink::connect(&NatsConfig {
        url: nats.url(),
        stream: "NARROW".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let e = sink
        .prepare(&[
            "telavox.studio.calls.v1".into(),
            "telavox.studio.deadletter".into(),
        ])
        .await
        .expect_err("the dead letters would be stored nowhere");
    assert_eq!(e.kind, studio_relay::sink::SinkErrorKind::Config, "{e}");
    assert!(e.message.contains("NARROW"), "{e}");
    assert!(e.message.contains("telavox.studio.deadletter"), "{e}");
    assert!(!e.message.contains("\"telavox.studio.calls.v1\""), "{e}");
    let after = stream_config(&nats.url(), "NARROW").await;
    assert_eq!(after.subjects, ["telavox.studio.calls.*"], "left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_created_with_the_configured_settings() {
    let nats = support::NatsServer::start();
    let sink = JetStreamSink::connect(&NatsConfig {
        url: nats.url(),
        stream: "FRESH".into(),
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .unwrap();
    sink.prepare(&["telavox.studio.calls.v1".into()])
        .await
        .unwrap();
    let created = stream_config(&nats.url(), "FRESH").await;
    assert_eq!(created.subjects, ["telavox.studio.>"]);
    assert_eq!(created.duplicate_window, Duration::from_secs(600));
    // A second start finds it and leaves it be.
    sink.prepare(&["telavox.studio.calls.v1".into()])
        .await
        .unwrap();
    let missing = JetStreamSink::connect(&NatsConfig {
        url: nats.url(),
        stream: "ABSENT".into(),
        create_stream: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let e = missing
        .prepare(&[])
        .await
        .expect_err("no stream to publish to");
    assert!(
        e.message.contains("ABSENT") && e.message.contains("create_stream"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_deduplicates_by_event_id() {
    let nats = support::NatsServer::start();
    let js = JetStreamSink::connect(&NatsConfig {
        url: nats.url(),
        stream: "D".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    js.prepare(&[]).await.unwrap();
    let m = message("telavox.studio.agents.v1", "a", 1);
    publish_all(&js, vec![m.clone(), m.clone(), m]).await;
    js.flush(Duration::from_secs(5)).await.unwrap();
    let got = support::nats_fetch_all(
        &nats.url(),
        "D",
        "telavox.studio.>",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(got.len(), 1, "the same Nats-Msg-Id must be stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_follow_the_brokers() {
    let mut nats = support::NatsServer::start();
    let mut kafka = support::KafkaBroker::start();
    let js = JetStreamSink::connect(&NatsConfig {
        url: nats.url(),
        stream: "H".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    js.prepare(&[]).await.unwrap();
    let k = KafkaSink::new(&KafkaConfig {
        brokers: kafka.bootstrap(),
        ..Default::default()
    })
    .unwrap();
    js.check_health().await.expect("nats up");
    k.check_health().await.expect("kafka up");

    nats.stop();
    kafka.stop();
    // The clients notice the broker gone on their own schedule.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (a, b) = loop {
        match (js.check_health().await, k.check_health().await) {
            (Err(a), Err(b)) => break (a, b),
            (a, b) => assert!(
                tokio::time::Instant::now() < deadline,
                "brokers still reported up: {a:?} {b:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(a.is_retryable(), "nats is down: {a}");
    assert!(b.is_retryable(), "kafka is down: {b}");

    nats.restart();
    kafka.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (a, b) = (js.check_health().await, k.check_health().await);
        if a.is_ok() && b.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "brokers did not come back: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn stdout_sink_writes_json_payloads_as_lines_and_others_as_base64() {
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = StdoutSink::with_writer(Box::new(Shared(buf.clone())));
    let json = message("t", "k", 1);
    let mut avro = message("t", "k", 2);
    avro.headers = vec![("content-type".into(), "application/avro".into())];
    avro.payload = Bytes::from_static(&[0xC3, 0x01, 0xff]);
    publish_all(&sink, vec![json, avro]).await;
    sink.flush(Duration::from_secs(1)).await.unwrap();
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "{\"n\":1,\"key\":\"k\"}");
    let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(v["payload_base64"], "wwH/");
    assert_eq!(v["destination"], "t");
}
