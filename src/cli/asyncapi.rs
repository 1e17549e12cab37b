//! `studio-relay schemas asyncapi`: the consumers' contract as an AsyncAPI 3
//! document: one channel per topic/subject, its key, its CloudEvents headers
//! and its payload (referencing the checked-in Avro and JSON schemas).
//! Checked in as `docs/asyncapi.yaml`; a test keeps it current.

use serde_json::{json, Map, Value};

use crate::encode::{self, SCHEMA_VERSION};
use crate::model::DataSource;
use crate::publish::message_builder::{
    DL_ELEMENT_INDEX, DL_ERROR, DL_PAYLOAD_BYTES, DL_REASON, DL_SOURCE, DL_TENANT, DL_TRUNCATED,
};

/// The default topic template and dead-letter topic (see `config::SinkConfig`).
const TOPIC_TEMPLATE: &str = "telavox.studio.{source}.v{version}";
const DEADLETTER_TOPIC: &str = "telavox.studio.deadletter";
const CONTROL_TOPIC: &str = "telavox.studio.control";

fn key_doc(source: DataSource) -> &'static str {
    match source {
        DataSource::Calls | DataSource::Queues | DataSource::Agents => {
            "`id_call` of the record: every update of one call lands in one partition, in order"
        }
        DataSource::ProfileLive | DataSource::ProfileHistory => {
            "`agent.id` of the record: every update of one agent lands in one partition, in order"
        }
    }
}

fn source_doc(source: DataSource) -> &'static str {
    match source {
        DataSource::Calls => "One record per call, pushed live several times as the call progresses (started, queued, answered, ended); replay publishes the final state.",
        DataSource::Queues => "One record per queue a call passed through.",
        DataSource::Agents => "One record per agent a call was offered to (answered or not).",
        DataSource::ProfileLive => "Agents' presence (profile) changes as they happen. Live only: Telavox has no historic layer for it.",
        DataSource::ProfileHistory => "Hourly presence statistics per agent, pushed once an hour (at HH:00 UTC) for the hour before.",
    }
}

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn cloudevents_headers() -> Value {
    json!({
        "type": "object",
        "description": "CloudEvents 1.0 binary content mode, named as each protocol binding names them: Kafka record headers as listed here (`ce_` prefix); NATS message headers with the NATS binding's `ce-` prefix instead (`ce-specversion`, `ce-id`, `ce-matchkey`, `ce-type`, `ce-source`, `ce-time`), plus `ce-datacontenttype` (= `content-type`). The other headers are named alike on both.",
        "required": ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type"],
        "properties": {
            "ce_specversion": { "type": "string", "const": "1.0" },
            "ce_id": string("The event id: SHA-256 of the data source and the whole canonical record (every field, and the unknown ones in `extra`). Every change of a record gets a new id; only an exact repeat has the same one (dedupe on it). JetStream also gets it as Nats-Msg-Id."),
            "ce_matchkey": string("CloudEvents extension `matchkey`: SHA-256 of the data source and the fields both the live and the historic layer carry (all fields for live-only sources). Equal for the live and the historic version of one record; merge the layers on it. Also the envelope's `match_key`."),
            "ce_type": string("`com.telavox.studio.<source>.v<version>`"),
            "ce_source": string("`telavox-studio/<tenant>/<source>`"),
            "ce_time": string("The record's own time (call start, profile slot), RFC 3339 UTC."),
            "content-type": { "type": "string", "enum": [encode::CONTENT_TYPE_JSON, encode::CONTENT_TYPE_AVRO] },
            "schema_name": string("Fully qualified Avro record name of the payload."),
            "schema_version": string("The schema version (also in the topic name)."),
            "origin": { "type": "string", "enum": ["live", "replay", "backfill"], "description": "How the record reached the relay." }
        }
    })
}

fn deadletter_headers() -> Value {
    json!({
        "type": "object",
        "description": "CloudEvents attributes as for records: `ce_` on Kafka, `ce-` on NATS.",
        "required": ["ce_id", DL_REASON, DL_ERROR, DL_TENANT, DL_SOURCE, DL_PAYLOAD_BYTES],
        "properties": {
            "ce_specversion": { "type": "string", "const": "1.0" },
            "ce_id": string("`dl-` + a unique id: two identical bad frames are two incidents."),
            "ce_type": { "type": "string", "const": "com.telavox.studio.deadletter" },
            "ce_source": string("`telavox-studio/<tenant>/<source>`"),
            "ce_time": string("When the payload was received, RFC 3339 UTC."),
            "content-type": { "type": "string", "const": "application/octet-stream" },
            DL_REASON: { "type": "string", "enum": ["binary_frame", "oversized_frame", "invalid_utf8", "malformed_json", "too_deep", "not_an_object", "wrong_type", "encode", "publish_rejected", "too_large"], "description": "Why the payload could not be relayed. `too_large`: the encoded record is larger than the broker takes (NATS `max_payload`, Kafka `message.max.bytes` / the topic's `max.message.bytes`)." },
            DL_ERROR: string("The error, human-readable (at most 1024 characters)."),
            DL_TENANT: string("The tenant (Telavox account) whose socket received it."),
            DL_SOURCE: string("The data source whose socket or query produced it."),
            DL_PAYLOAD_BYTES: string("Size of the payload as received (for `publish_rejected` and `too_large`: the encoded record), in bytes, before any cut."),
            DL_TRUNCATED: string("`true` when only the payload's head is kept: it was over `sink.deadletter_max_bytes`, or the dead letter had to be cut to fit the broker's message limit."),
            DL_ELEMENT_INDEX: string("Only on an element of a batch frame (a JSON array, or JSON objects one after the other): the element's index, from 0. The payload is that element's bytes; the frame's other elements were relayed on their own.")
        }
    })
}

