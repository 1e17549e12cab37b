//! The pipeline benchmark: throughput, latency, cost, scale and
//! replay of the real `studio-relay` binary against its own simulator and
//! real brokers, next to each broker's own ceiling, in one run.
//!
//! ```text
//! bash scripts/bench                                  # full report → docs/benchmarks.md
//! cargo bench --bench pipeline -- --runs 1 --duration 10s --only relay
//! ```
//!
//! Under `cargo test` (no `--bench` argument) it runs in smoke mode: every
//! scenario for a second or two with one run, checking only that each figure
//! was measured, so the driver cannot rot. Everything listens on 127.0.0.1;
//! every load loop is bounded by a duration.
//!
//! Why each figure is measured the way it is:
//! - **Ceiling**: the broker's rate for the relay's own messages (frames
//!   captured from the simulator, normalized and encoded once, beforehand),
//!   sent through the same sink with the same settings and the same ack
//!   window, but with no socket reading and no normalization. Each lap
//!   gets fresh message ids, so JetStream's dedup does not flatter it.
//! - **Bare publisher** (NATS only): the issue's own reference point, a
//!   plain async-nats JetStream publisher with `Nats-Msg-Id` as its only
//!   header and 256 acks pending, sending the same payloads to the same
//!   subjects. Against the ceiling it shows what the relay's message
//!   (CloudEvents headers) and its sink cost, before any relay work.
//! - **Relay throughput**: the simulator in firehose mode (as fast as each
//!   socket is read, so TCP back-pressure finds the slower side) → the relay
//!   process → the broker; acknowledged events/s from the relay's metrics.
//! - **Simulator max**: a client that only counts frames, so the report
//!   shows who the bottleneck is.
//! - **Latency**: the simulator at a fixed rate. Frame received → broker ack
//!   from the relay's histogram, and its split by hand-over (frame queue,
//!   prepare, publish queue, send, ack) from the stage histogram, which
//!   says where the relay's tail waits; simulator send → consumer receive from the
//!   send time the firehose writes into each record's identity field. Run
//!   twice: JetStream file storage (what users run) and memory storage (the
//!   broker's disk taken out, which is where file storage's tail comes from).
//!   Next to each, the latency ceiling: a plain publisher sending the
//!   relay's messages through the same sink at the same rate, send → ack,
//!   which is the part of the tail that is the broker's and the machine's.
//! - **Cost**: CPU seconds (utime + stime from /proc) per million events and
//!   peak RSS (VmHWM) of the relay process during the throughput runs.
//! - **CPU budget**: the same CPU per million events for every process of
//!   both setups (the ceiling's publisher and broker; the relay run's relay,
//!   broker and simulator). They share the machine's cores, so when those
//!   are busy the ratio of the two rates is the inverse ratio of the sums:
//!   the report prints that prediction next to the measured ratio, which is
//!   what says why a ratio stops where it does.
//!
//! Each figure is the median of `--runs` runs, with min and max: these
//! machines are noisy, so ratios within one run mean more than absolutes.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::{json, Value};
use studio_relay::config::{self, EncodingFormat, SinkConfig};
use studio_relay::model::{self, DataSource, Envelope, Origin};
use studio_relay::ops::LATENCY_STAGES;
use studio_relay::relay::MessageBuilder;
use support::process::Relay;

/// The ceiling's publisher runs in this process: it gets the relay's
/// allocator (src/main.rs), so relay / ceiling compares like with like.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BIN: &str = env!("CARGO_BIN_EXE_studio-relay");
const SOURCES: usize = DataSource::ALL.len();

// ---------------------------------------------------------------- options

struct Opts {
    smoke: bool,
    runs: usize,
    /// Measured window of each throughput run (after the warm-up).
    duration: Duration,
    warmup: Duration,
    /// Events/s of the latency run (one tenant).
    latency_rate: u64,
    /// Tenant counts of the scale runs (1 is always added as the baseline).
    scale: Vec<usize>,
    /// Hours of history the replay run fetches.
    replay_hours: u32,
    /// Calls per second of simulated history for the replay run.
    replay_call_rate: f64,
    /// Scenario names to run (empty: all).
    only: Vec<String>,
    /// Where `pipeline.md` and `pipeline.json` are written.
    out_dir: PathBuf,
}

