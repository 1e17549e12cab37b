//! Canonical records and the normalizers that build them. Pure: no I/O, no
//! async, no clock (times are passed in).
//!
//! A [`Record`] is the canonical snake_case JSON of one record of one source,
//! in the shape of [`schema::fields`]: every field present (null when the
//! payload did not carry it), in schema order. Keys the schema does not know
//! are kept in [`Record::extra`].

mod compiled;
mod normalize;
pub mod schema;
mod source;

use std::sync::OnceLock;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub(crate) use compiled::{compiled, Level};
pub use normalize::{
    live_batch, live_sequence, normalize_historic, normalize_live, normalize_live_text,
    NormalizeError,
};
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

/// The canonical value of one field. Each field's type fixes the variant
/// (or `Null`), so records are stored by schema position rather than as
/// JSON objects: no key strings, no hashing, nothing to look up by name on
/// the per-event path. [`Record::fields`] gives the JSON view. Nested
/// records, lists and strings live in the record's [`Arena`], so a slot is
/// a plain value and a whole record is a handful of allocations however
/// deep it nests. (No `PartialEq`: equal strings may sit at different
/// places of their buffers.)
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    Null,
    /// `Long` and `Timestamp` (epoch millis).
    Int(i64),
    Bool(bool),
    /// `Str`, and `Json` (as JSON text).
    Str(Span),
    /// `StrList`: its items' spans, a run of the arena's span list.
    StrList(Run),
    /// A nested record: where its slots (one per field of its level, in
    /// schema order) start in the arena.
    Record(usize),
    /// `RecordList`: where each item's slots start, a run of the arena's
    /// item list.
    List(Run),
}

/// Where one string of a record is in its arena's text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    start: usize,
    end: usize,
}

/// A range of one of an arena's lists (string-list items, record-list items).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run {
    start: usize,
    end: usize,
}

/// Everything one record holds, in four flat buffers: its strings end to
/// end, the slots of the record and of every record nested in it, the
/// spans of its string lists' items and the slot starts of its record
/// lists' items. A normalizer appends to them as it parses; the top-level
/// record's slots come first (it is opened first).
#[derive(Debug, Clone)]
pub(crate) struct Arena {
    text: String,
    slots: Vec<Slot>,
    spans: Vec<Span>,
    items: Vec<usize>,
}

impl Arena {
    /// An arena sized for `text` bytes of strings and the slots of a full
    /// record of `level` (its nested records included), with room for a few
    /// items per string list.
    pub fn for_record(level: &Level, text: usize) -> Arena {
        Arena {
            text: String::with_capacity(text),
            slots: Vec::with_capacity(level.slot_count()),
            spans: Vec::with_capacity(4 * level.str_list_count()),
            items: Vec::new(),
        }
    }

    pub fn push(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        Span {
            start,
            end: self.text.len(),
        }
    }

    /// Appends the `Display` text of `v` (a number's or JSON value's text).
    pub fn push_display(&mut self, v: &impl std::fmt::Display) -> Span {
        use std::fmt::Write;
        let start = self.text.len();
        write!(self.text, "{v}").expect("writing to a String cannot fail");
        Span {
            start,
            end: self.text.len(),
        }
    }

    pub fn get(&self, span: Span) -> &str {
        &self.text[span.start..span.end]
    }

    /// Appends a record of `fields` null slots; returns where it starts.
    pub fn open_record(&mut self, fields: usize) -> usize {
        let start = self.slots.len();
        self.slots.resize(start + fields, Slot::Null);
        start
    }

    /// Sets slot `i` of the record starting at `record`.
    pub fn set(&mut self, record: usize, i: usize, slot: Slot) {
        self.slots[record + i] = slot;
    }

    /// The slots of the record of `level` starting at `start`.
    pub fn record(&self, level: &Level, start: usize) -> &[Slot] {
        &self.slots[start..start + level.fields.len()]
    }

    /// Where the next string list starts: push its items with
    /// [`Arena::push_item`], then close it with [`Arena::str_list_since`].
    pub fn str_list_start(&self) -> usize {
        self.spans.len()
    }

