//! Every change reaches consumers, once.
//!
//! A stand-in for Studio's live `/queues` and `/calls` sockets pushes
//! successive versions of one queue record (only `queue.free_agents`
//! changes) and of one call (only `voicemail`, `ohw_ordered` and
//! `duration.before_queue` change), each version twice in a row. Fields
//! only the live layer carries must still give each version its own event
//! id: every version reaches the broker exactly once, the repeats are
//! counted as suppressed, and all versions of one record share one match
//! key (the cross-layer key).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use studio_relay::config::{self, Config};
use studio_relay::model::DataSource;
use support::live::{header, metric_sum, wait_until};

const TOKEN: &str = "identity-token";
/// Versions of each record.
const VERSIONS: usize = 4;

fn fixture(source: DataSource) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/normalize/{}.simulator.live.json",
        env!("CARGO_MANIFEST_DIR"),
        source.as_str()
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The frames each socket pushes, in order: every version twice.
fn frames() -> BTreeMap<DataSource, Vec<String>> {
    let mut queues = Vec::new();
    let mut calls = Vec::new();
    for v in 0..VERSIONS {
        let mut q = fixture(DataSource::Queues);
        q["queue"]["free_agents"] = (v as i64).into();
        let mut c = fixture(DataSource::Calls);
        // One field at a time, then all of them: each is a distinct version.
        match v {
            0 => {}
            1 => c["voicemail"] = 1.into(),
            2 => c["ohw_ordered"] = true.into(),
            _ => c["duration"]["before_queue"] = 1.into(),
        }
        for _ in 0..2 {
            queues.push(q.to_string());
            calls.push(c.to_string());
        }
    }
    BTreeMap::from([(DataSource::Queues, queues), (DataSource::Calls, calls)])
}

/// A stand-in for the live endpoint: each socket's first connection gets
/// its frames in order, then stays open until the relay closes it.
async fn serve_live(frames: BTreeMap<DataSource, Vec<String>>) -> String {
    support::live::stand_in_live_paths(
        frames
            .into_iter()
            .map(|(s, f)| (s.live_path().to_string(), f))
            .collect(),
    )
    .await
}

fn relay_config(live_url: String, sink: &[(&str, String)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("STUDIO_RELAY__TENANTS__0__NAME".into(), "acme".into()),
        ("STUDIO_RELAY__TENANTS__0__TOKEN".into(), TOKEN.into()),
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL".into(), live_url),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL".into(),
            "http://127.0.0.1:9/graphql".into(),
        ),
        (
            "STUDIO_RELAY__UPSTREAM__SOURCES".into(),
            "[\"calls\",\"queues\"]".into(),
        ),
        ("STUDIO_RELAY__RELAY__GAP_BACKFILL".into(), "false".into()),
        ("STUDIO_RELAY__OPS__LISTEN".into(), "127.0.0.1:0".into()),
    ];
    env.extend(sink.iter().map(|(k, v)| (k.to_string(), v.clone())));
    config::load_from_str("", "test", env, |p| std::fs::read_to_string(p)).unwrap()
}

/// Runs the relay until every version is published and every repeat
/// suppressed; returns the suppression counts per source.
async fn relay_every_version_once(sink: &[(&str, String)]) -> BTreeMap<DataSource, f64> {
    let url = serve_live(frames()).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = studio_relay::relay::start(relay_config(url, sink), shutdown.clone())
        .await
        .expect("relay starts");
    let metrics = relay.metrics.clone();
    let want = (2 * VERSIONS) as f64;
    wait_until(
        "every version published and every repeat counted",
        Duration::from_secs(60),
        || {
            let t = metrics.render();
            metric_sum(&t, "studio_relay_events_published_total", "origin=\"live\"") >= want
                && metric_sum(&t, "studio_relay_events_suppressed_total", "") >= want
        },
    )
    .await;
    let text = metrics.render();
    shutdown.cancel();
    relay.wait().await.expect("relay drains cleanly");
    [DataSource::Calls, DataSource::Queues]
        .into_iter()
        .map(|s| {
            let filter = format!("reason=\"repeat\",source=\"{s}\"");
            (
                s,
                metric_sum(&text, "studio_relay_events_suppressed_total", &filter),
            )
        })
        .collect()
}

/// Each record's versions on the broker: exactly one message per version,
/// distinct event ids, one shared match key.
fn check_on_broker(msgs: &[support::ReceivedMessage], id: &str, match_key: &str) {
    let mut by_source: BTreeMap<String, Vec<&support::ReceivedMessage>> = BTreeMap::new();
    for m in msgs {
        by_source.entry(m.destination.clone()).or_default().push(m);
    }
    for source in [DataSource::Calls, DataSource::Queues] {
        let dest = format!("telavox.studio.{source}.v1");
        let got = by_source.get(&dest).cloned().unwrap_or_default();
        assert_eq!(got.len(), VERSIONS, "{source}: one message per version");
        let ids: BTreeSet<&str> = got
            .iter()
            .map(|m| header(&m.headers, id).expect("event id header"))
            .collect();
        assert_eq!(ids.len(), VERSIONS, "{source}: a distinct id per version");
        let keys: BTreeSet<&str> = got
            .iter()
            .map(|m| header(&m.headers, match_key).expect("match key header"))
            .collect();
        assert_eq!(keys.len(), 1, "{source}: one match key for all versions");
        assert!(!ids.contains(keys.iter().next().unwrap()));
    }
}

fn assert_repeats_counted(suppressed: &BTreeMap<DataSource, f64>) {
    for (source, n) in suppressed {
        assert_eq!(*n, VERSIONS as f64, "{source}: each repeat counted once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_only_change_reaches_jetstream_once() {
    let nats = support::NatsServer::start();
    let sink = [
        ("STUDIO_RELAY__SINK__KIND", "nats".to_string()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", "IDENTITY".into()),
    ];
    let suppressed = relay_every_version_once(&sink).await;
    assert_repeats_counted(&suppressed);
    let msgs = support::nats_fetch_all(
        &nats.url(),
        "IDENTITY",
        "telavox.studio.>",
        2 * VERSIONS,
        Duration::from_secs(20),
    )
    .await;
    check_on_broker(&msgs, "Nats-Msg-Id", "ce-matchkey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_live_only_change_reaches_kafka_once() {
    let kafka = support::KafkaBroker::start();
    let sink = [
        ("STUDIO_RELAY__SINK__KIND", "kafka".to_string()),
        ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
        ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
    ];
    let suppressed = relay_every_version_once(&sink).await;
    assert_repeats_counted(&suppressed);
    let topics: Vec<String> = ["calls", "queues"]
        .iter()
        .map(|s| format!("telavox.studio.{s}.v1"))
        .collect();
    let msgs = support::kafka_consume(
        &kafka.bootstrap(),
        &topics,
        2 * VERSIONS,
        Duration::from_secs(60),
    );
    check_on_broker(&msgs, "ce_id", "ce_matchkey");
}
