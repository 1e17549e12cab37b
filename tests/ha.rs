//! Replicas sharing the tenants (`ha.enabled`): three relay processes share
//! 30 tenants of the simulator; one is SIGKILLed and the other two take its
//! tenants over; a fourth joins and takes its share; one is stopped with
//! SIGTERM and the remaining two take its tenants over. Judged against the
//! simulator's ground truth (GraphQL over the run window, per tenant):
//! every record on the broker, no event id twice, no historic version
//! twice, and a gap marker for the killed replica's `profile_live` sockets.
//! The takeover, rebalance and handover times are printed for the docs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use studio_relay::model::DataSource;
use studio_relay::simulator::SimulatorHandle;
use support::live::{header, historic_match_keys, metric_sum, start_simulator, wait_until};
use support::process::Relay;

const TENANTS: usize = 30;
const MINUTE: i64 = 60_000;
const HISTORIC: [DataSource; 4] = [
    DataSource::Calls,
    DataSource::Queues,
    DataSource::Agents,
    DataSource::ProfileHistory,
];

fn token(i: usize) -> String {
    format!("ha-token-{i}")
}

fn tenant(i: usize) -> String {
    format!("t{i}")
}

/// Per (tenant, source), match keys.
type Keys = BTreeMap<(String, DataSource), BTreeSet<String>>;

/// Match keys of every record GraphQL holds for `[from, to)`, per tenant.
async fn ground_truth(sim: &SimulatorHandle, from: i64, to: i64) -> Keys {
    let mut out = Keys::new();
    for i in 0..TENANTS {
        for source in HISTORIC {
            let keys = historic_match_keys(sim, &token(i), &tenant(i), source, from, to).await;
            out.insert((tenant(i), source), keys);
        }
    }
    out
}

