//! `/metrics` agrees with the broker; `/readyz` follows the
//! broker's health, and a tenant whose token is refused degrades that
//! tenant only.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use studio_relay::config;
use studio_relay::model::DataSource;
use studio_relay::simulator::SimulatorHandle;
use support::live::metric_sum;
use support::wait::{assert_retries_wait_as_announced, by_source, CapturedLog};
use tokio_util::sync::CancellationToken;

async fn simulator(token: &str) -> SimulatorHandle {
    support::live::start_simulator(token, &[]).await
}

fn config(sim: &SimulatorHandle, token: &str, nats_url: &str) -> config::Config {
    support::live::relay_config(
        sim,
        token,
        &[
            ("STUDIO_RELAY__SINK__KIND", "nats".into()),
            ("STUDIO_RELAY__SINK__NATS__URL", nats_url.into()),
            ("STUDIO_RELAY__SINK__NATS__STREAM", "OPS".into()),
            // Exact accounting: no backfill racing the live stream for an id.
            ("STUDIO_RELAY__RELAY__GAP_BACKFILL", "false".into()),
        ],
    )
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("ops endpoint answers");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

async fn wait_status(addr: SocketAddr, path: &str, want: u16, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (status, body) = get(addr, path).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} stayed {status}, wanted {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_broker_and_readiness_follows_the_broker() {
    let mut nats = support::NatsServer::start();
    let sim = simulator("ops-token").await;
    let shutdown = CancellationToken::new();
    let relay =
        studio_relay::relay::start(config(&sim, "ops-token", &nats.url()), shutdown.clone())
            .await
            .unwrap();
    let addr = relay.ops_addr.expect("ops listener");
    wait_status(addr, "/readyz", 200, Duration::from_secs(20)).await;
    assert_eq!(get(addr, "/healthz").await.0, 200);

    // Traffic on the broker before it goes away.
    support::live::wait_until("events published", Duration::from_secs(30), || {
        metric_sum(
            &relay.metrics.render(),
            "studio_relay_events_published_total",
            "origin=\"live\"",
        ) >= 50.0
    })
    .await;
    // Broker down: readiness must say so (the point other connectors miss).
    nats.stop();
    let body = wait_status(addr, "/readyz", 503, Duration::from_secs(20)).await;
    assert!(body.contains("sink"), "{body}");
    assert_eq!(
        get(addr, "/healthz").await.0,
        200,
        "a broker outage is not a reason to restart the pod"
    );
    nats.restart();
    wait_status(addr, "/readyz", 200, Duration::from_secs(30)).await;

    let (_, scraped) = get(addr, "/metrics").await;
    for name in [
        "studio_relay_socket_connected",
        "studio_relay_end_to_end_latency_seconds_bucket",
        "studio_relay_sink_up",
        "studio_relay_seconds_since_last_event",
    ] {
        assert!(scraped.contains(name), "missing {name}");
    }

    // Quiesce: stop the source, drain the relay (a message stored by the
    // broker during the outage may still wait for its retry), then compare.
    sim.shutdown().await;
    let metrics = relay.metrics.clone();
    shutdown.cancel();
    relay.wait().await.unwrap();
    let text = metrics.render();
    // Each live event's latency is split over the stages of its path: every
    // stage counts every event once, and the stages add up to the whole.
    let events = metric_sum(&text, "studio_relay_end_to_end_latency_seconds_count", "");
    let whole = metric_sum(&text, "studio_relay_end_to_end_latency_seconds_sum", "");
    assert!(events > 0.0, "no live event reached the latency histogram");
    let mut parts = 0.0;
    for stage in studio_relay::ops::LATENCY_STAGES {
        let label = format!("stage=\"{stage}\"");
        assert_eq!(
            metric_sum(&text, "studio_relay_stage_latency_seconds_count", &label),
            events,
            "stage {stage} did not count every event"
        );
        parts += metric_sum(&text, "studio_relay_stage_latency_seconds_sum", &label);
    }
    assert!(
        (parts - whole).abs() <= 1e-6 * events,
        "the stages add up to {parts} s, the end-to-end histogram to {whole} s"
    );
    // Every origin: the stream captures records, dead letters and control events alike.
    let published = metric_sum(&text, "studio_relay_events_published_total", "");
    let frames = metric_sum(&text, "studio_relay_frames_received_total", "");
    assert!(published > 0.0, "{text}");
    assert!(
        frames >= published,
        "frames {frames} < published {published}"
    );
    let on_broker = support::nats_fetch_all(
        &nats.url(),
        "OPS",
        "telavox.studio.>",
        published as usize,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        on_broker.len() as f64,
        published,
        "metrics say {published}, broker holds {}",
        on_broker.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_makes_the_relay_not_ready() {
    let log = CapturedLog::install();
    let nats = support::NatsServer::start();
    let sim = simulator("the-right-token").await;
    let shutdown = CancellationToken::new();
    let relay =
        studio_relay::relay::start(config(&sim, "a-wrong-token", &nats.url()), shutdown.clone())
            .await
            .unwrap();
    let addr = relay.ops_addr.unwrap();
    let body = wait_status(addr, "/readyz", 503, Duration::from_secs(20)).await;
    assert!(!body.contains("a-wrong-token"), "token leaked into /readyz");
    // Every source refused, backed off, tried again and refused again
    // (Prometheus renders labels in name order).
    let refused_twice = || {
        let text = relay.metrics.render();
        DataSource::ALL.iter().all(|s| {
            metric_sum(
                &text,
                "studio_relay_reconnects_total",
                &format!("reason=\"unauthorized\",source=\"{s}\""),
            ) >= 2.0
        })
    };
    support::live::wait_until(
        "every source refused twice",
        Duration::from_secs(60),
        refused_twice,
    )
    .await;
    let body = wait_status(addr, "/readyz", 503, Duration::from_secs(20)).await;
    assert!(body.contains("Unauthorized"), "{body}");
    assert!(!body.contains("a-wrong-token"), "token leaked into /readyz");
    let (_, text) = get(addr, "/metrics").await;
    assert!(
        !text.contains("a-wrong-token"),
        "token leaked into /metrics"
    );
    // auth_backoff is 2 s: never a hot loop.
    // The log is the test binary's: only this test's tenant.
    let refusals: Vec<_> = log
        .lines("HTTP 401")
        .into_iter()
        .filter(|l| l["tenant"] == "acme")
        .collect();
    assert_eq!(
        by_source(&refusals).len(),
        DataSource::ALL.len(),
        "{refusals:?}"
    );
    assert_retries_wait_as_announced("refused token", &refusals, 1);
    shutdown.cancel();
    relay.wait().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_degrades_its_tenant_only_and_the_relay_stays_ready() {
    let nats = support::NatsServer::start();
    // Nine accounts the simulator knows; the tenth's token it refuses.
    let good: Vec<String> = (0..9).map(|i| format!("tenant-token-{i}")).collect();
    let sim = support::live::start_simulator(&good.join(","), &[]).await;
    let mut tenants: Vec<(String, String)> = Vec::new();
    for (i, token) in good.iter().enumerate() {
        tenants.push((format!("STUDIO_RELAY__TENANTS__{i}__NAME"), format!("t{i}")));
        tenants.push((format!("STUDIO_RELAY__TENANTS__{i}__TOKEN"), token.clone()));
    }
    tenants.push(("STUDIO_RELAY__TENANTS__9__NAME".into(), "t9".into()));
    tenants.push((
        "STUDIO_RELAY__TENANTS__9__TOKEN".into(),
        "a-revoked-token".into(),
    ));
    let mut overrides: Vec<(&str, String)> = vec![
        ("STUDIO_RELAY__SINK__KIND", "nats".into()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", "TENANTS".into()),
    ];
    overrides.extend(tenants.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let config = support::live::relay_config(&sim, &good[0], &overrides);
    assert_eq!(config.tenants.len(), 10);
    let shutdown = CancellationToken::new();
    let relay = studio_relay::relay::start(config, shutdown.clone())
        .await
        .unwrap();
    let addr = relay.ops_addr.unwrap();

    let state = |tenant: &str, state: &str| {
        metric_sum(
            &relay.metrics.render(),
            "studio_relay_tenant_state",
            &format!("state=\"{state}\",tenant=\"{tenant}\""),
        )
    };
    let published = |tenant: &str| {
        metric_sum(
            &relay.metrics.render(),
            "studio_relay_events_published_total",
            &format!("tenant=\"{tenant}\""),
        )
    };
    support::live::wait_until(
        "the revoked tenant unauthorized, the nine others publishing",
        Duration::from_secs(60),
        || state("t9", "unauthorized") == 1.0 && (0..9).all(|i| published(&format!("t{i}")) >= 5.0),
    )
    .await;
    for i in 0..9 {
        assert_eq!(state(&format!("t{i}"), "connected"), 1.0, "t{i}");
    }
    assert_eq!(state("t9", "connected"), 0.0);
    assert_eq!(published("t9"), 0.0);
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("degraded") && body.contains("socket t9/calls: Unauthorized"),
        "{body}"
    );
    assert!(
        !body.contains("a-revoked-token"),
        "token leaked into /readyz"
    );
    assert!(
        !body.lines().any(|l| l.starts_with("socket t0/")),
        "only the revoked tenant is listed: {body}"
    );
    shutdown.cancel();
    relay.wait().await.unwrap();
}
