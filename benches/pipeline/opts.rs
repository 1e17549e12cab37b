//! The command line: `cargo bench --bench pipeline -- [--runs N]
//! [--duration 30s] [--warmup 5s] [--latency-rate N] [--scale 100,1000]
//! [--replay-hours N] [--only a,b] [--out DIR] [--smoke]`.

use std::path::PathBuf;
use std::time::Duration;

pub struct Opts {
    pub smoke: bool,
    pub runs: usize,
    /// Measured window of each throughput run (after the warm-up).
    pub duration: Duration,
    pub warmup: Duration,
    /// Events/s of the latency run (one tenant).
    pub latency_rate: u64,
    /// Tenant counts of the scale runs (1 is always added as the baseline).
    pub scale: Vec<usize>,
    /// Hours of history the replay run fetches.
    pub replay_hours: u32,
    /// Calls per second of simulated history for the replay run.
    pub replay_call_rate: f64,
    /// Scenario names to run (empty: all).
    pub only: Vec<String>,
    /// Where `pipeline.md` and `pipeline.json` are written.
    pub out_dir: PathBuf,
}

impl Opts {
    pub fn parse() -> Opts {
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

    pub fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}
