//! `replay` against the simulator's history, into real brokers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use studio_relay::cli::replay::{self, ReplayArgs, ReplayError};
use studio_relay::config::{self, Config, Secret};
use studio_relay::model::DataSource;
use studio_relay::simulator::{self, SimulateArgs, SimulatorHandle};
use studio_relay::upstream::historic::{GraphqlClient, OverviewFilter, RetryPolicy};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "replay-token";
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Parser)]
struct Sim {
    #[command(flatten)]
    args: SimulateArgs,
}

#[derive(Parser)]
struct Replay {
    #[command(flatten)]
    args: ReplayArgs,
}

/// A simulator with 7 days of history: one call per 10 simulated minutes.
async fn simulator(extra: &[&str]) -> SimulatorHandle {
    let mut argv = vec![
        "sim",
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
        "--rate",
        "1",
        "--speed",
        "600",
    ];
    argv.extend_from_slice(&["--history-days", "7", "--seed", "5"]);
    argv.extend_from_slice(extra);
    simulator::spawn(Sim::parse_from(argv).args).await.unwrap()
}

fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The replayed range: the 7 simulated days before the simulator started, whole hours.
fn range(sim: &SimulatorHandle) -> (i64, i64) {
    let epoch = sim.stats().sim_epoch_ms;
    let to = epoch - epoch.rem_euclid(3_600_000);
    (to - 7 * DAY_MS, to)
}

fn config(sim: &SimulatorHandle, token: &str, sink: &[(&str, String)]) -> Config {
    let mut env = vec![
        (
            "STUDIO_RELAY__TENANTS__0__NAME".to_string(),
            "acme".to_string(),
        ),
        ("STUDIO_RELAY__TENANTS__0__TOKEN".into(), token.into()),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL".into(),
            sim.graphql_url(),
        ),
    ];
    env.extend(sink.iter().map(|(k, v)| (k.to_string(), v.clone())));
    config::load_from_str("", "test", env, |p| std::fs::read_to_string(p)).unwrap()
}

fn args(from: i64, to: i64, extra: &[&str]) -> ReplayArgs {
    let (f, t) = (iso(from), iso(to));
    let mut argv = vec![
        "replay",
        "--from",
        &f,
        "--to",
        &t,
        "--window",
        "6h",
        "--page-size",
        "200",
    ];
    argv.extend_from_slice(extra);
    Replay::parse_from(argv).args
}

/// The ground truth: GraphQL's unfiltered totalCount per source for the range.
async fn totals(sim: &SimulatorHandle, from: i64, to: i64) -> BTreeMap<DataSource, u64> {
    let client = GraphqlClient::new(
        &sim.graphql_url(),
        Secret::new(TOKEN),
        Duration::from_secs(10),
        RetryPolicy::default(),
    )
    .unwrap();
    let filter = OverviewFilter {
        start_date: iso(from),
        end_date: iso(to),
        ..Default::default()
    };
    let mut out = BTreeMap::new();
    for s in DataSource::HISTORIC {
        let page = client
            .fetch_page(
                s.graphql_root().unwrap(),
                "{ __typename }",
                &filter,
                1,
                None,
                |_, _| {},
            )
            .await
            .unwrap();
        out.insert(s, page.total_count.unwrap());
    }
    out
}

fn per_source(
    msgs: &[support::ReceivedMessage],
    format: &str,
) -> BTreeMap<DataSource, BTreeSet<String>> {
    per_source_by(msgs, format, &["ce_id", "ce-id"])
}

