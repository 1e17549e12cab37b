//! Relay throughput: the simulator's firehose → the relay process → the
//! broker, for each broker and encoding, next to the ceiling (and on NATS
//! the bare publisher) measured on a fresh broker of the same kind.

use std::time::Instant;

use bytes::Bytes;
use studio_relay::config::EncodingFormat;
use studio_relay::model::DataSource;

use crate::ceiling::{bare_nats_publisher, ceiling, CeilingSample};
use crate::cost::{per_million, proc_stat};
use crate::opts::Opts;
use crate::report::{Figure, Figures, Section, Unit};
use crate::setup::{
    capture_frames, format_name, published, start_relay, tokens, wait_connected, Broker,
    BrokerKind, Simulator, SOURCES,
};

const COMBOS: [(BrokerKind, EncodingFormat); 4] = [
    (BrokerKind::Nats, EncodingFormat::Json),
    (BrokerKind::Nats, EncodingFormat::Avro),
    (BrokerKind::Kafka, EncodingFormat::Json),
    (BrokerKind::Kafka, EncodingFormat::Avro),
];

/// Figure names the targets refer to.
pub const RELAY: &str = "relay";
pub const OVER_CEILING: &str = "relay / ceiling";
const BARE_PUBLISHER: &str =
    "reference: bare async-nats publisher (Nats-Msg-Id only, 256 acks pending)";

/// One run of one broker and encoding.
pub struct RelayRun {
    pub ceiling: CeilingSample,
    /// NATS only.
    pub bare: Option<CeilingSample>,
    pub relay: ThroughputSample,
}

impl RelayRun {
    /// The relay's rate, in % of the ceiling's.
    pub fn over_ceiling(&self) -> f64 {
        100.0 * self.relay.events_per_sec / self.ceiling.events_per_sec
    }

    /// The same ratio predicted from CPU alone: all processes share the
    /// same cores, so when those are busy the ratio of the rates is the
    /// inverse ratio of the CPU each setup spends per event.
    fn over_ceiling_if_cpu_bound(&self) -> f64 {
        let (c, t) = (&self.ceiling, &self.relay);
        let ceiling_cpu = c.publisher_cpu_per_million + c.broker_cpu_per_million;
        let relay_cpu =
            t.cpu_secs_per_million + t.broker_cpu_per_million + t.simulator_cpu_per_million;
        100.0 * ceiling_cpu / relay_cpu
    }
}

impl Figures for RelayRun {
    fn figures(&self) -> Vec<Figure> {
        use Unit::{CpuSecs, EventsPerSec, Megabytes, Percent};
        let (c, t) = (&self.ceiling, &self.relay);
        let mut f = vec![Figure::new(
            "ceiling (plain publisher)",
            EventsPerSec,
            c.events_per_sec,
        )];
        if let Some(b) = &self.bare {
            f.extend([
                Figure::new(BARE_PUBLISHER, EventsPerSec, b.events_per_sec),
                Figure::new(
                    "bare publisher: its CPU per million events",
                    CpuSecs,
                    b.publisher_cpu_per_million,
                ),
                Figure::new(
                    "bare publisher: broker CPU per million events",
                    CpuSecs,
                    b.broker_cpu_per_million,
                ),
            ]);
        }
        f.extend([
            Figure::new(RELAY, EventsPerSec, t.events_per_sec),
            Figure::new(OVER_CEILING, Percent, self.over_ceiling()),
            Figure::new(
                "relay CPU per million events",
                CpuSecs,
                t.cpu_secs_per_million,
            ),
            Figure::new("relay peak RSS", Megabytes, t.peak_rss_mb),
            // Where the cores went, per event, in each setup.
            Figure::new(
                "ceiling: publisher CPU per million events",
                CpuSecs,
                c.publisher_cpu_per_million,
            ),
            Figure::new(
                "ceiling: broker CPU per million events",
                CpuSecs,
                c.broker_cpu_per_million,
            ),
            Figure::new(
                "relay run: broker CPU per million events",
                CpuSecs,
                t.broker_cpu_per_million,
            ),
            Figure::new(
                "relay run: simulator CPU per million events",
                CpuSecs,
                t.simulator_cpu_per_million,
            ),
            Figure::new(
                "relay / ceiling if CPU-bound (ceiling's CPU per event / relay run's)",
                Percent,
                self.over_ceiling_if_cpu_bound(),
            ),
        ]);
        f
    }
}

/// Every broker and encoding, `o.runs` times each.
pub async fn run(o: &Opts) -> Vec<Section<(BrokerKind, EncodingFormat), RelayRun>> {
    let frames = capture_frames(if o.smoke { 500 } else { 20_000 }).await;
    let mut sections = Vec::new();
    for (kind, format) in COMBOS {
        let label = format!("{} {}", kind.name(), format_name(format));
        let mut section = Section::new((kind, format), label);
        for _ in 0..o.runs {
            eprintln!("== {}", section.scenario);
            section.push(one_run(kind, format, &frames, o).await);
        }
        sections.push(section);
    }
    sections
}

/// The ceiling, the bare publisher (NATS) and the relay, each on a fresh broker.
async fn one_run(
    kind: BrokerKind,
    format: EncodingFormat,
    frames: &[(DataSource, Bytes)],
    o: &Opts,
) -> RelayRun {
    let ceiling = ceiling(&Broker::start(kind), format, frames, o).await;
    let bare = match kind {
        BrokerKind::Nats => {
            Some(bare_nats_publisher(&Broker::start(kind), format, frames, o).await)
        }
        BrokerKind::Kafka => None,
    };
    let relay = throughput(&Broker::start(kind), format, 1, o).await;
    RelayRun {
        ceiling,
        bare,
        relay,
    }
}

/// One relay throughput run at the firehose's full rate.
#[derive(Debug, Clone, Copy)]
pub struct ThroughputSample {
    pub events_per_sec: f64,
    pub cpu_secs_per_million: f64,
    pub peak_rss_mb: f64,
    /// The other two processes on the same cores, CPU seconds per million events.
    pub broker_cpu_per_million: f64,
    pub simulator_cpu_per_million: f64,
}

/// The relay process between the firehose (`tenants` tenants) and `broker`:
/// its acknowledged rate, and what each process spent per event.
pub async fn throughput(
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
    let (b0, m0) = (cpu(broker.pid()), cpu(sim.pid()));
    tokio::time::sleep(o.duration).await;
    let (p1, s1) = (published(&relay.metrics().await), proc_stat(relay.pid()));
    let (b1, m1) = (cpu(broker.pid()), cpu(sim.pid()));
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

/// The simulator's kernel send buffer per socket in the multi-tenant runs.
/// With the kernel's own tuning (up to 4 MiB per socket), a firehose into
/// 5,000 sockets faster than the relay reads parks gigabytes in the kernel
/// and pushes the machine into TCP memory pressure, which then measures the
/// kernel, not the relay (580 events/s, every process idle). 32 KiB keeps
/// the 1,000-tenant run near 1 GB of socket memory, both sides included.
const SCALE_SEND_BUFFER: &str = "32768";
