//! Chaos against the live relay, judged by the
//! simulator's ground truth (GraphQL over the run window): every record on
//! the broker (by match key, the key live and historic versions share),
//! no event id twice, and no historic version (backfill) twice.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use studio_relay::model::DataSource;
use studio_relay::simulator::SimulatorHandle;
use support::live::{
    header, historic_match_keys, metric_sum, start_relay, start_simulator, wait_until,
};
use support::wait::{frames_broadcast, wait_received};

const TOKEN: &str = "chaos-token";
const MINUTE: i64 = 60_000;

type Ids = BTreeMap<DataSource, BTreeSet<String>>;

/// Match keys of every record GraphQL holds for `[from, to)` (record start).
async fn ground_truth(sim: &SimulatorHandle, from: i64, to: i64, sources: &[DataSource]) -> Ids {
    let mut out = Ids::new();
    for &source in sources {
        let keys = historic_match_keys(sim, TOKEN, "acme", source, from, to).await;
        out.insert(source, keys);
    }
    out
}

/// Match keys on the broker per source, failing on any duplicate: an
/// event id twice (an exact repeat), or a match key twice among the
/// historic versions (backfill skips a key already published). A live and
/// a historic version of one record may both be there: their contents
/// differ, and a live record is never held back for its historic twin.
fn on_broker_once(msgs: &[support::ReceivedMessage]) -> Ids {
    let mut out = Ids::new();
    let mut ids = BTreeSet::new();
    let mut historic_keys = BTreeSet::new();
    let mut dups = Vec::new();
    for m in msgs {
        let Ok(source) = m
            .destination
            .split('.')
            .nth(2)
            .unwrap_or("")
            .parse::<DataSource>()
        else {
            continue;
        };
        // `ce-id` on NATS, `ce_id` on Kafka (each one's CloudEvents binding).
        let id = header(&m.headers, "ce-id")
            .or_else(|| header(&m.headers, "ce_id"))
            .expect("ce-id / ce_id")
            .to_string();
        let key = header(&m.headers, "ce-matchkey")
            .or_else(|| header(&m.headers, "ce_matchkey"))
            .expect("ce-matchkey / ce_matchkey")
            .to_string();
        if !ids.insert(id.clone()) {
            dups.push((source, "event id", id));
        }
        let live = header(&m.headers, "origin") == Some("live");
        if !live && !historic_keys.insert((source, key.clone())) {
            dups.push((source, "historic match key", key.clone()));
        }
        out.entry(source).or_default().insert(key);
    }
    assert!(
        dups.is_empty(),
        "{} duplicates on the broker, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    out
}

/// Every ground-truth id is on the broker; prints the note's numbers.
fn assert_nothing_missing(label: &str, truth: &Ids, broker: &Ids) {
    let mut total = 0;
    for (source, want) in truth {
        let got = broker.get(source).cloned().unwrap_or_default();
        let missing: Vec<_> = want.difference(&got).collect();
        total += want.len();
        eprintln!(
            "{label}: {source}: ground truth {}, on broker {}, missing {}",
            want.len(),
            got.len(),
            missing.len()
        );
        assert!(
            missing.is_empty(),
            "{label}: {source}: {} of {} records missing, e.g. {:?}",
            missing.len(),
            want.len(),
            missing.first()
        );
    }
    assert!(
        total > 100,
        "{label}: ground truth too small ({total}) to prove anything"
    );
}

fn kafka_overrides(kafka: &support::KafkaBroker, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STUDIO_RELAY__SINK__KIND", "kafka".into()),
        ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
        ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
        ("STUDIO_RELAY__SINK__KAFKA__PARTITIONS", "2".into()),
        (
            "STUDIO_RELAY__SINK__TOPIC_TEMPLATE",
            format!("{prefix}.studio.{{source}}.v{{version}}"),
        ),
        (
            "STUDIO_RELAY__SINK__DEADLETTER_TOPIC",
            format!("{prefix}.studio.deadletter"),
        ),
        (
            "STUDIO_RELAY__SINK__CONTROL_TOPIC",
            format!("{prefix}.studio.control"),
        ),
    ]
}

