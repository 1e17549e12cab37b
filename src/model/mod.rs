//! Canonical records and the normalizers that build them. Pure: no I/O, no
//! async, no clock (times are passed in).
//!
//! A [`Record`] is the canonical snake_case JSON of one record of one source,
//! in the shape of [`schema::fields`]: every field present (null when the
//! payload did not carry it), in schema order. Keys the schema does not know
//! are kept in [`Record::extra`].

mod normalize;
pub mod schema;
mod source;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use normalize::{normalize_historic, normalize_live, NormalizeError};
pub use schema::{Field, Ty};
pub use source::DataSource;

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Pushed by a live WebSocket.
    Live,
    /// Fetched by `studio-relay replay`.
    Replay,
    /// Fetched by the relay to fill a gap after a reconnect.
    Backfill,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Live => "live",
            Origin::Replay => "replay",
            Origin::Backfill => "backfill",
        }
    }
}

/// One canonical record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    source: DataSource,
    value: Map<String, Value>,
    /// Unknown fields, by dotted path, kept verbatim.
    pub extra: Map<String, Value>,
}

impl Record {
    pub fn source(&self) -> DataSource {
        self.source
    }

    /// The canonical fields (snake_case, schema order, nulls included).
    pub fn fields(&self) -> &Map<String, Value> {
        &self.value
    }

    /// Canonical JSON of the record (without `extra`).
    pub fn to_json(&self) -> Value {
        Value::Object(self.value.clone())
    }

    fn get(&self, path: &[&str]) -> Option<&Value> {
        let mut cur = self.value.get(path[0])?;
        for p in &path[1..] {
            cur = cur.get(p)?;
        }
        (!cur.is_null()).then_some(cur)
    }

    /// Kafka key: `id_call` for calls/queues/agents, the agent id for profile sources.
    pub fn partition_key(&self) -> Option<String> {
        let v = match self.source {
            DataSource::Calls | DataSource::Queues | DataSource::Agents => self.get(&["id_call"]),
            DataSource::ProfileLive | DataSource::ProfileHistory => self.get(&["agent", "id"]),
        }?;
        Some(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// The record's own time: call/queue/agent start, profile slot start, profile start.
    pub fn event_time_ms(&self) -> Option<i64> {
        match self.source {
            DataSource::Calls | DataSource::Queues | DataSource::Agents => {
                self.get(&["time", "start"])
            }
            DataSource::ProfileHistory => self.get(&["slot", "start_date"]),
            DataSource::ProfileLive => self.get(&["profile", "active", "start_date"]),
        }?
        .as_i64()
    }

    pub fn unknown_field_count(&self) -> usize {
        self.extra.len()
    }

    /// `extra` as JSON text, or None when empty.
    pub fn extra_json(&self) -> Option<String> {
        (!self.extra.is_empty()).then(|| Value::Object(self.extra.clone()).to_string())
    }

    /// The deterministic event id: SHA-256 (first 128 bits, hex) of the source
    /// and the canonical content of the fields both layers carry (all fields
    /// for live-only sources). The same final record thus has the same id live
    /// and replayed; every change of a shared field gives a new id.
    pub fn event_id(&self) -> String {
        let both = self.source.graphql_root().is_some();
        let projected = project(schema::fields(self.source), &self.value, both);
        let mut h = Sha256::new();
        h.update(self.source.as_str().as_bytes());
        h.update(b"\n");
        h.update(Value::Object(projected).to_string().as_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

fn project(fields: &[Field], value: &Map<String, Value>, both_only: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for f in fields {
        if both_only && !f.in_both() {
            continue;
        }
        let v = value.get(&f.name).unwrap_or(&Value::Null);
        let v = match (&f.ty, v) {
            (Ty::Record(sub), Value::Object(o)) => Value::Object(project(sub, o, both_only)),
            (Ty::RecordList(sub), Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .map(|i| match i {
                        Value::Object(o) => Value::Object(project(sub, o, both_only)),
                        other => other.clone(),
                    })
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(f.name.clone(), v);
    }
    out
}

/// A record with its envelope: what goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub event_id: String,
    pub source: DataSource,
    pub schema_version: u32,
    pub origin: Origin,
    pub tenant: String,
    pub received_at_ms: i64,
    pub record: Record,
}

impl Envelope {
    pub fn new(tenant: String, origin: Origin, received_at_ms: i64, record: Record) -> Envelope {
        Envelope {
            event_id: record.event_id(),
            source: record.source(),
            schema_version: 1,
            origin,
            tenant,
            received_at_ms,
            record,
        }
    }
}

/// GraphQL selection set asking for every historic field of `source`'s record type.
pub fn graphql_selection(source: DataSource) -> String {
    fn walk(fields: &[Field], out: &mut String) {
        out.push('{');
        for f in fields {
            let Some(name) = &f.historic else { continue };
            out.push(' ');
            out.push_str(name);
            if let Ty::Record(sub) | Ty::RecordList(sub) = &f.ty {
                out.push(' ');
                walk(sub, out);
            }
        }
        out.push_str(" }");
    }
    let mut out = String::new();
    walk(schema::fields(source), &mut out);
    out
}
