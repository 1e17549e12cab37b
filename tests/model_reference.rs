//! The canonical model covers every field of the reference,
//! the reference's sample payloads normalize cleanly and round-trip through both
//! encodings (decoded by apache-avro from the checked-in .avsc, not by our writer),
//! live and historic forms of one record agree, and checked-in fixtures keep decoding.

mod support;

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use studio_relay::config::EncodingFormat;
use studio_relay::encode::{self, Encoder};
use studio_relay::model::{self, schema, DataSource, Envelope, Field, Origin, Ty};

const REFERENCE: &str = include_str!("../docs/reference/studio-api.txt");

/// The first balanced `{ ... }` block after byte offset `from`.
fn json_block_after(from: usize) -> Value {
    let text = &REFERENCE[from..];
    let start = text.find('{').expect("a block follows");
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    for (i, ch) in text[start..].char_indices() {
        if in_str {
            match (esc, ch) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let block = &text[start..start + i + 1];
                    return serde_json::from_str(block)
                        .unwrap_or_else(|e| panic!("block is not JSON ({e}):\n{block}"));
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced block");
}

fn blocks_after(marker: &str) -> Vec<Value> {
    REFERENCE
        .match_indices(marker)
        .map(|(i, _)| json_block_after(i))
        .collect()
}

/// Every documented path (object members and leaves) of a field-reference block.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            if let Some(first) = a.first() {
                paths(first, prefix, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_field_of_all_nine_field_references_maps_to_a_canonical_field() {
    let blocks = blocks_after("Field reference");
    assert_eq!(blocks.len(), 9, "the reference has nine field references");
    let layout = [
        (DataSource::Calls, true),
        (DataSource::Queues, true),
        (DataSource::Agents, true),
        (DataSource::ProfileLive, true),
        (DataSource::ProfileHistory, true),
        (DataSource::Calls, false),
        (DataSource::Queues, false),
        (DataSource::Agents, false),
        (DataSource::ProfileHistory, false),
    ];
    let mut total = 0;
    for (block, (source, live)) in blocks.iter().zip(layout) {
        let mut all = Vec::new();
        paths(block, &mut Vec::new(), &mut all);
        assert!(all.len() > 10, "{source}: suspiciously few fields");
        for p in &all {
            let refs: Vec<&str> = p.iter().map(String::as_str).collect();
            assert!(
                schema::resolve(source, live, &refs).is_some(),
                "{source} ({}) field {} has no canonical field",
                if live { "live" } else { "historic" },
                refs.join(".")
            );
        }
        total += all.len();
    }
    assert!(total > 400, "only {total} paths walked");
}

fn samples() -> Vec<(DataSource, Value)> {
    let blocks = blocks_after("Sample payload");
    assert_eq!(blocks.len(), 3, "samples of §2.1, §2.3 and §2.4");
    vec![
        (DataSource::Calls, blocks[0].clone()),
        (DataSource::Agents, blocks[1].clone()),
        (DataSource::ProfileLive, blocks[2].clone()),
    ]
}

/// Decodes any of our payloads back to the JSON envelope shape, using apache-avro
/// with the checked-in .avsc for Avro.
fn decode(source: DataSource, format: &str, bytes: &[u8]) -> Value {
    let v = support::decode_with_checked_in_schema(source, format, bytes);
    if format == "json" {
        return v;
    }
    // apache-avro renders unions and records as plain JSON values; `extra` is a string or null.
    v
}

fn assert_round_trips(env: &Envelope) {
    let expected = encode::json_envelope(env);
    let json = Encoder::new(EncodingFormat::Json, None)
        .encode(env)
        .unwrap();
    assert_eq!(decode(env.source, "json", &json.bytes), expected);
    let single = Encoder::new(EncodingFormat::Avro, None)
        .encode(env)
        .unwrap();
    assert_eq!(
        decode(env.source, "avro", &single.bytes),
        expected,
        "single-object Avro"
    );
    let ids = HashMap::from([(env.source, 42u32)]);
    let confluent = Encoder::new(EncodingFormat::Avro, Some(ids))
        .encode(env)
        .unwrap();
    assert_eq!(&confluent.bytes[..5], &[0, 0, 0, 0, 42]);
    assert_eq!(
        decode(env.source, "avro", &confluent.bytes),
        expected,
        "Confluent-framed Avro"
    );
}

#[test]
fn the_reference_samples_normalize_without_leftovers_and_round_trip() {
    for (source, sample) in samples() {
        let record = model::normalize_live(source, sample.to_string().as_bytes()).unwrap();
        assert_eq!(
            record.unknown_field_count(),
            0,
            "{source}: extra left over: {:?}",
            record.extra
        );
        assert!(record.partition_key().is_some(), "{source}");
        let env = Envelope::new("acme".into(), Origin::Live, 1_779_100_000_000, record);
        assert_round_trips(&env);
    }
}

#[test]
fn documented_inconsistencies_are_normalized() {
    // agent_list documented as String, sent as a list; a comma string is accepted too.
    let a = model::normalize_live(
        DataSource::Calls,
        br#"{"id_call":"x","agent_list":["A","B"]}"#,
    )
    .unwrap();
    let b = model::normalize_live(DataSource::Calls, br#"{"id_call":"x","agent_list":"A, B"}"#)
        .unwrap();
    assert_eq!(a.fields()["agent_list"], json!(["A", "B"]));
    assert_eq!(a, b);
    // save_key_input: object (live) vs list (historic) → the same list.
    let live = model::normalize_live(
        DataSource::Calls,
        br#"{"id_call":"x","save_key_input":{"input":"1","variable_name":"v"}}"#,
    )
    .unwrap();
    let hist = model::normalize_historic(
        DataSource::Calls,
        &json!({"idCall":"x","saveKeyInput":[{"input":"1","variableName":"v"}]}),
    )
    .unwrap();
    assert_eq!(
        live.fields()["save_key_input"],
        hist.fields()["save_key_input"]
    );
    // Times: epoch millis (live) vs ISO (historic).
    let live = model::normalize_live(
        DataSource::Agents,
        br#"{"id_call":"x","time":{"start":1779099997234}}"#,
    )
    .unwrap();
    let hist = model::normalize_historic(
        DataSource::Agents,
        &json!({"idCall":"x","time":{"start":"2026-05-18T10:26:37.234Z"}}),
    )
    .unwrap();
    assert_eq!(live.event_time_ms(), Some(1_779_099_997_234));
    assert_eq!(live.event_id(), hist.event_id());
    // profile_history: Float slot times; flattened extra profiles folded into a list.
    let hist = model::normalize_historic(
        DataSource::ProfileHistory,
        &json!({"agent":{"id":5},"slot":{"startDate":1779099033656.0,"endDate":1779102633656.0,"timeRange":3600,"busy":0}}),
    )
    .unwrap();
    assert_eq!(hist.event_time_ms(), Some(1_779_099_033_656));
    let live = model::normalize_live(
        DataSource::ProfileHistory,
        br#"{"agent":{"id":5},"extra_profile_available_4":{"id":2,"name":"Lunch","usage":60},"extra_profile_available_1":{"id":1,"name":"On","usage":5},"extra_profile_not_available_7":null}"#,
    )
    .unwrap();
    // Each item keeps its slot number; a null slot stays, with a null profile.
    assert_eq!(
        live.fields()["extra_profiles_available"],
        json!([
            {"slot": 1, "profile": {"id": 1, "name": "On", "usage": 5}},
            {"slot": 4, "profile": {"id": 2, "name": "Lunch", "usage": 60}},
        ])
    );
    assert_eq!(
        live.fields()["extra_profiles_not_available"],
        json!([{"slot": 7, "profile": null}])
    );
    assert_eq!(live.unknown_field_count(), 0);
    // profile.not_active documented as an object, sent as a list: both accepted.
    let one = model::normalize_live(
        DataSource::ProfileLive,
        br#"{"agent":{"id":1},"profile":{"not_active":{"id":9}}}"#,
    )
    .unwrap();
    assert_eq!(
        one.fields()["profile"]["not_active"],
        json!([one.fields()["profile"]["not_active"][0].clone()])
    );
}

#[test]
fn unknown_fields_are_kept_and_bad_payloads_are_errors_with_reasons() {
    let r = model::normalize_live(
        DataSource::Calls,
        br#"{"id_call":"x","brand_new":{"a":1},"time":{"start":1,"zone":"utc"}}"#,
    )
    .unwrap();
    assert_eq!(r.unknown_field_count(), 2);
    assert_eq!(r.extra["brand_new"], json!({"a":1}));
    assert_eq!(r.extra["time.zone"], "utc");
    for (raw, reason) in [
        (&b"not json"[..], "malformed_json"),
        (&b"[1,2]"[..], "not_an_object"),
        (&b"\xff\xfe"[..], "invalid_utf8"),
        (&br#"{"answered":"abc"}"#[..], "wrong_type"),
        (&br#"{"time":"yesterday"}"#[..], "wrong_type"),
    ] {
        let e = model::normalize_live(DataSource::Calls, raw).unwrap_err();
        assert_eq!(e.reason(), reason, "{e}");
    }
}

// ---- live form vs historic form of the same record ----

fn gen_value(f: &Field, rng: &mut u64, live: bool) -> (Value, Value) {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    if next() % 5 == 0 {
        return (Value::Null, Value::Null);
    }
    let _ = live;
    match &f.ty {
        Ty::Long => {
            let n = (next() % 100_000) as i64;
            (json!(n), json!(n))
        }
        Ty::Str | Ty::Json => {
            let s = format!("s{}", next() % 1000);
            (json!(s), json!(s))
        }
        Ty::Bool => {
            let b = next() % 2 == 0;
            (json!(b), json!(b))
        }
        Ty::Timestamp => {
            let ms = 1_700_000_000_000i64 + (next() % 100_000_000_000) as i64;
            let iso = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            (json!(ms), json!(iso))
        }
        Ty::StrList => {
            let v: Vec<String> = (0..next() % 3).map(|i| format!("n{i}")).collect();
            (json!(v), json!(v))
        }
        Ty::Record(sub) => {
            let (l, h) = gen_record(sub, rng);
            (Value::Object(l), Value::Object(h))
        }
        Ty::RecordList(sub) => {
            let n = 1 + next() % 2;
            let (mut ls, mut hs) = (vec![], vec![]);
            for _ in 0..n {
                let (l, h) = gen_record(sub, rng);
                ls.push(Value::Object(l));
                hs.push(Value::Object(h));
            }
            (Value::Array(ls), Value::Array(hs))
        }
    }
}

fn gen_record(fields: &[Field], rng: &mut u64) -> (Map<String, Value>, Map<String, Value>) {
    let (mut live, mut hist) = (Map::new(), Map::new());
    for f in fields.iter().filter(|f| f.in_both()) {
        let (l, h) = gen_value(f, rng, true);
        live.insert(f.live.clone().unwrap(), l);
        hist.insert(f.historic.clone().unwrap(), h);
    }
    (live, hist)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn live_and_historic_forms_normalize_to_the_same_record_and_id(seed in 1u64.., which in 0usize..4) {
        let source = DataSource::HISTORIC[which];
        let mut rng = seed;
        let (live, hist) = gen_record(schema::fields(source), &mut rng);
        let a = model::normalize_live(source, Value::Object(live).to_string().as_bytes()).unwrap();
        let b = model::normalize_historic(source, &Value::Object(hist)).unwrap();
        prop_assert_eq!(a.fields(), b.fields());
        prop_assert_eq!(a.event_id(), b.event_id());
        prop_assert_eq!(a.unknown_field_count(), 0);
        let env = Envelope::new("t".into(), Origin::Replay, 1, b);
        let json = Encoder::new(EncodingFormat::Json, None).encode(&env).unwrap();
        support::decode_with_checked_in_schema(source, "json", &json.bytes);
    }
}

#[test]
fn different_updates_of_one_call_get_different_ids() {
    let started = model::normalize_live(
        DataSource::Calls,
        br#"{"id_call":"c1","active":1,"time":{"start":1779099997234}}"#,
    )
    .unwrap();
    let ended = model::normalize_live(
        DataSource::Calls,
        br#"{"id_call":"c1","active":0,"time":{"start":1779099997234,"end":1779100016445}}"#,
    )
    .unwrap();
    assert_ne!(started.event_id(), ended.event_id());
    assert_eq!(started.partition_key(), ended.partition_key());
}

#[test]
fn graphql_selection_asks_for_every_historic_field() {
    let sel = model::graphql_selection(DataSource::Calls);
    for f in [
        "idCall",
        "saveKeyInput { input variableName }",
        "agentFirst {",
        "licence { ccpro type }",
        "timestamp",
    ] {
        assert!(sel.contains(f), "{f} missing from {sel}");
    }
    assert!(
        !sel.contains("username"),
        "live-only fields are not in the historic type"
    );
}

/// Encoded v1 messages checked in under tests/fixtures/v1 must decode forever.
#[test]
fn checked_in_v1_fixtures_keep_decoding() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    if std::env::var_os("STUDIO_RELAY_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (source, sample) in samples() {
            let record = model::normalize_live(source, sample.to_string().as_bytes()).unwrap();
            let env = Envelope::new("acme".into(), Origin::Live, 1_779_100_000_000, record);
            let ids = HashMap::from([(source, 7u32)]);
            std::fs::write(
                dir.join(format!("{source}.expected.json")),
                serde_json::to_string_pretty(&encode::json_envelope(&env)).unwrap(),
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("{source}.json")),
                Encoder::new(EncodingFormat::Json, None)
                    .encode(&env)
                    .unwrap()
                    .bytes,
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("{source}.single-object.avro")),
                Encoder::new(EncodingFormat::Avro, None)
                    .encode(&env)
                    .unwrap()
                    .bytes,
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("{source}.confluent.avro")),
                Encoder::new(EncodingFormat::Avro, Some(ids))
                    .encode(&env)
                    .unwrap()
                    .bytes,
            )
            .unwrap();
        }
    }
    let mut checked = 0;
    for source in [
        DataSource::Calls,
        DataSource::Agents,
        DataSource::ProfileLive,
    ] {
        let expected: Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{source}.expected.json"))).expect("fixture present"),
        )
        .unwrap();
        for (file, format) in [
            ("json", "json"),
            ("single-object.avro", "avro"),
            ("confluent.avro", "avro"),
        ] {
            let bytes = std::fs::read(dir.join(format!("{source}.{file}"))).unwrap();
            assert_eq!(decode(source, format, &bytes), expected, "{source}.{file}");
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}

#[test]
fn checked_in_schema_files_are_current() {
    studio_relay::cli::schemas::run(studio_relay::cli::schemas::SchemasCommand::Check {
        dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"),
    })
    .expect("schemas/ matches the code; run `studio-relay schemas export`");
}
