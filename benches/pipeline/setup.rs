//! What the scenarios start and drive: the simulator and the relay as
//! child processes, a broker per run, counting clients, the relay's
//! messages prepared for a sink.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use studio_relay::config::{self, EncodingFormat, SinkConfig};
use studio_relay::model::{self, DataSource, Envelope, Origin};
use studio_relay::relay::MessageBuilder;
use studio_relay_testkit::live::{connected_sockets, metric_sum};
use studio_relay_testkit::process::{relay_binary, Relay};
use studio_relay_testkit::{KafkaBroker, NatsServer};

/// Sockets per tenant.
pub const SOURCES: usize = DataSource::ALL.len();

/// `studio-relay simulate` as a child process (its CPU is not the relay's),
/// on a port it picks.
pub struct Simulator {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Does the simulator at `addr` answer its stats endpoint?
fn answers_http(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    let request = "GET /_simulator/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut status = [0u8; 12];
    tcp.write_all(request.as_bytes()).is_ok()
        && tcp.read_exact(&mut status).is_ok()
        && status.starts_with(b"HTTP/1.1 200")
}

/// The address in the simulator's "listening" log line (JSON: its
/// `live_url` field, `ws://ADDR`).
fn logged_addr(log: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| {
            v.get("live_url")?
                .as_str()?
                .strip_prefix("ws://")?
                .parse()
                .ok()
        })
}

impl Simulator {
    pub fn start(tokens: &[String], extra: &[&str]) -> Simulator {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sim.log");
        // Warnings, and the one line that says where it listens.
        let logging = ["--log-format", "json", "--log-level"];
        let mut child = Command::new(relay_binary())
            .args(logging)
            .arg("warn,studio_relay::simulator=info")
            .args(["simulate", "--listen", "127.0.0.1:0", "--seed", "7"])
            .args(extra)
            // Many tokens would make a long command line; the env var takes a comma list.
            .env("STUDIO_SIM_TOKEN", tokens.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the simulator");
        // It logs its address once the simulated world is built (seconds
        // for 1,000 tenants); wait until it answers too, so that "time to
        // all connected" measures the relay, not the simulator's start.
        let deadline = Instant::now() + Duration::from_secs(180);
        let addr = loop {
            if let Some(addr) = logged_addr(&log).filter(|a| answers_http(*a)) {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the simulator exited ({status}); log: {}", log.display());
            }
            assert!(
                Instant::now() < deadline,
                "the simulator did not serve within 180 s; log: {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Simulator {
            child,
            addr,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn live_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tokens(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench-token-{i}")).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Nats,
    Kafka,
}

impl BrokerKind {
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Nats => "NATS JetStream",
            BrokerKind::Kafka => "Apache Kafka",
        }
    }

    /// The relay's `--sink` value.
    pub fn sink(self) -> &'static str {
        match self {
            BrokerKind::Nats => "nats",
            BrokerKind::Kafka => "kafka",
        }
    }
}

/// A broker started for one run, and the relay settings that point at it.
pub enum Broker {
    Nats(NatsServer),
    Kafka(KafkaBroker),
}

impl Broker {
    pub fn start(kind: BrokerKind) -> Broker {
        match kind {
            BrokerKind::Nats => Broker::Nats(NatsServer::start()),
            BrokerKind::Kafka => Broker::Kafka(KafkaBroker::start_for_load()),
        }
    }

    /// The broker's process, for its CPU time.
    pub fn pid(&self) -> u32 {
        match self {
            Broker::Nats(n) => n.pid(),
            Broker::Kafka(k) => k.pid(),
        }
        .expect("the broker runs")
    }

    pub fn kind(&self) -> BrokerKind {
        match self {
            Broker::Nats(_) => BrokerKind::Nats,
            Broker::Kafka(_) => BrokerKind::Kafka,
        }
    }

    /// `STUDIO_RELAY__*` settings (defaults otherwise: what users run).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Broker::Nats(n) => vec![
                ("STUDIO_RELAY__SINK__KIND", "nats".into()),
                ("STUDIO_RELAY__SINK__NATS__URL", n.url()),
            ],
            Broker::Kafka(k) => vec![
                ("STUDIO_RELAY__SINK__KIND", "kafka".into()),
                ("STUDIO_RELAY__SINK__KAFKA__BROKERS", k.bootstrap()),
                ("STUDIO_RELAY__SINK__KAFKA__CREATE_TOPICS", "true".into()),
            ],
        }
    }

    /// The same sink settings, as the library's config (for the ceiling).
    pub fn sink_config(&self) -> SinkConfig {
        let env = self
            .env()
            .into_iter()
            .chain([("STUDIO_RELAY__TENANTS__0__TOKEN", "unused".to_string())])
            .map(|(k, v)| (k.to_string(), v));
        config::load_from_str("", "bench", env, |p| std::fs::read_to_string(p))
            .expect("valid bench config")
            .sink
    }
}