    pub fn push_item(&mut self, span: Span) {
        self.spans.push(span);
    }

    pub fn str_list_since(&self, start: usize) -> Slot {
        Slot::StrList(Run {
            start,
            end: self.spans.len(),
        })
    }

    pub fn str_list(&self, run: Run) -> &[Span] {
        &self.spans[run.start..run.end]
    }

    /// A record list of the records starting at `starts`. (Its items'
    /// starts are gathered first: an item's own lists come before them.)
    pub fn record_list(&mut self, starts: &[usize]) -> Slot {
        let start = self.items.len();
        self.items.extend_from_slice(starts);
        Slot::List(Run {
            start,
            end: self.items.len(),
        })
    }

    pub fn items(&self, run: Run) -> &[usize] {
        &self.items[run.start..run.end]
    }
}

/// One canonical record.
#[derive(Debug, Clone)]
pub struct Record {
    source: DataSource,
    /// The slots (the top-level fields' first, in schema order) and strings.
    arena: Arena,
    /// Unknown fields, by dotted path, kept verbatim.
    pub extra: Map<String, Value>,
    /// The JSON view of the slots, built on first use of [`Record::fields`].
    view: OnceLock<Map<String, Value>>,
    /// The record's JSON text and event id, built together on first use.
    canonical: OnceLock<Canonical>,
}

/// The compact JSON of all of a record's fields, the event id and the match
/// key. The match key hashes the same text without the fields only one
/// layer carries, so one pass writes the text and hashes it around those
/// fields (and the JSON encoder then takes the text as it is); the event id
/// hashes the whole text and `extra`.
#[derive(Debug, Clone)]
struct Canonical {
    id: String,
    match_key: String,
    json: Vec<u8>,
}

/// Equal content (the string buffers of equal records may be laid out
/// differently, so the JSON views are compared; only tests compare records).
impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.extra == other.extra && self.fields() == other.fields()
    }
}

impl Record {
    /// The record whose top-level slots start `arena` (opened first).
    pub(crate) fn new(source: DataSource, arena: Arena, extra: Map<String, Value>) -> Self {
        Record {
            source,
            arena,
            extra,
            view: OnceLock::new(),
            canonical: OnceLock::new(),
        }
    }

    pub fn source(&self) -> DataSource {
        self.source
    }

    /// The canonical fields (snake_case, schema order, nulls included).
    pub fn fields(&self) -> &Map<String, Value> {
        self.view.get_or_init(|| {
            let (level, slots, arena) = self.slots();
            record_to_map(level, slots, arena)
        })
    }

    /// Canonical JSON of the record (without `extra`).
    pub fn to_json(&self) -> Value {
        Value::Object(self.fields().clone())
    }

    /// The top-level slots, their compiled level and the arena the nested
    /// slots and strings are in, for the encoders.
    pub(crate) fn slots(&self) -> (&'static Level, &[Slot], &Arena) {
        let root = &compiled(self.source).root;
        (root, self.arena.record(root, 0), &self.arena)
    }

    /// The non-null slot at an index path (`None` through lists, as a
    /// lookup by name in a JSON array finds nothing).
    fn get(&self, path: Option<&Vec<usize>>) -> Option<&Slot> {
        let (last, parents) = path?.split_last()?;
        let (mut level, mut cur, _) = self.slots();
        for i in parents {
            match cur.get(*i)? {
                Slot::Record(start) => {
                    level = level.sub(*i)?;
                    cur = self.arena.record(level, *start);
                }
                _ => return None,
            }
        }
        cur.get(*last).filter(|s| !matches!(s, Slot::Null))
    }

    /// Kafka key: `id_call` for calls/queues/agents, the agent id for profile sources.
    pub fn partition_key(&self) -> Option<String> {
        let c = compiled(self.source);
        Some(match self.get(c.key_path.as_ref())? {
            Slot::Str(s) => self.arena.get(*s).to_string(),
            Slot::Int(i) => i.to_string(),
            // Not reached with the current schema (both keys are strings
            // or integers): the JSON text, as for any other value.
            other => {
                let path = c.key_path.as_deref()?;
                slot_to_value(sub_level_at(&c.root, path), other, &self.arena).to_string()
            }
        })
    }