/// The AsyncAPI 3.0 document, as a JSON value.
pub fn document() -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for source in DataSource::ALL {
        let s = source.as_str();
        let address = encode::destination(TOPIC_TEMPLATE, source, SCHEMA_VERSION, "{tenant}");
        let key = json!({ "type": "string", "description": key_doc(source) });
        for (format, content_type, payload) in [
            (
                "json",
                encode::CONTENT_TYPE_JSON,
                json!({ "$ref": format!("../schemas/json/{s}.v{SCHEMA_VERSION}.schema.json") }),
            ),
            (
                "avro",
                encode::CONTENT_TYPE_AVRO,
                json!({
                    "schemaFormat": "application/vnd.apache.avro+json;version=1.9.0",
                    "schema": { "$ref": format!("../schemas/avro/{s}.v{SCHEMA_VERSION}.avsc") }
                }),
            ),
        ] {
            let wire = if format == "avro" {
                " Avro binary, prefixed by the single-object header (C3 01 + 8-byte Rabin fingerprint) or, with a schema registry, the Confluent header (00 + 4-byte schema id)."
            } else {
                " UTF-8 JSON envelope."
            };
            messages.insert(
                format!("{s}_{format}"),
                json!({
                    "name": format!("{s}_{format}"),
                    "title": format!("{s} record ({format})"),
                    "summary": source_doc(source),
                    "description": format!("Envelope (event_id, source, schema_version, origin, tenant, received_at, record, extra, match_key) of one `{s}` record.{wire}"),
                    "contentType": content_type,
                    "headers": { "$ref": "#/components/schemas/CloudEventsHeaders" },
                    "payload": payload,
                    "bindings": { "kafka": { "key": key.clone() } }
                }),
            );
        }
        let refs = json!([
            { "$ref": format!("#/channels/{s}/messages/{s}_json") },
            { "$ref": format!("#/channels/{s}/messages/{s}_avro") }
        ]);
        channels.insert(
            s.to_string(),
            json!({
                "address": address,
                "title": format!("{s} v{SCHEMA_VERSION}"),
                "description": format!("{} The topic/subject follows `sink.topic_template` (default `{TOPIC_TEMPLATE}`; `{{tenant}}` may be part of it). A deployment uses one encoding (`encoding.format`) for all channels.", source_doc(source)),
                "messages": {
                    format!("{s}_json"): { "$ref": format!("#/components/messages/{s}_json") },
                    format!("{s}_avro"): { "$ref": format!("#/components/messages/{s}_avro") }
                }
            }),
        );
        operations.insert(
            format!("publish_{s}"),
            json!({
                "action": "send",
                "title": format!("Publish {s}"),
                "description": "Published by `run` (origin live, and backfill after a socket gap) and by `replay` (origin replay), at least once; consumers dedupe on ce_id, and merge live with historic versions of a record on ce_matchkey.",
                "channel": { "$ref": format!("#/channels/{s}") },
                "messages": refs
            }),
        );
    }
    messages.insert(
        "deadletter".into(),
        json!({
            "name": "deadletter",
            "title": "Dead letter",
            "summary": "A payload the relay could not relay: the raw bytes as received, with why.",
            "contentType": "application/octet-stream",
            "headers": { "$ref": "#/components/schemas/DeadLetterHeaders" },
            "payload": { "type": "string", "format": "binary" },
            "bindings": { "kafka": { "key": { "type": "string", "description": "`<tenant>/<source>`" } } }
        }),
    );
    channels.insert(
        "deadletter".into(),
        json!({
            "address": DEADLETTER_TOPIC,
            "title": "Dead letters",
            "description": "Binary, malformed, oversized or un-normalizable frames, and messages the broker refused (`sink.deadletter_topic`).",
            "messages": { "deadletter": { "$ref": "#/components/messages/deadletter" } }
        }),
    );
    operations.insert(
        "publish_deadletter".into(),
        json!({
            "action": "send",
            "channel": { "$ref": "#/channels/deadletter" },
            "messages": [ { "$ref": "#/channels/deadletter/messages/deadletter" } ]
        }),
    );
    messages.insert(
        "gap".into(),
        json!({
            "name": "gap",
            "title": "Gap marker",
            "summary": "A window a live-only source (profile_live) was not received, and that no historic layer can fill: treat it as incomplete.",
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "ce_id": string("`gap-` + a hash of tenant, source and window: the same gap has the same id."),
                    "ce_type": { "type": "string", "const": "com.telavox.studio.gap" },
                    "ce_source": string("`telavox-studio/<tenant>/<source>`"),
                    "ce_time": string("End of the gap, RFC 3339 UTC.")
                }
            },
            "payload": {
                "type": "object",
                "required": ["type", "tenant", "source", "from", "to", "from_ms", "to_ms"],
                "properties": {
                    "type": { "type": "string", "const": "gap" },
                    "tenant": { "type": "string" },
                    "source": { "type": "string" },
                    "from": { "type": "string", "format": "date-time", "description": "Start of the gap (upstream time, widened by relay.gap_margin)." },
                    "to": { "type": "string", "format": "date-time" },
                    "from_ms": { "type": "integer", "description": "`from` in epoch milliseconds." },
                    "to_ms": { "type": "integer" },
                    "reason": { "type": "string" }
                }
            },
            "bindings": { "kafka": { "key": { "type": "string", "description": "`<tenant>/<source>`" } } }
        }),
    );
    channels.insert(
        "control".into(),
        json!({
            "address": CONTROL_TOPIC,
            "title": "Control events",
            "description": "Gap markers (`sink.control_topic`). Gaps of the historic sources are not marked: the relay backfills them from GraphQL (origin backfill).",
            "messages": { "gap": { "$ref": "#/components/messages/gap" } }
        }),
    );
    operations.insert(
        "publish_control".into(),
        json!({
            "action": "send",
            "channel": { "$ref": "#/channels/control" },
            "messages": [ { "$ref": "#/channels/control/messages/gap" } ]
        }),
    );
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "studio-relay: Telavox Studio events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every topic (Kafka) / subject (NATS JetStream) studio-relay publishes, with keys, CloudEvents headers and payload schemas. Generated by `studio-relay schemas asyncapi`; do not edit by hand."
        },
        "defaultContentType": encode::CONTENT_TYPE_JSON,
        "servers": {
            "kafka": { "host": "kafka:9092", "protocol": "kafka", "description": "Any Kafka-protocol cluster (`sink.kind = \"kafka\"`)." },
            "nats": { "host": "nats:4222", "protocol": "nats", "description": "NATS with JetStream (`sink.kind = \"nats\"`): the stream `sink.nats.stream` captures the subjects." }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": {
                "CloudEventsHeaders": cloudevents_headers(),
                "DeadLetterHeaders": deadletter_headers()
            }
        }
    })
}

