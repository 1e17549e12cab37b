//! Scale: the relay with many tenants (5 sockets each), connected and
//! nearly idle (time to all connected, RSS, RSS per socket), then under the
//! firehose spread over all of them.

use std::time::Instant;

use studio_relay::config::EncodingFormat;

use crate::cost::proc_stat;
use crate::opts::Opts;
use crate::relay::{throughput, ThroughputSample};
use crate::report::{Figure, Figures, Section, Unit};
use crate::setup::{start_relay, tokens, wait_connected, Broker, BrokerKind, Simulator, SOURCES};

/// Figure names the targets refer to.
pub const IDLE_RSS: &str = "RSS, connected and idle";
pub const PER_SOCKET: &str = "RSS per additional socket";

/// One run with one tenant count.
pub struct ScaleRun {
    pub connect_secs: f64,
    pub rss_mb: f64,
    /// More than one tenant: measured against the one-tenant run's RSS, and under load.
    pub under_load: Option<UnderLoad>,
}

pub struct UnderLoad {
    pub per_socket_kb: f64,
    pub throughput: ThroughputSample,
}

impl Figures for ScaleRun {
    fn figures(&self) -> Vec<Figure> {
        let mut f = vec![
            Figure::new("time to all connected", Unit::Secs, self.connect_secs),
            Figure::new(IDLE_RSS, Unit::Megabytes, self.rss_mb),
        ];
        if let Some(l) = &self.under_load {
            f.extend([
                Figure::new(PER_SOCKET, Unit::Kilobytes, l.per_socket_kb),
                Figure::new(
                    "relay, events spread over all tenants",
                    Unit::EventsPerSec,
                    l.throughput.events_per_sec,
                ),
                Figure::new(
                    "relay peak RSS under load",
                    Unit::Megabytes,
                    l.throughput.peak_rss_mb,
                ),
            ]);
        }
        f
    }
}

/// One tenant (the baseline), then each of `o.scale`, `o.runs` times.
pub async fn run(o: &Opts) -> Vec<Section<usize, ScaleRun>> {
    let mut counts = vec![1];
    counts.extend(o.scale.iter().copied().filter(|&n| n > 1));
    let mut sections: Vec<Section<usize, ScaleRun>> = counts
        .iter()
        .map(|&n| Section::new(n, format!("scale: {n} tenant(s) × 5 sockets (NATS, JSON)")))
        .collect();
    for _ in 0..o.runs {
        let mut base_rss = 0.0;
        for section in &mut sections {
            eprintln!("== {}", section.scenario);
            let n = section.key;
            let (connect_secs, rss_mb) = scale_idle(n, o).await;
            let under_load = if n == 1 {
                base_rss = rss_mb;
                None
            } else {
                let broker = Broker::start(BrokerKind::Nats);
                Some(UnderLoad {
                    per_socket_kb: (rss_mb - base_rss) * 1024.0 / (SOURCES * (n - 1)) as f64,
                    throughput: throughput(&broker, EncodingFormat::Json, n, o).await,
                })
            };
            section.push(ScaleRun {
                connect_secs,
                rss_mb,
                under_load,
            });
        }
    }
    sections
}

/// Idle relay with `tenants` tenants: time to all connected and RSS.
async fn scale_idle(tenants: usize, o: &Opts) -> (f64, f64) {
    let broker = Broker::start(BrokerKind::Nats);
    // One event per second per tenant: connected, nearly idle.
    let sim = Simulator::start(&tokens(tenants), &["--firehose", "1"]);
    let started = Instant::now();
    let (mut relay, _dir) = start_relay(&sim, &broker, EncodingFormat::Json, tenants, &[]);
    let connect_secs = wait_connected(&mut relay, tenants * SOURCES, started).await;
    tokio::time::sleep(o.warmup).await;
    let rss_mb = proc_stat(relay.pid()).rss_kb as f64 / 1024.0;
    (connect_secs, rss_mb)
}
