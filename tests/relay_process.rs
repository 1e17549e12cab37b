//! On the real binary: `studio-relay run` as a process,
//! stopped with SIGTERM while publishing, and its captured logs searched for
//! secrets.

mod support;

use std::time::{Duration, Instant};

use studio_relay::model::DataSource;
use support::live::{metric_sum, start_simulator};
use support::process::{wait_for, Relay};
use support::wait::{assert_retries_wait_as_announced, by_source};

const GOOD_TOKEN: &str = "tv-secret-run-token-5b7e0c";
const WRONG_TOKEN: &str = "tv-wrong-token-91ac44";
const URL_PASSWORD: &str = "gql-pass-77f3";

fn assert_no_secrets(what: &str, text: &str) {
    for secret in [GOOD_TOKEN, WRONG_TOKEN, URL_PASSWORD] {
        assert!(
            !text.contains(secret),
            "secret `{secret}` leaked into {what}:\n{text}"
        );
    }
}

fn nats_env(
    sim_live: String,
    nats: &support::NatsServer,
    stream: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("STUDIO_RELAY__TENANTS__0__NAME", "acme".into()),
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", sim_live),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL",
            format!("http://gql-user:{URL_PASSWORD}@127.0.0.1:9/graphql"),
        ),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN", "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX", "1s".into()),
        ("STUDIO_RELAY__UPSTREAM__AUTH_BACKOFF", "2s".into()),
        ("STUDIO_RELAY__SINK__KIND", "nats".into()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", stream.into()),
        ("STUDIO_RELAY__RELAY__SHUTDOWN_DEADLINE", "10s".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_publishing_exits_0_with_everything_acknowledged_on_the_broker() {
    let nats = support::NatsServer::start();
    let sim = start_simulator(GOOD_TOKEN, &["--rate", "60"]).await;
    let mut env = nats_env(sim.live_url(), &nats, "SIGTERM");
    env.push(("TELAVOX_TOKEN", GOOD_TOKEN.into()));
    let mut relay = Relay::spawn(&["run"], &env);
    wait_for("events published", Duration::from_secs(60), &relay, |t| {
        metric_sum(t, "studio_relay_events_published_total", "") >= 50.0
    })
    .await;

    // The simulator keeps pushing while the relay drains.
    let t0 = Instant::now();
    relay.sigterm();
    let status = relay.wait(Duration::from_secs(15)).await;
    let took = t0.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; output:\n{}",
        relay.output()
    );
    // Exit 0 with its stop line means the drain settled everything within
    // relay.shutdown_deadline: a drain cut short by it exits 1.
    eprintln!("drain took {took:?} (deadline 10 s)");

    let stopped = relay.log_lines("relay stopped");
    assert_eq!(
        stopped.len(),
        1,
        "one `relay stopped` line:\n{}",
        relay.output()
    );
    let published = stopped[0]
        .get("published")
        .and_then(|v| v.as_u64())
        .expect("published count in the stop line");
    assert!(published >= 50);
    let on_broker = support::nats_fetch_all(
        &nats.url(),
        "SIGTERM",
        "telavox.studio.>",
        published as usize,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        on_broker.len() as u64,
        published,
        "every event acknowledged before exit is on the broker, and nothing else"
    );
    assert_no_secrets("the relay's logs", &relay.output());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_logged_clearly_and_no_secret_reaches_logs_metrics_or_check_config() {
    let nats = support::NatsServer::start();
    let sim = start_simulator(GOOD_TOKEN, &[]).await;
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, format!("{WRONG_TOKEN}\n")).unwrap();
    let mut env = nats_env(sim.live_url(), &nats, "WRONGTOKEN");
    env.push((
        "STUDIO_RELAY__TENANTS__0__TOKEN_FILE",
        token_file.display().to_string(),
    ));

    let mut relay = Relay::spawn(&["run"], &env);
    // Every source refused, backed off, tried again and refused again
    // (Prometheus renders labels in name order).
    wait_for("refusals counted", Duration::from_secs(60), &relay, |t| {
        DataSource::ALL.iter().all(|s| {
            metric_sum(
                t,
                "studio_relay_reconnects_total",
                &format!("reason=\"unauthorized\",source=\"{s}\""),
            ) >= 2.0
        })
    })
    .await;
    let (ready, ready_body) = relay.get("/readyz").await.expect("readyz answers");
    assert_eq!(ready, 503, "{ready_body}");
    let metrics = relay.metrics().await;
    relay.sigterm();
    assert_eq!(relay.wait(Duration::from_secs(15)).await.code(), Some(0));

    let refusals = relay.log_lines("HTTP 401");
    assert_eq!(
        by_source(&refusals).len(),
        DataSource::ALL.len(),
        "each source logs the refusal:\n{}",
        relay.output()
    );
    assert!(
        refusals.iter().all(|l| l["level"] == "ERROR"),
        "{refusals:?}"
    );
    // auth_backoff 2 s ± jitter: never a hot retry loop.
    assert_retries_wait_as_announced("refused token", &refusals, 1);
    assert_no_secrets("the relay's logs", &relay.output());
    assert_no_secrets("/metrics", &metrics);
    assert_no_secrets("/readyz", &ready_body);

    // check-config prints the effective config: redacted.
    let mut check = Relay::spawn(&["check-config"], &env);
    assert_eq!(
        check.wait(Duration::from_secs(20)).await.code(),
        Some(0),
        "{}",
        check.output()
    );
    let printed = check.output();
    assert!(
        printed.contains("127.0.0.1:9/graphql"),
        "the URL is printed, without its credentials:\n{printed}"
    );
    assert_no_secrets("check-config", &printed);
    sim.shutdown().await;
}