    /// The record's own time: call/queue/agent start, profile slot start, profile start.
    pub fn event_time_ms(&self) -> Option<i64> {
        match self.get(compiled(self.source).time_path.as_ref())? {
            Slot::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn unknown_field_count(&self) -> usize {
        self.extra.len()
    }

    /// `extra` as JSON text, or None when empty.
    pub fn extra_json(&self) -> Option<String> {
        // A map serializes exactly as the JSON object holding it would.
        (!self.extra.is_empty())
            .then(|| serde_json::to_string(&self.extra).expect("JSON values serialize"))
    }

    /// The deterministic event id: SHA-256 (first 128 bits, hex) of the
    /// source, the compact JSON of every field (schema order, nulls
    /// included, live-only and historic-only fields alike) and, when there
    /// are unknown fields, a newline and the JSON text of `extra`. Every
    /// distinct content thus has its own id; only an exact repeat shares
    /// one. Relay metadata (tenant, origin, received_at) is not hashed.
    pub fn event_id(&self) -> String {
        self.canonical().id.clone()
    }

    /// The cross-layer match key: SHA-256 (first 128 bits, hex) of the
    /// source and the canonical content of the fields both layers carry
    /// (all fields for live-only sources; `extra` never counts). A record
    /// pushed live and the same record read from GraphQL share it, so
    /// consumers (and the relay's backfill) can merge the two layers.
    ///
    /// The hashed text is the compact JSON of that projection (fields in
    /// schema order): the record's JSON text with the other fields left out.
    pub fn match_key(&self) -> String {
        self.canonical().match_key.clone()
    }

    /// Appends the compact JSON of the record (what `to_json()` serializes to).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.canonical().json);
    }

    fn canonical(&self) -> &Canonical {
        self.canonical.get_or_init(|| {
            let (root, slots, arena) = self.slots();
            let mut json = Vec::with_capacity(2 * arena.text.len() + 512);
            let mut h = Sha256::new();
            h.update(self.source.as_str().as_bytes());
            h.update(b"\n");
            if self.source.graphql_root().is_some() {
                let mut hashing = Hashing { sha: h, from: 0 };
                write_record_json_hashing_shared(&mut json, root, slots, arena, &mut hashing);
                h = hashing.sha;
                h.update(&json[hashing.from..]);
            } else {
                // Live only: every field counts, the hashed text is the record's.
                write_record_json(&mut json, root, slots, arena);
                h.update(&json);
            }
            let mut whole = Sha256::new();
            whole.update(self.source.as_str().as_bytes());
            whole.update(b"\n");
            whole.update(&json);
            if let Some(extra) = self.extra_json() {
                whole.update(b"\n");
                whole.update(extra.as_bytes());
            }
            Canonical {
                id: hex_id(&whole.finalize()[..16]),
                match_key: hex_id(&h.finalize()[..16]),
                json,
            }
        })
    }
}

/// Lowercase hex of the id's 16 bytes (what `hex::encode` gives, without
/// its char-by-char `String` building on the per-event path).
fn hex_id(bytes: &[u8]) -> String {
    let mut out = [0u8; 32];
    hex::encode_to_slice(bytes, &mut out).expect("16 bytes make 32 hex digits");
    std::str::from_utf8(&out)
        .expect("hex digits are ASCII")
        .to_owned()
}

/// The sub-level of the last field of `path`, if it is a record field.
fn sub_level_at<'a>(root: &'a Level, path: &[usize]) -> Option<&'a Level> {
    let mut level = root;
    for (depth, i) in path.iter().enumerate() {
        let sub = level.sub(*i);
        if depth + 1 == path.len() {
            return sub;
        }
        level = sub?;
    }
    None
}

