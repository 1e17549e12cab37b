//! What studio-relay's integration tests and benchmarks start and read back:
//! real brokers and a schema registry on loopback ports, killed on drop
//! ([`NatsServer`], [`KafkaBroker`], [`registry::SchemaRegistry`]); the
//! relay binary as a child process ([`process::Relay`]); the simulator and
//! stand-in live sockets ([`live`]); consumers that read back what was
//! published. How each server gets its port is in [`ports`].
//!
//! A missing broker binary is a test failure that says how to install it.

pub mod live;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod wait;

pub use ports::ReservedPort;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use studio_relay::model::DataSource;

use ports::{free_port, log_end, log_since, wait_for_line, START_ATTEMPTS};

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

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The repository's root (schemas, scripts, fixtures).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Where scripts/install-deps puts the brokers (the same default as there).
pub fn tools_dir() -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = set("STUDIO_RELAY_TOOLS_DIR") {
        return dir.into();
    }
    let cache = set("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME is set");
    cache.join("studio-relay/tools")
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

/// A `nats-server -js` on a port of its own choosing, with its own storage
/// directory.
pub struct NatsServer {
    child: Option<Child>,
    /// 0 until the first start has read back the port the server took.
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        // The tools cache first: it holds the release the tests are written
        // against (distribution packages lag behind).
        let binary = find_binary(
            "nats-server",
            &[tools_dir().join("bin/nats-server")],
            "run scripts/install-deps (builds nats-server into the tools cache)",
        );
        let mut s = NatsServer {
            child: None,
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            binary,
        };
        if let Err(e) = s.spawn() {
            panic!("{e}");
        }
        s
    }

    /// Starts the server on `self.port`, or on a port it picks (`-p -1`)
    /// the first time, and reads that port back from its log.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("nats.log");
        let from = log_end(&log);
        let port = match self.port {
            0 => "-1".to_string(),
            fixed => fixed.to_string(),
        };
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.dir.path().join("js"))
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let child = self.child.insert(child);
        let ready = wait_for_line(child, &log, from, "Server is ready", "nats-server")
            .and_then(|_| listening_port(&log_since(&log, from), &log));
        match ready {
            Ok(port) => {
                self.port = port;
                Ok(())
            }
            Err(e) => {
                kill(&mut self.child);
                Err(e)
            }
        }
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
        kill(&mut self.child);
    }

    /// Starts it again on the same port (clients point at it) with the
    /// same storage.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("restarting nats-server: {e}");
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client port in nats-server's "Listening for client connections on
/// 127.0.0.1:PORT" line.
fn listening_port(log_text: &str, log: &Path) -> Result<u16, String> {
    log_text
        .lines()
        .find_map(|l| {
            l.split_once("Listening for client connections on ")?
                .1
                .rsplit_once(':')
        })
        .and_then(|(_, port)| port.trim().parse().ok())
        .ok_or_else(|| format!("nats-server logged no client port; log: {}", log.display()))
}

/// The Kafka version scripts/install-deps fetches: its pom is the one place
/// it is set.
pub fn kafka_version() -> &'static str {
    const POM: &str = include_str!("../../../scripts/kafka/pom.xml");
    POM.split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map(|(version, _)| version.trim())
        .expect("scripts/kafka/pom.xml sets <kafka.version>")
}

fn find_java() -> PathBuf {
    let java_home = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty());
    let candidates: Vec<PathBuf> = java_home
        .map(|h| PathBuf::from(h).join("bin/java"))
        .into_iter()
        .collect();
    find_binary(
        "java",
        &candidates,
        "run scripts/install-deps (the Kafka broker needs Java 17 or newer)",
    )
}

/// Any valid KRaft cluster id (a base64 UUID); each broker has its own log dir.
const KAFKA_CLUSTER_ID: &str = "q1Sh-9_ISia_zwGINzRvyQ";

/// JVM flags for a short-lived test broker on a small machine: the serial
/// collector and the C1 compiler alone start it about a second sooner (of
/// about four) and are plenty for test traffic.
const KAFKA_JVM_FLAGS: &[&str] = &[
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
];

/// JVM flags for a broker under load (benchmarks): Kafka's own start
/// script's heap and collector, and the full JIT.
const KAFKA_LOAD_JVM_FLAGS: &[&str] = &[
    "-Xms1g",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
];

/// Apache Kafka: one KRaft node (broker and controller in one process) on
/// loopback ports that were free a moment ago (it must be told its ports:
/// see [`ports`]), with its log dir in a temporary directory.
pub struct KafkaBroker {
    child: Option<Child>,
    port: u16,
    controller_port: u16,
    dir: tempfile::TempDir,
    java: PathBuf,
    libs: PathBuf,
    jvm_flags: &'static [&'static str],
}

impl KafkaBroker {
    /// A broker for tests: quick to start, light on the machine.
    pub fn start() -> KafkaBroker {
        Self::start_with_jvm(KAFKA_JVM_FLAGS)
    }

    /// A broker to measure against, run as Kafka's own scripts run it.
    pub fn start_for_load() -> KafkaBroker {
        Self::start_with_jvm(KAFKA_LOAD_JVM_FLAGS)
    }