fn topics(prefix: &str) -> Vec<String> {
    DataSource::ALL
        .iter()
        .map(|s| format!("{prefix}.studio.{s}.v1"))
        .chain([format!("{prefix}.studio.control")])
        .collect()
}

/// The relay's checkpoint for tenant `acme` (upstream ms): everything the
/// relay received up to it is acknowledged and every gap opened before it
/// is filled, both passes (an open gap holds the checkpoint back).
fn checkpoint_ms(metrics_text: &str) -> f64 {
    metric_sum(
        metrics_text,
        "studio_relay_checkpoint_timestamp_seconds",
        "tenant=\"acme\"",
    ) * 1000.0
}

/// Waits until GraphQL holds records of `source` started in
/// `[from, simulated now - lag)`.
async fn wait_for_records(sim: &SimulatorHandle, source: DataSource, from: i64, lag: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let to = sim.sim_now_ms() - lag;
        if to > from && !ground_truth(sim, from, to, &[source]).await[&source].is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {source} record in the checked window yet"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_closed_every_few_seconds_lose_nothing_and_duplicate_nothing_on_kafka() {
    let kafka = support::KafkaBroker::start();
    // Two simulated hours per real minute; every socket closed every 4 s.
    let sim = start_simulator(
        TOKEN,
        &["--speed", "120", "--rate", "8", "--close-every", "4s"],
    )
    .await;
    let mut overrides = kafka_overrides(&kafka, "gaps");
    overrides.push(("STUDIO_RELAY__RELAY__GAP_MARGIN", "45m".into()));
    overrides.push(("STUDIO_RELAY__RELAY__GAP_RECHECK_AFTER", "3s".into()));
    let (relay, shutdown) = start_relay(&sim, TOKEN, &overrides, 5).await;
    let m = relay.metrics.clone();
    let from = sim.sim_now_ms();
    // The run lasts until the sockets were closed many times and every
    // historic source, profile_history's hourly batches too, has records
    // in the window checked.
    wait_until("20 socket gaps", Duration::from_secs(120), || {
        metric_sum(&m.render(), "studio_relay_gaps_total", "") >= 20.0
    })
    .await;
    wait_for_records(&sim, DataSource::ProfileHistory, from, 90 * MINUTE).await;
    let end = sim.sim_now_ms();
    // The last gaps' second passes.
    wait_until(
        "the checkpoint to pass the end of the run",
        Duration::from_secs(60),
        || checkpoint_ms(&m.render()) >= end as f64,
    )
    .await;
    let text = m.render();
    let gaps = metric_sum(&text, "studio_relay_gaps_total", "");
    let backfilled = metric_sum(&text, "studio_relay_backfill_records_total", "");
    shutdown.cancel();
    let summary = relay.wait().await.unwrap();

    // Journeys last under 30 simulated minutes; profile_history's batch for
    // an hour comes at its end.
    let historic = [DataSource::Calls, DataSource::Queues, DataSource::Agents];
    let mut truth = ground_truth(&sim, from, end - 30 * MINUTE, &historic).await;
    truth.extend(ground_truth(&sim, from, end - 90 * MINUTE, &[DataSource::ProfileHistory]).await);
    let msgs = support::kafka_consume(
        &kafka.bootstrap(),
        &topics("gaps"),
        summary.published as usize,
        Duration::from_secs(60),
    );
    let markers = msgs
        .iter()
        .filter(|m| m.destination.ends_with(".control"))
        .count();
    assert!(
        markers > 0,
        "profile_live gaps are marked on the control topic"
    );
    let broker = on_broker_once(&msgs);
    eprintln!(
        "socket chaos: published {}, gaps {gaps}, backfilled {backfilled}, gap markers {markers}",
        summary.published
    );
    assert_nothing_missing("socket chaos", &truth, &broker);
    sim.shutdown().await;
}

