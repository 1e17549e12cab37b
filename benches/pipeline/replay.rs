//! Replay: `studio-relay replay` of hours of the simulator's history into
//! each broker, records/s as the replay itself reports them.

use std::time::Duration;

use studio_relay_testkit::process::Relay;

use crate::opts::Opts;
use crate::report::{Figure, Figures, Section, Unit};
use crate::setup::{tokens, Broker, BrokerKind, Simulator};

pub struct ReplayRun {
    pub records_per_sec: f64,
}

impl Figures for ReplayRun {
    fn figures(&self) -> Vec<Figure> {
        vec![Figure::new(
            "records/s (simulator's GraphQL included)",
            Unit::RecordsPerSec,
            self.records_per_sec,
        )]
    }
}

/// Into NATS, then Kafka, `o.runs` times each.
pub async fn run(o: &Opts) -> Vec<Section<BrokerKind, ReplayRun>> {
    let mut sections = Vec::new();
    for kind in [BrokerKind::Nats, BrokerKind::Kafka] {
        let label = format!("replay of {} h into {}", o.replay_hours, kind.name());
        let mut section = Section::new(kind, label);
        for _ in 0..o.runs {
            let broker = Broker::start(kind);
            eprintln!("== {}", section.scenario);
            let records_per_sec = replay(&broker, o).await;
            section.push(ReplayRun { records_per_sec });
        }
        sections.push(section);
    }
    sections
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
    let sink = broker.kind().sink();
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
