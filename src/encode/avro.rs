//! Avro: the schema of each source's envelope, generated from the field tree,
//! and a direct binary writer walking the same tree (no intermediate values).

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::model::{Arena, DataSource, Envelope, Field, Level, Slot, Ty};

pub const NAMESPACE: &str = "com.telavox.studio.v1";

fn pascal(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Name of the envelope type, e.g. `CallsEvent`.
pub fn event_type_name(source: DataSource) -> String {
    format!("{}Event", pascal(source.as_str()))
}

fn field_doc(f: &Field) -> String {
    if let Some(note) = crate::model::schema::note(&f.name) {
        return note.into();
    }
    match (&f.live, &f.historic) {
        (Some(l), Some(h)) => format!("Live `{l}`, historic `{h}`."),
        (Some(l), None) => format!("Live only (`{l}`)."),
        (None, Some(h)) => format!("Historic only (`{h}`)."),
        (None, None) => String::new(),
    }
}

fn type_json(f: &Field, type_prefix: &str) -> Value {
    match &f.ty {
        Ty::Long => json!("long"),
        Ty::Str | Ty::Json => json!("string"),
        Ty::Bool => json!("boolean"),
        Ty::Timestamp => json!({"type": "long", "logicalType": "timestamp-millis"}),
        Ty::StrList => json!({"type": "array", "items": "string"}),
        Ty::Record(sub) => record_json(sub, &format!("{type_prefix}{}", pascal(&f.name))),
        Ty::RecordList(sub) => {
            json!({"type": "array", "items": record_json(sub, &format!("{type_prefix}{}", pascal(&f.name)))})
        }
    }
}

fn record_json(fields: &[Field], name: &str) -> Value {
    let fs: Vec<Value> = fields
        .iter()
        .map(|f| {
            let mut doc = field_doc(f);
            if f.ty == Ty::Json {
                doc.push_str(" JSON text.");
            }
            if f.ty == Ty::Timestamp {
                doc.push_str(" UTC epoch milliseconds.");
            }
            json!({"name": f.name, "type": ["null", type_json(f, name)], "default": null, "doc": doc.trim()})
        })
        .collect();
    json!({"type": "record", "name": name, "fields": fs})
}

/// The Avro schema of `source`'s envelope, as pretty JSON text (the `.avsc` file).
pub fn schema_json(source: DataSource) -> String {
    let record_name = format!("{}Record", pascal(source.as_str()));
    let schema = json!({
        "type": "record",
        "name": event_type_name(source),
        "namespace": NAMESPACE,
        "doc": format!("One {} record of the Telavox Studio API with its envelope (schema v1).", source.as_str()),
        "fields": [
            {"name": "event_id", "type": "string", "doc": "Deterministic id of the record's whole content (every field and extra): a new id for every change; an exact repeat keeps it."},
            {"name": "source", "type": "string", "doc": "Data source: calls, queues, agents, profile_live, profile_history."},
            {"name": "schema_version", "type": "int"},
            {"name": "origin", "type": "string", "doc": "live, replay or backfill."},
            {"name": "tenant", "type": "string", "doc": "The configured Telavox account name."},
            {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-millis"}, "doc": "When the relay received it."},
            {"name": "record", "type": record_json(crate::model::schema::fields(source), &record_name)},
            {"name": "extra", "type": ["null", "string"], "default": null, "doc": "Fields unknown to this schema version, as a JSON object text."},
            {"name": "match_key", "type": ["null", "string"], "default": null, "doc": "Cross-layer key: hash of the fields both the live and the historic layer carry (all fields for live-only sources), equal for the live and the historic version of one record."}
        ]
    });
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

/// CRC-64-AVRO (Rabin) fingerprint of the schema's parsing canonical form, little-endian.
pub fn fingerprint(source: DataSource) -> [u8; 8] {
    static FPS: OnceLock<Vec<[u8; 8]>> = OnceLock::new();
    let fps = FPS.get_or_init(|| {
        DataSource::ALL
            .iter()
            .map(|s| {
                let schema = apache_avro::Schema::parse_str(&schema_json(*s))
                    .expect("generated schema is valid Avro");
                let fp = schema.fingerprint::<apache_avro::rabin::Rabin>();
                let mut out = [0u8; 8];
                out.copy_from_slice(&fp.bytes[..8]);
                out
            })
            .collect()
    });
    fps[DataSource::ALL
        .iter()
        .position(|s| *s == source)
        .expect("in ALL")]
}

fn zigzag(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    zigzag(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

fn write_slot(out: &mut Vec<u8>, sub: Option<&Level>, slot: &Slot, arena: &Arena) {
    // Union ["null", T]: index 0 is null. Each field's type fixes its slot's
    // variant (see `model::Slot`), so the slot alone says what to write.
    if matches!(slot, Slot::Null) {
        out.push(0);
        return;
    }
    out.push(2); // zigzag(1)
    match slot {
        Slot::Null => {}
        Slot::Int(n) => zigzag(out, *n),
        Slot::Bool(b) => out.push(u8::from(*b)),
        Slot::Str(s) => string(out, arena.get(*s)),
        Slot::StrList(run) => {
            let items = arena.str_list(*run);
            if !items.is_empty() {
                zigzag(out, items.len() as i64);
                for i in items {
                    string(out, arena.get(*i));
                }
            }
            out.push(0);
        }
        Slot::Record(start) => {
            let sub = sub.expect("record fields have a level");
            write_record(out, sub, arena.record(sub, *start), arena)
        }
        Slot::List(run) => {
            let items = arena.items(*run);
            if !items.is_empty() {
                let sub = sub.expect("list fields have a level");
                zigzag(out, items.len() as i64);
                for i in items {
                    write_record(out, sub, arena.record(sub, *i), arena);
                }
            }
            out.push(0);
        }
    }
}

fn write_record(out: &mut Vec<u8>, level: &Level, slots: &[Slot], arena: &Arena) {
    for (i, s) in slots.iter().enumerate() {
        write_slot(out, level.sub(i), s, arena);
    }
}

/// Appends the Avro binary datum of `env` to `out`.
pub fn write_envelope(out: &mut Vec<u8>, env: &Envelope) {
    string(out, &env.event_id);
    string(out, env.source.as_str());
    zigzag(out, i64::from(env.schema_version));
    string(out, env.origin.as_str());
    string(out, &env.tenant);
    zigzag(out, env.received_at_ms);
    let (level, slots, arena) = env.record.slots();
    write_record(out, level, slots, arena);
    match env.record.extra_json() {
        None => out.push(0),
        Some(x) => {
            out.push(2);
            string(out, &x);
        }
    }
    out.push(2);
    string(out, &env.match_key);
}
