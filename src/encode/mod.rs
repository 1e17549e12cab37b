//! Encodings, headers and destinations. Pure: no I/O.
//!
//! - Avro with a registry id: Confluent wire format (`0x00` + 4-byte big-endian id + datum).
//! - Avro without a registry: single-object encoding (`C3 01` + 8-byte
//!   CRC-64-AVRO fingerprint, little-endian + datum), so every message stays self-describing.
//! - JSON: the envelope as UTF-8 JSON, `record` nested, `extra` as JSON text.

pub mod avro;

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::config::EncodingFormat;
use crate::model::{DataSource, Envelope, Field, Ty};

/// Version of every schema this build writes.
pub const SCHEMA_VERSION: u32 = 1;

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_AVRO: &str = "application/avro";

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
    registry_ids: Option<HashMap<DataSource, u32>>,
}

impl Encoder {
    pub fn new(format: EncodingFormat, registry_ids: Option<HashMap<DataSource, u32>>) -> Encoder {
        Encoder {
            format,
            registry_ids,
        }
    }

    pub fn encode(&self, env: &Envelope) -> Result<EncodedPayload, EncodeError> {
        match self.format {
            EncodingFormat::Json => Ok(EncodedPayload {
                bytes: serde_json::to_vec(&json_envelope(env))
                    .map_err(|e| EncodeError::Json(e.to_string()))?,
                content_type: CONTENT_TYPE_JSON,
            }),
            EncodingFormat::Avro => {
                let mut bytes = Vec::with_capacity(1024);
                match &self.registry_ids {
                    Some(ids) => {
                        let id = ids
                            .get(&env.source)
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
            let doc = match (&f.live, &f.historic, &f.ty) {
                (_, _, Ty::Timestamp) => "UTC epoch milliseconds.",
                (_, _, Ty::Json) => "JSON text.",
                (Some(_), None, _) => "Live only.",
                (None, Some(_), _) => "Historic only.",
                _ => "",
            };
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
            "event_id": {"type": "string"},
            "source": {"const": source.as_str()},
            "schema_version": {"const": SCHEMA_VERSION},
            "origin": {"enum": ["live", "replay", "backfill"]},
            "tenant": {"type": "string"},
            "received_at": {"type": "integer", "description": "UTC epoch milliseconds."},
            "record": record,
            "extra": {"type": ["string", "null"], "description": "Unknown fields as JSON object text."}
        }
    })
}

/// CloudEvents binary-mode headers (Kafka / NATS), plus schema name and version.
pub fn cloudevents_headers(env: &Envelope, content_type: &str) -> Vec<(String, String)> {
    let time_ms = env.record.event_time_ms().unwrap_or(env.received_at_ms);
    let time = chrono::DateTime::from_timestamp_millis(time_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    vec![
        ("ce_specversion".into(), "1.0".into()),
        ("ce_id".into(), env.event_id.clone()),
        (
            "ce_type".into(),
            format!(
                "com.telavox.studio.{}.v{}",
                env.source.as_str(),
                env.schema_version
            ),
        ),
        (
            "ce_source".into(),
            format!("telavox-studio/{}/{}", env.tenant, env.source.as_str()),
        ),
        ("ce_time".into(), time),
        ("content-type".into(), content_type.into()),
        ("schema_name".into(), schema_name(env.source)),
        ("schema_version".into(), env.schema_version.to_string()),
        ("origin".into(), env.origin.as_str().into()),
    ]
}

/// Fills a topic/subject template.
pub fn destination(template: &str, source: DataSource, version: u32, tenant: &str) -> String {
    template
        .replace("{source}", source.as_str())
        .replace("{version}", &version.to_string())
        .replace("{tenant}", tenant)
}