impl Opts {
    fn parse() -> Opts {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // `cargo bench` passes `--bench`; `cargo test` does not.
        let smoke = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--smoke");
        let mut o = if smoke {
            Opts {
                smoke,
                runs: 1,
                duration: Duration::from_secs(2),
                warmup: Duration::from_secs(1),
                latency_rate: 500,
                scale: vec![3],
                replay_hours: 2,
                replay_call_rate: 0.5,
                only: vec![],
                out_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke"),
            }
        } else {
            Opts {
                smoke,
                runs: 3,
                duration: Duration::from_secs(30),
                warmup: Duration::from_secs(5),
                latency_rate: 5_000,
                scale: vec![100, 1_000],
                replay_hours: 24,
                replay_call_rate: 0.5,
                only: vec![],
                out_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench"),
            }
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().unwrap_or_default();
            match a.as_str() {
                "--runs" => o.runs = value().parse().expect("--runs N"),
                "--duration" => {
                    o.duration = humantime::parse_duration(&value()).expect("--duration 30s")
                }
                "--warmup" => o.warmup = humantime::parse_duration(&value()).expect("--warmup 5s"),
                "--latency-rate" => o.latency_rate = value().parse().expect("--latency-rate N"),
                "--scale" => {
                    o.scale = value()
                        .split(',')
                        .map(|n| n.parse().expect("--scale 100,1000"))
                        .collect()
                }
                "--replay-hours" => o.replay_hours = value().parse().expect("--replay-hours N"),
                "--only" => o.only = value().split(',').map(str::to_string).collect(),
                "--out" => o.out_dir = PathBuf::from(value()),
                _ => {} // --bench, --smoke, libtest flags
            }
        }
        o.runs = o.runs.max(1);
        o
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

// ---------------------------------------------------------------- figures

/// (scenario, figure, unit).
type FigureKey = (String, String, &'static str);

/// The measured quantities, each over several runs.
#[derive(Default)]
struct Report {
    /// Values per figure, in insertion order.
    rows: Vec<(FigureKey, Vec<f64>)>,
    notes: Vec<String>,
}

impl Report {
    fn add(&mut self, scenario: &str, figure: &str, unit: &'static str, value: f64) {
        let key = (scenario.to_string(), figure.to_string(), unit);
        match self.rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(value),
            None => self.rows.push((key, vec![value])),
        }
        eprintln!("  {scenario} / {figure}: {} {unit}", fmt_num(value));
    }

    fn median(&self, scenario: &str, figure: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|((s, f, _), _)| s == scenario && f == figure)
            .map(|(_, v)| stats(v).0)
    }
}

/// (median, min, max).
fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        let s = format!("{:.0}", x);
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

// ---------------------------------------------------------------- processes

/// CPU seconds (user + system) and peak/current RSS of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStat {
    cpu_secs: f64,
    rss_kb: u64,
    peak_rss_kb: u64,
}

fn proc_stat(pid: u32) -> ProcStat {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    ProcStat {
        cpu_secs: (ticks(11) + ticks(12)) / clock_ticks(),
        rss_kb: kb("VmRSS:"),
        peak_rss_kb: kb("VmHWM:"),
    }
}

