//! A frame holding several records (a JSON array: the way a whole
//! `/profile_history` hourly batch may be pushed) reaches the broker as its
//! records, each with its own event id; an element that cannot be
//! normalized is dead-lettered alone, with its index and its own bytes.
//!
//! A stand-in for Studio's live `/profile_history` socket sends one such
//! frame to an in-process relay publishing to a real broker.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use studio_relay::config::{self, Config};
use studio_relay::model::{self, DataSource, Envelope, Origin};
use support::live::{header, metric_sum, stand_in_live, wait_until};
use support::ReceivedMessage;

const TOKEN: &str = "batch-frames-token";
/// Records in the batch.
const K: usize = 6;
/// Where the bad element sits in the bad batch.
const BAD_AT: usize = 2;

/// K distinct profile_history records (the checked-in simulator record, one
/// agent each), as JSON texts.
fn records() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/normalize/profile_history.simulator-batch.live.json"
    );
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (0..K)
        .map(|i| {
            let mut r = base.clone();
            r["agent"]["id"] = (900_000 + i).into();
            r.to_string()
        })
        .collect()
}

fn event_id(text: &str) -> String {
    let record = model::normalize_live(DataSource::ProfileHistory, text.as_bytes()).unwrap();
    Envelope::new("acme".into(), Origin::Live, 0, record).event_id
}

fn relay_config(live_url: String, sink: &[(&str, String)]) -> Config {
    let mut env: Vec<(String, String)> = [
        ("STUDIO_RELAY__TENANTS__0__NAME", "acme".to_string()),
        ("STUDIO_RELAY__TENANTS__0__TOKEN", TOKEN.into()),
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", live_url),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL",
            "http://127.0.0.1:9/graphql".into(),
        ),
        (
            "STUDIO_RELAY__UPSTREAM__SOURCES",
            "[\"profile_history\"]".into(),
        ),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN", "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX", "1s".into()),
        ("STUDIO_RELAY__RELAY__GAP_BACKFILL", "false".into()),
        ("STUDIO_RELAY__OPS__LISTEN", "127.0.0.1:0".into()),
    ]
    .into_iter()
    .chain(sink.iter().cloned())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.sort();
    config::load_from_str("", "test", env, |p| std::fs::read_to_string(p))
        .expect("valid test config")
}

/// Sends `frame` once from a stand-in `/profile_history` socket to a relay
/// on `sink`; returns when `published` records and `dead` dead letters were
/// acknowledged by the broker, after draining the relay.
async fn relay_one_frame(frame: String, sink: &[(&str, String)], published: usize, dead: usize) {
    let url = stand_in_live(DataSource::ProfileHistory.live_path(), vec![frame]).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = studio_relay::relay::start(relay_config(url, sink), shutdown.clone())
        .await
        .expect("relay starts");
    let m = relay.metrics.clone();
    wait_until(
        &format!("{published} records published and {dead} dead-lettered"),
        Duration::from_secs(60),
        || {
            let t = m.render();
            metric_sum(&t, "studio_relay_events_published_total", "origin=\"live\"")
                >= published as f64
                && metric_sum(&t, "studio_relay_events_deadlettered_total", "") >= dead as f64
        },
    )
    .await;
    shutdown.cancel();
    let summary = relay.wait().await.expect("relay drains cleanly");
    assert_eq!(summary.published as usize, published + dead);
}

/// The batch with element [`BAD_AT`] replaced by one of the wrong shape.
fn bad_batch(records: &[String]) -> (String, String) {
    let bad = r#"{"agent":"not an object","slot":{"start_date":1779098400000}}"#.to_string();
    let mut items = records.to_vec();
    items[BAD_AT] = bad.clone();
    (format!("[{}]", items.join(",")), bad)
}

