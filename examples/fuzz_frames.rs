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

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use studio_relay::config::{EncodingFormat, SinkConfig};
use studio_relay::model::DataSource;
use studio_relay::ops::Metrics;
use studio_relay::relay::{frame_to_outgoing, MessageBuilder};
use studio_relay::upstream::live::{FramePayload, LiveFrame};

#[path = "common/mutate.rs"]
mod mutate;
use mutate::{fixture_files, Mutator};

/// Deep nesting included: the normalizers must not overflow the stack.
const MUTATOR: Mutator = Mutator {
    max_nesting: 2000,
    value_swaps: 2,
};

fn seeds(root: &Path) -> Vec<Vec<u8>> {
    fixture_files(
        root,
        &["tests/fixtures/normalize", "tests/fixtures/hostile/frames"],
    )
    .into_iter()
    .map(|p| std::fs::read(p).unwrap())
    .collect()
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
            MUTATOR.mutate(&mut rng, &mut input, &seeds);
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
                    payload: FramePayload::from_bytes(bytes.clone()),
                },
                builder,
                &metrics,
                None,
            )
        }));
        match result {
            Ok(outs) => {
                for out in outs {
                    if out.is_dead_letter() {
                        dead += 1;
                    } else {
                        records += 1;
                    }
                }
            }
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
