//! Issue 5 acceptance: the live relay against the simulator and real brokers.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use studio_relay::config::{self, Config};
use studio_relay::model::{self, DataSource, Envelope, Origin};
use studio_relay::ops::Metrics;
use studio_relay::simulator::{self, SimulateArgs, SimulatorHandle};
use tokio_util::sync::CancellationToken;

/// (source, event id, partition key) of one event.
type Seen = (DataSource, String, Option<String>);

const TOKEN: &str = "relay-test-token";

#[derive(Parser)]
struct Sim {
    #[command(flatten)]
    args: SimulateArgs,
}

async fn start_simulator(extra: &[&str]) -> SimulatorHandle {
    let mut argv = vec![
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--rate",
        "20",
        "--speed",
        "60",
        "--seed",
        "11",
    ];
    argv.extend_from_slice(extra);
    simulator::spawn(Sim::parse_from(argv).args)
        .await
        .expect("simulator starts")
}

/// A relay config pointing at `sim`, with extra `STUDIO_RELAY__*` overrides.
fn relay_config(sim: &SimulatorHandle, overrides: &[(&str, String)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("STUDIO_RELAY__TENANTS__0__NAME".into(), "acme".into()),
        ("STUDIO_RELAY__TENANTS__0__TOKEN".into(), TOKEN.into()),
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL".into(), sim.live_url()),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL".into(),
            sim.graphql_url(),
        ),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN".into(), "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX".into(), "1s".into()),
        ("STUDIO_RELAY__UPSTREAM__AUTH_BACKOFF".into(), "2s".into()),
        ("STUDIO_RELAY__UPSTREAM__PING_INTERVAL".into(), "1s".into()),
        ("STUDIO_RELAY__OPS__LISTEN".into(), "127.0.0.1:0".into()),
    ];
    env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
    config::load_from_str("", "test", env, |p| std::fs::read_to_string(p))
        .expect("valid test config")
}

/// An independent WebSocket client recording what the simulator pushes: the
/// ground truth, as event ids per source in arrival order.
struct Witness {
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Witness {
    async fn connect(sim: &SimulatorHandle, sources: &[DataSource]) -> Witness {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for &source in sources {
            let mut req = format!("{}{}", sim.live_url(), source.live_path())
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .expect("witness connects");
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                        if let Ok(record) = model::normalize_live(source, t.as_bytes()) {
                            let key = record.partition_key();
                            let env = Envelope::new("acme".into(), Origin::Live, 0, record);
                            seen.lock()
                                .unwrap()
                                .push((source, env.event_id.to_string(), key));
                        }
                    }
                }
            }));
        }
        Witness { seen, tasks }
    }

    fn ids(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn all_connected(metrics: &Metrics, n: usize) -> bool {
    let text = metrics.render();
    text.lines()
        .filter(|l| l.starts_with("studio_relay_socket_connected{") && l.ends_with(" 1"))
        .count()
        == n
}

/// Runs the relay into `sink_overrides`, witnesses the stream, stops the
/// simulator, drains, and returns (witnessed, published-count).
async fn relay_session(
    sink_overrides: Vec<(&'static str, String)>,
    run_for: Duration,
) -> (Vec<Seen>, studio_relay::relay::RelaySummary) {
    let sim = start_simulator(&[]).await;
    let config = relay_config(&sim, &sink_overrides);
    let shutdown = CancellationToken::new();
    let relay = studio_relay::relay::start(config, shutdown.clone())
        .await
        .expect("relay starts");
    let metrics = relay.metrics.clone();
    wait_until(
        "all five sockets connected",
        Duration::from_secs(20),
        || all_connected(&metrics, 5),
    )
    .await;
    let witness = Witness::connect(&sim, &DataSource::ALL).await;
    tokio::time::sleep(run_for).await;
    // Stop the source for both readers at once, then drain the relay.
    sim.shutdown().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let summary = relay.wait().await.expect("relay drains cleanly");
    (witness.ids(), summary)
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
            Duration::from_secs(6),
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
            let id = header(&m.headers, "ce_id")
                .expect("ce_id header")
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
            ],
            Duration::from_secs(6),
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
