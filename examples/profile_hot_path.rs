//! A small driver of the per-event hot path, for profilers:
//!
//! ```sh
//! cargo build --release --example profile_hot_path
//! # instructions per record, repeatable on a noisy machine:
//! valgrind --tool=callgrind --toggle-collect='*hot_loop*' \
//!     target/release/examples/profile_hot_path calls json 2000 frame
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! Arguments: source (`calls`, …, or `all`), encoding (`json`, `avro`),
//! iterations, mode:
//! - `core`: normalize + envelope + message build (destination, key, headers,
//!   payload), what `benches/encode.rs` measures plus the message;
//! - `normalize`: `model::normalize_live` alone;
//! - `frame` (default): the relay's whole per-event CPU work outside the
//!   broker client: `frame_to_outgoing` (metrics, upstream clock), the
//!   recent-ids check, the frame-received and published metric updates and
//!   the publisher's hand-over of the message.
//!
//! Prints records/s (wall clock; only indicative on a shared machine).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use studio_relay::config::{EncodingFormat, SinkConfig};
use studio_relay::model::{self, DataSource, Envelope, Origin};
use studio_relay::ops::internal_events::{
    EventPublished, EventPublishedChildren, FrameReceivedCounter,
};
use studio_relay::ops::Metrics;
use studio_relay::relay::{frame_to_outgoing_into, MessageBuilder, RecentIds, UpstreamClock};
use studio_relay::upstream::live::{FramePayload, LiveFrame};

#[path = "../benches/common/samples.rs"]
mod samples;
use samples::SAMPLES;

struct Ctx {
    builder: MessageBuilder,
    metrics: Metrics,
    clock: UpstreamClock,
    recent: RecentIds,
    tenant: Arc<str>,
}

/// Normalize + envelope + message: no metrics, no publisher.
#[inline(never)]
fn hot_loop_core(ctx: &Ctx, frames: &[(DataSource, Bytes)], iterations: usize) -> usize {
    run_core(ctx, frames, iterations)
}

/// Normalization alone (the record is dropped).
#[inline(never)]
fn hot_loop_normalize(ctx: &Ctx, frames: &[(DataSource, Bytes)], iterations: usize) -> usize {
    let _ = ctx;
    let mut fields = 0;
    for i in 0..iterations {
        let (source, frame) = &frames[i % frames.len()];
        let record = model::normalize_live(*source, frame).expect("fixture normalizes");
        fields += record.unknown_field_count() + 1;
    }
    fields
}

/// Everything the relay does per live event on its own CPU, broker client excluded.
#[inline(never)]
fn hot_loop_frame(ctx: &Ctx, frames: &[(DataSource, Bytes)], iterations: usize) -> usize {
    run_frame(ctx, frames, iterations)
}

fn run_core(ctx: &Ctx, frames: &[(DataSource, Bytes)], iterations: usize) -> usize {
    let mut bytes = 0;
    for i in 0..iterations {
        let (source, frame) = &frames[i % frames.len()];
        let record = model::normalize_live(*source, frame).expect("fixture normalizes");
        let env = Envelope::new(
            ctx.tenant.to_string(),
            Origin::Live,
            1_779_100_000_000,
            record,
        );
        let m = ctx.builder.build(&env).expect("encodes");
        bytes += m.payload.len();
    }
    bytes
}

fn run_frame(ctx: &Ctx, frames: &[(DataSource, Bytes)], iterations: usize) -> usize {
    let mut bytes = 0;
    let counters: Vec<FrameReceivedCounter> = DataSource::ALL
        .iter()
        .map(|s| FrameReceivedCounter::new(&ctx.metrics, &ctx.tenant, s.as_str()))
        .collect();
    let mut published = EventPublishedChildren::default();
    // The WebSocket layer's UTF-8 check is not the pipeline's: done once here.
    let frames: Vec<(DataSource, FramePayload)> = frames
        .iter()
        .map(|(s, f)| (*s, FramePayload::from_bytes(f.clone())))
        .collect();
    let mut outs = Vec::with_capacity(1);
    for i in 0..iterations {
        let (source, frame) = &frames[i % frames.len()];
        // The socket task (which looks its counter up once).
        counters[source.index()].emit();
        let frame = LiveFrame {
            tenant: ctx.tenant.clone(),
            source: *source,
            received_at_ms: 1_779_100_000_000,
            received: Instant::now(),
            payload: frame.clone(),
        };
        // The processor.
        frame_to_outgoing_into(
            frame,
            &ctx.builder,
            &ctx.metrics,
            Some(&ctx.clock),
            &mut outs,
        );
        let out = outs.pop().expect("one record per frame");
        assert_eq!(out.origin.as_str(), "live");
        // The same record repeats here; the check's cost is what matters.
        let _ = ctx.recent.insert(&out.message.event_id);
        // The publisher: hand a copy to the sink, account for the ack.
        let sent = std::hint::black_box(out.message.clone());
        bytes += sent.payload.len();
        EventPublished {
            tenant: &out.tenant,
            source: out.source.as_str(),
            origin: out.origin.as_str(),
            stages: out.stages.map(|s| s.gaps(Instant::now())),
        }
        .emit_cached(&ctx.metrics, &mut published);
    }
    bytes
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let format = match args.get(1).map(String::as_str).unwrap_or("json") {
        "json" => EncodingFormat::Json,
        "avro" => EncodingFormat::Avro,
        other => panic!("encoding {other:?}: json or avro"),
    };
    let iterations: usize = args
        .get(2)
        .map_or(20_000, |a| a.parse().expect("iterations"));
    let mode = args.get(3).map(String::as_str).unwrap_or("frame");
    let frames: Vec<(DataSource, Bytes)> = SAMPLES
        .iter()
        .filter(|(s, _)| which == "all" || s.as_str() == which)
        .map(|(s, f)| (*s, Bytes::from_static(f.as_bytes())))
        .collect();
    assert!(!frames.is_empty(), "unknown source {which:?}");
    let ctx = Ctx {
        builder: MessageBuilder::without_registry(format, &SinkConfig::default()),
        metrics: Metrics::new(),
        clock: UpstreamClock::default(),
        recent: RecentIds::new(100_000),
        tenant: Arc::from("acme"),
    };
    // Warm up lazily built state (schema trees, fingerprints, metric
    // children) outside the measured (`hot_loop_*`) functions.
    run_core(&ctx, &frames, frames.len());
    run_frame(&ctx, &frames, frames.len());
    let started = Instant::now();
    let bytes = match mode {
        "core" => hot_loop_core(&ctx, &frames, iterations),
        "frame" => hot_loop_frame(&ctx, &frames, iterations),
        "normalize" => hot_loop_normalize(&ctx, &frames, iterations),
        other => panic!("mode {other:?}: core, frame or normalize"),
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{which} {mode} {:?}: {iterations} records in {secs:.3} s = {:.0} records/s ({:.2} µs each, {bytes} payload bytes)",
        format,
        iterations as f64 / secs,
        secs * 1e6 / iterations as f64,
    );
}