    fn start_with_jvm(jvm_flags: &'static [&'static str]) -> KafkaBroker {
        let version = kafka_version();
        let libs = tools_dir().join(format!("kafka-{version}/libs"));
        if !libs.join(format!("kafka_2.13-{version}.jar")).is_file() {
            panic!(
                "Apache Kafka {version} jars not found in {}: run scripts/install-deps",
                libs.display()
            );
        }
        let mut b = KafkaBroker {
            child: None,
            port: 0,
            controller_port: 0,
            dir: tempfile::tempdir().unwrap(),
            java: find_java(),
            libs,
            jvm_flags,
        };
        for attempt in 1..=START_ATTEMPTS {
            b.port = free_port();
            b.controller_port = free_port();
            b.write_config();
            b.format_log_dir();
            match b.spawn() {
                Ok(()) => return b,
                Err(e) if attempt < START_ATTEMPTS => eprintln!("{e}; starting on other ports"),
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("server.properties")
    }

    fn java(&self) -> Command {
        let mut cmd = Command::new(&self.java);
        cmd.args(self.jvm_flags)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.path().join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(self.libs.join("*"));
        cmd
    }

    /// Ports are fixed here, so a restart comes back where clients look.
    /// The short broker session lets a restart after a kill register again
    /// without waiting out the dead process's session (9 s by default).
    fn write_config(&self) {
        let (port, controller) = (self.port, self.controller_port);
        let dir = self.dir.path();
        let server = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={data}\n\
             num.partitions=1\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             share.coordinator.state.topic.num.partitions=1\n\
             group.initial.rebalance.delay.ms=0\n\
             broker.heartbeat.interval.ms=500\n\
             broker.session.timeout.ms=3000\n",
            data = dir.join("data").display(),
        );
        std::fs::write(self.config_path(), server).unwrap();
        // Kept across restarts (append), so a test's whole broker story is in one file.
        let log4j = format!(
            "rootLogger.level=INFO\n\
             rootLogger.appenderRef.file.ref=file\n\
             appender.file.type=File\n\
             appender.file.name=file\n\
             appender.file.append=true\n\
             appender.file.fileName={}\n\
             appender.file.layout.type=PatternLayout\n\
             appender.file.layout.pattern=[%d] %p %m (%c)%n\n",
            self.log_path().display()
        );
        std::fs::write(dir.join("log4j2.properties"), log4j).unwrap();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Formats a fresh log dir for a single-node cluster (a static quorum of
    /// this node's controller).
    fn format_log_dir(&self) {
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        let out = self
            .java()
            .args([
                "kafka.tools.StorageTool",
                "format",
                "-t",
                KAFKA_CLUSTER_ID,
                "-c",
            ])
            .arg(self.config_path())
            .output()
            .expect("run kafka.tools.StorageTool");
        assert!(
            out.status.success(),
            "formatting the Kafka log dir failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&mut self) -> Result<(), String> {
        let from = log_end(&self.log_path());
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kafka.out"))
            .unwrap();
        let child = self
            .java()
            .arg("kafka.Kafka")
            .arg(self.config_path())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start java kafka.Kafka");
        self.child = Some(child);
        let ready = self.wait_ready(from);
        if ready.is_err() {
            kill(&mut self.child);
        }
        ready
    }

    /// Ready when its log (from byte `from`, this start's part) says it
    /// started, so the port is this process's and not another listener's,
    /// and a metadata request lists this one broker: by then the controller
    /// has it registered and it serves produce and admin requests (an open
    /// port alone comes earlier).
    fn wait_ready(&mut self, from: usize) -> Result<(), String> {
        let log = self.log_path();
        let child = self.child.as_mut().expect("spawned");
        wait_for_line(child, &log, from, "Kafka Server started", "kafka")?;
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{}", self.port))
            .set("reconnect.backoff.max.ms", "200")
            .create()
            .expect("metadata client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(md) = client.fetch_metadata(None, Duration::from_secs(2)) {
                if md.brokers().len() == 1 {
                    return Ok(());
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!("kafka exited ({status}); log: {}", log.display()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kafka on 127.0.0.1:{} listed no broker within 60 s; log: {}",
                    self.port,
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The broker's process id while it runs (the benchmark reads its CPU).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The configs the broker reports for `topic` (name → value).
    pub async fn topic_configs(&self, topic: &str) -> std::collections::BTreeMap<String, String> {
        use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
            .await
            .expect("describe configs")
            .into_iter()
            .flat_map(|r| r.expect("topic described").entries)
            .filter_map(|e| e.value.map(|v| (e.name, v)))
            .collect()
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

    /// Kills the broker (an outage, no clean shutdown); the log dir is kept.
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same ports with the same log dir.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("restarting kafka: {e}");
        }
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

/// A consumer group id no other consumer uses (offsets are assigned, never
/// committed: the id only has to be unique).
fn unique_group_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
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
        .set("group.id", unique_group_id())
        .set("enable.auto.commit", "false")
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
    let root = repo_root().display();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_port_is_read_from_the_nats_server_log() {
        let log = "[9] 2026/01/01 00:00:00.000000 [INF] Starting JetStream\n\
                   [9] 2026/01/01 00:00:00.000001 [INF] Listening for client connections on 127.0.0.1:42005\n\
                   [9] 2026/01/01 00:00:00.000002 [INF] Server is ready\n";
        assert_eq!(listening_port(log, Path::new("nats.log")), Ok(42005));
        assert!(listening_port("[INF] Server is ready\n", Path::new("nats.log")).is_err());
    }
}
