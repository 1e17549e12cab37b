//! normalize + encode per source, JSON and Avro: `cargo bench --bench encode`.
//! Inputs are the simulator's own live frames (realistic sizes and shapes).
//! The `message` group adds what the relay does on top for each record: the
//! event id, destination, key and CloudEvents headers (`MessageBuilder::build`).
//! For instruction counts (repeatable on a noisy machine), see
//! `examples/profile_hot_path.rs`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use studio_relay::config::{EncodingFormat, SinkConfig};
use studio_relay::encode::Encoder;
use studio_relay::model::{self, DataSource, Envelope, Origin};
use studio_relay::relay::MessageBuilder;

#[path = "common/samples.rs"]
mod samples;
use samples::SAMPLES;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize+encode");
    for (source, frame) in SAMPLES {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        for (name, format) in [
            ("json", EncodingFormat::Json),
            ("avro", EncodingFormat::Avro),
        ] {
            let encoder = Encoder::new(format, None);
            group.bench_with_input(
                BenchmarkId::new(name, source.as_str()),
                frame,
                |b, frame| {
                    b.iter(|| {
                        let record = model::normalize_live(*source, frame.as_bytes())
                            .expect("fixture normalizes");
                        let env =
                            Envelope::new("bench".into(), Origin::Live, 1_779_100_000_000, record);
                        encoder.encode(&env).expect("encodes")
                    })
                },
            );
        }
    }
    group.finish();

    let mut group = c.benchmark_group("message");
    for (source, frame) in SAMPLES {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        for (name, format) in [
            ("json", EncodingFormat::Json),
            ("avro", EncodingFormat::Avro),
        ] {
            let builder = MessageBuilder::without_registry(format, &SinkConfig::default());
            group.bench_with_input(
                BenchmarkId::new(name, source.as_str()),
                frame,
                |b, frame| {
                    b.iter(|| {
                        let record = model::normalize_live(*source, frame.as_bytes())
                            .expect("fixture normalizes");
                        let env =
                            Envelope::new("bench".into(), Origin::Live, 1_779_100_000_000, record);
                        builder.build(&env).expect("encodes")
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
