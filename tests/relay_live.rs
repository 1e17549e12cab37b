//! The live relay against the simulator and real brokers.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use studio_relay::model::DataSource;
use support::live::{header, start_relay, start_simulator, wait_until, Seen, Witness};
use support::wait::{frames_broadcast, wait_received};

const TOKEN: &str = "relay-test-token";
/// Events the witness sees before the run stops.
const WITNESSED: usize = 300;

/// Runs the relay into `sink_overrides`, witnesses the stream until it has
/// seen `events` events, stops the simulator once the relay has received
/// everything the witness saw, drains, and returns (witnessed,
/// published-count).
async fn relay_session(
    sink_overrides: Vec<(&'static str, String)>,
    events: usize,
) -> (Vec<Seen>, studio_relay::relay::RelaySummary) {
    let sim = start_simulator(TOKEN, &[]).await;
    let before = frames_broadcast(&sim);
    let (relay, shutdown) = start_relay(&sim, TOKEN, &sink_overrides, 5).await;
    let witness = Witness::connect(&sim, TOKEN, &DataSource::ALL).await;
    wait_until("events witnessed", Duration::from_secs(60), || {
        witness.ids().len() >= events
    })
    .await;
    // Stop the witness first, wait until the relay has received the same
    // broadcast frames, then stop the source and drain. (A server shutting
    // down does not deliver its last frames to every client alike.)
    let witnessed = witness.ids();
    let upto = frames_broadcast(&sim);
    drop(witness);
    let seen: BTreeSet<DataSource> = witnessed.iter().map(|(s, _, _)| *s).collect();
    let seen: Vec<DataSource> = seen.into_iter().collect();
    wait_received(
        &relay.metrics,
        &before,
        &upto,
        &seen,
        Duration::from_secs(60),
    )
    .await;
    sim.shutdown().await;
    shutdown.cancel();
    let summary = relay.wait().await.expect("relay drains cleanly");
    (witnessed, summary)
}

fn check_exactly_once_and_order(witnessed: &[Seen], on_broker: &[Seen]) {
    assert!(!witnessed.is_empty(), "the witness saw no events");
    let broker_ids: Vec<&String> = on_broker.iter().map(|(_, id, _)| id).collect();
    let unique: BTreeSet<&String> = broker_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        broker_ids.len(),
        "duplicate event ids on the broker"
    );
    let missing: Vec<_> = witnessed
        .iter()
        .filter(|(_, id, _)| !unique.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} witnessed events missing, e.g. {:?}",
        missing.len(),
        witnessed.len(),
        missing.first()
    );
    // Per-key order: for every key, the witnessed ids appear in the same order on the broker.
    let position: HashMap<&String, usize> = broker_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i))
        .collect();
    let mut by_key: BTreeMap<(DataSource, String), Vec<usize>> = BTreeMap::new();
    for (source, id, key) in witnessed {
        if let Some(k) = key {
            by_key
                .entry((*source, k.clone()))
                .or_default()
                .push(position[id]);
        }
    }
    for ((source, key), positions) in by_key {
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "order broken for {source} key {key}: {positions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_reach_jetstream_exactly_once_in_both_encodings() {
    for format in ["json", "avro"] {
        let nats = support::NatsServer::start();
        let stream = format!("STUDIO_{}", format.to_uppercase());
        let (witnessed, summary) = relay_session(
            vec![
                ("STUDIO_RELAY__SINK__KIND", "nats".into()),
                ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
                ("STUDIO_RELAY__SINK__NATS__STREAM", stream.clone()),
                ("STUDIO_RELAY__ENCODING__FORMAT", format.into()),
            ],
            WITNESSED,
        )
        .await;
        let msgs = support::nats_fetch_all(
            &nats.url(),
            &stream,
            "telavox.studio.>",
            summary.published as usize,
            Duration::from_secs(20),
        )
        .await;
        let mut on_broker = Vec::new();
        for m in &msgs {
            let source: DataSource = m.destination.split('.').nth(2).unwrap().parse().unwrap();
            let id = header(&m.headers, "ce-id")
                .expect("ce-id header (CloudEvents NATS binding)")
                .to_string();
            // Each payload decodes with the checked-in schema.
            support::decode_with_checked_in_schema(source, format, &m.payload);
            on_broker.push((source, id, m.key.clone()));
        }
        assert_eq!(
            on_broker.len() as u64,
            summary.published,
            "{format}: broker holds what the relay says it published"
        );
        check_exactly_once_and_order(&witnessed, &on_broker);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_reach_kafka_exactly_once_in_both_encodings() {
    let kafka = support::KafkaBroker::start();
    for format in ["json", "avro"] {
        let template = format!("{format}.telavox.studio.{{source}}.v{{version}}");
        let (witnessed, summary) = relay_session(
            vec![
                ("STUDIO_RELAY__SINK__KIND", "kafka".into()),
                ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
                ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
                ("STUDIO_RELAY__SINK__KAFKA__PARTITIONS", "3".into()),
                ("STUDIO_RELAY__SINK__TOPIC_TEMPLATE", template.clone()),
                (
                    "STUDIO_RELAY__SINK__DEADLETTER_TOPIC",
                    format!("{format}.telavox.studio.deadletter"),
                ),
                ("STUDIO_RELAY__ENCODING__FORMAT", format.into()),
                // Two deployments on one broker: each its own checkpoint, or
                // the second resumes from the first's and backfills.
                (
                    "STUDIO_RELAY__RELAY__CHECKPOINT_KEY",
                    format!("live-{format}"),
                ),
            ],
            WITNESSED,
        )
        .await;
        let topics: Vec<String> = DataSource::ALL
            .iter()
            .map(|s| format!("{format}.telavox.studio.{s}.v1"))
            .collect();
        let msgs = support::kafka_consume(
            &kafka.bootstrap(),
            &topics,
            summary.published as usize,
            Duration::from_secs(30),
        );
        // Kafka has no broker-side dedup: dedupe by ce_id like a consumer would,
        // and check nothing was published twice by the relay in the first place.
        let mut on_broker = Vec::new();
        for m in &msgs {
            let source: DataSource = m.destination.split('.').nth(3).unwrap().parse().unwrap();
            support::decode_with_checked_in_schema(source, format, &m.payload);
            on_broker.push((
                source,
                header(&m.headers, "ce_id").unwrap().to_string(),
                m.key.clone(),
                m.partition,
            ));
        }
        assert_eq!(on_broker.len() as u64, summary.published, "{format}");
        // A key lives in one partition and a partition is consumed in offset
        // order, so per-key order is visible in consumption order.
        let flat: Vec<_> = on_broker
            .iter()
            .map(|(s, id, k, _)| (*s, id.clone(), k.clone()))
            .collect();
        check_exactly_once_and_order(&witnessed, &flat);
    }
}
