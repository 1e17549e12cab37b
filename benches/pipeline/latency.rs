//! Latency at a fixed rate into NATS (JSON): frame → broker ack from the
//! relay's histograms, split by stage; simulator send → consumer receive;
//! and the latency ceiling, a plain publisher at the same rate.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::Value;
use studio_relay::config::EncodingFormat;
use studio_relay::model::DataSource;
use studio_relay::ops::LATENCY_STAGES;

use crate::opts::Opts;
use crate::report::{Figure, Figures, Section, Unit};
use crate::setup::{
    capture_frames, prepared_sink, published, start_relay, tokens, wait_connected, Broker,
    BrokerKind, Simulator, SOURCES,
};

/// The JetStream stream's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// What users run.
    File,
    /// The same without the broker's disk writes.
    Memory,
}

impl Storage {
    fn as_str(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        }
    }

    fn scenario(self, rate: u64) -> String {
        match self {
            Storage::File => format!("latency at {rate} events/s (NATS, JSON)"),
            Storage::Memory => {
                format!("latency at {rate} events/s (NATS, memory storage, JSON)")
            }
        }
    }
}

/// One latency run: the ceiling's send → ack quantiles (seconds), then the relay's.
pub struct LatencyRun {
    pub ceiling: [f64; 3],
    pub relay: LatencySample,
}

/// The name of the frame → broker ack figure at quantile `q`.
pub fn frame_to_ack_name(q: f64) -> String {
    format!("frame → broker ack p{}", q * 100.0)
}

impl LatencyRun {
    /// Frame → broker ack at `q` (one of [`QUANTILES`]), ms.
    pub fn frame_to_ack_ms(&self, q: f64) -> f64 {
        let i = QUANTILES
            .iter()
            .position(|x| *x == q)
            .expect("a measured quantile");
        self.relay.relay[i] * 1e3
    }
}

impl Figures for LatencyRun {
    fn figures(&self) -> Vec<Figure> {
        let ms = |name: String, secs: f64| Figure::new(name, Unit::Millis, secs * 1e3);
        let l = &self.relay;
        let mut f = Vec::new();
        for (q, v) in QUANTILES.iter().zip(self.ceiling) {
            let name = format!("ceiling: plain publisher send → broker ack p{}", q * 100.0);
            f.push(ms(name, v));
        }
        f.push(Figure::new(
            "rate achieved",
            Unit::EventsPerSec,
            l.events_per_sec,
        ));
        for (q, v) in QUANTILES.iter().zip(l.relay) {
            f.push(ms(frame_to_ack_name(*q), v));
        }
        // Where the relay's share of it waits. A stage's quantiles do not
        // add up to the whole's: its slow events are not always the same ones.
        for (stage, qs) in LATENCY_STAGES.iter().zip(l.stages) {
            for (q, v) in QUANTILES.iter().zip(qs) {
                if *q < 0.999 {
                    f.push(ms(format!("relay stage {stage} p{}", q * 100.0), v));
                }
            }
        }
        for (q, v) in QUANTILES.iter().zip(l.end_to_end) {
            f.push(ms(format!("simulator send → consumer p{}", q * 100.0), v));
        }
        f
    }
}

/// File storage is what users run; memory storage takes the broker's disk
/// out, which is where the tail of the first one comes from.
pub async fn run(o: &Opts) -> Vec<Section<Storage, LatencyRun>> {
    let mut sections = Vec::new();
    for storage in [Storage::File, Storage::Memory] {
        let mut section = Section::new(storage, storage.scenario(o.latency_rate));
        eprintln!("== {}", section.scenario);
        let frames = capture_frames(if o.smoke { 200 } else { 2_000 }).await;
        for _ in 0..o.runs {
            let _ = Command::new("sync").status();
            let ceiling = ceiling_latency(o, storage, &frames).await;
            // The throughput runs before this leave gigabytes of JetStream
            // files for the kernel to write back; that disk traffic showed
            // as a 10-22 ms p99 here (3-4 ms without it).
            let _ = Command::new("sync").status();
            let relay = latency(o, storage).await;
            section.push(LatencyRun { ceiling, relay });
        }
        sections.push(section);
    }
    sections
}

/// Latency percentiles at a fixed rate into NATS (JSON).
pub struct LatencySample {
    /// Frame received → broker ack, seconds, at each of [`QUANTILES`].
    pub relay: [f64; 3],
    /// The same for each of [`LATENCY_STAGES`].
    pub stages: [[f64; 3]; 5],
    /// Simulator send → consumer receive, seconds.
    pub end_to_end: [f64; 3],
    pub events_per_sec: f64,
}

/// p50, p99, p99.9.
const QUANTILES: [f64; 3] = [0.5, 0.99, 0.999];
const END_TO_END: &str = "studio_relay_end_to_end_latency_seconds";
const STAGE_LATENCY: &str = "studio_relay_stage_latency_seconds";

/// The relay at `o.latency_rate` into NATS with `storage`.
async fn latency(o: &Opts, storage: Storage) -> LatencySample {
    let broker = Broker::start(BrokerKind::Nats);
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
    let storage_env = [("STUDIO_RELAY__SINK__NATS__STORAGE", storage.as_str().into())];
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
async fn ceiling_latency(o: &Opts, storage: Storage, frames: &[(DataSource, Bytes)]) -> [f64; 3] {
    let broker = Broker::start(BrokerKind::Nats);
    let mut sink_config = broker.sink_config();
    sink_config.nats.storage = storage.as_str().to_string();
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
