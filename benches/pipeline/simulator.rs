//! The simulator's maximum: its firehose into a client that only counts
//! frames, so the report shows who the bottleneck is.

use std::time::{Duration, Instant};

use crate::opts::Opts;
use crate::report::{Figure, Figures, Section, Unit};
use crate::setup::{tokens, FrameCounter, Simulator};

pub struct SimulatorRun {
    pub events_per_sec: f64,
}

impl Figures for SimulatorRun {
    fn figures(&self) -> Vec<Figure> {
        vec![Figure::new(
            "firehose → counting client",
            Unit::EventsPerSec,
            self.events_per_sec,
        )]
    }
}

pub async fn run(o: &Opts) -> Section<(), SimulatorRun> {
    eprintln!("== simulator maximum (a client that only counts frames)");
    let mut section = Section::new((), "simulator".to_string());
    for _ in 0..o.runs {
        let sim = Simulator::start(&tokens(1), &["--firehose", "0"]);
        let counter = FrameCounter::connect(&sim, &tokens(1), 0).await;
        let events_per_sec = counted_rate(&counter, o.warmup, o.duration).await;
        section.push(SimulatorRun { events_per_sec });
    }
    section
}

/// Frames/s a counting-only client gets from the firehose over `duration`.
async fn counted_rate(counter: &FrameCounter, warmup: Duration, duration: Duration) -> f64 {
    tokio::time::sleep(warmup).await;
    let (c0, t0) = (counter.count(), Instant::now());
    tokio::time::sleep(duration).await;
    (counter.count() - c0) as f64 / t0.elapsed().as_secs_f64()
}
