//! The Avro + schema registry path against a real registry: Apicurio
//! Registry 3 in its Confluent-compatible mode (`/apis/ccompat/v7`), started
//! by `tests/support/registry.rs`, with the relay as the real binary (exit
//! codes and error lines) or in-process (the ids it resolves), and, end to
//! end, real Apache Kafka read by an independent Python consumer that
//! decodes with the schema fetched from the registry.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use studio_relay::model::{DataSource, Envelope, Origin};
use studio_relay::ops::Metrics;
use support::live::{metric_sum, start_simulator};
use support::process::{wait_for, Relay};
use support::registry::{RegistryOptions, SchemaRegistry};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "tv-registry-test-token-3d1f";
const RESOLVED: &str = "Avro schema ids resolved with the schema registry";
const WAITING: &str = "schema registry not available yet";

fn subject(source: DataSource) -> String {
    format!("telavox.studio.{source}.v1-value")
}

/// A relay publishing Avro with the registry at `url` to stdout; its
/// upstream is a closed port, so it only resolves schema ids and then
/// keeps reconnecting: enough to see how start-up ends.
fn relay_env(url: &str, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("STUDIO_RELAY__TENANTS__0__NAME", "acme".to_string()),
        ("TELAVOX_TOKEN", TOKEN.into()),
        (
            "STUDIO_RELAY__UPSTREAM__LIVE_URL",
            "ws://127.0.0.1:9".into(),
        ),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL",
            "http://127.0.0.1:9/graphql".into(),
        ),
        ("STUDIO_RELAY__SINK__KIND", "stdout".into()),
        ("STUDIO_RELAY__ENCODING__FORMAT", "avro".into()),
        ("STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__URL", url.into()),
    ];
    env.extend(extra.iter().cloned());
    env
}

/// The lines the CLI itself printed (not log lines): `studio-relay: ...`.
fn cli_error_lines(relay: &Relay) -> Vec<String> {
    relay
        .output()
        .lines()
        .filter(|l| l.starts_with("studio-relay:"))
        .map(String::from)
        .collect()
}