/// Checks what a broker holds after the good batch and the bad one (each
/// read from its own destinations).
fn check_records(msgs: &[ReceivedMessage], want: &[String], id_header: &str) {
    let ids: Vec<&str> = msgs
        .iter()
        .map(|m| header(&m.headers, id_header).expect("event id header"))
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "each record has its own id");
    let expected: BTreeSet<String> = want.iter().map(|r| event_id(r)).collect();
    let got: BTreeSet<String> = unique.iter().map(|s| s.to_string()).collect();
    assert_eq!(got, expected, "every element arrives as its own record");
}

fn check_dead_letter(msgs: &[ReceivedMessage], bad: &str) {
    assert_eq!(msgs.len(), 1, "one dead letter: the bad element alone");
    let dl = &msgs[0];
    assert_eq!(
        header(&dl.headers, "studio_relay_element_index"),
        Some(BAD_AT.to_string().as_str())
    );
    assert_eq!(
        header(&dl.headers, "studio_relay_reason"),
        Some("wrong_type")
    );
    assert_eq!(dl.payload, bad.as_bytes(), "the element's own bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_frame_reaches_jetstream_as_its_records() {
    let records = records();
    // One broker per frame: each run's stream holds that frame's messages only.
    for bad in [false, true] {
        let nats = support::NatsServer::start();
        let url = nats.url();
        let sink = vec![
            ("STUDIO_RELAY__SINK__KIND", "nats".to_string()),
            ("STUDIO_RELAY__SINK__NATS__URL", url.clone()),
            ("STUDIO_RELAY__SINK__NATS__STREAM", "STUDIO".into()),
            ("STUDIO_RELAY__ENCODING__FORMAT", "json".into()),
        ];
        let fetch = |subject: &'static str, n: usize| {
            support::nats_fetch_all(&url, "STUDIO", subject, n, Duration::from_secs(20))
        };
        let topic = "telavox.studio.profile_history.v1";
        if !bad {
            relay_one_frame(format!("[{}]", records.join(",")), &sink, K, 0).await;
            let msgs = fetch(topic, K).await;
            assert_eq!(msgs.len(), K, "K records from one frame");
            for m in &msgs {
                support::decode_with_checked_in_schema(
                    DataSource::ProfileHistory,
                    "json",
                    &m.payload,
                );
            }
            check_records(&msgs, &records, "ce-id");
            assert!(fetch("telavox.studio.deadletter", 0).await.is_empty());
        } else {
            let (frame, bad) = bad_batch(&records);
            relay_one_frame(frame, &sink, K - 1, 1).await;
            let msgs = fetch(topic, K - 1).await;
            assert_eq!(msgs.len(), K - 1, "K-1 records from one frame");
            let mut good = records.clone();
            good.remove(BAD_AT);
            check_records(&msgs, &good, "ce-id");
            check_dead_letter(&fetch("telavox.studio.deadletter", 1).await, &bad);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_frame_with_a_bad_element_reaches_kafka_as_its_good_records() {
    let records = records();
    let kafka = support::KafkaBroker::start();
    let sink = vec![
        ("STUDIO_RELAY__SINK__KIND", "kafka".to_string()),
        ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
        ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
        ("STUDIO_RELAY__ENCODING__FORMAT", "avro".into()),
    ];
    let (frame, bad) = bad_batch(&records);
    relay_one_frame(frame, &sink, K - 1, 1).await;
    let topic = |name: &str| vec![name.to_string()];
    let msgs = support::kafka_consume(
        &kafka.bootstrap(),
        &topic("telavox.studio.profile_history.v1"),
        K - 1,
        Duration::from_secs(30),
    );
    for m in &msgs {
        support::decode_with_checked_in_schema(DataSource::ProfileHistory, "avro", &m.payload);
    }
    let mut good = records.clone();
    good.remove(BAD_AT);
    assert_eq!(msgs.len(), K - 1);
    check_records(&msgs, &good, "ce_id");
    let dead = support::kafka_consume(
        &kafka.bootstrap(),
        &topic("telavox.studio.deadletter"),
        1,
        Duration::from_secs(30),
    );
    check_dead_letter(&dead, &bad);
}