/// The broker under an outage test.
enum Broker {
    Nats(support::NatsServer),
    Kafka(support::KafkaBroker),
}

impl Broker {
    fn overrides(&self) -> Vec<(&'static str, String)> {
        match self {
            Broker::Nats(n) => vec![
                ("STUDIO_RELAY__SINK__KIND", "nats".to_string()),
                ("STUDIO_RELAY__SINK__NATS__URL", n.url()),
                ("STUDIO_RELAY__SINK__NATS__STREAM", "OUTAGE".into()),
            ],
            Broker::Kafka(k) => kafka_overrides(k, "outage"),
        }
    }
    fn stop(&mut self) {
        match self {
            Broker::Nats(n) => n.stop(),
            Broker::Kafka(k) => k.stop(),
        }
    }
    fn restart(&mut self) {
        match self {
            Broker::Nats(n) => n.restart(),
            Broker::Kafka(k) => k.restart(),
        }
    }
    async fn read_all(&self, expected: usize) -> Vec<support::ReceivedMessage> {
        match self {
            Broker::Nats(n) => {
                support::nats_fetch_all(
                    &n.url(),
                    "OUTAGE",
                    "telavox.studio.>",
                    expected,
                    Duration::from_secs(30),
                )
                .await
            }
            // The read stops as soon as every partition is read to its end;
            // the timeout only bounds it.
            Broker::Kafka(k) => support::kafka_consume(
                &k.bootstrap(),
                &topics("outage"),
                expected,
                Duration::from_secs(300),
            ),
        }
    }
}

/// Messages the relay holds that the broker has not acknowledged: awaiting
/// acks (the window) plus queued behind it.
fn held(metrics_text: &str) -> f64 {
    metric_sum(metrics_text, "studio_relay_inflight_messages", "")
        + metric_sum(metrics_text, "studio_relay_queue_depth", "")
}

/// How long a broker outage lasts: until the relay reports the broker
/// down and the simulator has broadcast this many frames since it went
/// down, every one a message the relay must hold: far more than the broker
/// client keeps in flight (256 publishes awaiting their ack on NATS).
const OUTAGE_FRAMES: u64 = 1000;

/// Live records the simulator has pushed of the sources with a historic
/// layer (what a relay that is down must backfill).
fn records_pushed(sim: &SimulatorHandle) -> u64 {
    let stats = sim.stats();
    [DataSource::Calls, DataSource::Queues, DataSource::Agents]
        .iter()
        .filter_map(|s| stats.frames_pushed.get(s.as_str()))
        .sum()
}

fn frames_total(sim: &SimulatorHandle) -> u64 {
    frames_broadcast(sim).values().sum()
}

/// How the end of an outage test knows that everything the relay received
/// up to a point is acknowledged.
enum Settled {
    /// The restart checkpoint passed it.
    Checkpoint,
    /// No checkpoint (no gap backfill): the relay received every frame
    /// broadcast up to it and holds none in its queue or spool; the drain
    /// at shutdown publishes what is in flight.
    Drained,
}

impl Settled {
    async fn wait(
        &self,
        what: &str,
        relay: &studio_relay::relay::RelayHandle,
        sim: &SimulatorHandle,
        before: &BTreeMap<DataSource, u64>,
        at_ms: i64,
    ) {
        let m = &relay.metrics;
        match self {
            Settled::Checkpoint => {
                wait_until(what, Duration::from_secs(120), || {
                    checkpoint_ms(&m.render()) >= at_ms as f64
                })
                .await
            }
            Settled::Drained => {
                let upto = frames_broadcast(sim);
                let streaming = [
                    DataSource::Calls,
                    DataSource::Queues,
                    DataSource::Agents,
                    DataSource::ProfileLive,
                ];
                wait_received(m, before, &upto, &streaming, Duration::from_secs(120)).await;
                wait_until(what, Duration::from_secs(120), || {
                    let t = m.render();
                    metric_sum(&t, "studio_relay_queue_depth", "") == 0.0
                        && metric_sum(&t, "studio_relay_spool_bytes", "") == 0.0
                })
                .await
            }
        }
    }
}