/// What is on the broker: match keys per (tenant, source), failing on any
/// event id twice or historic match key twice; and the gap markers'
/// (tenant, source).
fn on_broker_once(msgs: &[support::ReceivedMessage]) -> (Keys, BTreeSet<(String, String)>) {
    let mut keys = Keys::new();
    let mut markers = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut historic = BTreeSet::new();
    let mut dups = Vec::new();
    for m in msgs {
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        let tenant = body["tenant"].as_str().unwrap_or_default().to_string();
        if body["type"] == "gap" {
            markers.insert((tenant, body["source"].as_str().unwrap_or("").to_string()));
            continue;
        }
        let Ok(source) = body["source"].as_str().unwrap_or("").parse::<DataSource>() else {
            continue;
        };
        let id = header(&m.headers, "ce-id")
            .or_else(|| header(&m.headers, "ce_id"))
            .expect("ce-id / ce_id")
            .to_string();
        let key = header(&m.headers, "ce-matchkey")
            .or_else(|| header(&m.headers, "ce_matchkey"))
            .expect("ce-matchkey / ce_matchkey")
            .to_string();
        if !ids.insert(id.clone()) {
            dups.push(("event id", tenant.clone(), source, id));
        }
        let live = header(&m.headers, "origin") == Some("live");
        if !live && !historic.insert((tenant.clone(), source, key.clone())) {
            dups.push(("historic match key", tenant.clone(), source, key.clone()));
        }
        keys.entry((tenant, source)).or_default().insert(key);
    }
    assert!(
        dups.is_empty(),
        "{} duplicates on the broker, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    (keys, markers)
}

fn assert_nothing_missing(label: &str, truth: &Keys, broker: &Keys) {
    let mut total = 0;
    let mut missing = Vec::new();
    for (at, want) in truth {
        let got = broker.get(at).cloned().unwrap_or_default();
        total += want.len();
        missing.extend(want.difference(&got).map(|k| (at.clone(), k.clone())));
    }
    eprintln!(
        "{label}: ground truth {total} records of {TENANTS} tenants, missing {}",
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{label}: {} of {total} records missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(total > 300, "{label}: ground truth too small ({total})");
}

fn sum(relays: &[&Relay], texts: &[String], name: &str, filter: &str) -> f64 {
    debug_assert_eq!(relays.len(), texts.len());
    texts.iter().map(|t| metric_sum(t, name, filter)).sum()
}

async fn scrape(relays: &[&Relay]) -> Vec<String> {
    let mut out = Vec::new();
    for r in relays {
        out.push(r.metrics().await);
    }
    out
}

/// Waits until `relays` together run every tenant once, all sockets up;
/// returns how long that took.
async fn wait_all_owned(what: &str, relays: &[&Relay], each_owns: bool) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        let texts = scrape(relays).await;
        let owned = sum(relays, &texts, "studio_relay_owned_tenants", "");
        let connected = sum(relays, &texts, "studio_relay_socket_connected", "");
        let everyone = texts
            .iter()
            .all(|t| metric_sum(t, "studio_relay_owned_tenants", "") > 0.0);
        if owned == TENANTS as f64 && connected == (TENANTS * 5) as f64 && (everyone || !each_owns)
        {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {owned} tenants owned, {connected} sockets up; outputs:\n{}",
            relays.iter().map(|r| r.output()).collect::<Vec<_>>().join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every tenant's checkpoint, on the replica that has it
/// furthest, reached `at_ms`: all it received up to there is acknowledged
/// and its gaps are filled.
async fn caught_up(relays: &[&Relay], at_ms: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let texts = scrape(relays).await;
        let behind: Vec<String> = (0..TENANTS)
            .map(tenant)
            .filter(|t| {
                let filter = format!("tenant=\"{t}\"");
                let best = texts
                    .iter()
                    .map(|x| metric_sum(x, "studio_relay_checkpoint_timestamp_seconds", &filter))
                    .fold(0.0, f64::max);
                best * 1000.0 < at_ms as f64
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoints behind {at_ms}: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Acknowledged publishes of records, a lower bound of what to read back.
fn acked(text: &str) -> f64 {
    metric_sum(text, "studio_relay_events_published_total", "")
        - metric_sum(text, "studio_relay_events_published_total", "deadletter")
}

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
                ("STUDIO_RELAY__SINK__NATS__STREAM", "HA".into()),
            ],
            Broker::Kafka(k) => vec![
                ("STUDIO_RELAY__SINK__KIND", "kafka".into()),
                ("STUDIO_RELAY__SINK__KAFKA__BROKERS", k.bootstrap()),
                ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
                ("STUDIO_RELAY__SINK__KAFKA__PARTITIONS", "2".into()),
            ],
        }
    }

    async fn read_all(&self, expected: usize) -> Vec<support::ReceivedMessage> {
        match self {
            Broker::Nats(n) => {
                support::nats_fetch_all(
                    &n.url(),
                    "HA",
                    "telavox.studio.>",
                    expected,
                    Duration::from_secs(60),
                )
                .await
            }
            Broker::Kafka(k) => {
                let topics: Vec<String> = DataSource::ALL
                    .iter()
                    .map(|s| format!("telavox.studio.{s}.v1"))
                    .chain(["telavox.studio.control".to_string()])
                    .collect();
                support::kafka_consume(&k.bootstrap(), &topics, expected, Duration::from_secs(300))
            }
        }
    }
}

async fn three_replicas_then_a_kill_then_a_fourth(label: &str, broker: Broker) {
    let tokens: Vec<String> = (0..TENANTS).map(token).collect();
    let sim = start_simulator(&tokens.join(","), &["--speed", "120", "--rate", "10"]).await;
    let mut env: Vec<(String, String)> = Vec::new();
    for i in 0..TENANTS {
        env.push((format!("STUDIO_RELAY__TENANTS__{i}__NAME"), tenant(i)));
        env.push((format!("STUDIO_RELAY__TENANTS__{i}__TOKEN"), token(i)));
    }
    let fixed: Vec<(&str, String)> = vec![
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", sim.live_url()),
        ("STUDIO_RELAY__UPSTREAM__GRAPHQL_URL", sim.graphql_url()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN", "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX", "1s".into()),
        ("STUDIO_RELAY__RELAY__GAP_MARGIN", "45m".into()),
        ("STUDIO_RELAY__RELAY__GAP_RECHECK_AFTER", "3s".into()),
        ("STUDIO_RELAY__RELAY__CHECKPOINT_KEY", "ha".into()),
        ("STUDIO_RELAY__HA__ENABLED", "true".into()),
        ("STUDIO_RELAY__HA__SHARDS", "32".into()),
        ("STUDIO_RELAY__HA__LEASE_TTL", "6s".into()),
    ];
    let mut all: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    all.extend(fixed);
    all.extend(broker.overrides());
    let spawn = |member: &str| {
        let mut env = all.clone();
        env.push(("STUDIO_RELAY__HA__MEMBER", member.to_string()));
        Relay::spawn(&["run"], &env)
    };

    let mut victim = spawn("relay-a");
    let b = spawn("relay-b");
    let c = spawn("relay-c");
    wait_all_owned(
        "three replicas sharing 30 tenants",
        &[&victim, &b, &c],
        true,
    )
    .await;
    let from = sim.sim_now_ms();
    // The victim's tenants have a checkpoint to be taken over from.
    caught_up(&[&victim, &b, &c], from).await;
    let victims = metric_sum(&victim.metrics().await, "studio_relay_owned_tenants", "");
    let mut published = acked(&victim.metrics().await);
    victim.sigkill();
    let takeover = wait_all_owned(
        "the two others taking the killed one's tenants over",
        &[&b, &c],
        false,
    )
    .await;
    eprintln!(
        "{label}: {victims} tenants of the SIGKILLed replica taken over in {:.1} s (ha.lease_ttl 6 s)",
        takeover.as_secs_f64()
    );

    let d = spawn("relay-d");
    let rebalance = wait_all_owned("a fourth replica taking its share", &[&b, &c, &d], true).await;
    let share = metric_sum(&d.metrics().await, "studio_relay_owned_tenants", "");
    eprintln!(
        "{label}: a fourth replica took {share} tenants in {:.1} s",
        rebalance.as_secs_f64()
    );

    // A replica stopped as in a rollout: it drains and leaves the group, so
    // the others take its tenants without waiting for its leases to expire.
    let mut leaving = b;
    let left_at = Instant::now();
    leaving.sigterm();
    assert_eq!(
        leaving.wait(Duration::from_secs(60)).await.code(),
        Some(0),
        "{}",
        leaving.output()
    );
    let handover = wait_all_owned(
        "the two others taking a stopped one's tenants",
        &[&c, &d],
        false,
    )
    .await;
    eprintln!(
        "{label}: a replica stopped with SIGTERM: its tenants running elsewhere {:.1} s after the signal ({:.1} s after it exited)",
        left_at.elapsed().as_secs_f64(),
        handover.as_secs_f64()
    );
    // Everything the stopped replica published, from its last log line.
    published += leaving.log_lines("relay stopped")[0]["published"]
        .as_f64()
        .unwrap_or(0.0);

    // Journeys last under 30 simulated minutes: the window checked, which
    // ends 30 minutes before `end`, reaches past the last move.
    let settled_at = sim.sim_now_ms();
    wait_until(
        "30 simulated minutes after the last move",
        Duration::from_secs(60),
        || sim.sim_now_ms() >= settled_at + 30 * MINUTE,
    )
    .await;
    let end = sim.sim_now_ms();
    let live = [&c, &d];
    caught_up(&live, end).await;
    for r in &live {
        published += acked(&r.metrics().await);
    }
    let handed_over = [&leaving, &c, &d]
        .iter()
        .map(|r| r.log_lines("shards released").len())
        .sum::<usize>();
    assert!(
        handed_over > 0,
        "{label}: some replica handed tenants to the fourth"
    );
    let (mut c, mut d) = (c, d);
    for r in [&c, &d] {
        r.sigterm();
    }
    for r in [&mut c, &mut d] {
        assert_eq!(
            r.wait(Duration::from_secs(60)).await.code(),
            Some(0),
            "{}",
            r.output()
        );
    }

    let truth = ground_truth(&sim, from, end - 30 * MINUTE).await;
    let msgs = broker.read_all(published as usize).await;
    let (on_broker, markers) = on_broker_once(&msgs);
    eprintln!(
        "{label}: {} messages on the broker (at least {published} acknowledged), 0 duplicates",
        msgs.len()
    );
    assert_nothing_missing(label, &truth, &on_broker);
    let profile_live_gaps = markers.iter().filter(|(_, s)| s == "profile_live").count();
    assert!(
        profile_live_gaps > 0,
        "{label}: the killed replica's profile_live gaps are announced by markers: {markers:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_replicas_share_tenants_and_take_over_a_killed_one_without_loss_or_duplicates() {
    three_replicas_then_a_kill_then_a_fourth(
        "HA (Kafka consumer group)",
        Broker::Kafka(support::KafkaBroker::start()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_replicas_share_tenants_and_take_over_a_killed_one_without_loss_or_duplicates() {
    three_replicas_then_a_kill_then_a_fourth(
        "HA (NATS KV leases)",
        Broker::Nats(support::NatsServer::start()),
    )
    .await;
}