fn record_to_map(level: &Level, slots: &[Slot], arena: &Arena) -> Map<String, Value> {
    let mut out = Map::with_capacity(slots.len());
    for (i, (f, s)) in level.fields.iter().zip(slots).enumerate() {
        out.insert(f.name.clone(), slot_to_value(level.sub(i), s, arena));
    }
    out
}

/// One slot as JSON; `sub` is the field's level for records and lists.
fn slot_to_value(sub: Option<&Level>, s: &Slot, arena: &Arena) -> Value {
    let record = |start: &usize| match sub {
        Some(l) => Value::Object(record_to_map(l, arena.record(l, *start), arena)),
        None => unreachable!("record and list fields have a level"),
    };
    let string = |span: &Span| Value::String(arena.get(*span).to_string());
    match s {
        Slot::Null => Value::Null,
        Slot::Int(i) => Value::from(*i),
        Slot::Bool(b) => Value::Bool(*b),
        Slot::Str(span) => string(span),
        Slot::StrList(run) => Value::Array(arena.str_list(*run).iter().map(string).collect()),
        Slot::Record(start) => record(start),
        Slot::List(run) => Value::Array(arena.items(*run).iter().map(record).collect()),
    }
}

/// Appends the compact JSON object of a record: what serde_json writes for
/// the same fields as a `Value`.
fn write_record_json(out: &mut Vec<u8>, level: &Level, slots: &[Slot], arena: &Arena) {
    out.push(b'{');
    for (i, s) in slots.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(level.json_key(i));
        match s {
            Slot::Record(start) => {
                let l = level.sub(i).expect("record fields have a level");
                write_record_json(out, l, arena.record(l, *start), arena);
            }
            Slot::List(run) => {
                let l = level.sub(i).expect("list fields have a level");
                out.push(b'[');
                for (j, item) in arena.items(*run).iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_record_json(out, l, arena.record(l, *item), arena);
                }
                out.push(b']');
            }
            scalar => write_scalar_json(out, scalar, arena),
        }
    }
    out.push(b'}');
}

/// Feeds a hash with the text written so far, minus the ranges skipped.
struct Hashing {
    sha: Sha256,
    /// Start of the written text not yet hashed.
    from: usize,
}

impl Hashing {
    /// Hashes up to `start`, leaves `start..end` out.
    fn skip(&mut self, out: &[u8], start: usize, end: usize) {
        self.sha.update(&out[self.from..start]);
        self.from = end;
    }
}

/// [`write_record_json`], hashing (through `hashing`) the text the reference
/// projection would write: only the fields both layers carry, at every
/// level. That text is this one with each other field (and its comma) left
/// out, and the comma before the first field kept at a level.
fn write_record_json_hashing_shared(
    out: &mut Vec<u8>,
    level: &Level,
    slots: &[Slot],
    arena: &Arena,
    hashing: &mut Hashing,
) {
    out.push(b'{');
    let mut kept_any = false;
    for (i, s) in slots.iter().enumerate() {
        let start = out.len();
        if i > 0 {
            out.push(b',');
        }
        let keep = level.in_both(i);
        if keep && !kept_any && i > 0 {
            hashing.skip(out, start, start + 1);
        }
        kept_any |= keep;
        out.extend_from_slice(level.json_key(i));
        match s {
            Slot::Record(start) => {
                let l = level.sub(i).expect("record fields have a level");
                let sub = arena.record(l, *start);
                if keep {
                    write_record_json_hashing_shared(out, l, sub, arena, hashing);
                } else {
                    write_record_json(out, l, sub, arena);
                }
            }
            Slot::List(run) => {
                let l = level.sub(i).expect("list fields have a level");
                out.push(b'[');
                for (j, item) in arena.items(*run).iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    let item = arena.record(l, *item);
                    if keep {
                        write_record_json_hashing_shared(out, l, item, arena, hashing);
                    } else {
                        write_record_json(out, l, item, arena);
                    }
                }
                out.push(b']');
            }
            scalar => write_scalar_json(out, scalar, arena),
        }
        if !keep {
            hashing.skip(out, start, out.len());
        }
    }
    out.push(b'}');
}

