//! The unhappy paths: the simulator dies and comes back,
//! one source answers `Invalid path.`, and a share of frames is malformed.
//! Real NATS JetStream from the harness; the simulator in-process.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use studio_relay::model::DataSource;
use studio_relay::relay::RelayHandle;
use support::live::{
    connected_sockets, header, metric_sum, simulator_args, start_relay, start_simulator,
    wait_until, Witness,
};
use support::wait::{
    assert_retries_wait_as_announced, by_source, frames_broadcast, wait_received, CapturedLog,
};

const TOKEN: &str = "faults-token";

fn nats_overrides(nats: &support::NatsServer, stream: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STUDIO_RELAY__SINK__KIND", "nats".into()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", stream.into()),
    ]
}

fn published(relay: &RelayHandle, filter: &str) -> f64 {
    metric_sum(
        &relay.metrics.render(),
        "studio_relay_events_published_total",
        filter,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reconnects_after_the_simulator_is_killed_and_restarted() {
    let nats = support::NatsServer::start();
    let sim = start_simulator(TOKEN, &[]).await;
    let addr = sim.addr();
    let (relay, shutdown) = start_relay(&sim, TOKEN, &nats_overrides(&nats, "RECONNECT"), 5).await;
    let m = relay.metrics.clone();
    wait_until("events published", Duration::from_secs(20), || {
        published(&relay, "origin=\"live\"") >= 10.0
    })
    .await;

    // Kill the upstream: every socket must notice and say so.
    sim.shutdown().await;
    wait_until("all sockets down", Duration::from_secs(20), || {
        connected_sockets(&m.render()) == 0
    })
    .await;
    let before = published(&relay, "origin=\"live\"");

    // Same address, another seed (new calls, new ids).
    let mut args = simulator_args(TOKEN, &["--seed", "12"]);
    args.listen = addr;
    let sim = studio_relay::simulator::spawn(args)
        .await
        .expect("simulator restarts on the same port");
    // backoff_max is 1 s, so the sockets come back soon; the deadline only
    // bounds a hang.
    wait_until("five sockets reconnected", Duration::from_secs(60), || {
        connected_sockets(&m.render()) == 5
    })
    .await;
    wait_until(
        "publishing resumed after the restart",
        Duration::from_secs(20),
        || published(&relay, "origin=\"live\"") >= before + 10.0,
    )
    .await;
    let text = m.render();
    let reconnects = metric_sum(&text, "studio_relay_reconnects_total", "");
    assert!(
        reconnects >= 5.0,
        "each of the five sockets should count a reconnect: {reconnects}\n{text}"
    );
    sim.shutdown().await;
    shutdown.cancel();
    relay.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_path_stops_one_source_and_leaves_the_others_flowing() {
    let log = CapturedLog::install();
    let nats = support::NatsServer::start();
    let sim = start_simulator(TOKEN, &["--invalid-path", "profile_live"]).await;
    let (relay, shutdown) =
        start_relay(&sim, TOKEN, &nats_overrides(&nats, "INVALIDPATH"), 4).await;
    let m = relay.metrics.clone();
    wait_until("calls flowing", Duration::from_secs(20), || {
        published(&relay, "source=\"calls\"") >= 5.0
    })
    .await;
    // Rejected, backed off, tried again and rejected again.
    wait_until("a second rejection", Duration::from_secs(60), || {
        metric_sum(
            &m.render(),
            "studio_relay_reconnects_total",
            "reason=\"invalid_path\"",
        ) >= 2.0
    })
    .await;

    let text = m.render();
    assert_eq!(
        metric_sum(
            &text,
            "studio_relay_socket_connected",
            "source=\"profile_live\""
        ),
        0.0
    );
    let rejected = metric_sum(
        &text,
        "studio_relay_reconnects_total",
        "reason=\"invalid_path\"",
    );
    // Every attempt the simulator answered is counted (one may be under way).
    let attempts = sim.stats().invalid_paths as f64;
    assert!(
        attempts >= rejected && attempts <= rejected + 1.0,
        "{attempts} attempts at the invalid path, {rejected} rejections counted\n{text}"
    );
    // auth_backoff is 2 s (±jitter): no hot reconnect loop.
    let lines = log.lines("Invalid path.");
    assert_eq!(
        by_source(&lines).keys().collect::<Vec<_>>(),
        ["profile_live"],
        "{lines:?}"
    );
    assert_retries_wait_as_announced("invalid path", &lines, 1);
    // The other sources are unaffected.
    for source in ["calls", "queues", "agents", "profile_history"] {
        assert_eq!(
            metric_sum(
                &text,
                "studio_relay_socket_connected",
                &format!("source=\"{source}\"")
            ),
            1.0,
            "{source}\n{text}"
        );
    }
    // The tenant is degraded, the relay stays ready: the rest flows.
    let degraded = relay
        .health
        .ready()
        .expect("the other sources keep the relay ready");
    assert_eq!(degraded.len(), 1, "{degraded:?}");
    assert!(
        degraded[0].contains("/profile_live: InvalidPath"),
        "{degraded:?}"
    );
    assert_eq!(
        metric_sum(&text, "studio_relay_tenant_state", "state=\"invalid_path\""),
        1.0,
        "{text}"
    );
    sim.shutdown().await;
    shutdown.cancel();
    relay.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_frame_is_dead_lettered_with_its_raw_bytes() {
    let nats = support::NatsServer::start();
    let sim = start_simulator(TOKEN, &["--malformed-share", "0.25"]).await;
    let before = frames_broadcast(&sim);
    let (relay, shutdown) = start_relay(&sim, TOKEN, &nats_overrides(&nats, "MALFORMED"), 5).await;
    let m = relay.metrics.clone();
    let witness = Witness::connect(&sim, TOKEN, &DataSource::ALL).await;
    let kinds_seen = || {
        sim.stats()
            .malformed_frames
            .values()
            .filter(|n| **n > 0)
            .count()
    };
    wait_until(
        "every kind of malformed frame",
        Duration::from_secs(30),
        || kinds_seen() == 5,
    )
    .await;
    // Witness first, then (once the relay got the same frames) the source.
    let bad = witness.bad_frames();
    let seen: BTreeSet<DataSource> = (witness.ids().iter().map(|(s, _, _)| *s))
        .chain(bad.iter().map(|(s, _)| *s))
        .collect();
    let upto = frames_broadcast(&sim);
    drop(witness);
    let seen: Vec<DataSource> = seen.into_iter().collect();
    wait_received(&m, &before, &upto, &seen, Duration::from_secs(60)).await;
    assert_eq!(
        connected_sockets(&m.render()),
        5,
        "malformed frames must not take a socket down"
    );
    sim.shutdown().await;
    shutdown.cancel();
    let summary = relay.wait().await.expect("relay drains");
    let text = m.render();

    assert!(!bad.is_empty(), "the witness saw no malformed frame");
    let deadlettered = metric_sum(&text, "studio_relay_events_deadlettered_total", "");
    assert!(
        deadlettered >= bad.len() as f64,
        "{deadlettered} < {}",
        bad.len()
    );

    let letters = support::nats_fetch_all(
        &nats.url(),
        "MALFORMED",
        "telavox.studio.deadletter",
        deadlettered as usize,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        letters.len() as f64,
        deadlettered,
        "every dead letter is on the broker"
    );
    assert!(summary.dead_lettered as f64 == deadlettered);

    // Index the dead letters by (source, payload); a truncated one by its head.
    let mut on_broker: HashMap<(String, Vec<u8>), usize> = HashMap::new();
    for l in &letters {
        let source = header(&l.headers, "studio_relay_source")
            .expect("source header")
            .to_string();
        assert_eq!(header(&l.headers, "studio_relay_tenant"), Some("acme"));
        assert!(header(&l.headers, "studio_relay_error").is_some_and(|e| !e.is_empty()));
        *on_broker.entry((source, l.payload.clone())).or_default() += 1;
    }
    for (source, raw) in &bad {
        let max = 900 * 1024;
        let kept = raw[..raw.len().min(max)].to_vec();
        let entry = on_broker
            .get_mut(&(source.to_string(), kept))
            .unwrap_or_else(|| {
                panic!(
                    "a malformed {source} frame of {} bytes is not in the dead letters: {:?}",
                    raw.len(),
                    String::from_utf8_lossy(&raw[..raw.len().min(120)])
                )
            });
        assert!(
            *entry > 0,
            "a {source} frame dead-lettered fewer times than seen"
        );
        *entry -= 1;
    }
}
