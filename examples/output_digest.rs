//! Writes one line per (input, encoder) of everything the frame → message
//! path produces (event id, destination, key, headers, payload hash; record
//! JSON, `extra`, key and time for historic records; the per-event metrics at
//! the end), so that a performance change can be checked for byte-identical
//! output against a run of the code before it:
//!
//! ```sh
//! cargo run --release --example output_digest -- /tmp/before.txt   # old code
//! cargo run --release --example output_digest -- /tmp/after.txt    # new code
//! cmp /tmp/before.txt /tmp/after.txt
//! ```
//!
//! Inputs: simulator records (live frames of every source and their historic
//! twins), every checked-in fixture sent to every source, and a seeded mutation
//! corpus of those (the `fuzz_frames` mutations). `MUTATIONS=n` sets its size.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use studio_relay::config::{EncodingFormat, SinkConfig};
use studio_relay::encode::Encoder;
use studio_relay::model::{self, DataSource, Envelope, Origin};
use studio_relay::ops::Metrics;
use studio_relay::relay::{frame_to_outgoing, MessageBuilder, Outgoing};
use studio_relay::simulator::journey::{JourneyEvent, RecordRef, Source, World};
use studio_relay::simulator::render::{
    full_profile_live, full_record, historic_record, live_payload,
};
use studio_relay::simulator::window::profile_history_hour;
use studio_relay::upstream::live::{FramePayload, LiveFrame};

#[path = "common/mutate.rs"]
mod mutate;
use mutate::{fixture_files, Mutator};

/// Mostly well-formed edits: they exercise the coercions.
const MUTATOR: Mutator = Mutator {
    max_nesting: 40,
    value_swaps: 7,
};

fn sha(b: &[u8]) -> String {
    hex::encode(&Sha256::digest(b)[..12])
}