/// The document as YAML text (what `docs/asyncapi.yaml` holds).
pub fn yaml() -> String {
    let mut out =
        String::from("# Generated by `studio-relay schemas asyncapi`; do not edit by hand.\n");
    write_yaml(&mut out, &document(), 0);
    out
}

/// A small YAML emitter for JSON values: block mappings and sequences, every
/// string double-quoted (a JSON string literal is a valid YAML one), so the
/// output is unambiguous without a YAML library.
fn write_yaml(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                out.push_str(&pad);
                out.push_str(&scalar_key(k));
                out.push(':');
                write_child(out, val, indent);
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // First entry on the dash's line, the rest aligned under it.
                        let mut inner = String::new();
                        write_yaml(&mut inner, item, indent + 2);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => write_child(out, item, indent),
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&other.to_string());
            out.push('\n');
        }
    }
}

fn write_child(out: &mut String, val: &Value, indent: usize) {
    match val {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_yaml(out, val, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_yaml(out, val, indent + 2);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        scalar => {
            out.push(' ');
            out.push_str(&scalar.to_string());
            out.push('\n');
        }
    }
}

/// Plain keys stay plain; anything YAML could misread is quoted.
fn scalar_key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !k.starts_with('-');
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/asyncapi.yaml");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == yaml(),
            "docs/asyncapi.yaml is stale: run `studio-relay schemas asyncapi --out docs/asyncapi.yaml`"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 20);
        for r in refs {
            if let Some(pointer) = r.strip_prefix('#') {
                assert!(doc.pointer(pointer).is_some(), "dangling {r}");
            } else {
                let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("docs")
                    .join(&r);
                assert!(file.is_file(), "{r} does not exist");
            }
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, val) in m {
                    match (k.as_str(), val) {
                        ("$ref", Value::String(s)) => out.push(s.clone()),
                        _ => collect_refs(val, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn the_yaml_reads_back_as_the_document() {
        // A YAML parser is a Python one-liner away; here we check the shape
        // the emitter relies on: keys at consistent indents, no bare strings.
        let text = yaml();
        assert!(text.contains("\nasyncapi: \"3.0.0\"\n"));
        assert!(text.contains("\n  calls:\n    address: \"telavox.studio.calls.v1\"\n"));
        assert!(text.contains("\n      - \"$ref\": \"#/channels/calls/messages/calls_json\"\n"));
    }
}
