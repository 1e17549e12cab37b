//! The live sockets in a company network. On the real binary: they reach
//! an upstream that only an HTTP CONNECT proxy can reach, through the proxy
//! `HTTP_PROXY` names, and fail with an error naming the host they could
//! not reach without it. In process: they trust a private CA given in
//! `upstream.ca_file`, and say what to do without it.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::live::{connected_sockets, metric_sum, relay_config, start_simulator, wait_until};
use support::ports::ReservedPort;
use support::process::{wait_for, Relay};
use support::proxy::{ConnectProxy, TlsFront};
use tokio_util::sync::CancellationToken;

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

/// The relay on the simulator behind TLS signed by the test CA; `ca_file`
/// when given.
async fn relay_behind_tls(
    front: &TlsFront,
    sim: &studio_relay::simulator::SimulatorHandle,
    nats: &support::NatsServer,
    ca_file: Option<&str>,
) -> (studio_relay::relay::RelayHandle, CancellationToken) {
    let mut overrides = vec![
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", front.wss_url()),
        ("STUDIO_RELAY__RELAY__GAP_BACKFILL", "false".into()),
        ("STUDIO_RELAY__SINK__KIND", "nats".into()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", "TLS".into()),
    ];
    if let Some(path) = ca_file {
        overrides.push(("STUDIO_RELAY__UPSTREAM__CA_FILE", path.into()));
    }
    let shutdown = CancellationToken::new();
    let relay = studio_relay::relay::start(relay_config(sim, TOKEN, &overrides), shutdown.clone())
        .await
        .expect("the relay starts");
    (relay, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_in_upstream_ca_file_is_trusted_by_the_live_sockets() {
    let nats = support::NatsServer::start();
    let sim = start_simulator(TOKEN, &["--rate", "60"]).await;
    let front = TlsFront::start(sim.addr()).await;
    let ca = support::repo_root().join("tests/fixtures/tls/ca.pem");
    let (relay, shutdown) = relay_behind_tls(&front, &sim, &nats, Some(ca.to_str().unwrap())).await;
    let m = relay.metrics.clone();
    wait_until(
        "five sockets over TLS, publishing",
        Duration::from_secs(60),
        || {
            let text = m.render();
            connected_sockets(&text) == 5
                && metric_sum(&text, "studio_relay_events_published_total", "") >= 20.0
        },
    )
    .await;
    shutdown.cancel();
    relay.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_file_a_private_ca_is_refused_and_the_error_says_what_to_set() {
    let log = support::wait::CapturedLog::install();
    let nats = support::NatsServer::start();
    let sim = start_simulator(TOKEN, &[]).await;
    let front = TlsFront::start(sim.addr()).await;
    let (relay, shutdown) = relay_behind_tls(&front, &sim, &nats, None).await;
    let m = relay.metrics.clone();
    wait_until(
        "every socket refused the certificate",
        Duration::from_secs(60),
        || {
            metric_sum(
                &m.render(),
                "studio_relay_reconnects_total",
                "reason=\"handshake\"",
            ) >= 5.0
        },
    )
    .await;
    assert_eq!(connected_sockets(&m.render()), 0);
    let lost = log.lines("websocket disconnected");
    let detail = lost
        .iter()
        .filter_map(|l| l["detail"].as_str())
        .find(|d| d.contains("TLS"))
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("UnknownIssuer") && detail.contains("upstream.ca_file"),
        "the error names the certificate problem and the setting: {detail}"
    );
    shutdown.cancel();
    relay.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_client_trusts_the_same_ca_file() {
    use studio_relay::config::Secret;
    use studio_relay::upstream::historic::{GraphqlClient, OverviewFilter, RetryPolicy};
    use studio_relay::upstream::tls::UpstreamTls;

    let sim = start_simulator(TOKEN, &[]).await;
    let front = TlsFront::start(sim.addr()).await;
    let url = format!("{}/graphql", front.wss_url().replacen("wss", "https", 1));
    let ca = support::repo_root().join("tests/fixtures/tls/ca.pem");
    let client = |roots| {
        let retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        GraphqlClient::with_roots(
            &url,
            Secret::new(TOKEN),
            Duration::from_secs(10),
            retry,
            roots,
        )
        .unwrap()
    };
    let filter = OverviewFilter {
        start_date: "2026-01-01T00:00:00.000Z".into(),
        end_date: "2026-01-01T01:00:00.000Z".into(),
        ..OverviewFilter::default()
    };
    let page = |c: GraphqlClient| {
        let filter = filter.clone();
        async move {
            c.fetch_page("calls", "{ __typename }", &filter, 1, None, |_, _| {})
                .await
        }
    };
    let trusted = client(UpstreamTls::load(Some(&ca)).unwrap().extra_roots());
    page(trusted)
        .await
        .expect("a page over TLS signed by the CA file");
    let untrusted = client(Vec::new());
    let e = page(untrusted).await.expect_err("an unknown CA is refused");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}