fn describe(o: &Outgoing) -> String {
    let m = &o.message;
    let dead = o.is_dead_letter();
    // Dead-letter ids include the process id and a counter: mask them.
    let id = if dead { "<dl>" } else { m.event_id.as_str() };
    let headers: Vec<String> = m
        .headers
        .iter()
        .map(|(k, v)| {
            if dead && k == "ce_id" {
                format!("{k}=<dl>")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    format!(
        "{} {} {} key={:?} id={} h=[{}] p={}:{}",
        o.origin,
        o.source,
        m.destination,
        m.key,
        id,
        headers.join("|"),
        m.payload.len(),
        sha(&m.payload)
    )
}

/// Fixture bytes, with the source their file name starts with (if any).
fn seeds(root: &Path) -> Vec<(Option<DataSource>, Vec<u8>)> {
    let dirs = [
        "tests/fixtures/normalize",
        "tests/fixtures/hostile/frames",
        "tests/fixtures/bench",
        "tests/fixtures/v1",
    ];
    fixture_files(root, &dirs)
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let source = name.split('.').next().and_then(|s| s.parse().ok());
            (source, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn source_of(s: Source) -> DataSource {
    DataSource::ALL[s.index()]
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: output_digest OUT");
    let mutations: usize = std::env::var("MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let metrics = Metrics::new();
    let sink = SinkConfig::default();
    let tenant_sink = SinkConfig {
        topic_template: "t.{tenant}.{source}.{source}.v{version}".into(),
        ..SinkConfig::default()
    };
    let all_ids: HashMap<DataSource, u32> = DataSource::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, 100 + i as u32))
        .collect();
    let some_ids: HashMap<DataSource, u32> = [(DataSource::Calls, 7), (DataSource::Agents, 9)]
        .into_iter()
        .collect();
    let builders = [
        MessageBuilder::without_registry(EncodingFormat::Json, &sink),
        MessageBuilder::without_registry(EncodingFormat::Avro, &sink),
        MessageBuilder::new(
            Encoder::new(EncodingFormat::Avro, Some(all_ids)),
            &tenant_sink,
        ),
        MessageBuilder::new(
            Encoder::new(EncodingFormat::Avro, Some(some_ids)),
            &tenant_sink,
        ),
    ];
    let tenants: [Arc<str>; 2] = [Arc::from("acme"), Arc::from("Tenant-2.x")];
    let n = std::cell::Cell::new(0u64);
    let started = Instant::now();

    let live = |out: &mut dyn Write, tenant: &Arc<str>, source: DataSource, raw: &[u8]| {
        for b in &builders {
            let outs = frame_to_outgoing(
                LiveFrame {
                    tenant: tenant.clone(),
                    source,
                    received_at_ms: 1_779_100_000_123,
                    received: Instant::now(),
                    payload: FramePayload::from_bytes(Bytes::copy_from_slice(raw)),
                },
                b,
                &metrics,
                None,
            );
            for o in &outs {
                writeln!(out, "{} {}", n.get(), describe(o)).unwrap();
            }
        }
        n.set(n.get() + 1);
    };

    // Simulator frames and their historic twins.
    let world = World::new(7, 1_779_100_000_000, 2, 12, 3, 4.0, 60.0, 1);
    let mut historic: Vec<(DataSource, serde_json::Value)> = Vec::new();
    for (t, tenant) in tenants.iter().enumerate() {
        for k in world.k_min..world.k_min + 150 {
            let j = world.journey(t, k);
            for (time, ev) in j.events() {
                let (s, full) = match ev {
                    JourneyEvent::Record(r) => {
                        let s = match r {
                            RecordRef::Call => Source::Calls,
                            RecordRef::Queue(_) => Source::Queues,
                            RecordRef::Agent(_) => Source::Agents,
                        };
                        (s, full_record(&world, &j, r, time))
                    }
                    JourneyEvent::AgentCallState(o) => (
                        Source::ProfileLive,
                        full_profile_live(&world, t, j.offers[o].agent, time, Some((&j, o))),
                    ),
                };
                if let Some(h) = historic_record(s, &full) {
                    historic.push((source_of(s), h));
                }
                let payload = live_payload(s, full);
                live(
                    &mut out,
                    tenant,
                    source_of(s),
                    payload.to_string().as_bytes(),
                );
            }
        }
        let first_hour = world.history_start_ms.div_euclid(3_600_000) + 2;
        for hour in first_hour..first_hour + 3 {
            for rec in profile_history_hour(&world, t, hour) {
                if let Some(h) = historic_record(Source::ProfileHistory, &rec.full) {
                    historic.push((DataSource::ProfileHistory, h));
                }
                let payload = live_payload(Source::ProfileHistory, rec.full);
                live(
                    &mut out,
                    tenant,
                    DataSource::ProfileHistory,
                    payload.to_string().as_bytes(),
                );
            }
        }
    }
    let simulated = n.get();

    // Every fixture to every source, then mutations of them.
    let seeded = seeds(root);
    let seeds: Vec<Vec<u8>> = seeded.iter().map(|(_, b)| b.clone()).collect();
    for s in &seeds {
        for source in DataSource::ALL {
            live(&mut out, &tenants[0], source, s);
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for _ in 0..mutations {
        let (own, seed) = &seeded[rng.gen_range(0..seeded.len())];
        let mut input = seed.clone();
        for _ in 0..rng.gen_range(1..=3) {
            MUTATOR.mutate(&mut rng, &mut input, &seeds);
        }
        // Mostly the seed's own source (records with odd values), else any.
        let source = match own {
            Some(s) if rng.gen_bool(0.8) => *s,
            _ => DataSource::ALL[rng.gen_range(0..5)],
        };
        live(&mut out, &tenants[rng.gen_range(0..2)], source, &input);
    }

    // Historic records: replay/backfill envelopes and the record accessors.
    for (i, (source, value)) in historic.iter().enumerate() {
        match model::normalize_historic(*source, value) {
            Err(e) => writeln!(out, "h{i} error {e}").unwrap(),
            Ok(record) => {
                writeln!(
                    out,
                    "h{i} record={} extra={:?} key={:?} time={:?} unknown={}",
                    record.to_json(),
                    record.extra_json(),
                    record.partition_key(),
                    record.event_time_ms(),
                    record.unknown_field_count()
                )
                .unwrap();
                let origin = if i % 2 == 0 {
                    Origin::Replay
                } else {
                    Origin::Backfill
                };
                let env =
                    Envelope::new("acme".into(), origin, 1_779_100_000_000 + i as i64, record);
                for b in &builders {
                    match b.build(&env) {
                        Ok(m) => {
                            let o = Outgoing::record(m, Arc::from("acme"), *source, origin);
                            writeln!(out, "h{i} {}", describe(&o)).unwrap();
                        }
                        Err(e) => writeln!(out, "h{i} encode error {e}").unwrap(),
                    }
                }
            }
        }
    }

    // Per-event metrics (timestamps excluded).
    for line in metrics.render().lines() {
        if line.starts_with("studio_relay_unknown_fields")
            || line.starts_with("studio_relay_events_deadlettered")
        {
            writeln!(out, "metric {line}").unwrap();
        }
    }
    out.flush().unwrap();
    eprintln!(
        "{} live inputs ({simulated} simulated), {} historic records, {:.1} s",
        n.get(),
        historic.len(),
        started.elapsed().as_secs_f64()
    );
}
