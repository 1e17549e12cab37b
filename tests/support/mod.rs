//! Test harness shared by the integration tests: real brokers on free loopback
//! ports, killed on drop, and consumers that read back what was published.
//!
//! A missing broker binary is a test failure that says how to install it.
#![allow(dead_code)]

pub mod live;
pub mod process;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use studio_relay::model::DataSource;

/// A message read back from a broker.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub destination: String,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            panic!(
                "{what} did not listen on 127.0.0.1:{port} within 30 s; log: {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn find_binary(name: &str, candidates: &[PathBuf], install_hint: &str) -> PathBuf {
    for c in candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("{name} not found: {install_hint}");
}

/// A `nats-server -js` on a free port with its own storage directory.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let binary = find_binary(
            "nats-server",
            &[
                PathBuf::from("/usr/sbin/nats-server"),
                PathBuf::from("/usr/bin/nats-server"),
            ],
            "run scripts/install-deps (apt-get install nats-server)",
        );
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            binary,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("nats.log");
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("js"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        wait_for_port(self.port, "nats-server", &log);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's process id while it runs (the benchmark reads its CPU).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (an outage); storage is kept.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Tansu, an Apache-Kafka-compatible broker, on a free port with SQLite storage.
pub struct KafkaBroker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl KafkaBroker {
    pub fn start() -> KafkaBroker {
        let mut candidates = Vec::new();
        if let Ok(d) = std::env::var("STUDIO_RELAY_TOOLS_DIR") {
            candidates.push(PathBuf::from(d).join("bin/tansu"));
        }
        if let Ok(h) = std::env::var("HOME") {
            candidates.push(PathBuf::from(h).join(".cache/studio-relay/tools/bin/tansu"));
        }
        let binary = find_binary(
            "tansu",
            &candidates,
            "run scripts/install-deps (builds the Tansu broker once)",
        );
        let mut b = KafkaBroker {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            binary,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("tansu.log");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.binary)
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(self.dir.path().join("tansu.err")).unwrap())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_for_port(self.port, "tansu", &log);
    }

    /// The broker's process id while it runs (the benchmark reads its CPU).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let r = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .expect("create topic");
        for x in r {
            if let Err((n, code)) = x {
                assert_eq!(
                    code,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "create {n}"
                );
            }
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads every message of `stream` matching `subject_filter`: waits until at
/// least `expected` arrived (or `timeout`), then one more quiet second so
/// extras (duplicates) are seen too.
pub async fn nats_fetch_all(
    url: &str,
    stream: &str,
    subject_filter: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<ReceivedMessage> {
    use async_nats::jetstream::consumer::pull;
    let client = async_nats::connect(url)
        .await
        .expect("connect to test NATS");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(stream).await.expect("stream exists");
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject_filter.to_string(),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut messages = consumer.messages().await.expect("consume");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let wait = if out.len() >= expected {
            Duration::from_secs(1)
        } else {
            deadline - tokio::time::Instant::now()
        };
        match tokio::time::timeout(wait, messages.next()).await {
            Ok(Some(Ok(m))) => {
                let info = m
                    .info()
                    .ok()
                    .map(|i| i.stream_sequence as i64)
                    .unwrap_or(-1);
                let headers = m
                    .headers
                    .as_ref()
                    .map(|h| {
                        h.iter()
                            .flat_map(|(k, vs)| {
                                vs.iter().map(move |v| (k.to_string(), v.to_string()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReceivedMessage {
                    destination: m.subject.to_string(),
                    key: None,
                    headers,
                    payload: m.payload.to_vec(),
                    partition: 0,
                    offset: info,
                });
            }
            _ => break,
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    out
}

/// Reads every message of `topics` from the beginning (no consumer group):
/// until each partition is read to its end and `expected` arrived, or
/// `timeout`.
pub fn kafka_consume(
    bootstrap: &str,
    topics: &[String],
    expected: usize,
    timeout: Duration,
) -> Vec<ReceivedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", free_port()))
        .set("enable.auto.commit", "false")
        // Tansu (SQLite) can take about a minute to answer one fetch of a
        // large backlog (56 s for ~10,000 records after the outage test's
        // restart, on a 2-core Xeon); librdkafka's default request timeout
        // (60 s) would cut it off and ask again from the same offsets.
        .set("socket.timeout.ms", "300000")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        // A loaded broker can answer metadata without the topic's partitions
        // for a moment; asking again beats silently reading nothing.
        let metadata_deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let md = consumer
                .fetch_metadata(Some(t), Duration::from_secs(10))
                .expect("metadata");
            let partitions: Vec<i32> = md
                .topics()
                .iter()
                .filter(|x| x.name() == t && x.error().is_none())
                .flat_map(|x| x.partitions().iter().map(|p| p.id()))
                .collect();
            if !partitions.is_empty() || Instant::now() > metadata_deadline {
                if partitions.is_empty() {
                    eprintln!(
                        "kafka_consume: {t} has no partitions in the broker's metadata; not read"
                    );
                }
                for p in partitions {
                    tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Done when every partition is read up to its end (high watermark) and
    // at least `expected` messages came. Stopping at `expected` alone cut
    // reads short: Kafka keeps the duplicates of retried sends, so
    // `expected` can be reached while one topic is still unread. The ends
    // are fetched before reading and again before stopping, so an end read
    // low is not trusted alone.
    let ends = |consumer: &BaseConsumer| -> Vec<((String, i32), i64)> {
        tpl.elements()
            .iter()
            .map(|e| {
                let (_, high) = consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                    .expect("watermarks");
                ((e.topic().to_string(), e.partition()), high)
            })
            .collect()
    };
    let mut end = ends(&consumer);
    consumer.assign(&tpl).expect("assign");
    let mut next: std::collections::HashMap<(String, i32), i64> = Default::default();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReceivedMessage {
                    destination: m.topic().to_string(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    headers,
                    payload: m.payload().unwrap_or_default().to_vec(),
                    partition: m.partition(),
                    offset: m.offset(),
                });
            }
            Some(Err(e)) => panic!("kafka consume error: {e}"),
            None => {
                let read_to = |end: &[((String, i32), i64)]| {
                    end.iter()
                        .all(|(tp, high)| next.get(tp).copied().unwrap_or(0) >= *high)
                };
                // (Fewer than `expected` at the ends: more is still being
                // written, and polling on reads it.)
                if read_to(&end) && out.len() >= expected {
                    let fresh = ends(&consumer);
                    if read_to(&fresh) {
                        break;
                    }
                    end = fresh;
                }
            }
        }
    }
    if Instant::now() >= deadline {
        // Say what was read where, so a shortfall points at its topic.
        let mut per_topic: std::collections::BTreeMap<&str, usize> = Default::default();
        for m in &out {
            *per_topic.entry(m.destination.as_str()).or_default() += 1;
        }
        eprintln!("kafka_consume: timed out after {timeout:?}; read {per_topic:?}, ends {end:?}");
    }
    out
}

/// Decodes a payload with the checked-in schema of `source` (a different
/// decoder than the relay's writer), for `format` "json" or "avro" (both Avro
/// wire formats). Panics with a clear message when it does not decode.
pub fn decode_with_checked_in_schema(
    source: DataSource,
    format: &str,
    payload: &[u8],
) -> serde_json::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    match format {
        "json" => {
            let schema: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(format!("{root}/schemas/json/{source}.v1.schema.json"))
                    .unwrap(),
            )
            .unwrap();
            let value: serde_json::Value =
                serde_json::from_slice(payload).expect("payload is JSON");
            let validator = jsonschema::validator_for(&schema).expect("schema compiles");
            if let Err(e) = validator.validate(&value) {
                panic!("{source} JSON payload does not match its schema: {e}\n{value}");
            }
            value
        }
        "avro" => {
            use apache_avro::rabin::Rabin;
            let text =
                std::fs::read_to_string(format!("{root}/schemas/avro/{source}.v1.avsc")).unwrap();
            let schema = apache_avro::Schema::parse_str(&text).expect("avsc parses");
            let body = match payload {
                [0xC3, 0x01, fp @ ..] if fp.len() >= 8 => {
                    let want = schema.fingerprint::<Rabin>().bytes;
                    assert_eq!(
                        &fp[..8],
                        &want[..],
                        "{source}: single-object fingerprint is not the checked-in schema's"
                    );
                    &fp[8..]
                }
                [0x00, _, _, _, _, rest @ ..] => rest,
                _ => panic!("{source}: payload is neither single-object nor Confluent-framed Avro"),
            };
            let mut reader = body;
            let value = apache_avro::from_avro_datum(&schema, &mut reader, None)
                .expect("Avro decodes with the .avsc");
            assert!(
                reader.is_empty(),
                "{source}: {} trailing bytes after the Avro datum",
                reader.len()
            );
            serde_json::to_value(
                apache_avro::from_value::<serde_json::Value>(&value).unwrap_or_default(),
            )
            .unwrap()
        }
        other => panic!("unknown format {other}"),
    }
}
