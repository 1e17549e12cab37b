//! The report: every scenario's runs, their figures as rows (median, min,
//! max over the runs), the performance targets, `pipeline.md` and
//! `pipeline.json`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use studio_relay::config::EncodingFormat;
use studio_relay_testkit::{kafka_version, tools_dir};

use crate::latency::{LatencyRun, Storage};
use crate::opts::Opts;
use crate::relay::RelayRun;
use crate::replay::ReplayRun;
use crate::scale::ScaleRun;
use crate::setup::BrokerKind;
use crate::simulator::SimulatorRun;

/// The unit a figure is printed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    EventsPerSec,
    RecordsPerSec,
    Percent,
    CpuSecs,
    Megabytes,
    Kilobytes,
    Millis,
    Secs,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::EventsPerSec => "events/s",
            Unit::RecordsPerSec => "records/s",
            Unit::Percent => "%",
            Unit::CpuSecs => "CPU-s",
            Unit::Megabytes => "MB",
            Unit::Kilobytes => "KB",
            Unit::Millis => "ms",
            Unit::Secs => "s",
        }
    }
}

/// One measured quantity of one run, named as the report prints it.
pub struct Figure {
    pub name: String,
    pub unit: Unit,
    pub value: f64,
}

impl Figure {
    pub fn new(name: impl Into<String>, unit: Unit, value: f64) -> Figure {
        Figure {
            name: name.into(),
            unit,
            value,
        }
    }
}

/// A scenario's result for one run, and how the report shows it.
pub trait Figures {
    /// The figures in the order the report lists them.
    fn figures(&self) -> Vec<Figure>;
}

/// A scenario's runs, told apart from the other sections of the same
/// scenario by `key` (its broker, storage, tenant count, ...).
pub struct Section<K, R> {
    pub key: K,
    /// The report's scenario column.
    pub scenario: String,
    pub runs: Vec<R>,
}

impl<K, R: Figures> Section<K, R> {
    pub fn new(key: K, scenario: String) -> Section<K, R> {
        Section {
            key,
            scenario,
            runs: Vec::new(),
        }
    }

    /// Adds a run, printing its figures as they come in.
    pub fn push(&mut self, run: R) {
        for f in run.figures() {
            eprintln!(
                "  {} / {}: {} {}",
                self.scenario,
                f.name,
                fmt_num(f.value),
                f.unit.as_str()
            );
        }
        self.runs.push(run);
    }

    /// The median over the runs of one figure.
    pub fn median(&self, figure: impl Fn(&R) -> f64) -> f64 {
        let values: Vec<f64> = self.runs.iter().map(figure).collect();
        stats(&values).0
    }

    /// One row per figure, its values over the runs, in the first run's order.
    fn rows(&self) -> Vec<Row<'_>> {
        let mut rows: Vec<Row> = Vec::new();
        for f in self.runs.iter().flat_map(R::figures) {
            match rows
                .iter_mut()
                .find(|r| r.figure == f.name && r.unit == f.unit)
            {
                Some(row) => row.values.push(f.value),
                None => rows.push(Row {
                    scenario: &self.scenario,
                    figure: f.name,
                    unit: f.unit,
                    values: vec![f.value],
                }),
            }
        }
        rows
    }
}

/// One line of the report's table.
pub struct Row<'a> {
    pub scenario: &'a str,
    pub figure: String,
    pub unit: Unit,
    pub values: Vec<f64>,
}

/// Every scenario that ran, in the report's order.
#[derive(Default)]
pub struct Report {
    pub simulator: Option<Section<(), SimulatorRun>>,
    pub relay: Vec<Section<(BrokerKind, EncodingFormat), RelayRun>>,
    pub latency: Vec<Section<Storage, LatencyRun>>,
    /// Keyed by tenant count.
    pub scale: Vec<Section<usize, ScaleRun>>,
    pub replay: Vec<Section<BrokerKind, ReplayRun>>,
    pub elapsed: Duration,
}

impl Report {
    pub fn relay_section(
        &self,
        kind: BrokerKind,
        format: EncodingFormat,
    ) -> Option<&Section<(BrokerKind, EncodingFormat), RelayRun>> {
        self.relay.iter().find(|s| s.key == (kind, format))
    }

    pub fn latency_section(&self, storage: Storage) -> Option<&Section<Storage, LatencyRun>> {
        self.latency.iter().find(|s| s.key == storage)
    }

    fn scale_section(&self, tenants: usize) -> Option<&Section<usize, ScaleRun>> {
        self.scale.iter().find(|s| s.key == tenants)
    }

