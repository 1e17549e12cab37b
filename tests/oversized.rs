//! A record larger than the broker takes is a dead letter, not a poison pill.
//!
//! A stand-in for Studio's live `/calls` socket sends a valid call of about
//! 2 MiB (an undocumented field of padding, kept in `extra`) between normal
//! ones to `studio-relay run` as a process. NATS's default `max_payload` is
//! 1 MiB and a Kafka producer's `message.max.bytes` about 1 MB: sent as it
//! is, the NATS server drops the connection and the relay would send it again
//! forever, holding up everything behind it. Each broker must get every
//! normal call, the big one in the dead-letter destination (cut to fit, its
//! original size and the reason in headers), and SIGTERM must end the relay
//! with exit code 0.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use studio_relay::model::{self, DataSource, Envelope, Origin};
use support::live::{header, metric_sum, stand_in_live};
use support::process::{wait_for, Relay};

const TOKEN: &str = "oversized-token";
/// Normal calls before the big one, and as many after it.
const AROUND: usize = 20;
const PADDING_BYTES: usize = 2 << 20;

/// A live call frame: the checked-in simulator call with its own id, and
/// `padding` bytes in a field the reference does not document.
fn call_frame(i: usize, padding: usize) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/normalize/calls.simulator.live.json"
    );
    let mut call: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    call["id_call"] = format!("oversized-test-call-{i}").into();
    if padding > 0 {
        call["x_padding"] = "p".repeat(padding).into();
    }
    call.to_string()
}

/// The frames `/calls` sends, in order: normal, big (`padding` bytes more), normal.
fn frames(padding: usize) -> Vec<String> {
    let mut out: Vec<String> = (0..AROUND).map(|i| call_frame(i, 0)).collect();
    out.push(call_frame(AROUND, padding));
    out.extend((AROUND + 1..=2 * AROUND).map(|i| call_frame(i, 0)));
    out
}

/// The event id the relay gives the call in `frame`.
fn event_id(frame: &str) -> String {
    let record = model::normalize_live(DataSource::Calls, frame.as_bytes()).expect("valid call");
    Envelope::new("acme".into(), Origin::Live, 0, record)
        .event_id
        .to_string()
}

/// The environment of a relay reading `live_url` (calls only).
fn relay_env(live_url: String) -> Vec<(&'static str, String)> {
    vec![
        ("STUDIO_RELAY__TENANTS__0__NAME", "acme".into()),
        ("TELAVOX_TOKEN", TOKEN.into()),
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", live_url),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL",
            "http://127.0.0.1:9/graphql".into(),
        ),
        ("STUDIO_RELAY__UPSTREAM__SOURCES", "[\"calls\"]".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN", "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX", "1s".into()),
        ("STUDIO_RELAY__RELAY__SHUTDOWN_DEADLINE", "10s".into()),
    ]
}

/// Runs the relay until it has published every normal call and
/// dead-lettered the big one, then stops it with SIGTERM: exit code 0.
async fn run_until_dead_lettered_then_sigterm(env: &[(&str, String)]) -> Relay {
    let mut relay = Relay::spawn(&["run"], env);
    wait_for(
        "every normal call published and the big one dead-lettered",
        Duration::from_secs(90),
        &relay,
        |t| {
            metric_sum(t, "studio_relay_events_published_total", "origin=\"live\"")
                >= (2 * AROUND) as f64
                && metric_sum(
                    t,
                    "studio_relay_events_deadlettered_total",
                    "reason=\"too_large\"",
                ) >= 1.0
        },
    )
    .await;
    relay.sigterm();
    let status = relay.wait(Duration::from_secs(30)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; output:\n{}",
        relay.output()
    );
    relay
}

