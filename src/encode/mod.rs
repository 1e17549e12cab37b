//! Encodings, headers and destinations. Pure: no I/O.
//!
//! - Avro with a registry id: Confluent wire format (`0x00` + 4-byte big-endian id + datum).
//! - Avro without a registry: single-object encoding (`C3 01` + 8-byte
//!   CRC-64-AVRO fingerprint, little-endian + datum), so every message stays self-describing.
//! - JSON: the envelope as UTF-8 JSON, `record` nested, `extra` as JSON text.

pub mod avro;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use crate::config::EncodingFormat;
use crate::model::{write_i64, write_json_str, DataSource, Envelope, Field, Ty};

/// Version of every schema this build writes.
pub const SCHEMA_VERSION: u32 = 1;

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_AVRO: &str = "application/avro";

/// One header. Names and most values are the same for every event of a
/// source (`ce_specversion`, `schema_name`, ...), so they are borrowed from
/// statics; only per-event values (`ce_id`, `ce_source`, `ce_time`) are
/// owned. Every event carries nine headers: allocating each name and value
/// (18 strings per event, copied again by the NATS client) was among the top
/// costs in the relay's profile.
pub type Header = (Cow<'static, str>, Cow<'static, str>);

/// An encoded payload.
#[derive(Debug, Clone)]
pub struct EncodedPayload {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("no schema registry id for {0}")]
    MissingSchemaId(DataSource),
    #[error("JSON encoding failed: {0}")]
    Json(String),
}

/// Encodes envelopes in the configured format.
#[derive(Debug, Clone)]
pub struct Encoder {
    format: EncodingFormat,
    /// Schema registry id per source ([`DataSource::index`]), when registered.
    registry_ids: Option<[Option<u32>; DataSource::ALL.len()]>,
    /// Ids of tenants whose subjects got other ids than `registry_ids`: a
    /// registry handing out one id per subject version (Apicurio's legacy
    /// id mode) gives each tenant's topic its own. None in the usual case of
    /// one id per schema text, which keeps the per-event path free of lookups.
    tenant_registry_ids: Option<Arc<HashMap<String, [Option<u32>; DataSource::ALL.len()]>>>,
    /// Size of the last payload per source: the next one's buffer is
    /// allocated at about that size once, instead of growing by doubling
    /// (which also leaves up to half of it unused while the message waits
    /// for its ack). Only a hint: the bytes never depend on it.
    size_hints: Arc<[AtomicUsize; DataSource::ALL.len()]>,
}

impl Encoder {
    pub fn new(format: EncodingFormat, registry_ids: Option<HashMap<DataSource, u32>>) -> Encoder {
        Encoder {
            format,
            registry_ids: registry_ids.map(|ids| DataSource::ALL.map(|s| ids.get(&s).copied())),
            tenant_registry_ids: None,
            size_hints: Arc::new(std::array::from_fn(|_| AtomicUsize::new(1024))),
        }
    }

    /// Per-tenant registry ids that take precedence over the ones given to
    /// [`Encoder::new`] for that tenant's events.
    pub fn with_tenant_registry_ids(
        mut self,
        per_tenant: HashMap<String, HashMap<DataSource, u32>>,
    ) -> Encoder {
        let table = per_tenant
            .into_iter()
            .map(|(tenant, ids)| (tenant, DataSource::ALL.map(|s| ids.get(&s).copied())))
            .collect();
        self.tenant_registry_ids = Some(Arc::new(table));
        self
    }

    pub fn encode(&self, env: &Envelope) -> Result<EncodedPayload, EncodeError> {
        let hint = &self.size_hints[env.source.index()];
        let capacity = hint.load(Ordering::Relaxed) + 64;
        let encoded = self.encode_with_capacity(env, capacity)?;
        hint.store(encoded.bytes.len(), Ordering::Relaxed);
        Ok(encoded)
    }

    fn encode_with_capacity(
        &self,
        env: &Envelope,
        capacity: usize,
    ) -> Result<EncodedPayload, EncodeError> {
        match self.format {
            EncodingFormat::Json => Ok(EncodedPayload {
                bytes: write_json_envelope(env, capacity),
                content_type: CONTENT_TYPE_JSON,
            }),
            EncodingFormat::Avro => {
                let mut bytes = Vec::with_capacity(capacity);
                match &self.registry_ids {
                    Some(ids) => {
                        let tenant_ids = self
                            .tenant_registry_ids
                            .as_ref()
                            .and_then(|t| t.get(env.tenant.as_str()));
                        let id = tenant_ids.unwrap_or(ids)[env.source.index()]
                            .ok_or(EncodeError::MissingSchemaId(env.source))?;
                        bytes.push(0);
                        bytes.extend_from_slice(&id.to_be_bytes());
                    }
                    None => {
                        bytes.extend_from_slice(&[0xC3, 0x01]);
                        bytes.extend_from_slice(&avro::fingerprint(env.source));
                    }
                }
                avro::write_envelope(&mut bytes, env);
                Ok(EncodedPayload {
                    bytes,
                    content_type: CONTENT_TYPE_AVRO,
                })
            }
        }
    }
}

