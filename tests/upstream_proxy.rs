//! On the real binary: the live sockets reach an upstream that only an
//! HTTP CONNECT proxy can reach, through the proxy `HTTP_PROXY` names, and
//! fail with an error naming the host they could not reach without it.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::live::{connected_sockets, metric_sum, start_simulator};
use support::ports::ReservedPort;
use support::process::{wait_for, Relay};
use support::proxy::ConnectProxy;

const TOKEN: &str = "tv-proxy-token-3f81d2";

/// The relay's settings: the live URL is a loopback port nothing listens
/// on (refused when dialled directly); the proxy routes it to the simulator.
fn relay_env(live: &ReservedPort, nats: &support::NatsServer) -> Vec<(&'static str, String)> {
    vec![
        ("STUDIO_RELAY__TENANTS__0__NAME", "acme".into()),
        ("TELAVOX_TOKEN", TOKEN.into()),
        (
            "STUDIO_RELAY__UPSTREAM__LIVE_URL",
            format!("ws://{}", live.addr()),
        ),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL",
            format!("http://{}/graphql", live.addr()),
        ),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN", "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX", "1s".into()),
        ("STUDIO_RELAY__RELAY__GAP_BACKFILL", "false".into()),
        ("STUDIO_RELAY__SINK__KIND", "nats".into()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", "PROXIED".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_sockets_connect_through_the_proxy_the_environment_names() {
    let nats = support::NatsServer::start();
    let sim = start_simulator(TOKEN, &["--rate", "60"]).await;
    let hidden = ReservedPort::new();
    let target = hidden.addr().to_string();
    let proxy = ConnectProxy::start(HashMap::from([(target.clone(), sim.addr())])).await;
    let mut env = relay_env(&hidden, &nats);
    env.push(("HTTP_PROXY", proxy.url()));
    let mut relay = Relay::spawn(&["run"], &env);

    wait_for(
        "five sockets connected",
        Duration::from_secs(60),
        &relay,
        |t| connected_sockets(t) == 5,
    )
    .await;
    wait_for("events published", Duration::from_secs(60), &relay, |t| {
        metric_sum(t, "studio_relay_events_published_total", "") >= 20.0
    })
    .await;
    let tunnels = proxy.asked();
    assert!(
        tunnels.len() >= 5 && tunnels.iter().all(|t| *t == target),
        "one CONNECT {target} per socket: {tunnels:?}"
    );

    relay.sigterm();
    let status = relay.wait(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", relay.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_proxy_the_sockets_say_which_host_they_cannot_reach() {
    let nats = support::NatsServer::start();
    let hidden = ReservedPort::new();
    let mut relay = Relay::spawn(&["run"], &relay_env(&hidden, &nats));

    wait_for(
        "every socket refused",
        Duration::from_secs(60),
        &relay,
        |t| metric_sum(t, "studio_relay_reconnects_total", "reason=\"network\"") >= 5.0,
    )
    .await;
    assert_eq!(connected_sockets(&relay.metrics().await), 0);
    let lost = relay.log_lines("websocket disconnected");
    let detail = lost[0]["detail"].as_str().unwrap_or_default().to_string();
    let expected = format!("connecting to {}", hidden.addr());
    assert!(
        detail.contains(&expected) && detail.to_lowercase().contains("refused"),
        "the error names the host and the refusal: {detail}"
    );

    relay.sigterm();
    let status = relay.wait(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", relay.output());
}
