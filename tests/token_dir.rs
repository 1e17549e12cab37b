//! Tenants from a directory of token files, as a mounted Kubernetes Secret
//! holds them: a file added starts its tenant's sockets, a file changed
//! reconnects only that tenant with the new token, a file removed stops
//! only that tenant, all while the relay runs.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use studio_relay::config;
use support::live::{connected_sockets, metric_sum, start_simulator, wait_until};
use support::wait::CapturedLog;
use tokio_util::sync::CancellationToken;

/// Written whole, as the kubelet swaps a Secret's files: never half a token.
fn write_token(dir: &Path, tenant: &str, token: &str) {
    let tmp = dir.join(format!(".{tenant}.tmp"));
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, dir.join(tenant)).unwrap();
}

/// "websocket connected" lines of `tenant` so far.
fn connects(log: &CapturedLog, tenant: &str) -> usize {
    log.lines("websocket connected")
        .iter()
        .filter(|l| l["tenant"] == tenant)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_files_added_changed_and_removed_start_reconnect_and_stop_only_their_tenant() {
    let log = CapturedLog::install();
    let nats = support::NatsServer::start();
    let sim = start_simulator("tok-acme,tok-globex,tok-globex-rotated", &[]).await;
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), "acme", "tok-acme");
    let env = [
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", sim.live_url()),
        ("STUDIO_RELAY__UPSTREAM__GRAPHQL_URL", sim.graphql_url()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN", "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX", "1s".into()),
        ("STUDIO_RELAY__OPS__LISTEN", "127.0.0.1:0".into()),
        ("STUDIO_RELAY__SINK__KIND", "nats".into()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", "TOKENDIR".into()),
        (
            "STUDIO_RELAY__TOKEN_DIR__PATH",
            dir.path().display().to_string(),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let config = config::load_from_str("", "test", env, |p| std::fs::read_to_string(p))
        .expect("a config with a token directory and no [[tenants]]");
    let shutdown = CancellationToken::new();
    let relay = studio_relay::relay::start(config, shutdown.clone())
        .await
        .unwrap();
    let m = relay.metrics.clone();
    let changes = |change: &str| {
        metric_sum(
            &m.render(),
            "studio_relay_tenant_changes_total",
            &format!("change=\"{change}\""),
        )
    };
    let connected_of = |tenant: &str| {
        metric_sum(
            &m.render(),
            "studio_relay_socket_connected",
            &format!("tenant=\"{tenant}\""),
        )
    };
    wait_until("acme's five sockets", Duration::from_secs(30), || {
        connected_sockets(&m.render()) == 5
    })
    .await;

    // Added: its five sockets start; acme's are not touched.
    let added = Instant::now();
    write_token(dir.path(), "globex", "tok-globex");
    wait_until("globex's five sockets", Duration::from_secs(30), || {
        connected_of("globex") == 5.0
    })
    .await;
    eprintln!(
        "token file added → 5 sockets connected in {:?}",
        added.elapsed()
    );
    assert_eq!(changes("added"), 1.0);
    assert_eq!(connects(&log, "acme"), 5, "acme reconnected");

    // Rotated: only globex reconnects, with the new token.
    let rotated = Instant::now();
    let before = connects(&log, "globex");
    write_token(dir.path(), "globex", "tok-globex-rotated");
    wait_until("globex reconnected", Duration::from_secs(30), || {
        changes("rotated") == 1.0 && connects(&log, "globex") == before + 5
    })
    .await;
    wait_until(
        "globex's five sockets again",
        Duration::from_secs(30),
        || connected_of("globex") == 5.0,
    )
    .await;
    eprintln!(
        "token file changed → reconnected in {:?}",
        rotated.elapsed()
    );
    assert_eq!(connects(&log, "acme"), 5, "acme reconnected");
    assert_eq!(connected_of("acme"), 5.0);

    // Removed: globex stops and leaves no series; acme keeps flowing.
    let removed = Instant::now();
    std::fs::remove_file(dir.path().join("globex")).unwrap();
    wait_until("globex stopped", Duration::from_secs(30), || {
        changes("removed") == 1.0
    })
    .await;
    eprintln!("token file removed → stopped in {:?}", removed.elapsed());
    let text = m.render();
    let state_series = |l: &&str| {
        (l.starts_with("studio_relay_socket_connected")
            || l.starts_with("studio_relay_tenant_state"))
            && l.contains("tenant=\"globex\"")
    };
    assert_eq!(
        text.lines().filter(state_series).count(),
        0,
        "globex's state series are gone:\n{text}"
    );
    assert_eq!(connected_sockets(&text), 5);
    assert_eq!(connects(&log, "acme"), 5, "acme reconnected");
    let readiness = relay.health.ready();
    assert!(readiness.is_ok_and(|degraded| degraded.is_empty()));

    shutdown.cancel();
    relay.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_token_directory_is_a_config_error_naming_the_key() {
    let env = [
        ("STUDIO_RELAY__OPS__LISTEN", "".to_string()),
        ("STUDIO_RELAY__SINK__KIND", "stdout".into()),
        (
            "STUDIO_RELAY__TOKEN_DIR__PATH",
            "/nonexistent/studio-relay-tokens".into(),
        ),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let config = config::load_from_str("", "test", env, |p| std::fs::read_to_string(p)).unwrap();
    let e = studio_relay::relay::start(config, CancellationToken::new())
        .await
        .err()
        .expect("the relay does not start");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("token_dir.path"), "{e}");
}