/// The JSON payload of an envelope: the compact text of [`json_envelope`],
/// byte for byte, written straight from the record's slots.
fn write_json_envelope(env: &Envelope, capacity: usize) -> Vec<u8> {
    let extra = env.record.extra_json();
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(b"{\"event_id\":");
    write_json_str(&mut out, &env.event_id);
    out.extend_from_slice(b",\"source\":");
    write_json_str(&mut out, env.source.as_str());
    out.extend_from_slice(b",\"schema_version\":");
    write_i64(&mut out, i64::from(env.schema_version));
    out.extend_from_slice(b",\"origin\":");
    write_json_str(&mut out, env.origin.as_str());
    out.extend_from_slice(b",\"tenant\":");
    write_json_str(&mut out, &env.tenant);
    out.extend_from_slice(b",\"received_at\":");
    write_i64(&mut out, env.received_at_ms);
    out.extend_from_slice(b",\"record\":");
    env.record.write_json(&mut out);
    out.extend_from_slice(b",\"extra\":");
    match &extra {
        Some(x) => write_json_str(&mut out, x),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"match_key\":");
    write_json_str(&mut out, &env.match_key);
    out.push(b'}');
    out
}

/// The JSON form of an envelope.
pub fn json_envelope(env: &Envelope) -> Value {
    json!({
        "event_id": env.event_id,
        "source": env.source.as_str(),
        "schema_version": env.schema_version,
        "origin": env.origin.as_str(),
        "tenant": env.tenant,
        "received_at": env.received_at_ms,
        "record": env.record.to_json(),
        "extra": env.record.extra_json(),
        "match_key": env.match_key,
    })
}

/// The Avro schema text of `source` (the `.avsc` file).
pub fn avro_schema_json(source: DataSource) -> String {
    avro::schema_json(source)
}

/// The full name of `source`'s schema, e.g. `com.telavox.studio.v1.CallsEvent`.
pub fn schema_name(source: DataSource) -> String {
    format!("{}.{}", avro::NAMESPACE, avro::event_type_name(source))
}

fn json_type(f: &Field) -> Value {
    let nullable = |t: &str| json!([t, "null"]);
    match &f.ty {
        Ty::Long | Ty::Timestamp => json!({"type": nullable("integer")}),
        Ty::Str | Ty::Json => json!({"type": nullable("string")}),
        Ty::Bool => json!({"type": nullable("boolean")}),
        Ty::StrList => json!({"type": nullable("array"), "items": {"type": "string"}}),
        Ty::Record(sub) => {
            let mut o = json_object(sub);
            o["type"] = nullable("object");
            o
        }
        Ty::RecordList(sub) => json!({"type": nullable("array"), "items": json_object(sub)}),
    }
}

fn json_object(fields: &[Field]) -> Value {
    let props: serde_json::Map<String, Value> = fields
        .iter()
        .map(|f| {
            let mut t = json_type(f);
            let layers = match (&f.live, &f.historic, &f.ty) {
                (_, _, Ty::Timestamp) => "UTC epoch milliseconds.",
                (_, _, Ty::Json) => "JSON text.",
                (Some(_), None, _) => "Live only.",
                (None, Some(_), _) => "Historic only.",
                _ => "",
            };
            let doc = crate::model::schema::note(&f.name).unwrap_or(layers);
            if !doc.is_empty() {
                t["description"] = Value::from(doc);
            }
            (f.name.clone(), t)
        })
        .collect();
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

/// JSON Schema (2020-12) of `source`'s JSON envelope.
pub fn json_schema(source: DataSource) -> Value {
    let mut record = json_object(crate::model::schema::fields(source));
    record["description"] = Value::from(format!("The canonical {} record.", source.as_str()));
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://schemas.telavox.example/studio/{}.v1.schema.json", source.as_str()),
        "title": avro::event_type_name(source),
        "type": "object",
        "required": ["event_id", "source", "schema_version", "origin", "tenant", "received_at", "record"],
        "additionalProperties": false,
        "properties": {
            "event_id": {"type": "string", "description": "Hash of the record's whole content: a new id for every change."},
            "source": {"const": source.as_str()},
            "schema_version": {"const": SCHEMA_VERSION},
            "origin": {"enum": ["live", "replay", "backfill"]},
            "tenant": {"type": "string"},
            "received_at": {"type": "integer", "description": "UTC epoch milliseconds."},
            "record": record,
            "extra": {"type": ["string", "null"], "description": "Unknown fields as JSON object text."},
            "match_key": {"type": ["string", "null"], "description": "Cross-layer key: hash of the fields both layers carry; equal for the live and the historic version of one record."}
        }
    })
}