/// Checks what the broker holds: `calls` has exactly the normal calls
/// (`id_header` names the event id header), `letters` the big one alone
/// (`padding` bytes more than a normal one), cut to fit `max` bytes, with
/// its original size and the reason.
fn assert_on_broker(
    frames: &[String],
    padding: usize,
    calls: &[support::ReceivedMessage],
    letters: &[support::ReceivedMessage],
    id_header: &str,
    max: usize,
) {
    let normal: BTreeSet<String> = frames
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != AROUND)
        .map(|(_, f)| event_id(f))
        .collect();
    let got: BTreeSet<String> = calls
        .iter()
        .map(|m| {
            header(&m.headers, id_header)
                .expect("event id header")
                .to_string()
        })
        .collect();
    assert_eq!(calls.len(), normal.len(), "each normal call once");
    assert_eq!(got, normal);
    assert!(!got.contains(&event_id(&frames[AROUND])));

    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let dl = &letters[0];
    assert_eq!(
        header(&dl.headers, "studio_relay_reason"),
        Some("too_large")
    );
    assert_eq!(header(&dl.headers, "studio_relay_truncated"), Some("true"));
    let original: usize = header(&dl.headers, "studio_relay_payload_bytes")
        .expect("original size header")
        .parse()
        .unwrap();
    assert!(original > padding, "the encoded record: {original}");
    assert!(
        dl.payload.len() < max && !dl.payload.is_empty(),
        "{} bytes kept",
        dl.payload.len()
    );
    // The head of the encoded record (JSON encoding), as published it would have been.
    let head = format!("{{\"event_id\":\"{}\"", event_id(&frames[AROUND]));
    assert!(
        dl.payload.starts_with(head.as_bytes()),
        "{}",
        String::from_utf8_lossy(&dl.payload[..200.min(dl.payload.len())])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_dead_letters_a_record_over_max_payload_and_publishes_the_rest() {
    use async_nats::jetstream::stream;
    let nats = support::NatsServer::start();
    // A stream someone else made: the relay must use it without altering it.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "BIG".into(),
        subjects: vec!["telavox.studio.>".into(), "audit.>".into()],
        max_age: Duration::from_secs(86_400),
        ..Default::default()
    })
    .await
    .unwrap();

    let frames = frames(PADDING_BYTES);
    let mut env = relay_env(stand_in_live("/calls", frames.clone()).await);
    env.extend([
        ("STUDIO_RELAY__SINK__KIND", "nats".into()),
        ("STUDIO_RELAY__SINK__NATS__URL", nats.url()),
        ("STUDIO_RELAY__SINK__NATS__STREAM", "BIG".into()),
    ]);
    let relay = run_until_dead_lettered_then_sigterm(&env).await;

    let calls = support::nats_fetch_all(
        &nats.url(),
        "BIG",
        "telavox.studio.calls.v1",
        2 * AROUND,
        Duration::from_secs(20),
    )
    .await;
    let letters = support::nats_fetch_all(
        &nats.url(),
        "BIG",
        "telavox.studio.deadletter",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_on_broker(&frames, PADDING_BYTES, &calls, &letters, "ce-id", 1 << 20);
    assert!(header(&letters[0].headers, "ce-id").is_some_and(|id| id.starts_with("dl-")));

    let kept = js
        .get_stream("BIG")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(kept.max_age, Duration::from_secs(86_400), "not altered");
    assert_eq!(
        kept.subjects,
        ["telavox.studio.>", "audit.>"],
        "not altered"
    );
    let noted: Vec<_> = relay
        .log_lines("differs from what the relay would create")
        .into_iter()
        .filter_map(|l| l["setting"].as_str().map(str::to_string))
        .collect();
    assert!(
        noted.contains(&"max_age".to_string()) && noted.contains(&"subjects".to_string()),
        "each difference logged once at start-up: {noted:?}\n{}",
        relay.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_dead_letters_a_record_over_message_max_bytes_and_publishes_the_rest() {
    let kafka = support::KafkaBroker::start();
    let frames = frames(PADDING_BYTES);
    let mut env = relay_env(stand_in_live("/calls", frames.clone()).await);
    env.extend([
        ("STUDIO_RELAY__SINK__KIND", "kafka".into()),
        ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
        ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
        ("STUDIO_RELAY__SINK__KAFKA__PARTITIONS", "1".into()),
    ]);
    run_until_dead_lettered_then_sigterm(&env).await;

    let calls = support::kafka_consume(
        &kafka.bootstrap(),
        &["telavox.studio.calls.v1".into()],
        2 * AROUND,
        Duration::from_secs(60),
    );
    let letters = support::kafka_consume(
        &kafka.bootstrap(),
        &["telavox.studio.deadletter".into()],
        1,
        Duration::from_secs(60),
    );
    assert_on_broker(&frames, PADDING_BYTES, &calls, &letters, "ce_id", 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_heeds_a_topic_limit_below_the_producers_and_fits_the_dead_letter_under_it() {
    // Topics created with max.message.bytes = 200000: a 500 kB call fits
    // the producer's 1 MB but not its topic, and its dead letter (up to
    // `deadletter_max_bytes`, 900 KiB) must be cut to the dead-letter
    // topic's limit too.
    let kafka = support::KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(
        &config,
        "[sink.kafka.topic_config]\n\"max.message.bytes\" = \"200000\"\n",
    )
    .unwrap();
    let frames = frames(500_000);
    let mut env = relay_env(stand_in_live("/calls", frames.clone()).await);
    env.extend([
        ("STUDIO_RELAY_CONFIG", config.display().to_string()),
        ("STUDIO_RELAY__SINK__KIND", "kafka".into()),
        ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
        ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
        ("STUDIO_RELAY__SINK__KAFKA__PARTITIONS", "1".into()),
    ]);
    let relay = run_until_dead_lettered_then_sigterm(&env).await;
    // Read at start-up (describe configs), so the record was never sent.
    let limits: Vec<_> = relay
        .log_lines("broker message limit known")
        .into_iter()
        .filter_map(|l| l["setting"].as_str().map(str::to_string))
        .collect();
    assert!(
        limits.contains(&"max.message.bytes of telavox.studio.calls.v1".to_string()),
        "{limits:?}"
    );

    let calls = support::kafka_consume(
        &kafka.bootstrap(),
        &["telavox.studio.calls.v1".into()],
        2 * AROUND,
        Duration::from_secs(60),
    );
    let letters = support::kafka_consume(
        &kafka.bootstrap(),
        &["telavox.studio.deadletter".into()],
        1,
        Duration::from_secs(60),
    );
    assert_on_broker(&frames, 500_000, &calls, &letters, "ce_id", 200_000);
}
