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
    assert_eq!(header(&from_nats[7], "ce_id"), "id-call-2-7");

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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = js.check_health().await.expect_err("nats is down");
    assert!(e.is_retryable(), "{e}");
    let e = k.check_health().await.expect_err("kafka is down");
    assert!(e.is_retryable(), "{e}");

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
