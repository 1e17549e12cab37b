//! Fault injection: malformed live frames and failing GraphQL answers.
//! Every decision is a pure function of (seed, counter), so a run with the
//! same flags injects the same faults in the same order.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use serde_json::Value;

use super::journey::Rng;

/// The kinds of malformed frames `--malformed-share` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedKind {
    /// A text frame that is not JSON (truncated document).
    BadJson = 0,
    /// A binary frame (the API only sends text).
    Binary = 1,
    /// A text frame of `OVERSIZED_FRAME_BYTES` (a JSON string of padding).
    Oversized = 2,
    /// The record with wrong JSON types (numbers as strings, object as number).
    WrongTypes = 3,
    /// The intact record plus fields the reference does not document; a
    /// tolerant client still gets the record (so it is not "replaced").
    UnknownFields = 4,
}

/// Size of an `oversized` malformed frame: 2 MiB, above any sane per-frame
/// limit for documents that are normally a few KiB.
pub const OVERSIZED_FRAME_BYTES: usize = 2 * 1024 * 1024;

impl MalformedKind {
    pub const ALL: [MalformedKind; 5] = [
        MalformedKind::BadJson,
        MalformedKind::Binary,
        MalformedKind::Oversized,
        MalformedKind::WrongTypes,
        MalformedKind::UnknownFields,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            MalformedKind::BadJson => "bad_json",
            MalformedKind::Binary => "binary",
            MalformedKind::Oversized => "oversized",
            MalformedKind::WrongTypes => "wrong_types",
            MalformedKind::UnknownFields => "unknown_fields",
        }
    }
    /// Whether the original record is lost for a strict client.
    pub fn replaces_record(self) -> bool {
        self != MalformedKind::UnknownFields
    }
}

/// A malformed frame: text or binary.
pub enum MalformedFrame {
    Text(String),
    Binary(Bytes),
}

/// Builds the malformed replacement of `payload` (the live record).
pub fn malformed_frame(kind: MalformedKind, payload: &Value, oversized: &Bytes) -> MalformedFrame {
    match kind {
        MalformedKind::BadJson => {
            let s = payload.to_string();
            let cut = s
                .char_indices()
                .map(|(i, _)| i)
                .nth(s.chars().count() / 2)
                .unwrap_or(0);
            MalformedFrame::Text(format!("{}\u{0}<<garbage", &s[..cut]))
        }
        MalformedKind::Binary => {
            MalformedFrame::Binary(Bytes::from(payload.to_string().into_bytes()))
        }
        MalformedKind::Oversized => {
            MalformedFrame::Text(String::from_utf8_lossy(oversized).into_owned())
        }
        MalformedKind::WrongTypes => {
            let mut v = payload.clone();
            if let Some(o) = v.as_object_mut() {
                for (_, field) in o.iter_mut() {
                    match field {
                        Value::Number(n) => *field = Value::String(format!("{n}!")),
                        Value::Object(_) => *field = Value::from(42),
                        Value::Array(_) => *field = Value::Bool(true),
                        Value::String(_) => *field = Value::from(-1),
                        _ => {}
                    }
                }
            }
            MalformedFrame::Text(v.to_string())
        }
        MalformedKind::UnknownFields => {
            let mut v = payload.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "x_simulator_unknown_field".into(),
                    Value::from("unexpected"),
                );
                o.insert(
                    "x_simulator_unknown_object".into(),
                    serde_json::json!({ "nested": [1, 2, 3] }),
                );
            }
            MalformedFrame::Text(v.to_string())
        }
    }
}

/// The padding frame for `oversized`, built once.
pub fn oversized_payload() -> Bytes {
    let mut s = String::with_capacity(OVERSIZED_FRAME_BYTES);
    s.push('"');
    while s.len() < OVERSIZED_FRAME_BYTES - 1 {
        s.push_str("oversized-frame-padding ");
    }
    s.truncate(OVERSIZED_FRAME_BYTES - 1);
    s.push('"');
    Bytes::from(s)
}

/// Deterministic coin flips for one fault stream.
#[derive(Debug)]
pub struct Dice {
    seed: u64,
    stream: u64,
    counter: AtomicU64,
}

impl Dice {
    pub fn new(seed: u64, stream: u64) -> Self {
        Dice {
            seed,
            stream,
            counter: AtomicU64::new(0),
        }
    }
    /// A uniform draw in `[0, 1)` and a second independent u64.
    pub fn roll(&self) -> (f64, u64) {
        let n = self.counter.fetch_add(1, Relaxed);
        let mut rng = Rng::new(&[self.seed, 0xFA17, self.stream, n]);
        (rng.unit(), rng.next_u64())
    }
}