/// The values of the first of `headers` found, per source.
fn per_source_by(
    msgs: &[support::ReceivedMessage],
    format: &str,
    headers: &[&str],
) -> BTreeMap<DataSource, BTreeSet<String>> {
    let mut out: BTreeMap<DataSource, BTreeSet<String>> = BTreeMap::new();
    for m in msgs {
        let source: DataSource = m.destination.rsplit('.').nth(1).unwrap().parse().unwrap();
        support::decode_with_checked_in_schema(source, format, &m.payload);
        let id = m
            .headers
            .iter()
            // `ce-id` on NATS, `ce_id` on Kafka.
            .find(|(k, _)| headers.contains(&k.as_str()))
            .unwrap()
            .1
            .clone();
        out.entry(source).or_default().insert(id);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_days_into_jetstream_match_graphql_and_resume_from_a_checkpoint() {
    let nats = support::NatsServer::start();
    let sim = simulator(&[]).await;
    let (from, to) = range(&sim);
    let want = totals(&sim, from, to).await;
    let total: u64 = want.values().sum();
    assert!(total > 1000, "history too small to mean anything: {want:?}");
    let sink = [
        ("STUDIO_RELAY__SINK__KIND", "nats".to_string()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", "REPLAY".into()),
        ("STUDIO_RELAY__ENCODING__FORMAT", "avro".into()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let cp_arg = cp.to_str().unwrap();

    // First run: interrupted as soon as a few windows are done.
    let stop = CancellationToken::new();
    let s = stop.clone();
    let watcher = {
        let cp = cp.clone();
        tokio::spawn(async move {
            loop {
                let done = std::fs::read_to_string(&cp)
                    .map(|t| t.matches("acme/").count())
                    .unwrap_or(0);
                if done >= 10 {
                    s.cancel();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let first = replay::run(
        args(from, to, &["--checkpoint", cp_arg, "--concurrency", "2"]),
        config(&sim, TOKEN, &sink),
        stop,
    )
    .await
    .unwrap();
    watcher.abort();
    assert!(
        first.interrupted,
        "the first run should have been interrupted"
    );
    let after_first: usize = std::fs::read_to_string(&cp)
        .unwrap()
        .matches("acme/")
        .count();
    assert!(after_first >= 10);

    // Second run: same command, finishes, skipping what the first completed.
    let second = replay::run(
        args(from, to, &["--checkpoint", cp_arg]),
        config(&sim, TOKEN, &sink),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!second.interrupted);
    assert_eq!(
        second.windows_skipped, after_first,
        "completed windows must not be fetched again"
    );

    let msgs = support::nats_fetch_all(
        &nats.url(),
        "REPLAY",
        "telavox.studio.>",
        total as usize,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        msgs.len() as u64,
        total,
        "JetStream holds each record once (per-source want: {want:?})"
    );
    let got = per_source(&msgs, "avro");
    for (s, n) in &want {
        assert_eq!(got.get(s).map_or(0, |x| x.len()) as u64, *n, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_days_into_kafka_with_api_faults_match_graphql() {
    let kafka = support::KafkaBroker::start();
    let sim = simulator(&["--graphql-429-share", "0.1", "--graphql-5xx-share", "0.05"]).await;
    let (from, to) = range(&sim);
    let sink = [
        ("STUDIO_RELAY__SINK__KIND", "kafka".to_string()),
        ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
        ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
    ];
    let summary = replay::run(
        args(from, to, &["--concurrency", "4"]),
        config(&sim, TOKEN, &sink),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let retries: u64 = summary.per_source.values().map(|s| s.retries).sum();
    assert!(retries > 0, "429/5xx should have been retried: {summary:?}");
    let want = totals(&sim, from, to).await;
    let total: u64 = want.values().sum();
    let topics: Vec<String> = DataSource::HISTORIC
        .iter()
        .map(|s| format!("telavox.studio.{s}.v1"))
        .collect();
    let msgs = support::kafka_consume(
        &kafka.bootstrap(),
        &topics,
        total as usize,
        Duration::from_secs(60),
    );
    let got = per_source(&msgs, "json");
    for (s, n) in &want {
        // Consumer-side dedup by ce_id equals the GraphQL total.
        assert_eq!(got.get(s).map_or(0, |x| x.len()) as u64, *n, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_and_bad_arguments_fail_fast() {
    let sim = simulator(&[]).await;
    let (from, to) = range(&sim);
    let e = replay::run(
        args(from, to, &["--sink", "stdout"]),
        config(&sim, "wrong", &[]),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ReplayError::Historic(_)), "{e}");
    assert!(e.to_string().contains("401"), "{e}");
    assert_eq!(e.exit_code(), 1);
    // 401 is not retried: every request was refused once, at most one per
    // window fetched at once (--concurrency, 4 by default).
    let stats = sim.stats();
    assert!(
        stats.graphql_unauthorized >= 1
            && stats.graphql_unauthorized == stats.graphql_requests
            && stats.graphql_requests <= 4,
        "{} GraphQL requests, {} refused: 401 must not be retried",
        stats.graphql_requests,
        stats.graphql_unauthorized
    );

    let e = replay::run(
        args(to, from, &[]),
        config(&sim, TOKEN, &[]),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    let e = replay::run(
        args(from, to, &["--sources", "profile_live"]),
        config(&sim, TOKEN, &[]),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no historic layer"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_published_live_and_later_replayed_has_the_same_match_key() {
    // Ten simulated minutes per real second: journeys finish within the run.
    let nats = support::NatsServer::start();
    let sim = support::live::start_simulator(TOKEN, &["--speed", "600", "--rate", "4"]).await;
    let live_sink = |stream: &str, template: &str| {
        vec![
            ("STUDIO_RELAY__SINK__KIND", "nats".to_string()),
            ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
            ("STUDIO_RELAY__SINK__NATS__STREAM", stream.to_string()),
            (
                "STUDIO_RELAY__SINK__NATS__STREAM_SUBJECTS",
                format!("[\"{}.>\"]", template.split('.').next().unwrap()),
            ),
            ("STUDIO_RELAY__SINK__TOPIC_TEMPLATE", template.to_string()),
            (
                "STUDIO_RELAY__SINK__DEADLETTER_TOPIC",
                format!("{}.deadletter", template.split('.').next().unwrap()),
            ),
            // Every destination in the stream, or the relay refuses to start.
            (
                "STUDIO_RELAY__SINK__CONTROL_TOPIC",
                format!("{}.control", template.split('.').next().unwrap()),
            ),
        ]
    };
    let (relay, shutdown) = support::live::start_relay(
        &sim,
        TOKEN,
        &live_sink("LIVE", "live.{source}.v{version}"),
        5,
    )
    .await;
    let connected_at = sim.sim_now_ms();
    // The replayed hour, and an hour on each side of it.
    support::live::wait_until(
        "three simulated hours of live traffic",
        Duration::from_secs(60),
        || sim.sim_now_ms() >= connected_at + 3 * 3_600_000,
    )
    .await;
    let stopped_at = sim.sim_now_ms();
    shutdown.cancel();
    let live = relay.wait().await.unwrap();

    // Replay the middle of what the relay saw: an hour's margin on each side,
    // so every journey in it started and ended while the relay was connected.
    let hour = 3_600_000;
    let (from, to) = (connected_at + hour, stopped_at - hour);
    assert!(to - from >= hour, "simulated run too short");
    let replayed = replay::run(
        args(from, to, &["--sources", "calls,queues,agents"]),
        config(
            &sim,
            TOKEN,
            &live_sink("REPLAYED", "replayed.{source}.v{version}"),
        ),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(replayed.records() > 20, "too little replayed: {replayed:?}");

    let live_msgs = support::nats_fetch_all(
        &nats.url(),
        "LIVE",
        "live.>",
        live.published as usize,
        Duration::from_secs(20),
    )
    .await;
    let replay_msgs = support::nats_fetch_all(
        &nats.url(),
        "REPLAYED",
        "replayed.>",
        replayed.records() as usize,
        Duration::from_secs(20),
    )
    .await;
    let keys = ["ce_matchkey", "ce-matchkey"];
    let live_ids = per_source_by(&live_msgs, "json", &keys);
    let replay_ids = per_source_by(&replay_msgs, "json", &keys);
    for source in [DataSource::Calls, DataSource::Queues, DataSource::Agents] {
        let r = replay_ids.get(&source).cloned().unwrap_or_default();
        let l = live_ids.get(&source).cloned().unwrap_or_default();
        assert!(!r.is_empty(), "{source}: nothing replayed");
        let missing: Vec<_> = r.difference(&l).collect();
        assert!(
            missing.is_empty(),
            "{source}: {} of {} replayed records have no live twin with the same match key, e.g. {:?}",
            missing.len(),
            r.len(),
            missing.first()
        );
    }
    sim.shutdown().await;
}

/// Replays one simulated day twice into `sink`, calling `between` after
/// the first run: the second run publishes nothing and says it skipped
/// every record as already on the destination; the broker (read by
/// `read_back`) holds each record once.
async fn replay_a_day_twice<F, R>(
    sink: &[(&str, String)],
    between: impl std::future::Future<Output = ()>,
    read_back: F,
) where
    F: FnOnce(usize) -> R,
    R: std::future::Future<Output = Vec<support::ReceivedMessage>>,
{
    let sim = simulator(&[]).await;
    let (_, to) = range(&sim);
    let from = to - DAY_MS;
    let want = totals(&sim, from, to).await;
    let total: u64 = want.values().sum();
    assert!(total > 100, "history too small to mean anything: {want:?}");
    let first = replay::run(
        args(from, to, &[]),
        config(&sim, TOKEN, sink),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(first.records(), total, "the first run publishes the day");
    assert_eq!(first.already_on_broker(), 0);
    between.await;
    let second = replay::run(
        args(from, to, &[]),
        config(&sim, TOKEN, sink),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        second.records(),
        0,
        "the rerun publishes nothing: {second:?}"
    );
    assert_eq!(
        second.already_on_broker(),
        total,
        "the rerun reports every record as already there"
    );
    let msgs = read_back(total as usize).await;
    assert_eq!(msgs.len() as u64, total, "each record once on the broker");
    let got = per_source(&msgs, "json");
    for (s, n) in &want {
        assert_eq!(got.get(s).map_or(0, |x| x.len()) as u64, *n, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_day_twice_into_kafka_publishes_it_once() {
    let kafka = support::KafkaBroker::start();
    let sink = [
        ("STUDIO_RELAY__SINK__KIND", "kafka".to_string()),
        ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
        ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
    ];
    let bootstrap = kafka.bootstrap();
    replay_a_day_twice(&sink, async {}, |n| async move {
        let topics: Vec<String> = DataSource::HISTORIC
            .iter()
            .map(|s| format!("telavox.studio.{s}.v1"))
            .collect();
        support::kafka_consume(&bootstrap, &topics, n, Duration::from_secs(60))
    })
    .await;
}

/// Waits until JetStream's duplicate window has passed for everything
/// published so far: a probe published now is accepted again (not
/// reported as a duplicate) under the same `Nats-Msg-Id`.
async fn wait_past_duplicate_window(url: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let publish = || async {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", "duplicate-window-probe");
        js.publish_with_headers("probe.window", h, "p".into())
            .await
            .unwrap()
            .await
            .unwrap()
    };
    assert!(!publish().await.duplicate, "the first probe is new");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while publish().await.duplicate {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the duplicate window did not pass"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_day_twice_into_jetstream_past_its_duplicate_window_publishes_it_once() {
    let nats = support::NatsServer::start();
    let sink = [
        ("STUDIO_RELAY__SINK__KIND", "nats".to_string()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", "TWICE".into()),
        (
            "STUDIO_RELAY__SINK__NATS__STREAM_SUBJECTS",
            "[\"telavox.studio.>\", \"probe.>\"]".into(),
        ),
        ("STUDIO_RELAY__SINK__NATS__DUPLICATE_WINDOW", "1s".into()),
    ];
    let (url, probe_url) = (nats.url(), nats.url());
    replay_a_day_twice(
        &sink,
        wait_past_duplicate_window(&probe_url),
        |n| async move {
            support::nats_fetch_all(
                &url,
                "TWICE",
                "telavox.studio.>",
                n,
                Duration::from_secs(30),
            )
            .await
        },
    )
    .await;
}