    /// Every row of the table, scenario by scenario.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let mut rows = Vec::new();
        rows.extend(self.simulator.iter().flat_map(Section::rows));
        rows.extend(self.relay.iter().flat_map(Section::rows));
        rows.extend(self.latency.iter().flat_map(Section::rows));
        rows.extend(self.scale.iter().flat_map(Section::rows));
        rows.extend(self.replay.iter().flat_map(Section::rows));
        rows
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

pub fn machine() -> Value {
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
    let version = |cmd: &Path, arg: &str| {
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
        "nats_server": version(&tools_dir().join("bin/nats-server"), "--version"),
        "kafka": format!("Apache Kafka {}", kafka_version()),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// A performance target and the median it is checked against.
struct Target {
    label: &'static str,
    scenario: String,
    figure: String,
    value: f64,
    met: bool,
}

impl Target {
    /// `None` when the figure was not measured.
    fn at_least<K, R: Figures>(
        label: &'static str,
        section: Option<&Section<K, R>>,
        figure: String,
        value: impl Fn(&R) -> Option<f64>,
        bound: f64,
    ) -> Option<Target> {
        Self::check(label, section, figure, value, |v| v >= bound)
    }

    fn below<K, R: Figures>(
        label: &'static str,
        section: Option<&Section<K, R>>,
        figure: String,
        value: impl Fn(&R) -> Option<f64>,
        bound: f64,
    ) -> Option<Target> {
        Self::check(label, section, figure, value, |v| v < bound)
    }

    fn check<K, R: Figures>(
        label: &'static str,
        section: Option<&Section<K, R>>,
        figure: String,
        value: impl Fn(&R) -> Option<f64>,
        met: impl Fn(f64) -> bool,
    ) -> Option<Target> {
        let section = section?;
        let values: Vec<f64> = section.runs.iter().filter_map(value).collect();
        if values.is_empty() {
            return None;
        }
        let value = stats(&values).0;
        Some(Target {
            label,
            scenario: section.scenario.clone(),
            figure,
            value,
            met: met(value),
        })
    }
}

/// The performance targets that could be checked in this run.
fn targets(r: &Report, o: &Opts) -> Vec<Target> {
    use crate::relay::{OVER_CEILING, RELAY};
    use BrokerKind::{Kafka, Nats};
    use EncodingFormat::Json;
    let over_ceiling = |x: &RelayRun| Some(x.over_ceiling());
    let big = o.scale.iter().copied().max().unwrap_or(1);
    [
        Target::at_least(
            "≥ 80% of the ceiling",
            r.relay_section(Nats, Json),
            OVER_CEILING.into(),
            over_ceiling,
            80.0,
        ),
        Target::at_least(
            "≥ 80% of the ceiling",
            r.relay_section(Kafka, Json),
            OVER_CEILING.into(),
            over_ceiling,
            80.0,
        ),
        Target::at_least(
            "≥ 100,000 events/s",
            r.relay_section(Nats, Json),
            RELAY.into(),
            |x| Some(x.relay.events_per_sec),
            100_000.0,
        ),
        Target::below(
            "p99 < 5 ms",
            r.latency_section(Storage::File),
            crate::latency::frame_to_ack_name(0.99),
            |x| Some(x.frame_to_ack_ms(0.99)),
            5.0,
        ),
        Target::below(
            "< 30 MB for one tenant",
            r.scale_section(1),
            crate::scale::IDLE_RSS.into(),
            |x| Some(x.rss_mb),
            30.0,
        ),
        Target::below(
            "< 50 KB per socket",
            r.scale_section(big),
            crate::scale::PER_SOCKET.into(),
            |x| x.under_load.as_ref().map(|l| l.per_socket_kb),
            50.0,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub fn render(r: &Report, o: &Opts, m: &Value) -> (String, Value) {
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
    for row in r.rows() {
        let (med, min, max) = stats(&row.values);
        let (scenario, figure, unit) = (row.scenario, &row.figure, row.unit.as_str());
        md.push_str(&format!(
            "| {scenario} | {figure} | {} | {} | {} | {unit} |\n",
            fmt_num(med),
            fmt_num(min),
            fmt_num(max)
        ));
        rows.push(json!({"scenario": scenario, "figure": figure, "unit": unit, "median": med, "min": min, "max": max, "values": row.values}));
    }
    md.push_str("\n| target | measured (median) | met |\n|---|---:|---|\n");
    let mut checks = Vec::new();
    for t in targets(r, o) {
        md.push_str(&format!(
            "| {} ({}) | {} | {} |\n",
            t.label,
            t.scenario,
            fmt_num(t.value),
            if t.met { "yes" } else { "**no**" }
        ));
        checks.push(json!({"target": t.label, "scenario": t.scenario, "figure": t.figure, "value": t.value, "met": t.met}));
    }
    md.push_str(&format!(
        "\nTotal benchmark time: {:.0} s.\n",
        r.elapsed.as_secs_f64()
    ));
    let json = json!({"machine": m, "runs": o.runs, "duration_s": o.duration.as_secs_f64(), "rows": rows, "targets": checks});
    (md, json)
}

pub fn write(dir: &Path, md: &str, json: &Value) {
    std::fs::create_dir_all(dir).expect("create the report directory");
    std::fs::write(dir.join("pipeline.md"), md).unwrap();
    std::fs::write(
        dir.join("pipeline.json"),
        serde_json::to_string_pretty(json).unwrap(),
    )
    .unwrap();
}