/// The CloudEvents extension attribute carrying [`Envelope::match_key`]
/// (Kafka binding name; the NATS sink writes `ce-matchkey`).
pub const MATCH_KEY_HEADER: &str = "ce_matchkey";

/// CloudEvents binary-mode headers (Kafka / NATS), plus schema name and version.
/// Names, and values that depend only on the source and schema version, are
/// borrowed statics; per event only `ce_id`, `ce_matchkey`, `ce_source`
/// and `ce_time` are allocated.
pub fn cloudevents_headers(env: &Envelope, content_type: &'static str) -> Vec<Header> {
    let time_ms = env.record.event_time_ms().unwrap_or(env.received_at_ms);
    let source = env.source.as_str();
    let (ce_type, version): (Cow<'static, str>, Cow<'static, str>) =
        if env.schema_version == SCHEMA_VERSION {
            let s = &per_source_texts()[env.source.index()];
            (Cow::Borrowed(&s.ce_type), Cow::Borrowed(&s.version))
        } else {
            let version = env.schema_version.to_string();
            let ce_type = concat(&["com.telavox.studio.", source, ".v", &version]);
            (ce_type.into(), version.into())
        };
    let ce_source = concat(&["telavox-studio/", &env.tenant, "/", source]);
    vec![
        ("ce_specversion".into(), "1.0".into()),
        ("ce_id".into(), env.event_id.clone().into()),
        (MATCH_KEY_HEADER.into(), env.match_key.clone().into()),
        ("ce_type".into(), ce_type),
        ("ce_source".into(), ce_source.into()),
        ("ce_time".into(), rfc3339_millis(time_ms).into()),
        ("content-type".into(), content_type.into()),
        ("schema_name".into(), schema_name_of(env.source).into()),
        ("schema_version".into(), version),
        ("origin".into(), env.origin.as_str().into()),
    ]
}

/// Header values fixed by a source at this build's [`SCHEMA_VERSION`].
struct SourceTexts {
    ce_type: String,
    version: String,
}

fn per_source_texts() -> &'static [SourceTexts] {
    static TEXTS: OnceLock<Vec<SourceTexts>> = OnceLock::new();
    TEXTS.get_or_init(|| {
        let version = SCHEMA_VERSION.to_string();
        DataSource::ALL
            .iter()
            .map(|s| SourceTexts {
                ce_type: concat(&["com.telavox.studio.", s.as_str(), ".v", &version]),
                version: version.clone(),
            })
            .collect()
    })
}

/// [`schema_name`], computed once per source.
fn schema_name_of(source: DataSource) -> &'static str {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    &NAMES.get_or_init(|| DataSource::ALL.iter().map(|s| schema_name(*s)).collect())[source.index()]
}

/// The parts, joined (one allocation, no formatting machinery).
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.push_str(p);
    }
    out
}

/// `2026-05-18T10:26:37.234Z`: what chrono's
/// `to_rfc3339_opts(SecondsFormat::Millis, true)` writes for the instant
/// (the epoch for one chrono cannot represent). Years 1970–9999 are written
/// here directly; anything else goes through chrono.
pub fn rfc3339_millis(ms: i64) -> String {
    /// 10000-01-01T00:00:00Z.
    const END_MS: i64 = 253_402_300_800_000;
    if !(0..END_MS).contains(&ms) {
        return chrono::DateTime::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    }
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, hh);
    put(14, 2, mm);
    put(17, 2, ss);
    put(20, 3, milli);
    std::str::from_utf8(&b).expect("ASCII digits").to_owned()
}

/// Days since 1970-01-01 (non-negative) → proleptic Gregorian (year, month,
/// day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Fills a topic/subject template.
pub fn destination(template: &str, source: DataSource, version: u32, tenant: &str) -> String {
    template
        .replace("{source}", source.as_str())
        .replace("{version}", &version.to_string())
        .replace("{tenant}", tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let chrono = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let mut cases = vec![
            0,
            -1,
            1,
            999,
            1000,
            86_399_999,
            86_400_000,
            951_782_400_000,   // 2000-02-29
            4_107_542_399_999, // 2100-02-28T23:59:59.999
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MIN,
            i64::MAX,
            -62_135_596_800_001,
        ];
        let mut n = 7i64;
        for _ in 0..20_000 {
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            cases.extend([n.rem_euclid(253_402_300_800_000), n >> 10, n >> 30]);
        }
        for ms in cases {
            assert_eq!(rfc3339_millis(ms), chrono(ms), "{ms}");
        }
    }
}