/// CPU seconds spent over `events` events, per million events.
fn per_million(cpu_secs: f64, events: f64) -> f64 {
    cpu_secs / events * 1e6
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `studio-relay simulate` as a child process (its CPU is not the relay's).
struct Simulator {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Does the simulator on `port` answer its stats endpoint?
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    let request = "GET /_simulator/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut status = [0u8; 12];
    tcp.write_all(request.as_bytes()).is_ok()
        && tcp.read_exact(&mut status).is_ok()
        && status.starts_with(b"HTTP/1.1 200")
}

impl Simulator {
    fn start(tokens: &[String], extra: &[&str]) -> Simulator {
        let dir = tempfile::tempdir().unwrap();
        let port = support::free_port();
        let child = Command::new(BIN)
            .args(["--log-level", "warn", "simulate", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--seed", "7"])
            .args(extra)
            // Many tokens would make a long command line; the env var takes a comma list.
            .env("STUDIO_SIM_TOKEN", tokens.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("sim.log")).unwrap())
            .spawn()
            .expect("start the simulator");
        // The port accepts connections before the simulated world is built
        // (seconds for 1,000 tenants); wait until it answers, so that "time
        // to all connected" measures the relay, not the simulator's start.
        let deadline = Instant::now() + Duration::from_secs(180);
        while !answers_http(port) {
            assert!(
                Instant::now() < deadline,
                "simulator did not serve on {port} within 180 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Simulator {
            child,
            port,
            _dir: dir,
        }
    }

    fn live_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn graphql_url(&self) -> String {
        format!("http://127.0.0.1:{}/graphql", self.port)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tokens(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("bench-token-{i}")).collect()
}

/// A broker started for one run, and the relay settings that point at it.
enum Broker {
    Nats(support::NatsServer),
    Kafka(support::KafkaBroker),
}

impl Broker {
    fn start(kind: &str) -> Broker {
        match kind {
            "nats" => Broker::Nats(support::NatsServer::start()),
            _ => Broker::Kafka(support::KafkaBroker::start_for_load()),
        }
    }

    /// The broker's process, for its CPU time.
    fn pid(&self) -> u32 {
        match self {
            Broker::Nats(n) => n.pid(),
            Broker::Kafka(k) => k.pid(),
        }
        .expect("the broker runs")
    }

    fn name(&self) -> &'static str {
        match self {
            Broker::Nats(_) => "NATS JetStream",
            Broker::Kafka(_) => "Apache Kafka",
        }
    }

    /// `STUDIO_RELAY__*` settings (defaults otherwise: what users run).
    fn env(&self) -> Vec<(&'static str, String)> {
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
    fn sink_config(&self) -> SinkConfig {
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

fn format_name(f: EncodingFormat) -> &'static str {
    match f {
        EncodingFormat::Json => "json",
        EncodingFormat::Avro => "avro",
    }
}

/// Starts the relay process for `tenants` on `sim`, publishing to `broker`.
fn start_relay(
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
async fn wait_connected(relay: &mut Relay, sockets: usize, started: Instant) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = relay.exited() {
            panic!("the relay exited ({status}):\n{}", relay.output());
        }
        let m = relay.metrics().await;
        if support::live::connected_sockets(&m) >= sockets {
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

fn published(metrics: &str) -> f64 {
    support::live::metric_sum(metrics, "studio_relay_events_published_total", "")
}

// ---------------------------------------------------------------- clients

/// Connects every socket of every tenant and counts frames; keeps the first
/// `keep` frames. Stops when the returned handle is dropped.
struct FrameCounter {
    count: Arc<AtomicU64>,
    kept: Arc<Mutex<Vec<(DataSource, Bytes)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FrameCounter {
    async fn connect(sim: &Simulator, tokens: &[String], keep: usize) -> FrameCounter {
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

    fn count(&self) -> u64 {
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

/// Frames/s a counting-only client gets from the firehose over `duration`.
async fn counted_rate(counter: &FrameCounter, warmup: Duration, duration: Duration) -> f64 {
    tokio::time::sleep(warmup).await;
    let (c0, t0) = (counter.count(), Instant::now());
    tokio::time::sleep(duration).await;
    (counter.count() - c0) as f64 / t0.elapsed().as_secs_f64()
}

/// Samples of realistic frames from the firehose (every source).
async fn capture_frames(n: usize) -> Vec<(DataSource, Bytes)> {
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

// ---------------------------------------------------------------- scenarios

/// One ceiling run: the rate, and the CPU each side spent per event.
struct CeilingSample {
    events_per_sec: f64,
    /// This process (the plain publisher), CPU seconds per million events.
    publisher_cpu_per_million: f64,
    broker_cpu_per_million: f64,
}

/// The broker's own rate for the relay's messages: no sockets, no normalizing.
// `closed_loop`'s sender yields the ack future on purpose: it is awaited later.
#[allow(clippy::async_yields_async)]
async fn ceiling(
    broker: &Broker,
    format: EncodingFormat,
    frames: &[(DataSource, Bytes)],
    o: &Opts,
) -> CeilingSample {
    let (sink, messages) = prepared_sink(&broker.sink_config(), format, frames).await;
    // The relay's own ack window (the sink applies its own pending-ack limit too).
    let window = studio_relay::relay::PublisherSettings::default().window;
    closed_loop(broker, window, o, async |sent| {
        let mut m = messages[sent % messages.len()].clone();
        // A new id per lap: JetStream must store every one.
        m.event_id = format!("{}-{}", m.event_id, sent / messages.len());
        let ack = sink.send(&m).await.expect("broker takes the message");
        async move { ack.await.expect("broker acks") }
    })
    .await
}

/// Sends message after message (`send` gets the count sent so far and
/// returns the message's ack) for the warm-up and the measured duration,
/// with at most `window` awaiting their ack. Returns the acknowledged rate
/// and the CPU per event of this process and of the broker, measured after
/// the warm-up.
async fn closed_loop<A: std::future::Future<Output = ()>>(
    broker: &Broker,
    window: usize,
    o: &Opts,
    mut send: impl AsyncFnMut(usize) -> A,
) -> CeilingSample {
    let mut inflight = FuturesUnordered::new();
    let (mut sent, mut acked) = (0usize, 0u64);
    let start = Instant::now();
    let (mut t0, mut a0) = (None, 0u64);
    let (mut publisher0, mut broker0) = (ProcStat::default(), ProcStat::default());
    let end = start + o.warmup + o.duration;
    while Instant::now() < end {
        if t0.is_none() && start.elapsed() >= o.warmup {
            t0 = Some(Instant::now());
            a0 = acked;
            (publisher0, broker0) = (proc_stat(std::process::id()), proc_stat(broker.pid()));
        }
        if inflight.len() < window {
            let next = send(sent);
            tokio::pin!(next);
            // Keep settling acks while the sender makes us wait: a sink's
            // own ack window frees up only as they are settled.
            let ack = loop {
                tokio::select! {
                    ack = &mut next => break ack,
                    Some(()) = inflight.next(), if !inflight.is_empty() => acked += 1,
                }
            };
            inflight.push(ack);
            sent += 1;
        } else if let Some(()) = inflight.next().await {
            acked += 1;
        }
    }
    let t0 = t0.unwrap_or(start);
    let events = (acked - a0) as f64;
    let rate = events / t0.elapsed().as_secs_f64();
    let (publisher1, broker1) = (proc_stat(std::process::id()), proc_stat(broker.pid()));
    while inflight.next().await.is_some() {}
    CeilingSample {
        events_per_sec: rate,
        publisher_cpu_per_million: per_million(publisher1.cpu_secs - publisher0.cpu_secs, events),
        broker_cpu_per_million: per_million(broker1.cpu_secs - broker0.cpu_secs, events),
    }
}

/// The sink `sink_config` describes, connected and with every destination
/// of tenant `t0` prepared, and the relay's messages for `frames` as it
/// would publish them for that tenant.
async fn prepared_sink(
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

const BARE_PUBLISHER: &str =
    "reference: bare async-nats publisher (Nats-Msg-Id only, 256 acks pending)";

/// The issue's reference publisher: plain async-nats, JetStream, the same
/// payloads and subjects, `Nats-Msg-Id` as the only header, 256 acks
/// pending, and no sink, no CloudEvents headers, no retry bookkeeping. Its
/// rate against the ceiling's shows what the relay's message format and
/// sink cost the broker and the client, apart from the relay's own work.
#[allow(clippy::async_yields_async)] // as in `ceiling`
async fn bare_nats_publisher(
    broker: &Broker,
    format: EncodingFormat,
    frames: &[(DataSource, Bytes)],
    o: &Opts,
) -> CeilingSample {
    let Broker::Nats(nats) = broker else {
        panic!("the bare publisher is a NATS client")
    };
    // The stream, as the relay creates it; the sink is not used to send.
    let (sink, messages) = prepared_sink(&broker.sink_config(), format, frames).await;
    drop(sink);
    let client = async_nats::connect(nats.url())
        .await
        .expect("NATS connects");
    let js = async_nats::jetstream::new(client);
    closed_loop(broker, 256, o, async |sent| {
        let m = &messages[sent % messages.len()];
        let mut headers = async_nats::HeaderMap::new();
        let id = format!("{}-{}", m.event_id, sent / messages.len());
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = js
            .publish_with_headers(m.destination.clone(), headers, m.payload.clone())
            .await
            .expect("broker takes the message");
        async move {
            ack.await.expect("broker acks");
        }
    })
    .await
}

/// One relay throughput run at the firehose's full rate.
struct ThroughputSample {
    events_per_sec: f64,
    cpu_secs_per_million: f64,
    peak_rss_mb: f64,
    /// The other two processes on the same cores, CPU seconds per million events.
    broker_cpu_per_million: f64,
    simulator_cpu_per_million: f64,
}

async fn relay_throughput(
    broker: &Broker,
    format: EncodingFormat,
    tenants: usize,
    o: &Opts,
) -> ThroughputSample {
    let mut args = vec!["--firehose", "0"];
    if tenants > 1 {
        args.extend(["--send-buffer", SCALE_SEND_BUFFER]);
    }
    let sim = Simulator::start(&tokens(tenants), &args);
    let started = Instant::now();
    let (mut relay, _dir) = start_relay(&sim, broker, format, tenants, &[]);
    wait_connected(&mut relay, tenants * SOURCES, started).await;
    tokio::time::sleep(o.warmup).await;
    let cpu = |pid| proc_stat(pid).cpu_secs;
    let (p0, s0, t0) = (
        published(&relay.metrics().await),
        proc_stat(relay.pid()),
        Instant::now(),
    );
    let (b0, m0) = (cpu(broker.pid()), cpu(sim.child.id()));
    tokio::time::sleep(o.duration).await;
    let (p1, s1) = (published(&relay.metrics().await), proc_stat(relay.pid()));
    let (b1, m1) = (cpu(broker.pid()), cpu(sim.child.id()));
    let secs = t0.elapsed().as_secs_f64();
    let events = p1 - p0;
    assert!(
        events > 0.0,
        "nothing published in the measured window:\n{}",
        relay.output()
    );
    ThroughputSample {
        events_per_sec: events / secs,
        cpu_secs_per_million: per_million(s1.cpu_secs - s0.cpu_secs, events),
        peak_rss_mb: s1.peak_rss_kb as f64 / 1024.0,
        broker_cpu_per_million: per_million(b1 - b0, events),
        simulator_cpu_per_million: per_million(m1 - m0, events),
    }
}

/// Latency percentiles at a fixed rate into NATS (JSON).
struct LatencySample {
    relay: [f64; 3],
    /// The same for each of [`LATENCY_STAGES`].
    stages: [[f64; 3]; 5],
    end_to_end: [f64; 3],
    events_per_sec: f64,
}

const QUANTILES: [f64; 3] = [0.5, 0.99, 0.999];
const END_TO_END: &str = "studio_relay_end_to_end_latency_seconds";
const STAGE_LATENCY: &str = "studio_relay_stage_latency_seconds";

/// `storage`: the JetStream stream's storage, `file` (what users run) or
/// `memory` (the same without the broker's disk writes).
async fn latency(o: &Opts, storage: &str) -> LatencySample {
    let broker = Broker::start("nats");
    let Broker::Nats(nats) = &broker else {
        unreachable!()
    };
    // A core subscription sees each message when the server routes it, as
    // JetStream stores it: the consumer side of simulator send → receive.
    let client = async_nats::connect(nats.url())
        .await
        .expect("connect to NATS");
    let mut sub = client
        .subscribe("telavox.studio.>")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let (m, l) = (measuring.clone(), latencies.clone());
    let consumer = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let now_us = chrono::Utc::now().timestamp_micros();
            if !m.load(Ordering::Relaxed) {
                continue;
            }
            if let Some(sent) = send_time_us(&msg.payload) {
                l.lock().unwrap().push((now_us - sent) as f64 / 1e6);
            }
        }
    });
    let rate = o.latency_rate.to_string();
    let sim = Simulator::start(&tokens(1), &["--firehose", &rate]);
    let storage_env = [("STUDIO_RELAY__SINK__NATS__STORAGE", storage.to_string())];
    let (mut relay, _dir) = start_relay(&sim, &broker, EncodingFormat::Json, 1, &storage_env);
    wait_connected(&mut relay, SOURCES, Instant::now()).await;
    tokio::time::sleep(o.warmup).await;
    // The end-to-end histogram, then one per stage.
    let series: Vec<(&str, String)> = std::iter::once((END_TO_END, String::new()))
        .chain(
            LATENCY_STAGES
                .iter()
                .map(|s| (STAGE_LATENCY, format!("stage=\"{s}\""))),
        )
        .collect();
    let read = |text: &str| {
        series
            .iter()
            .map(|(name, labels)| histogram(text, name, labels))
            .collect::<Vec<_>>()
    };
    let text = relay.metrics().await;
    let (h0, p0, t0) = (read(&text), published(&text), Instant::now());
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(o.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let text = relay.metrics().await;
    let (h1, p1) = (read(&text), published(&text));
    let events_per_sec = (p1 - p0) / t0.elapsed().as_secs_f64();
    consumer.abort();
    // The measured window's quantiles: the counts' difference.
    let quantiles: Vec<[f64; 3]> = h0
        .iter()
        .zip(&h1)
        .map(|(before, after)| {
            let delta: Vec<(f64, f64)> = after
                .iter()
                .map(|(le, c)| {
                    (
                        *le,
                        c - before.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1),
                    )
                })
                .collect();
            QUANTILES.map(|q| histogram_quantile(&delta, q))
        })
        .collect();
    let mut e2e = latencies.lock().unwrap().clone();
    assert!(!e2e.is_empty(), "the consumer saw no firehose record");
    e2e.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| e2e[((e2e.len() as f64 * q) as usize).min(e2e.len() - 1)];
    LatencySample {
        relay: quantiles[0],
        stages: std::array::from_fn(|i| quantiles[i + 1]),
        end_to_end: QUANTILES.map(pick),
        events_per_sec,
    }
}

/// The latency the broker and this machine give a plain publisher at the
/// latency run's rate: the relay's messages (JSON) sent through the same
/// sink, `rate / 1000` every millisecond, each timed from send to ack. It
/// is the part of the relay's frame → ack latency that is not the relay's.
async fn ceiling_latency(o: &Opts, storage: &str, frames: &[(DataSource, Bytes)]) -> [f64; 3] {
    let broker = Broker::start("nats");
    let mut sink_config = broker.sink_config();
    sink_config.nats.storage = storage.to_string();
    let (sink, messages) = prepared_sink(&sink_config, EncodingFormat::Json, frames).await;
    let per_tick = (o.latency_rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut inflight = FuturesUnordered::new();
    let mut latencies = Vec::new();
    let start = Instant::now();
    let (measure_from, end) = (start + o.warmup, start + o.warmup + o.duration);
    let mut sent = 0usize;
    let mut settled = |(t, d): (Instant, f64)| {
        if t >= measure_from {
            latencies.push(d);
        }
    };
    while Instant::now() < end {
        tokio::select! {
            _ = tick.tick() => {
                for _ in 0..per_tick {
                    let mut m = messages[sent % messages.len()].clone();
                    m.event_id = format!("{}-{}", m.event_id, sent / messages.len());
                    let t = Instant::now();
                    let send = sink.send(&m);
                    tokio::pin!(send);
                    // The sink's ack window frees up only as acks are
                    // settled: keep settling them while it makes us wait.
                    let ack = loop {
                        tokio::select! {
                            r = &mut send => break r.expect("broker takes the message"),
                            Some(done) = inflight.next(), if !inflight.is_empty() => settled(done),
                        }
                    };
                    inflight.push(async move {
                        ack.await.expect("broker acks");
                        (t, t.elapsed().as_secs_f64())
                    });
                    sent += 1;
                }
            }
            Some(done) = inflight.next(), if !inflight.is_empty() => settled(done),
        }
    }
    while let Some(done) = inflight.next().await {
        settled(done);
    }
    assert!(!latencies.is_empty(), "no ack in the measured window");
    latencies.sort_by(|a, b| a.total_cmp(b));
    QUANTILES.map(|q| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)])
}

/// The firehose's send time, from the identity field of a JSON envelope.
fn send_time_us(payload: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let record = v.get("record")?;
    let id = record
        .get("id_call")
        .filter(|x| !x.is_null())
        .or_else(|| record.get("agent")?.get("id"))?;
    let text = match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    studio_relay::simulator::firehose_send_time_us(&text)
}

/// Cumulative (le, count) of one of the relay's latency histograms: its
/// series whose labels contain `labels` (all of them for ""), summed.
fn histogram(metrics: &str, name: &str, labels: &str) -> Vec<(f64, f64)> {
    let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
    let prefix = format!("{name}_bucket{{");
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        if !rest.contains(labels) {
            continue;
        }
        let Some(le) = rest.split("le=\"").nth(1).and_then(|x| x.split('"').next()) else {
            continue;
        };
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0.0);
        *by_le.entry(le.to_string()).or_default() += count;
    }
    let mut out: Vec<(f64, f64)> = by_le
        .into_iter()
        .map(|(le, c)| {
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                },
                c,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Prometheus' `histogram_quantile`: linear within the bucket.
fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower;
            }
            let inside = count - below;
            return if inside <= 0.0 {
                le
            } else {
                lower + (le - lower) * (rank - below) / inside
            };
        }
        lower = le;
        below = count;
    }
    lower
}

/// The simulator's kernel send buffer per socket in the multi-tenant runs.
/// With the kernel's own tuning (up to 4 MiB per socket), a firehose into
/// 5,000 sockets faster than the relay reads parks gigabytes in the kernel
/// and pushes the machine into TCP memory pressure, which then measures the
/// kernel, not the relay (580 events/s, every process idle). 32 KiB keeps
/// the 1,000-tenant run near 1 GB of socket memory, both sides included.
const SCALE_SEND_BUFFER: &str = "32768";

/// Idle relay with `tenants` tenants: time to all connected and RSS.
async fn scale_idle(tenants: usize, o: &Opts) -> (f64, f64) {
    let broker = Broker::start("nats");
    // One event per second per tenant: connected, nearly idle.
    let sim = Simulator::start(&tokens(tenants), &["--firehose", "1"]);
    let started = Instant::now();
    let (mut relay, _dir) = start_relay(&sim, &broker, EncodingFormat::Json, tenants, &[]);
    let connect_secs = wait_connected(&mut relay, tenants * SOURCES, started).await;
    tokio::time::sleep(o.warmup).await;
    let rss_mb = proc_stat(relay.pid()).rss_kb as f64 / 1024.0;
    (connect_secs, rss_mb)
}

/// A replay of `hours` of simulated history into `broker`: records/s.
async fn replay(broker: &Broker, o: &Opts) -> f64 {
    let days = o.replay_hours.div_ceil(24).to_string();
    let rate = o.replay_call_rate.to_string();
    let sim = Simulator::start(&tokens(1), &["--history-days", &days, "--rate", &rate]);
    // The simulator's history is the days before it started: replay the
    // whole hours just before now.
    let to = chrono::Utc::now().timestamp() / 3600 * 3600;
    let from = to - 3600 * i64::from(o.replay_hours);
    let iso = |s: i64| {
        chrono::DateTime::from_timestamp(s, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let mut env = broker.env();
    env.extend([
        ("STUDIO_RELAY__UPSTREAM__GRAPHQL_URL", sim.graphql_url()),
        ("STUDIO_RELAY__TENANTS__0__NAME", "t0".into()),
        ("STUDIO_RELAY__TENANTS__0__TOKEN", tokens(1)[0].clone()),
    ]);
    let sink = match broker {
        Broker::Nats(_) => "nats",
        Broker::Kafka(_) => "kafka",
    };
    let mut relay = Relay::spawn(
        &[
            "replay",
            "--from",
            &iso(from),
            "--to",
            &iso(to),
            "--window",
            "1h",
            "--concurrency",
            "4",
            "--sink",
            sink,
        ],
        &env,
    );
    let status = relay.wait(Duration::from_secs(1800)).await;
    let out = relay.output();
    assert!(status.success(), "replay failed:\n{out}");
    // "total N records in S s (R/s)"
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("total "))
        .unwrap_or("");
    let mut words = line.split_whitespace();
    let records: f64 = words.nth(1).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let secs: f64 = words
        .nth(2)
        .and_then(|x| x.trim_end_matches('s').parse().ok())
        .unwrap_or(0.0);
    assert!(
        records > 0.0 && secs > 0.0,
        "replay printed no summary:\n{out}"
    );
    records / secs
}

// ---------------------------------------------------------------- driver

const COMBOS: [(&str, EncodingFormat); 4] = [
    ("nats", EncodingFormat::Json),
    ("nats", EncodingFormat::Avro),
    ("kafka", EncodingFormat::Json),
    ("kafka", EncodingFormat::Avro),
];

async fn run(o: &Opts) -> Report {
    let mut r = Report::default();
    let started = Instant::now();
    if o.wants("simulator") {
        eprintln!("== simulator maximum (a client that only counts frames)");
        for _ in 0..o.runs {
            let sim = Simulator::start(&tokens(1), &["--firehose", "0"]);
            let counter = FrameCounter::connect(&sim, &tokens(1), 0).await;
            let rate = counted_rate(&counter, o.warmup, o.duration).await;
            r.add("simulator", "firehose → counting client", "events/s", rate);
        }
    }
    if o.wants("relay") {
        let frames = capture_frames(if o.smoke { 500 } else { 20_000 }).await;
        for (kind, format) in COMBOS {
            for _ in 0..o.runs {
                let broker = Broker::start(kind);
                let label = format!("{} {}", broker.name(), format_name(format));
                eprintln!("== {label}");
                let c = ceiling(&broker, format, &frames, o).await;
                r.add(
                    &label,
                    "ceiling (plain publisher)",
                    "events/s",
                    c.events_per_sec,
                );
                drop(broker);
                if kind == "nats" {
                    let broker = Broker::start(kind);
                    let b = bare_nats_publisher(&broker, format, &frames, o).await;
                    for (figure, unit, value) in [
                        (BARE_PUBLISHER, "events/s", b.events_per_sec),
                        (
                            "bare publisher: its CPU per million events",
                            "CPU-s",
                            b.publisher_cpu_per_million,
                        ),
                        (
                            "bare publisher: broker CPU per million events",
                            "CPU-s",
                            b.broker_cpu_per_million,
                        ),
                    ] {
                        r.add(&label, figure, unit, value);
                    }
                }
                let broker = Broker::start(kind);
                let t = relay_throughput(&broker, format, 1, o).await;
                r.add(&label, "relay", "events/s", t.events_per_sec);
                r.add(
                    &label,
                    "relay / ceiling",
                    "%",
                    100.0 * t.events_per_sec / c.events_per_sec,
                );
                r.add(
                    &label,
                    "relay CPU per million events",
                    "CPU-s",
                    t.cpu_secs_per_million,
                );
                r.add(&label, "relay peak RSS", "MB", t.peak_rss_mb);
                // Where the cores went, per event, in each setup: all
                // processes share the same 2 cores, so when they are busy
                // the ratio of the rates is the inverse ratio of these sums.
                let ceiling_cpu = c.publisher_cpu_per_million + c.broker_cpu_per_million;
                let relay_cpu =
                    t.cpu_secs_per_million + t.broker_cpu_per_million + t.simulator_cpu_per_million;
                for (figure, value) in [
                    (
                        "ceiling: publisher CPU per million events",
                        c.publisher_cpu_per_million,
                    ),
                    (
                        "ceiling: broker CPU per million events",
                        c.broker_cpu_per_million,
                    ),
                    (
                        "relay run: broker CPU per million events",
                        t.broker_cpu_per_million,
                    ),
                    (
                        "relay run: simulator CPU per million events",
                        t.simulator_cpu_per_million,
                    ),
                ] {
                    r.add(&label, figure, "CPU-s", value);
                }
                r.add(
                    &label,
                    "relay / ceiling if CPU-bound (ceiling's CPU per event / relay run's)",
                    "%",
                    100.0 * ceiling_cpu / relay_cpu,
                );
            }
        }
    }
    // File storage is what users run; memory storage takes the broker's
    // disk out, which is where the tail of the first one comes from.
    for (storage, label) in [
        ("file", latency_scenario(o)),
        (
            "memory",
            format!(
                "latency at {} events/s (NATS, memory storage, JSON)",
                o.latency_rate
            ),
        ),
    ] {
        if !o.wants("latency") {
            break;
        }
        eprintln!("== {label}");
        let frames = capture_frames(if o.smoke { 200 } else { 2_000 }).await;
        for _ in 0..o.runs {
            let _ = Command::new("sync").status();
            let c = ceiling_latency(o, storage, &frames).await;
            for (q, v) in QUANTILES.iter().zip(c) {
                r.add(
                    &label,
                    &format!("ceiling: plain publisher send → broker ack p{}", q * 100.0),
                    "ms",
                    v * 1e3,
                );
            }
            // The throughput runs before this leave gigabytes of JetStream
            // files for the kernel to write back; that disk traffic showed
            // as a 10-22 ms p99 here (3-4 ms without it).
            let _ = Command::new("sync").status();
            let l = latency(o, storage).await;
            r.add(&label, "rate achieved", "events/s", l.events_per_sec);
            for (q, v) in QUANTILES.iter().zip(l.relay) {
                r.add(
                    &label,
                    &format!("frame → broker ack p{}", q * 100.0),
                    "ms",
                    v * 1e3,
                );
            }
            // Where the relay's share of it waits. A stage's quantiles
            // do not add up to the whole's: its slow events are not
            // always the same ones.
            for (stage, qs) in LATENCY_STAGES.iter().zip(l.stages) {
                for (q, v) in QUANTILES.iter().zip(qs) {
                    if *q < 0.999 {
                        r.add(
                            &label,
                            &format!("relay stage {stage} p{}", q * 100.0),
                            "ms",
                            v * 1e3,
                        );
                    }
                }
            }
            for (q, v) in QUANTILES.iter().zip(l.end_to_end) {
                r.add(
                    &label,
                    &format!("simulator send → consumer p{}", q * 100.0),
                    "ms",
                    v * 1e3,
                );
            }
        }
    }
    if o.wants("scale") {
        let mut counts = vec![1];
        counts.extend(o.scale.iter().copied().filter(|&n| n > 1));
        for _ in 0..o.runs {
            let mut base_rss = 0.0;
            for &n in &counts {
                let label = format!("scale: {n} tenant(s) × 5 sockets (NATS, JSON)");
                eprintln!("== {label}");
                let (connect, rss) = scale_idle(n, o).await;
                r.add(&label, "time to all connected", "s", connect);
                r.add(&label, "RSS, connected and idle", "MB", rss);
                if n == 1 {
                    base_rss = rss;
                } else {
                    let per_socket_kb = (rss - base_rss) * 1024.0 / (SOURCES * (n - 1)) as f64;
                    r.add(&label, "RSS per additional socket", "KB", per_socket_kb);
                    let broker = Broker::start("nats");
                    let t = relay_throughput(&broker, EncodingFormat::Json, n, o).await;
                    r.add(
                        &label,
                        "relay, events spread over all tenants",
                        "events/s",
                        t.events_per_sec,
                    );
                    r.add(&label, "relay peak RSS under load", "MB", t.peak_rss_mb);
                }
            }
        }
    }
    if o.wants("replay") {
        for kind in ["nats", "kafka"] {
            for _ in 0..o.runs {
                let broker = Broker::start(kind);
                let label = format!("replay of {} h into {}", o.replay_hours, broker.name());
                eprintln!("== {label}");
                let rate = replay(&broker, o).await;
                r.add(
                    &label,
                    "records/s (simulator's GraphQL included)",
                    "records/s",
                    rate,
                );
            }
        }
    }
    r.notes.push(format!(
        "Total benchmark time: {:.0} s.",
        started.elapsed().as_secs_f64()
    ));
    r
}

// ---------------------------------------------------------------- report

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let version = |cmd: &std::path::Path, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    };
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": (mem_gib * 10.0).round() / 10.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "nats_server": version(&support::tools_dir().join("bin/nats-server"), "--version"),
        "kafka": format!("Apache Kafka {}", support::kafka_version()),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// The latency run users compare with the target (file storage).
fn latency_scenario(o: &Opts) -> String {
    format!("latency at {} events/s (NATS, JSON)", o.latency_rate)
}

/// The performance targets: (scenario, figure, comparison, target, label).
fn targets(o: &Opts) -> Vec<(String, &'static str, bool, f64, &'static str)> {
    let lat = latency_scenario(o);
    let big = o.scale.iter().copied().max().unwrap_or(1);
    vec![
        (
            "NATS JetStream json".into(),
            "relay / ceiling",
            true,
            80.0,
            "≥ 80% of the ceiling",
        ),
        (
            "Apache Kafka json".into(),
            "relay / ceiling",
            true,
            80.0,
            "≥ 80% of the ceiling",
        ),
        (
            "NATS JetStream json".into(),
            "relay",
            true,
            100_000.0,
            "≥ 100,000 events/s",
        ),
        (lat, "frame → broker ack p99", false, 5.0, "p99 < 5 ms"),
        (
            "scale: 1 tenant(s) × 5 sockets (NATS, JSON)".into(),
            "RSS, connected and idle",
            false,
            30.0,
            "< 30 MB for one tenant",
        ),
        (
            format!("scale: {big} tenant(s) × 5 sockets (NATS, JSON)"),
            "RSS per additional socket",
            false,
            50.0,
            "< 50 KB per socket",
        ),
    ]
}

fn render(r: &Report, o: &Opts, m: &Value) -> (String, Value) {
    let mut md = String::new();
    md.push_str(&format!(
        "Machine: {}, {} cores, {} GiB, Linux {}, {}, {}; `{}` build. {} run(s) per figure, {} s measured after {} s warm-up.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["nats_server"].as_str().unwrap_or("?"),
        m["kafka"].as_str().unwrap_or("?"),
        m["profile"].as_str().unwrap_or("?"),
        o.runs,
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64(),
    ));
    md.push_str(
        "| scenario | figure | median | min | max | unit |\n|---|---|---:|---:|---:|---|\n",
    );
    let mut rows = Vec::new();
    for ((scenario, figure, unit), values) in &r.rows {
        let (med, min, max) = stats(values);
        md.push_str(&format!(
            "| {scenario} | {figure} | {} | {} | {} | {unit} |\n",
            fmt_num(med),
            fmt_num(min),
            fmt_num(max)
        ));
        rows.push(json!({"scenario": scenario, "figure": figure, "unit": unit, "median": med, "min": min, "max": max, "values": values}));
    }
    md.push_str("\n| target | measured (median) | met |\n|---|---:|---|\n");
    let mut checks = Vec::new();
    for (scenario, figure, at_least, target, label) in targets(o) {
        let Some(v) = r.median(&scenario, figure) else {
            continue;
        };
        let met = if at_least { v >= target } else { v < target };
        md.push_str(&format!(
            "| {label} ({scenario}) | {} | {} |\n",
            fmt_num(v),
            if met { "yes" } else { "**no**" }
        ));
        checks.push(json!({"target": label, "scenario": scenario, "figure": figure, "value": v, "met": met}));
    }
    for n in &r.notes {
        md.push_str(&format!("\n{n}\n"));
    }
    let json = json!({"machine": m, "runs": o.runs, "duration_s": o.duration.as_secs_f64(), "rows": rows, "targets": checks});
    (md, json)
}

fn write(dir: &Path, md: &str, json: &Value) {
    std::fs::create_dir_all(dir).expect("create the report directory");
    std::fs::write(dir.join("pipeline.md"), md).unwrap();
    std::fs::write(
        dir.join("pipeline.json"),
        serde_json::to_string_pretty(json).unwrap(),
    )
    .unwrap();
}

fn main() {
    let o = Opts::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(run(&o));
    let (md, json) = render(&report, &o, &machine());
    write(&o.out_dir, &md, &json);
    println!("{md}");
    eprintln!("report written to {}", o.out_dir.display());
    if o.smoke {
        // Smoke mode proves the driver still measures every figure.
        let latency = latency_scenario(&o);
        let expected = [
            ("simulator", "firehose → counting client"),
            ("NATS JetStream json", "relay"),
            ("Apache Kafka avro", "relay"),
            ("NATS JetStream avro", "ceiling (plain publisher)"),
            ("NATS JetStream json", BARE_PUBLISHER),
            (&latency, "relay stage ack p50"),
        ];
        for (scenario, figure) in expected {
            if !o.only.is_empty() {
                break;
            }
            let v = report.median(scenario, figure).unwrap_or(0.0);
            assert!(
                v > 0.0,
                "smoke: {scenario} / {figure} was not measured (got {v})"
            );
        }
        let missing: Vec<_> = report
            .rows
            .iter()
            .filter(|(_, v)| v.iter().any(|x| !x.is_finite() && !x.is_nan()))
            .map(|((s, f, _), _)| format!("{s} / {f}"))
            .collect();
        assert!(missing.is_empty(), "smoke: infinite figures: {missing:?}");
    }
}
