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
//! - **Bare publisher** (NATS only): a reference point outside the
//!   relay's code, a plain async-nats JetStream publisher with
//!   `Nats-Msg-Id` as its only header and 256 acks pending, sending the
//!   same payloads to the same subjects. Against the ceiling it shows what the relay's message
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
//!
//! One module per scenario (`simulator`, `ceiling`, `relay`, `latency`,
//! `scale`, `replay`), each returning its own typed result per run;
//! `setup` starts what they measure, `cost` reads CPU and memory from
//! /proc, `report` turns the results into `pipeline.md` and `pipeline.json`.

mod ceiling;
mod cost;
mod latency;
mod opts;
mod relay;
mod replay;
mod report;
mod scale;
mod setup;
mod simulator;

use std::time::Instant;

use opts::Opts;
use report::Report;

/// The ceiling's publisher runs in this process: it gets the relay's
/// allocator (src/main.rs), so relay / ceiling compares like with like.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let o = Opts::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(run(&o));
    let (md, json) = report::render(&report, &o, &report::machine());
    report::write(&o.out_dir, &md, &json);
    println!("{md}");
    eprintln!("report written to {}", o.out_dir.display());
    if o.smoke {
        smoke_check(&report, &o);
    }
}

/// The scenarios `--only` selects, in the report's order.
async fn run(o: &Opts) -> Report {
    let started = Instant::now();
    let mut r = Report::default();
    if o.wants("simulator") {
        r.simulator = Some(simulator::run(o).await);
    }
    if o.wants("relay") {
        r.relay = relay::run(o).await;
    }
    if o.wants("latency") {
        r.latency = latency::run(o).await;
    }
    if o.wants("scale") {
        r.scale = scale::run(o).await;
    }
    if o.wants("replay") {
        r.replay = replay::run(o).await;
    }
    r.elapsed = started.elapsed();
    r
}

/// Smoke mode proves the driver still measures every figure.
fn smoke_check(r: &Report, o: &Opts) {
    use setup::BrokerKind::{Kafka, Nats};
    use studio_relay::config::EncodingFormat::{Avro, Json};
    if o.only.is_empty() {
        let relay = |kind, format, figure: fn(&relay::RelayRun) -> f64| {
            r.relay_section(kind, format).map(|s| s.median(figure))
        };
        let ack = studio_relay::ops::LATENCY_STAGES
            .iter()
            .position(|s| *s == "ack")
            .expect("an ack stage");
        let expected = [
            (
                "simulator / firehose → counting client",
                r.simulator.as_ref().map(|s| s.median(|x| x.events_per_sec)),
            ),
            (
                "NATS JetStream json / relay",
                relay(Nats, Json, |x| x.relay.events_per_sec),
            ),
            (
                "Apache Kafka avro / relay",
                relay(Kafka, Avro, |x| x.relay.events_per_sec),
            ),
            (
                "NATS JetStream avro / ceiling (plain publisher)",
                relay(Nats, Avro, |x| x.ceiling.events_per_sec),
            ),
            (
                "NATS JetStream json / bare publisher",
                relay(Nats, Json, |x| x.bare.map_or(0.0, |b| b.events_per_sec)),
            ),
            (
                "latency (file storage) / relay stage ack p50",
                r.latency_section(latency::Storage::File)
                    .map(|s| s.median(|x| x.relay.stages[ack][0])),
            ),
        ];
        for (figure, value) in expected {
            let v = value.unwrap_or(0.0);
            assert!(v > 0.0, "smoke: {figure} was not measured (got {v})");
        }
    }
    let infinite: Vec<String> = r
        .rows()
        .iter()
        .filter(|row| row.values.iter().any(|x| x.is_infinite()))
        .map(|row| format!("{} / {}", row.scenario, row.figure))
        .collect();
    assert!(infinite.is_empty(), "smoke: infinite figures: {infinite:?}");
}