/// Steady traffic, the broker down until the relay holds a backlog, back:
/// every record of the window on the broker once by event id. Returns the
/// metrics at the end of the outage.
async fn outage_loses_nothing(
    label: &str,
    mut broker: Broker,
    extra: Vec<(&'static str, String)>,
    settled: Settled,
    outage_over: impl Fn(&str) -> bool,
) -> String {
    let sim = start_simulator(TOKEN, &["--speed", "120", "--rate", "8"]).await;
    let mut overrides = broker.overrides();
    overrides.push(("STUDIO_RELAY__RELAY__GAP_MARGIN", "45m".into()));
    overrides.push(("STUDIO_RELAY__RELAY__GAP_RECHECK_AFTER", "3s".into()));
    overrides.extend(extra);
    let before = frames_broadcast(&sim);
    let (relay, shutdown) = start_relay(&sim, TOKEN, &overrides, 5).await;
    let m = relay.metrics.clone();
    let from = sim.sim_now_ms();
    wait_until("steady publishing", Duration::from_secs(60), || {
        metric_sum(
            &m.render(),
            "studio_relay_events_published_total",
            "origin=\"live\"",
        ) >= 500.0
    })
    .await;
    broker.stop();
    let at_stop = frames_total(&sim);
    wait_until(
        "the outage to build a backlog",
        Duration::from_secs(120),
        || {
            let t = m.render();
            metric_sum(&t, "studio_relay_sink_up", "") == 0.0
                && frames_total(&sim) >= at_stop + OUTAGE_FRAMES
                && outage_over(&t)
        },
    )
    .await;
    // Awaiting acks (the window) plus queued behind it, plus spooled.
    let during = m.render();
    let backlog = held(&during) + metric_sum(&during, "studio_relay_spool_bytes", "");
    broker.restart();
    let t_restart = std::time::Instant::now();
    let restarted_at = sim.sim_now_ms();
    settled
        .wait("the backlog to drain", &relay, &sim, &before, restarted_at)
        .await;
    let recovery = t_restart.elapsed();
    // Journeys last under 30 simulated minutes: the window checked, which
    // ends 30 minutes before `end`, then covers the whole outage.
    let drained_at = sim.sim_now_ms();
    wait_until(
        "30 simulated minutes after the recovery",
        Duration::from_secs(60),
        || sim.sim_now_ms() >= drained_at + 30 * MINUTE,
    )
    .await;
    let end = sim.sim_now_ms();
    settled
        .wait("everything up to the end", &relay, &sim, &before, end)
        .await;
    shutdown.cancel();
    let summary = relay.wait().await.unwrap();

    let historic = [DataSource::Calls, DataSource::Queues, DataSource::Agents];
    let truth = ground_truth(&sim, from, end - 30 * MINUTE, &historic).await;
    let msgs = broker.read_all(summary.published as usize).await;
    let on_broker = on_broker_once(&msgs);
    eprintln!(
        "{label}: published {}, backlog at restart {backlog} (publish failures {}), drained in {recovery:?}",
        summary.published,
        metric_sum(&during, "studio_relay_publish_failures_total", "") as u64
    );
    assert!(
        backlog > 0.0,
        "{label}: the outage should have built a backlog"
    );
    assert_nothing_missing(label, &truth, &on_broker);
    sim.shutdown().await;
    during
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_loses_nothing() {
    outage_loses_nothing(
        "NATS outage",
        Broker::Nats(support::NatsServer::start()),
        vec![],
        Settled::Checkpoint,
        |_| true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_loses_nothing() {
    outage_loses_nothing(
        "Kafka outage",
        Broker::Kafka(support::KafkaBroker::start()),
        vec![],
        Settled::Checkpoint,
        |_| true,
    )
    .await;
}

/// A queue far too small for the outage and no gap backfill: only the
/// spool stands between the sockets and loss, and the sockets stay up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_beyond_the_queue_spills_to_the_spool_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let during = outage_loses_nothing(
        "NATS outage with spool",
        Broker::Nats(support::NatsServer::start()),
        vec![
            ("STUDIO_RELAY__RELAY__QUEUE_CAPACITY", "100".into()),
            ("STUDIO_RELAY__SINK__NATS__MAX_PENDING_ACKS", "64".into()),
            ("STUDIO_RELAY__RELAY__GAP_BACKFILL", "false".into()),
            (
                "STUDIO_RELAY__RELAY__SPOOL_DIR",
                dir.path().join("spool").display().to_string(),
            ),
        ],
        Settled::Drained,
        |t| metric_sum(t, "studio_relay_spool_bytes", "") > 0.0,
    )
    .await;
    let spooled = metric_sum(&during, "studio_relay_spool_bytes", "");
    eprintln!("NATS outage with spool: {spooled} bytes spooled at the end of the outage");
    assert!(
        spooled > 0.0,
        "the backlog beyond the queue is on disk:\n{during}"
    );
    assert_eq!(
        metric_sum(&during, "studio_relay_socket_connected", ""),
        5.0,
        "the sockets kept being read"
    );
    assert_eq!(
        metric_sum(&during, "studio_relay_reconnects_total", ""),
        0.0,
        "no socket dropped during the outage"
    );
}

/// Waits until the relay process's checkpoint reaches `at_ms`.
async fn caught_up(relay: &support::process::Relay, at_ms: i64) {
    support::process::wait_for(
        "the checkpoint to catch up",
        Duration::from_secs(90),
        relay,
        |t| checkpoint_ms(t) >= at_ms as f64,
    )
    .await;
}

/// Steady traffic; the relay process SIGKILLed twice (no drain, no final
/// checkpoint) and restarted: every record of the window on the broker once
/// by event id. Returns the last process, stopped.
async fn sigkilled_twice_loses_nothing(
    label: &str,
    broker: Broker,
    extra: Vec<(&'static str, String)>,
) -> support::process::Relay {
    use support::process::{wait_for, Relay};
    let sim = start_simulator(TOKEN, &["--speed", "120", "--rate", "8"]).await;
    let mut env: Vec<(&str, String)> = vec![
        ("STUDIO_RELAY__TENANTS__0__NAME", "acme".into()),
        ("STUDIO_RELAY__TENANTS__0__TOKEN", TOKEN.into()),
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", sim.live_url()),
        ("STUDIO_RELAY__UPSTREAM__GRAPHQL_URL", sim.graphql_url()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN", "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX", "1s".into()),
        ("STUDIO_RELAY__RELAY__GAP_MARGIN", "45m".into()),
        ("STUDIO_RELAY__RELAY__GAP_RECHECK_AFTER", "3s".into()),
    ];
    env.extend(broker.overrides());
    env.extend(extra);
    let connected = |t: &str| metric_sum(t, "studio_relay_socket_connected", "") == 5.0;
    // Acknowledged publishes, each a message on the broker: a lower bound of
    // what to read back (what is acknowledged between the scrape and the
    // kill comes on top).
    let acked = |t: &str| {
        metric_sum(t, "studio_relay_events_published_total", "")
            - metric_sum(t, "studio_relay_events_published_total", "deadletter")
    };
    let mut published = 0.0;
    let mut from = None;
    for _ in 0..2 {
        let mut relay = Relay::spawn(&["run"], &env);
        wait_for("five sockets", Duration::from_secs(60), &relay, connected).await;
        let connected_at = sim.sim_now_ms();
        from.get_or_insert(connected_at);
        // Killed once it has caught up: a resumed gap filled (both passes)
        // and everything up to its connect acknowledged.
        caught_up(&relay, connected_at).await;
        published += acked(&relay.metrics().await);
        relay.sigkill();
        // Down while the simulator pushes records the restart must backfill.
        let at_kill = records_pushed(&sim);
        wait_until(
            "records pushed while the relay is down",
            Duration::from_secs(30),
            || records_pushed(&sim) >= at_kill + 100,
        )
        .await;
    }
    let mut relay = Relay::spawn(&["run"], &env);
    wait_for("five sockets", Duration::from_secs(60), &relay, connected).await;
    // Journeys last under 30 simulated minutes: the window checked, which
    // ends 30 minutes before `end`, then reaches the last restart.
    let connected_at = sim.sim_now_ms();
    wait_until(
        "30 simulated minutes after the last restart",
        Duration::from_secs(60),
        || sim.sim_now_ms() >= connected_at + 30 * MINUTE,
    )
    .await;
    let end = sim.sim_now_ms();
    caught_up(&relay, end).await;
    published += acked(&relay.metrics().await);
    relay.sigterm();
    assert_eq!(relay.wait(Duration::from_secs(30)).await.code(), Some(0));
    assert!(
        !relay.log_lines("resuming").is_empty(),
        "{label}: the restarts resume from the checkpoint:\n{}",
        relay.output()
    );

    let historic = [DataSource::Calls, DataSource::Queues, DataSource::Agents];
    let truth = ground_truth(&sim, from.unwrap(), end - 30 * MINUTE, &historic).await;
    let msgs = broker.read_all(published as usize).await;
    // Fails on any duplicate event id or historic match key.
    let on_broker = on_broker_once(&msgs);
    eprintln!(
        "{label}: {} messages on the broker (at least {published} acknowledged), 0 duplicates",
        msgs.len()
    );
    assert_nothing_missing(label, &truth, &on_broker);
    sim.shutdown().await;
    relay
}

/// The file checkpoint; JetStream drops re-published ids by `Nats-Msg-Id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_sigkilled_twice_and_restarted_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    sigkilled_twice_loses_nothing(
        "SIGKILL chaos (NATS, checkpoint file)",
        Broker::Nats(support::NatsServer::start()),
        vec![
            ("STUDIO_RELAY__RELAY__CHECKPOINT", "file".into()),
            (
                "STUDIO_RELAY__RELAY__CHECKPOINT_FILE",
                dir.path().join("checkpoint.json").display().to_string(),
            ),
        ],
    )
    .await;
}

/// The default: the checkpoint in a compacted Kafka topic, no volume. Kafka
/// has no broker-side dedup, so "once" rests on the restarted relay reading
/// back the event ids already on the topics before its resume backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_relay_sigkilled_twice_resumes_from_the_broker_checkpoint_without_duplicates() {
    let relay = sigkilled_twice_loses_nothing(
        "SIGKILL chaos (Kafka, broker checkpoint)",
        Broker::Kafka(support::KafkaBroker::start()),
        vec![("STUDIO_RELAY__RELAY__CHECKPOINT_KEY", "chaos-relay".into())],
    )
    .await;
    let resumed = relay.log_lines("resuming");
    assert!(
        resumed[0]["checkpoint"]
            .as_str()
            .is_some_and(|c| c.contains("\"chaos-relay\" in Kafka topic")),
        "resumed from the Kafka checkpoint: {resumed:?}"
    );
    let seeded = relay.log_lines("event ids already on the broker remembered");
    let ids = seeded.first().and_then(|l| l["ids"].as_u64()).unwrap_or(0);
    eprintln!("SIGKILL chaos (Kafka, broker checkpoint): {ids} event ids read back before the resume backfill");
    assert!(
        ids > 0,
        "the restarted relay read back the ids on Kafka:\n{}",
        relay.output()
    );
}