pub fn format_name(f: EncodingFormat) -> &'static str {
    match f {
        EncodingFormat::Json => "json",
        EncodingFormat::Avro => "avro",
    }
}

/// Starts the relay process for `tenants` on `sim`, publishing to `broker`.
pub fn start_relay(
    sim: &Simulator,
    broker: &Broker,
    format: EncodingFormat,
    tenants: usize,
    extra_env: &[(&'static str, String)],
) -> (Relay, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = String::new();
    for (i, t) in tokens(tenants).iter().enumerate() {
        toml.push_str(&format!(
            "[[tenants]]\nname = \"t{i}\"\ntoken = \"{t}\"\n\n"
        ));
    }
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut env = broker.env();
    env.extend([
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL", sim.live_url()),
        ("STUDIO_RELAY__UPSTREAM__GRAPHQL_URL", sim.graphql_url()),
        ("STUDIO_RELAY__ENCODING__FORMAT", format_name(format).into()),
        // The firehose has no historic layer behind it to backfill from.
        ("STUDIO_RELAY__RELAY__GAP_BACKFILL", "false".into()),
    ]);
    env.extend(extra_env.iter().cloned());
    let cfg = cfg.to_string_lossy().to_string();
    let relay = Relay::spawn(&["--config", &cfg, "run"], &env);
    (relay, dir)
}

/// Waits until the relay reports `sockets` connected; returns how long it took.
pub async fn wait_connected(relay: &mut Relay, sockets: usize, started: Instant) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = relay.exited() {
            panic!("the relay exited ({status}):\n{}", relay.output());
        }
        let m = relay.metrics().await;
        if connected_sockets(&m) >= sockets {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not connect {sockets} sockets within 300 s:\n{}",
            relay.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn published(metrics: &str) -> f64 {
    metric_sum(metrics, "studio_relay_events_published_total", "")
}

/// Connects every socket of every tenant and counts frames; keeps the first
/// `keep` frames. Stops when the returned handle is dropped.
pub struct FrameCounter {
    count: Arc<AtomicU64>,
    kept: Arc<Mutex<Vec<(DataSource, Bytes)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FrameCounter {
    pub async fn connect(sim: &Simulator, tokens: &[String], keep: usize) -> FrameCounter {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let count = Arc::new(AtomicU64::new(0));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for token in tokens {
            for source in DataSource::ALL {
                let mut req = format!("{}/{}", sim.live_url(), source.as_str())
                    .into_client_request()
                    .unwrap();
                req.headers_mut()
                    .insert("Authorization", format!("Bearer {token}").parse().unwrap());
                let (ws, _) = tokio_tungstenite::connect_async(req)
                    .await
                    .expect("counting client connects");
                let (count, kept) = (count.clone(), kept.clone());
                tasks.push(tokio::spawn(async move {
                    let (_tx, mut rx) = ws.split();
                    while let Some(Ok(msg)) = rx.next().await {
                        if let Message::Text(t) = msg {
                            count.fetch_add(1, Ordering::Relaxed);
                            if keep > 0 {
                                let mut k = kept.lock().unwrap();
                                if k.len() < keep {
                                    k.push((source, Bytes::copy_from_slice(t.as_bytes())));
                                }
                            }
                        }
                    }
                }));
            }
        }
        FrameCounter { count, kept, tasks }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for FrameCounter {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Samples of realistic frames from the firehose (every source).
pub async fn capture_frames(n: usize) -> Vec<(DataSource, Bytes)> {
    let sim = Simulator::start(&tokens(1), &["--firehose", "0"]);
    let counter = FrameCounter::connect(&sim, &tokens(1), n).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.kept.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "captured too few frames");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let frames = counter.kept.lock().unwrap().clone();
    frames
}

/// The sink `sink_config` describes, connected and with every destination
/// of tenant `t0` prepared, and the relay's messages for `frames` as it
/// would publish them for that tenant.
pub async fn prepared_sink(
    sink_config: &SinkConfig,
    format: EncodingFormat,
    frames: &[(DataSource, Bytes)],
) -> (
    Arc<dyn studio_relay::sink::Sink>,
    Vec<studio_relay::sink::OutboundMessage>,
) {
    let builder = MessageBuilder::without_registry(format, sink_config);
    let sink = studio_relay::sink::build(sink_config, Default::default())
        .await
        .expect("sink connects");
    sink.prepare(&builder.all_destinations(["t0"], &DataSource::ALL))
        .await
        .expect("destinations exist");
    let now = chrono::Utc::now().timestamp_millis();
    let messages: Vec<_> = frames
        .iter()
        .filter_map(|(source, raw)| {
            let record = model::normalize_live(*source, raw).ok()?;
            builder
                .build(&Envelope::new("t0".into(), Origin::Live, now, record))
                .ok()
        })
        .collect();
    assert!(!messages.is_empty(), "no frame of the sample normalized");
    (sink, messages)
}