// Inlined into the record writers: it runs for every field.
#[inline(always)]
fn write_scalar_json(out: &mut Vec<u8>, s: &Slot, arena: &Arena) {
    match s {
        Slot::Null => out.extend_from_slice(b"null"),
        Slot::Int(n) => write_i64(out, *n),
        Slot::Bool(true) => out.extend_from_slice(b"true"),
        Slot::Bool(false) => out.extend_from_slice(b"false"),
        Slot::Str(s) => write_json_str(out, arena.get(*s)),
        Slot::StrList(run) => {
            out.push(b'[');
            for (j, item) in arena.str_list(*run).iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                write_json_str(out, arena.get(*item));
            }
            out.push(b']');
        }
        Slot::Record(_) | Slot::List(_) => unreachable!("records are written by their level"),
    }
}

/// Decimal text of `n`, as serde_json (itoa) writes it: two digits a step.
pub(crate) fn write_i64(out: &mut Vec<u8>, n: i64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let mut u = n.unsigned_abs();
    while u >= 100 {
        let r = (u % 100) as usize * 2;
        u /= 100;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&PAIRS[r..r + 2]);
    }
    if u >= 10 {
        let r = u as usize * 2;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&PAIRS[r..r + 2]);
    } else {
        pos -= 1;
        buf[pos] = b'0' + u as u8;
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[pos..]);
}

/// How serde_json escapes each byte of a string: 0 = as is, `u` = `\u00XX`,
/// anything else = a backslash and that letter.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0A] = b'n';
    t[0x0C] = b'f';
    t[0x0D] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// A JSON string literal, escaped exactly as serde_json does (`"`, `\\` and
/// control characters; nothing else, not even `/` or non-ASCII).
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = s.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    while let Some(i) = find_json_special(rest) {
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        match ESCAPE[b as usize] {
            b'u' => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xF) as usize],
            ]),
            e => out.extend_from_slice(&[b'\\', e]),
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Position of the first byte that is special in a JSON string (`"`, `\\`
/// or a control character), eight bytes at a time.
pub(crate) fn find_json_special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Per byte: high bit set where the byte is zero. Exact for the lowest
    // flagged byte (borrows only run upwards), which is all that is used.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let special = (w.wrapping_sub(ONES * 0x20) & !w
            | zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\'))))
            & HIGH;
        if special != 0 {
            return Some(at + special.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|&b| ESCAPE[b as usize] != 0)
        .map(|i| at + i)
}

/// A record with its envelope: what goes on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub event_id: String,
    /// The record's cross-layer key ([`Record::match_key`]).
    pub match_key: String,
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
            match_key: record.match_key(),
            source: record.source(),
            schema_version: 1,
            origin,
            tenant,
            received_at_ms,
            record,
        }
    }
}

/// FNV-1a of `text`: a hash that is the same in every process, on every
/// replica and after every restart (std's `DefaultHasher` promises none of
/// that). Spreads tenants over metric label buckets and lease shards.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..=0x7f)
            .map(|b| format!("ab{}cdefghij", b as char))
            .collect();
        cases.extend(
            [
                "",
                "plain",
                "exactly8",
                "Lars Hilvéus ✓ 🎉",
                "q\"u\\o/te",
                "\u{0}\u{1f}\u{7f}\t\n\r\u{8}\u{c}",
                "long string without anything to escape in it at all",
                "long string with an escape at the very end of it\"",
            ]
            .map(String::from),
        );
        for s in cases {
            let mut ours = Vec::new();
            write_json_str(&mut ours, &s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        let mut n = 1i64;
        let mut cases = vec![0, -1, 9, 10, 99, 100, 101, i64::MIN, i64::MAX, i64::MIN + 1];
        for _ in 0..200 {
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            cases.extend([n, n >> 20, n >> 40, n >> 55]);
        }
        for n in cases {
            let mut ours = Vec::new();
            write_i64(&mut ours, n);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&n).unwrap()
            );
        }
    }
}