/// Waits until the relay logged a line containing `needle`; fails if it
/// exits first or `timeout` passes.
async fn wait_for_log(relay: &mut Relay, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while relay.log_lines(needle).is_empty() {
        if let Some(status) = relay.exited() {
            panic!(
                "studio-relay exited ({status}) before logging `{needle}`:\n{}",
                relay.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` within {timeout:?}:\n{}",
            relay.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the relay until it exits and returns (exit code, its one error line).
async fn run_until_exit(env: &[(&'static str, String)]) -> (i32, String, Relay) {
    let mut relay = Relay::spawn(&["run"], env);
    let status = relay.wait(Duration::from_secs(90)).await;
    let lines = cli_error_lines(&relay);
    assert_eq!(
        lines.len(),
        1,
        "one error line from the CLI; output:\n{}",
        relay.output()
    );
    (status.code().unwrap_or(-1), lines[0].clone(), relay)
}

/// Stops a relay that resolved its ids and checks it exits cleanly.
async fn stop_cleanly(mut relay: Relay) {
    relay.sigterm();
    let status = relay.wait(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", relay.output());
}

fn config_for(url: &str, overrides: &[(&str, String)]) -> studio_relay::config::Config {
    let mut env: Vec<(String, String)> = vec![
        ("STUDIO_RELAY__TENANTS__0__NAME".into(), "acme".into()),
        ("STUDIO_RELAY__TENANTS__0__TOKEN".into(), TOKEN.into()),
        ("STUDIO_RELAY__ENCODING__FORMAT".into(), "avro".into()),
        (
            "STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__URL".into(),
            url.into(),
        ),
    ];
    env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
    studio_relay::config::load_from_str("", "test", env, |p| std::fs::read_to_string(p))
        .expect("valid test config")
}

/// The schema id in the Confluent header of `tenant`'s encoded calls record.
fn encoded_id(encoder: &studio_relay::encode::Encoder, tenant: &str) -> u32 {
    let record =
        studio_relay::model::normalize_live(DataSource::Calls, br#"{"id_call":"c-1"}"#).unwrap();
    let env = Envelope::new(tenant.into(), Origin::Live, 0, record);
    let bytes = encoder.encode(&env).unwrap().bytes;
    assert_eq!(bytes[0], 0, "Confluent wire format");
    u32::from_be_bytes(bytes[1..5].try_into().unwrap())
}

fn checked_in_avsc(source: DataSource) -> String {
    let path = format!(
        "{}/schemas/avro/{source}.v1.avsc",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_independent_consumer_decodes_what_the_relay_published_to_kafka_with_the_registry_schema(
) {
    let t0 = Instant::now();
    let kafka = support::KafkaBroker::start();
    let registry = SchemaRegistry::start().await;
    eprintln!(
        "Apicurio Registry answered after {:?}",
        registry.started_in()
    );
    let sim = start_simulator(TOKEN, &["--rate", "40"]).await;
    let env = vec![
        ("STUDIO_RELAY__TENANTS__0__NAME", "acme".to_string()),
        ("TELAVOX_TOKEN", TOKEN.into()),
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", sim.live_url()),
        ("STUDIO_RELAY__UPSTREAM__GRAPHQL_URL", sim.graphql_url()),
        ("STUDIO_RELAY__SINK__KIND", "kafka".into()),
        ("STUDIO_RELAY__SINK__KAFKA__BROKERS", kafka.bootstrap()),
        ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
        ("STUDIO_RELAY__SINK__KAFKA__PARTITIONS", "2".into()),
        ("STUDIO_RELAY__SINK__KAFKA__REPLICATION_FACTOR", "1".into()),
        ("STUDIO_RELAY__ENCODING__FORMAT", "avro".into()),
        (
            "STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__URL",
            registry.url(),
        ),
        ("STUDIO_RELAY__RELAY__SHUTDOWN_DEADLINE", "20s".into()),
    ];
    let mut relay = Relay::spawn(&["run"], &env);
    wait_for("events published", Duration::from_secs(90), &relay, |t| {
        metric_sum(t, "studio_relay_events_published_total", "") >= 150.0
    })
    .await;
    relay.sigterm();
    let status = relay.wait(Duration::from_secs(40)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", relay.output());
    sim.shutdown().await;
    let published = relay.log_lines("relay stopped")[0]["published"]
        .as_u64()
        .expect("published count in the stop line") as usize;

    // Every subject holds exactly the relay's schema, once.
    let mut ids = HashMap::new();
    for source in DataSource::ALL {
        assert_eq!(
            registry.versions(&subject(source)).await,
            vec![1],
            "{}",
            subject(source)
        );
        let (id, _) = registry.latest(&subject(source)).await;
        ids.insert(format!("telavox.studio.{source}.v1"), id);
    }
    let topics: Vec<String> = ids.keys().cloned().collect();

    let on_kafka = support::kafka_consume(
        &kafka.bootstrap(),
        &topics,
        published,
        Duration::from_secs(60),
    );
    assert_eq!(
        on_kafka.len(),
        published,
        "what the relay published is on the source topics"
    );
    let decoded = independent_consume(&kafka.bootstrap(), &registry, &topics, published).await;
    assert_eq!(
        decoded.len(),
        published,
        "the independent consumer decoded every record"
    );
    for m in &on_kafka {
        let key = (m.destination.clone(), m.partition, m.offset);
        let theirs = decoded
            .get(&key)
            .unwrap_or_else(|| panic!("the independent consumer did not see {key:?}"));
        assert_eq!(
            theirs["schema_id"].as_u64(),
            Some(u64::from(ids[&m.destination])),
            "{key:?} is framed with the id of {}-value",
            m.destination
        );
        let source = DataSource::ALL
            .into_iter()
            .find(|s| m.destination == format!("telavox.studio.{s}.v1"))
            .unwrap();
        let ours = support::decode_with_checked_in_schema(source, "avro", &m.payload);
        assert_eq!(
            theirs["value"], ours,
            "{key:?}: the registry-schema decode equals the checked-in-schema decode"
        );
        assert_eq!(ours["tenant"], "acme");
        assert_eq!(ours["source"], source.as_str());
    }
    eprintln!(
        "end to end: {published} records decoded by confluent-kafka's AvroDeserializer; test wall time {:?}",
        t0.elapsed()
    );
}

/// Runs tests/consumers/avro_consume.py and indexes its records by
/// (topic, partition, offset).
async fn independent_consume(
    bootstrap: &str,
    registry: &SchemaRegistry,
    topics: &[String],
    expected: usize,
) -> HashMap<(String, i32, i64), serde_json::Value> {
    let script = format!(
        "{}/tests/consumers/avro_consume.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(["--bootstrap", bootstrap])
        .args(["--registry", &registry.url()])
        .args(["--expected", &expected.to_string(), "--timeout", "90"])
        .args(topics);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run python3 (scripts/install-test-clients)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "the independent consumer needs confluent-kafka: run scripts/install-test-clients\n{stderr}"
    );
    assert!(out.status.success(), "avro_consume.py failed:\n{stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            let key = (
                v["topic"].as_str().unwrap().to_string(),
                v["partition"].as_i64().unwrap() as i32,
                v["offset"].as_i64().unwrap(),
            );
            (key, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_mode_refuses_to_start_until_the_schemas_are_registered_then_uses_their_ids() {
    let registry = SchemaRegistry::start().await;
    let lookup = [(
        "STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__MODE",
        "lookup".to_string(),
    )];
    // A URL outside the registry API is not mistaken for a missing subject.
    let outside = registry.url().replace("/apis/ccompat/v7", "/nothing-here");
    let (code, line, relay) = run_until_exit(&relay_env(&outside, &lookup)).await;
    assert_eq!(code, 2, "output:\n{}", relay.output());
    assert!(
        line.contains("HTTP 404") && line.contains("/apis/ccompat/v7"),
        "the error says the URL is not the registry API: {line}"
    );

    let (code, line, relay) = run_until_exit(&relay_env(&registry.url(), &lookup)).await;
    assert_eq!(code, 2, "output:\n{}", relay.output());
    let named = DataSource::ALL
        .into_iter()
        .find(|s| line.contains(&format!("subject {} ", subject(*s))));
    assert!(named.is_some(), "the error names the subject: {line}");
    assert!(
        line.contains("mode = \"lookup\" never registers") && line.contains("schemas/avro/"),
        "the error says what to do: {line}"
    );
    for source in DataSource::ALL {
        assert!(
            registry.versions(&subject(source)).await.is_empty(),
            "lookup mode registered nothing under {}",
            subject(source)
        );
    }

    // Registered from the checked-in (pretty-printed) files, as CI would.
    let mut registered = HashMap::new();
    for source in DataSource::ALL {
        let id = registry
            .register(&subject(source), &checked_in_avsc(source))
            .await;
        registered.insert(source, id);
    }
    let config = config_for(
        &registry.url(),
        &[(
            "STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__MODE",
            "lookup".into(),
        )],
    );
    let encoder = studio_relay::registry::encoder_for(
        &config,
        &["acme"],
        &Metrics::new(),
        &CancellationToken::new(),
    )
    .await
    .expect("lookup finds every schema");
    assert_eq!(encoded_id(&encoder, "acme"), registered[&DataSource::Calls]);
    for source in DataSource::ALL {
        assert_eq!(
            registry.versions(&subject(source)).await,
            vec![1],
            "lookup added no version under {}",
            subject(source)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_whose_latest_version_is_incompatible_stops_start_up_with_exit_2() {
    let registry = SchemaRegistry::start().await;
    let calls = subject(DataSource::Calls);
    // Same record name, but a required field the relay's schema lacks and
    // none of the relay's fields: the relay's schema cannot read its data.
    registry
        .register(
            &calls,
            r#"{"type":"record","name":"CallsEvent","namespace":"com.telavox.studio.v1",
                "fields":[{"name":"legacy_only","type":"string"}]}"#,
        )
        .await;
    registry.set_compatibility(&calls, "BACKWARD").await;

    let (code, line, relay) = run_until_exit(&relay_env(&registry.url(), &[])).await;
    assert_eq!(code, 2, "output:\n{}", relay.output());
    assert!(
        line.contains(&format!("subject {calls}:")) && line.contains("not compatible"),
        "the error names the subject and the refusal: {line}"
    );
    assert!(
        line.contains("check_compatibility"),
        "the error says what to do: {line}"
    );
    assert_eq!(
        registry.versions(&calls).await,
        vec![1],
        "nothing was registered over the incompatible version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_a_wrong_password_is_refused_clearly_and_the_right_one_works() {
    const RIGHT: &str = "registry-pass-right-5c1e";
    const WRONG: &str = "registry-pass-wrong-0a9f";
    let registry = SchemaRegistry::start_with(RegistryOptions {
        basic_auth: Some(("relay".into(), RIGHT.into())),
        ..Default::default()
    })
    .await;
    let auth = |password: &str| {
        relay_env(
            &registry.url(),
            &[
                (
                    "STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__USERNAME",
                    "relay".into(),
                ),
                (
                    "STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__PASSWORD",
                    password.into(),
                ),
            ],
        )
    };

    let (code, line, relay) = run_until_exit(&auth(WRONG)).await;
    assert_eq!(code, 2, "output:\n{}", relay.output());
    assert!(
        line.contains("refused the credentials") && line.contains("username and password"),
        "{line}"
    );
    assert!(!relay.output().contains(WRONG), "the password stays secret");

    let mut relay = Relay::spawn(&["run"], &auth(RIGHT));
    wait_for_log(&mut relay, RESOLVED, Duration::from_secs(60)).await;
    assert!(!relay.output().contains(RIGHT), "the password stays secret");
    stop_cleanly(relay).await;
    assert_eq!(
        registry.versions(&subject(DataSource::Calls)).await,
        vec![1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_behind_a_private_ca_is_trusted_only_with_ca_file() {
    let registry = SchemaRegistry::start_with(RegistryOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    assert!(registry.url().starts_with("https://"));

    let (code, line, relay) = run_until_exit(&relay_env(&registry.url(), &[])).await;
    assert_eq!(code, 2, "output:\n{}", relay.output());
    assert!(
        line.contains("TLS") && line.contains("encoding.schema_registry.ca_file"),
        "{line}"
    );

    let ca = registry.ca_file().unwrap().display().to_string();
    let mut relay = Relay::spawn(
        &["run"],
        &relay_env(
            &registry.url(),
            &[("STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__CA_FILE", ca)],
        ),
    );
    wait_for_log(&mut relay, RESOLVED, Duration::from_secs(60)).await;
    stop_cleanly(relay).await;
    assert_eq!(
        registry.versions(&subject(DataSource::Calls)).await,
        vec![1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_waits_for_a_registry_that_starts_after_it() {
    let mut port = support::ReservedPort::new();
    let url = format!("http://{}/apis/ccompat/v7", port.addr());
    let mut relay = Relay::spawn(
        &["run"],
        &relay_env(
            &url,
            &[(
                "STUDIO_RELAY__ENCODING__SCHEMA_REGISTRY__RETRY_FOR",
                "3m".into(),
            )],
        ),
    );
    wait_for_log(&mut relay, WAITING, Duration::from_secs(30)).await;

    let registry = SchemaRegistry::start().await;
    port.forward_to(registry.addr());
    wait_for_log(&mut relay, RESOLVED, Duration::from_secs(120)).await;
    let retries = metric_sum(
        &relay.metrics().await,
        "studio_relay_schema_registry_retries_total",
        "",
    );
    assert!(retries >= 1.0, "retries are counted: {retries}");
    assert_eq!(
        relay.log_lines(WAITING).len(),
        1,
        "the wait is logged once, later retries at debug level"
    );
    stop_cleanly(relay).await;
    for source in DataSource::ALL {
        assert_eq!(registry.versions(&subject(source)).await, vec![1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_numbered_per_subject_version_are_kept_per_tenant() {
    // Apicurio's legacy id mode: ids are global ids, one per subject version,
    // so each tenant's subject gets its own id for the same schema.
    let registry = SchemaRegistry::start_with(RegistryOptions {
        legacy_ids: true,
        ..Default::default()
    })
    .await;
    let config = config_for(
        &registry.url(),
        &[
            ("STUDIO_RELAY__TENANTS__1__NAME", "globex".into()),
            ("STUDIO_RELAY__TENANTS__1__TOKEN", TOKEN.into()),
            (
                "STUDIO_RELAY__SINK__TOPIC_TEMPLATE",
                "{tenant}.studio.{source}.v{version}".into(),
            ),
        ],
    );
    let encoder = studio_relay::registry::encoder_for(
        &config,
        &["acme", "globex"],
        &Metrics::new(),
        &CancellationToken::new(),
    )
    .await
    .expect("ids resolved");
    let (acme, _) = registry.latest("acme.studio.calls.v1-value").await;
    let (globex, _) = registry.latest("globex.studio.calls.v1-value").await;
    assert_ne!(acme, globex, "legacy ids differ per subject");
    assert_eq!(encoded_id(&encoder, "acme"), acme);
    assert_eq!(encoded_id(&encoder, "globex"), globex);
}
