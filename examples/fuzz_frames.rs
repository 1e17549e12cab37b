//! A mutation fuzzer for the frame → normalize → encode path, on the stable
//! toolchain (no cargo-fuzz nightly needed):
//!
//! ```sh
//! cargo run --release --example fuzz_frames -- 5000000      # iterations (default 1,000,000)
//! ```
//!
//! Seeds are the checked-in payloads (`tests/fixtures/normalize`, and the
//! hostile corpus). Each input is a seed with 1–4 mutations (bit flips, byte
//! inserts and deletes, truncation, splices across seeds, JSON-aware edits:
//! a value swapped for a number, string, array, object, null or a deep
//! nesting). Every input runs through the relay's own per-frame step
//! (`relay::frame_to_outgoing`) for every source and Avro and JSON
//! encodings; a panic is saved under `target/fuzz-crashes/` and fails the run.
//! The counts printed at the end are what issue notes quote.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use studio_relay::config::{EncodingFormat, SinkConfig};
use studio_relay::model::DataSource;
use studio_relay::ops::Metrics;
use studio_relay::relay::{frame_to_outgoing, MessageBuilder};
use studio_relay::upstream::live::{FramePayload, LiveFrame};

fn seeds(root: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in ["tests/fixtures/normalize", "tests/fixtures/hostile/frames"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        paths.sort();
        for p in paths {
            if !p.to_string_lossy().ends_with(".expected.json") {
                out.push(std::fs::read(p).unwrap());
            }
        }
    }
    out
}

const VALUES: &[&str] = &[
    "0",
    "-1",
    "1e308",
    "1e400",
    "-0.0",
    "9223372036854775808",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "null",
    "true",
    "[1,\"a\",null]",
    "{\"a\":{}}",
    "\"\\u0000\"",
    "\"\\ud800\"",
];

fn mutate(rng: &mut impl Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let n = input.len().max(1);
    match rng.gen_range(0..9) {
        0 => {
            let i = rng.gen_range(0..n).min(input.len().saturating_sub(1));
            if let Some(b) = input.get_mut(i) {
                *b ^= 1 << rng.gen_range(0..8);
            }
        }
        1 => {
            let i = rng.gen_range(0..=input.len());
            input.insert(i, rng.gen());
        }
        2 => {
            if !input.is_empty() {
                let i = rng.gen_range(0..input.len());
                let len = rng.gen_range(1..=16.min(input.len() - i));
                input.drain(i..i + len);
            }
        }
        3 => input.truncate(rng.gen_range(0..=input.len())),
        4 => {
            let other = &seeds[rng.gen_range(0..seeds.len())];
            let cut = rng.gen_range(0..=input.len());
            let from = rng.gen_range(0..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        5 | 6 => {
            // Replace the value after a random `":` with something else.
            let positions: Vec<usize> = input
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w == b"\":")
                .map(|(i, _)| i + 2)
                .collect();
            if let Some(&at) = positions.get(rng.gen_range(0..positions.len().max(1))) {
                let end = input[at..]
                    .iter()
                    .position(|b| *b == b',' || *b == b'}')
                    .map_or(input.len(), |e| at + e);
                let v = VALUES[rng.gen_range(0..VALUES.len())].as_bytes();
                input.splice(at..end, v.iter().copied());
            }
        }
        7 => {
            let depth = rng.gen_range(1..2000);
            let at = rng.gen_range(0..=input.len());
            let mut nest = vec![b'['; depth];
            nest.extend(std::iter::repeat_n(b']', depth));
            input.splice(at..at, nest);
        }
        _ => {
            // Add an unknown field.
            if let Some(at) = input.iter().position(|b| *b == b'{') {
                input.splice(at + 1..at + 1, b"\"x_fuzz\":[1,{\"y\":2}],".iter().copied());
            }
        }
    }
}

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .map(|a| a.replace('_', "").parse().expect("iterations: a number"))
        .unwrap_or(1_000_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = seeds(root);
    assert!(!seeds.is_empty(), "no seeds found under tests/fixtures");
    let metrics = Metrics::new();
    let sink = SinkConfig::default();
    let builders = [
        MessageBuilder::without_registry(EncodingFormat::Json, &sink),
        MessageBuilder::without_registry(EncodingFormat::Avro, &sink),
    ];
    let tenant: Arc<str> = Arc::from("fuzz");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        std::env::var("FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    );
    std::panic::set_hook(Box::new(|_| {}));
    let (mut records, mut dead) = (0u64, 0u64);
    let started = Instant::now();
    for i in 0..iterations {
        let mut input = seeds[rng.gen_range(0..seeds.len())].clone();
        for _ in 0..rng.gen_range(1..=4) {
            mutate(&mut rng, &mut input, &seeds);
        }
        let source = DataSource::ALL[rng.gen_range(0..5)];
        let builder = &builders[(i % 2) as usize];
        let bytes = Bytes::from(input);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            frame_to_outgoing(
                LiveFrame {
                    tenant: tenant.clone(),
                    source,
                    received_at_ms: 1_779_100_000_000,
                    received: Instant::now(),
                    payload: FramePayload::Text(bytes.clone()),
                },
                builder,
                &metrics,
                None,
            )
        }));
        match result {
            Ok(out) if out.origin == "deadletter" => dead += 1,
            Ok(_) => records += 1,
            Err(_) => {
                let dir = root.join("target/fuzz-crashes");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("crash-{i}-{source}.bin"));
                std::fs::write(&path, &bytes).unwrap();
                eprintln!("PANIC on input {i} ({source}); saved to {}", path.display());
                std::process::exit(1);
            }
        }
        if (i + 1) % 500_000 == 0 {
            eprintln!(
                "{} inputs, {:.0}/s",
                i + 1,
                (i + 1) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz_frames: {iterations} inputs in {secs:.1} s ({:.0}/s): {records} relayed as records, {dead} dead-lettered, 0 panics ({} seeds)",
        iterations as f64 / secs,
        seeds.len()
    );
}
