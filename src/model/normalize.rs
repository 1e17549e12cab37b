//! Live (snake_case) and historic (camelCase) JSON → the same canonical record.
//!
//! Coercions, each deliberate:
//! - Long: integers; integral floats; numeric strings (`"12"`). Anything else is `wrong_type`.
//! - Timestamp: epoch numbers (ints or floats; below 1e11 read as seconds,
//!   otherwise milliseconds), numeric strings, ISO-8601/RFC 3339 strings → UTC epoch millis.
//! - Str: strings; numbers and booleans as their text.
//! - Bool: booleans; 0/1; "true"/"false".
//! - StrList: arrays (items as text); a string holding a JSON array; a comma list.
//! - Json: any value, kept as JSON text.
//! - Record: an object; RecordList: a list of objects, or one object.
//!
//! Keys the schema does not know are kept in `extra` (path → value), never dropped.

use std::fmt;

use serde_json::{Map, Number, Value};

use super::compiled::{compiled, Level};
use super::schema::{Field, Ty};
use super::{find_json_special, Arena, DataSource, Record, Slot};

/// Deepest nesting accepted; the schema itself is at most 4 levels deep.
const MAX_DEPTH: usize = 32;

/// A payload that cannot be normalized. Carries a low-cardinality reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_name} {layer} payload rejected ({reason}): {detail}")]
pub struct NormalizeError {
    pub source_name: &'static str,
    pub layer: &'static str,
    pub reason: &'static str,
    pub detail: String,
}

impl NormalizeError {
    /// Metric label: malformed_json, invalid_utf8, not_an_object, wrong_type, too_deep.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

struct Ctx {
    source: DataSource,
    live: bool,
    arena: Arena,
    extra: Map<String, Value>,
}

impl Ctx {
    /// `text`: the bytes of strings to reserve room for.
    fn new(source: DataSource, live: bool, text: usize) -> Ctx {
        Ctx {
            source,
            live,
            arena: Arena::for_record(&compiled(source).root, text),
            extra: Map::new(),
        }
    }

    fn str_list(&mut self, items: Vec<String>) -> Slot {
        let start = self.arena.str_list_start();
        for s in &items {
            let span = self.arena.push(s);
            self.arena.push_item(span);
        }
        self.arena.str_list_since(start)
    }

    fn err(&self, reason: &'static str, detail: String) -> NormalizeError {
        NormalizeError {
            source_name: self.source.as_str(),
            layer: if self.live { "live" } else { "historic" },
            reason,
            detail,
        }
    }
}

/// Normalizes a live frame's bytes.
///
/// Two ways to the same result. The fast way converts while parsing,
/// straight from the text into the record's slots (no JSON tree for known
/// fields). It only ever succeeds, or gives up; it gives up on anything it
/// cannot prove it handles exactly as the reference way does (invalid JSON,
/// a value of the wrong type, a repeated key, deep nesting) and the reference
/// way then runs: parse the whole text to a JSON value, convert that. That
/// way decides every error and its message.
pub fn normalize_live(source: DataSource, raw: &[u8]) -> Result<Record, NormalizeError> {
    match std::str::from_utf8(raw) {
        Ok(text) => normalize_live_text(source, text),
        Err(e) => Err(Ctx::new(source, true, 0).err("invalid_utf8", e.to_string())),
    }
}

/// [`normalize_live`] for a frame already known to be UTF-8 (a WebSocket
/// text frame), without checking it again.
pub fn normalize_live_text(source: DataSource, text: &str) -> Result<Record, NormalizeError> {
    if let Some(record) = fast::normalize(source, text) {
        return Ok(record);
    }
    // The fast way gave up: its context (and arena) are gone, start afresh.
    let ctx = Ctx::new(source, true, 256);
    if nesting_depth(text) > MAX_DEPTH {
        return Err(ctx.err("too_deep", format!("nesting deeper than {MAX_DEPTH}")));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| ctx.err("malformed_json", e.to_string()))?;
    normalize(ctx, &value)
}

/// The elements of a live frame that is a JSON array: the batch framing (the
/// reference says `/profile_history` "pushes the whole hourly batch", and a
/// batch may come as one array of records). Each element's text is a slice
/// of `text`, to be normalized (and, if bad, dead-lettered) on its own with
/// [`normalize_live_text`].
///
/// None for every frame that does not start with `[` (after whitespace): a
/// single object, or input the normalizer judges. That check is all the
/// single-object path pays. An array that is not valid JSON, or nests too
/// deep, is an error for the whole frame (it has no elements to tell apart).
pub fn live_batch(source: DataSource, text: &str) -> Option<Result<Vec<&str>, NormalizeError>> {
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(b'[') {
        return None;
    }
    let ctx = || Ctx::new(source, true, 0);
    if nesting_depth(text) > MAX_DEPTH {
        return Some(Err(
            ctx().err("too_deep", format!("nesting deeper than {MAX_DEPTH}"))
        ));
    }
    Some(
        serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text)
            .map(|items| items.into_iter().map(|raw| raw.get()).collect())
            .map_err(|e| ctx().err("malformed_json", e.to_string())),
    )
}

/// The values of a live frame holding several JSON values one after the
/// other (newline-delimited or concatenated records: the other batch
/// framing), each a slice of `text`; None unless there are at least two and
/// all are valid JSON. Meant for a frame that failed as one record with
/// `malformed_json`, so a single-object frame never pays for it.
pub fn live_sequence(text: &str) -> Option<Vec<&str>> {
    let values = serde_json::Deserializer::from_str(text)
        .into_iter::<&serde_json::value::RawValue>()
        .map(|v| v.map(|raw| raw.get()))
        .collect::<Result<Vec<&str>, _>>()
        .ok()?;
    (values.len() >= 2 && nesting_depth(text) <= MAX_DEPTH).then_some(values)
}

/// Normalizes one historic (GraphQL) record.
pub fn normalize_historic(source: DataSource, value: &Value) -> Result<Record, NormalizeError> {
    normalize(Ctx::new(source, false, 256), value)
}

fn normalize(mut ctx: Ctx, value: &Value) -> Result<Record, NormalizeError> {
    let Value::Object(obj) = value else {
        return Err(ctx.err(
            "not_an_object",
            format!("expected a JSON object, got {}", kind(value)),
        ));
    };
    let root = &compiled(ctx.source).root;
    record(&mut ctx, root, obj, Path::Root)?;
    Ok(Record::new(ctx.source, ctx.arena, ctx.extra))
}

fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Nesting depth of a value: 0 for scalars, 1 + the deepest child for
/// containers (what `nesting_depth` counts for its text).
fn value_depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Where a value sits (`a.b[2].c`), kept as a chain on the stack and only
/// written out for an error message or an unknown field's `extra` key.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    /// A field (or unknown key) of the record at the parent path.
    Key(&'a Path<'a>, &'a str),
    /// Item `n` of the list at the parent path.
    Item(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(parent, key) => join(&parent.render(), key),
            Path::Item(parent, n) => format!("{}[{n}]", parent.render()),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// The reference conversion of one JSON object into the slots of `level`;
/// returns where they start in the arena.
fn record(
    ctx: &mut Ctx,
    level: &'static Level,
    obj: &Map<String, Value>,
    path: Path<'_>,
) -> Result<usize, NormalizeError> {
    let start = ctx.arena.open_record(level.fields.len());
    let mut folded: Vec<(usize, usize, &Value)> = Vec::new(); // (field index, slot number, value)
    for (key, v) in obj {
        if ctx.live {
            if let Some((fi, n)) = level.fold_slot(key) {
                folded.push((fi, n, v));
                continue;
            }
        }
        match level.index(ctx.live, key) {
            Some(fi) => {
                let f = &level.fields[fi];
                let slot = convert(ctx, f, level.sub(fi), v, Path::Key(&path, &f.name))?;
                ctx.arena.set(start, fi, slot);
            }
            None => {
                ctx.extra.insert(join(&path.render(), key), v.clone());
            }
        }
    }
    fold(ctx, level, &folded, path, start)?;
    Ok(start)
}

/// The folded slots (`extra_profile_available_3`, …) of one record become
/// their list fields, in slot-number order, one `{slot, profile}` item per
/// key (a null value kept as a null `profile`: nothing of what was sent is
/// lost); after the record's other keys. `record_start`: where the
/// record's slots start.
fn fold(
    ctx: &mut Ctx,
    level: &'static Level,
    folded: &[(usize, usize, &Value)],
    path: Path<'_>,
    record_start: usize,
) -> Result<(), NormalizeError> {
    if folded.is_empty() {
        return Ok(());
    }
    for (i, f) in level.fields.iter().enumerate() {
        let mut items: Vec<(usize, &Value)> = folded
            .iter()
            .filter(|(fi, _, _)| *fi == i)
            .map(|(_, n, v)| (*n, *v))
            .collect();
        if items.is_empty() {
            continue;
        }
        items.sort_by_key(|(n, _)| *n);
        let Some((item, profile)) = level.sub(i).and_then(|l| Some((l, l.sub(1)?))) else {
            unreachable!("folded fields are lists of {{slot, profile}}")
        };
        let field_path = Path::Key(&path, &f.name);
        let mut list = Vec::with_capacity(items.len());
        for (n, v) in items {
            let p = Path::Item(&field_path, n);
            let value = match v {
                Value::Null => Slot::Null,
                Value::Object(o) => Slot::Record(record(ctx, profile, o, p)?),
                other => {
                    return Err(ctx.err(
                        "wrong_type",
                        format!("{p}: expected an object, got {}", kind(other)),
                    ))
                }
            };
            let start = ctx.arena.open_record(item.fields.len());
            ctx.arena.set(start, 0, Slot::Int(n as i64));
            ctx.arena.set(start, 1, value);
            list.push(start);
        }
        let slot = ctx.arena.record_list(&list);
        ctx.arena.set(record_start, i, slot);
    }
    Ok(())
}

fn convert(
    ctx: &mut Ctx,
    f: &Field,
    sub: Option<&'static Level>,
    v: &Value,
    path: Path<'_>,
) -> Result<Slot, NormalizeError> {
    if v.is_null() {
        return Ok(Slot::Null);
    }
    let wrong = |ctx: &Ctx, want: &str| {
        ctx.err(
            "wrong_type",
            format!("{path}: expected {want}, got {}", kind(v)),
        )
    };
    Ok(match (&f.ty, sub) {
        (Ty::Long, _) => Slot::Int(as_long(v).ok_or_else(|| wrong(ctx, "an integer"))?),
        (Ty::Timestamp, _) => Slot::Int(as_millis(v).ok_or_else(|| wrong(ctx, "a time"))?),
        (Ty::Str, _) => match v {
            Value::String(s) => Slot::Str(ctx.arena.push(s)),
            Value::Number(n) => Slot::Str(ctx.arena.push_display(n)),
            Value::Bool(b) => Slot::Str(ctx.arena.push_display(b)),
            _ => return Err(wrong(ctx, "a string")),
        },
        (Ty::Bool, _) => match v {
            Value::Bool(b) => Slot::Bool(*b),
            Value::Number(n) => {
                Slot::Bool(number_as_bool(n).ok_or_else(|| wrong(ctx, "a boolean"))?)
            }
            Value::String(s) => Slot::Bool(str_as_bool(s).ok_or_else(|| wrong(ctx, "a boolean"))?),
            _ => return Err(wrong(ctx, "a boolean")),
        },
        (Ty::StrList, _) => {
            let items = str_items(v).ok_or_else(|| wrong(ctx, "a list of strings"))?;
            ctx.str_list(items)
        }
        (Ty::Json, _) => Slot::Str(ctx.arena.push_display(v)),
        (Ty::Record(_), Some(sub)) => match v {
            Value::Object(o) => Slot::Record(record(ctx, sub, o, path)?),
            _ => return Err(wrong(ctx, "an object")),
        },
        (Ty::RecordList(_), Some(sub)) => match v {
            Value::Object(o) => {
                let item = record(ctx, sub, o, path)?;
                ctx.arena.record_list(&[item])
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(o) => out.push(record(ctx, sub, o, Path::Item(&path, i))?),
                        other => {
                            return Err(ctx.err(
                                "wrong_type",
                                format!("{path}[{i}]: expected an object, got {}", kind(other)),
                            ))
                        }
                    }
                }
                ctx.arena.record_list(&out)
            }
            _ => return Err(wrong(ctx, "a list of objects")),
        },
        (Ty::Record(_) | Ty::RecordList(_), None) => unreachable!("record fields have a level"),
    })
}

// ---- coercions, shared by both ways ----

fn number_as_long(n: &Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
            .map(|f| f as i64)
    })
}

fn str_as_long(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

fn as_long(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => number_as_long(n),
        Value::String(s) => str_as_long(s),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// Epoch numbers below 1e11 are seconds (1e11 s is the year 5138; 1e11 ms is 1973).
fn number_to_millis(f: f64) -> Option<i64> {
    if !f.is_finite() {
        return None;
    }
    let ms = if f.abs() < 1e11 { f * 1000.0 } else { f };
    (ms.abs() < 9.0e15).then(|| ms.round() as i64)
}

fn number_as_millis(n: &Number) -> Option<i64> {
    match n.as_i64() {
        // `checked_abs`: i64::MIN has no absolute value; it is no time either.
        Some(i) if i.checked_abs().is_some_and(|a| a >= 100_000_000_000) => Some(i),
        _ => number_to_millis(n.as_f64()?),
    }
}

fn str_as_millis(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(f) = s.parse::<f64>() {
        return number_to_millis(f);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc().timestamp_millis())
        })
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc().timestamp_millis())
        })
}

fn as_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => number_as_millis(n),
        Value::String(s) => str_as_millis(s),
        _ => None,
    }
}

fn number_as_bool(n: &Number) -> Option<bool> {
    match n.as_i64() {
        Some(0) => Some(false),
        Some(1) => Some(true),
        _ => None,
    }
}

fn str_as_bool(s: &str) -> Option<bool> {
    match s {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn str_as_str_list(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if t.starts_with('[') {
        let parsed: Value = serde_json::from_str(t).ok()?;
        return str_items(&parsed).filter(|_| parsed.is_array());
    }
    Some(
        t.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect(),
    )
}

/// The strings of a `StrList` value (see the module comment), or None.
fn str_items(v: &Value) -> Option<Vec<String>> {
    let item = |x: &Value| match x {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Value::Array(items) => items.iter().map(item).collect(),
        Value::String(s) => str_as_str_list(s),
        _ => None,
    }
}

#[cfg(test)]
fn as_str_list(v: &Value) -> Option<Vec<Value>> {
    str_items(v).map(|items| items.into_iter().map(Value::String).collect())
}

/// The fast way: one pass over the text, walking the compiled schema, known
/// values converted as they are read (no JSON tree, no key strings kept).
///
/// It only reads the plain forms itself: unescaped strings, integers that fit
/// 64 bits, `true`/`false`/`null`, objects and arrays. Everything else is
/// handed to serde_json, so that every value means exactly what it means to
/// the reference way: strings with escapes and other numbers are parsed by
/// serde_json from their own text, and values kept whole (unknown fields,
/// folded slots, `Json` fields) are parsed by serde_json from the text they
/// span. Anything not accepted (a syntax error, a value of the wrong type, a
/// repeated key, deep nesting) gives up, and the reference way decides.
mod fast {
    use std::borrow::Cow;

    use super::*;

    pub(super) fn normalize(source: DataSource, text: &str) -> Option<Record> {
        // A record's strings are part of its text: half of it is a fair first
        // guess at their size (capped, as a bad frame may be large).
        let mut ctx = Ctx::new(source, true, (text.len() / 2).min(16 << 10));
        let mut p = Parser {
            text,
            bytes: text.as_bytes(),
            at: 0,
        };
        p.ws();
        p.eat(b'{')?;
        p.record(&mut ctx, &compiled(source).root, Path::Root, 1)?;
        p.ws();
        (p.at == p.bytes.len()).then(|| Record::new(source, ctx.arena, ctx.extra))
    }

    /// Accepts a value kept whole at nesting `depth` unless it nests too deep.
    fn within_depth(v: &Value, depth: usize) -> bool {
        depth + value_depth(v) <= MAX_DEPTH
    }

    /// Which fields of a record were seen: a repeated key gives up (the
    /// reference parse keeps only a repeated key's last value).
    struct Seen([u64; 4]);

    impl Seen {
        /// False if `i` was already seen (or is out of range).
        fn insert(&mut self, i: usize) -> bool {
            let Some(word) = self.0.get_mut(i / 64) else {
                return false;
            };
            let bit = 1u64 << (i % 64);
            let new = *word & bit == 0;
            *word |= bit;
            new
        }
    }

    // What a scalar of each JSON kind becomes in a field of type `ty`, as
    // `convert` converts it; None where `convert` fails.

    fn from_str(ctx: &mut Ctx, ty: &Ty, s: &str) -> Option<Slot> {
        match ty {
            Ty::Long => str_as_long(s).map(Slot::Int),
            Ty::Timestamp => str_as_millis(s).map(Slot::Int),
            Ty::Str => Some(Slot::Str(ctx.arena.push(s))),
            Ty::Bool => str_as_bool(s).map(Slot::Bool),
            Ty::StrList => str_as_str_list(s).map(|items| ctx.str_list(items)),
            _ => None,
        }
    }

    fn from_number(ctx: &mut Ctx, ty: &Ty, n: &Number) -> Option<Slot> {
        match ty {
            Ty::Long => number_as_long(n).map(Slot::Int),
            Ty::Timestamp => number_as_millis(n).map(Slot::Int),
            Ty::Str => Some(Slot::Str(ctx.arena.push_display(n))),
            Ty::Bool => number_as_bool(n).map(Slot::Bool),
            _ => None,
        }
    }

    fn from_bool(ctx: &mut Ctx, ty: &Ty, b: bool) -> Option<Slot> {
        match ty {
            Ty::Long => Some(Slot::Int(i64::from(b))),
            Ty::Str => Some(Slot::Str(ctx.arena.push_display(&b))),
            Ty::Bool => Some(Slot::Bool(b)),
            _ => None,
        }
    }

    struct Parser<'t> {
        text: &'t str,
        bytes: &'t [u8],
        at: usize,
    }

    impl<'t> Parser<'t> {
        /// JSON whitespace, as serde_json skips it.
        fn ws(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
                self.at += 1;
            }
        }

        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.at).copied()
        }

        fn eat(&mut self, b: u8) -> Option<()> {
            (self.peek()? == b).then(|| self.at += 1)
        }

        fn literal(&mut self, word: &[u8]) -> Option<()> {
            let end = self.at + word.len();
            (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
        }

        /// One record's members, after its `{`; `depth` is the record's
        /// nesting. Returns where its slots start in the arena.
        fn record(
            &mut self,
            ctx: &mut Ctx,
            level: &'static Level,
            path: Path<'_>,
            depth: usize,
        ) -> Option<usize> {
            let start = ctx.arena.open_record(level.fields.len());
            let mut seen = Seen([0; 4]);
            // (field index, slot number, value, key); converted after the other keys.
            let mut folded: Vec<(usize, usize, Value, String)> = Vec::new();
            self.ws();
            if self.eat(b'}').is_none() {
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    if let Some((fi, n)) = level.fold_slot(&key) {
                        let v = self.whole_value()?;
                        if !within_depth(&v, depth) || folded.iter().any(|x| x.3 == *key) {
                            return None;
                        }
                        folded.push((fi, n, v, key.into_owned()));
                    } else if let Some(fi) = level.index(true, &key) {
                        if !seen.insert(fi) {
                            return None;
                        }
                        let f = &level.fields[fi];
                        let child = Path::Key(&path, &f.name);
                        let slot = self.field(ctx, f, level.sub(fi), child, depth)?;
                        ctx.arena.set(start, fi, slot);
                    } else {
                        let v = self.whole_value()?;
                        let at = join(&path.render(), &key);
                        // A path met twice (a repeated key, or `a.b` next to
                        // `a: {b}`) is left to the reference way's ordering.
                        if !within_depth(&v, depth) || ctx.extra.contains_key(&at) {
                            return None;
                        }
                        ctx.extra.insert(at, v);
                    }
                    self.ws();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
            }
            if !folded.is_empty() {
                let refs: Vec<(usize, usize, &Value)> =
                    folded.iter().map(|(fi, n, v, _)| (*fi, *n, v)).collect();
                fold(ctx, level, &refs, path, start).ok()?;
            }
            Some(start)
        }

        /// One known field's value, converted as `convert` would convert it;
        /// `depth` is the nesting of the record holding the field.
        fn field(
            &mut self,
            ctx: &mut Ctx,
            f: &'static Field,
            sub: Option<&'static Level>,
            path: Path<'_>,
            depth: usize,
        ) -> Option<Slot> {
            if f.ty == Ty::Json {
                // Kept as the JSON text of the value, whatever it is.
                let v = self.whole_value()?;
                if !within_depth(&v, depth) {
                    return None;
                }
                return Some(if v.is_null() {
                    Slot::Null
                } else {
                    Slot::Str(ctx.arena.push_display(&v))
                });
            }
            match self.peek()? {
                b'"' => {
                    let s = self.string()?;
                    from_str(ctx, &f.ty, &s)
                }
                b'-' | b'0'..=b'9' => {
                    let n = self.number()?;
                    from_number(ctx, &f.ty, &n)
                }
                b't' => {
                    self.literal(b"true")?;
                    from_bool(ctx, &f.ty, true)
                }
                b'f' => {
                    self.literal(b"false")?;
                    from_bool(ctx, &f.ty, false)
                }
                b'n' => {
                    self.literal(b"null")?;
                    Some(Slot::Null)
                }
                b'{' => {
                    self.at += 1;
                    let sub = sub?;
                    match &f.ty {
                        Ty::Record(_) => {
                            Some(Slot::Record(self.record(ctx, sub, path, depth + 1)?))
                        }
                        Ty::RecordList(_) => {
                            let item = self.record(ctx, sub, path, depth + 1)?;
                            Some(ctx.arena.record_list(&[item]))
                        }
                        _ => None,
                    }
                }
                b'[' => {
                    self.at += 1;
                    match (&f.ty, sub) {
                        (Ty::StrList, _) => self.str_list(ctx),
                        (Ty::RecordList(_), Some(sub)) => {
                            let mut items = Vec::new();
                            self.ws();
                            if self.eat(b']').is_some() {
                                return Some(ctx.arena.record_list(&items));
                            }
                            loop {
                                self.ws();
                                self.eat(b'{')?;
                                let item_path = Path::Item(&path, items.len());
                                items.push(self.record(ctx, sub, item_path, depth + 2)?);
                                self.ws();
                                match self.peek()? {
                                    b',' => self.at += 1,
                                    b']' => {
                                        self.at += 1;
                                        return Some(ctx.arena.record_list(&items));
                                    }
                                    _ => return None,
                                }
                            }
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
        }

        /// A `StrList` array's items, after its `[`: strings, or numbers and
        /// booleans as their text.
        fn str_list(&mut self, ctx: &mut Ctx) -> Option<Slot> {
            let start = ctx.arena.str_list_start();
            self.ws();
            if self.eat(b']').is_some() {
                return Some(ctx.arena.str_list_since(start));
            }
            loop {
                self.ws();
                let span = match self.peek()? {
                    b'"' => {
                        let s = self.string()?;
                        ctx.arena.push(&s)
                    }
                    b'-' | b'0'..=b'9' => {
                        let n = self.number()?;
                        ctx.arena.push_display(&n)
                    }
                    b't' => self.literal(b"true").map(|_| ctx.arena.push("true"))?,
                    b'f' => self.literal(b"false").map(|_| ctx.arena.push("false"))?,
                    _ => return None,
                };
                ctx.arena.push_item(span);
                self.ws();
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        return Some(ctx.arena.str_list_since(start));
                    }
                    _ => return None,
                }
            }
        }

        /// A string literal (at its `"`): borrowed from the text when it has
        /// no escapes, else decoded by serde_json from its own text.
        fn string(&mut self) -> Option<Cow<'t, str>> {
            let open = self.at;
            self.eat(b'"')?;
            let start = self.at;
            let end = start + find_json_special(&self.bytes[start..])?;
            match self.bytes[end] {
                b'"' => {
                    self.at = end + 1;
                    Some(Cow::Borrowed(&self.text[start..end]))
                }
                b'\\' => {
                    self.at = end;
                    loop {
                        match *self.bytes.get(self.at)? {
                            b'"' => break,
                            b'\\' => self.at += 2,
                            _ => self.at += 1,
                        }
                    }
                    self.at += 1;
                    serde_json::from_str::<String>(self.text.get(open..self.at)?)
                        .ok()
                        .map(Cow::Owned)
                }
                _ => None,
            }
        }

        /// A number: plain integers read here, anything else (fractions,
        /// exponents, `-0`, beyond 64 bits) by serde_json from its text.
        fn number(&mut self) -> Option<Number> {
            let start = self.at;
            let negative = self.peek() == Some(b'-');
            if negative {
                self.at += 1;
            }
            let digits = self.at;
            let mut n: u64 = 0;
            let mut plain = true;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                match n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d - b'0')))
                {
                    Some(m) => n = m,
                    None => plain = false,
                }
                self.at += 1;
            }
            let len = self.at - digits;
            let leading_zero = self.bytes[digits..].first() == Some(&b'0') && len > 1;
            let more = matches!(self.peek(), Some(b'.' | b'e' | b'E' | b'+' | b'-'));
            if plain && len > 0 && !leading_zero && !more {
                if !negative {
                    return Some(Number::from(n));
                }
                if (1..=i64::MAX as u64).contains(&n) {
                    return Some(Number::from(-(n as i64)));
                }
            }
            while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            serde_json::from_str::<Number>(&self.text[start..self.at]).ok()
        }

        /// A value kept whole, as serde_json parses the text it spans.
        fn whole_value(&mut self) -> Option<Value> {
            let start = self.at;
            self.skip_value()?;
            serde_json::from_str::<Value>(&self.text[start..self.at]).ok()
        }

        /// Moves past one value: a string, a bracketed span (strings inside
        /// skipped), or a scalar token. Only finds the end; serde_json then
        /// judges the span.
        fn skip_value(&mut self) -> Option<()> {
            match self.peek()? {
                b'"' => self.skip_string(),
                b'{' | b'[' => {
                    let mut depth = 0usize;
                    loop {
                        match self.peek()? {
                            b'"' => {
                                self.skip_string()?;
                                continue;
                            }
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' => {
                                depth -= 1;
                                if depth == 0 {
                                    self.at += 1;
                                    return Some(());
                                }
                            }
                            _ => {}
                        }
                        self.at += 1;
                    }
                }
                _ => {
                    let start = self.at;
                    while let Some(b) = self.peek() {
                        if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                            break;
                        }
                        self.at += 1;
                    }
                    (self.at > start).then_some(())
                }
            }
        }

        fn skip_string(&mut self) -> Option<()> {
            self.eat(b'"')?;
            loop {
                match *self.bytes.get(self.at)? {
                    b'"' => {
                        self.at += 1;
                        return Some(());
                    }
                    b'\\' => self.at += 2,
                    _ => self.at += 1,
                }
            }
        }
    }
}

/// The benchmarks' realistic frames, shared with the unit tests below.
#[cfg(test)]
#[path = "../../benches/common/samples.rs"]
mod bench_samples;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_documented_form_agree() {
        let ms = 1_779_099_997_234i64;
        assert_eq!(as_millis(&Value::from(ms)), Some(ms));
        assert_eq!(as_millis(&Value::from(ms as f64)), Some(ms));
        assert_eq!(as_millis(&Value::from(1_779_099_997.234f64)), Some(ms));
        assert_eq!(
            as_millis(&Value::from("2026-05-18T10:26:37.234Z")),
            Some(ms)
        );
        assert_eq!(
            as_millis(&Value::from("2026-05-18T12:26:37.234+02:00")),
            Some(ms)
        );
        assert_eq!(as_millis(&Value::from("1779099997234")), Some(ms));
        assert_eq!(as_millis(&Value::from("yesterday")), None);
    }

    #[test]
    fn string_lists_in_every_form() {
        let want = vec![Value::from("a"), Value::from("b")];
        assert_eq!(
            as_str_list(&serde_json::json!(["a", "b"])),
            Some(want.clone())
        );
        assert_eq!(
            as_str_list(&Value::from("[\"a\",\"b\"]")),
            Some(want.clone())
        );
        assert_eq!(as_str_list(&Value::from("a, b")), Some(want));
        assert_eq!(as_str_list(&serde_json::json!([{"x": 1}])), None);
    }

    /// The fast way must take the frames the simulator sends (else every
    /// frame would be parsed twice), and agree with the reference way.
    #[test]
    fn the_fast_way_takes_realistic_frames_and_agrees() {
        let documented_objects = include_str!(
            "../../tests/fixtures/normalize/profile_history.documented-objects.live.json"
        );
        let frames = bench_samples::SAMPLES
            .iter()
            .copied()
            .chain([(DataSource::ProfileHistory, documented_objects)]);
        for (source, text) in frames {
            let fast = fast::normalize(source, text).expect("fast way");
            let value: Value = serde_json::from_str(text).unwrap();
            let reference = normalize(Ctx::new(source, true, 0), &value).unwrap();
            assert_eq!(fast, reference, "{source}");
            assert_eq!(fast.fields(), reference.fields(), "{source}");
        }
        // What the fast way leaves to the reference way, and still agrees on.
        for (text, ok) in [
            (r#"{"id_call":"a","id_call":"b"}"#, true),
            (r#"{"x":1,"x":2,"time":{"start":1}}"#, true),
            (r#"{"time.zone":1,"time":{"zone":2}}"#, true),
            (r#"{"answered":"no"}"#, false),
            (r#"{"id_call":"a"} x"#, false),
            (
                r#"{"brand_new":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
                false,
            ),
        ] {
            assert!(fast::normalize(DataSource::Calls, text).is_none(), "{text}");
            assert_eq!(
                normalize_live(DataSource::Calls, text.as_bytes()).is_ok(),
                ok,
                "{text}"
            );
        }
    }

    #[test]
    fn a_batch_frame_splits_into_its_elements_and_nothing_else_does() {
        let one = r#"{"id_call":"a","time":{"start":1779099997234}}"#;
        for single in [one, " \n{}", "null", "7", "\"[1]\"", "", "\u{feff}[{}]"] {
            assert!(live_batch(DataSource::Calls, single).is_none(), "{single}");
        }
        let text = format!(" [ {one} , 7,{{\"id_call\":\"b\"}},[{one}] ]");
        let items = live_batch(DataSource::Calls, &text).unwrap().unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], one, "an element is its own text, verbatim");
        let results: Vec<_> = items
            .iter()
            .map(|t| normalize_live_text(DataSource::Calls, t))
            .collect();
        assert_eq!(
            results[0].as_ref().unwrap(),
            &normalize_live(DataSource::Calls, one.as_bytes()).unwrap(),
            "an element normalizes as the same record sent alone"
        );
        assert_eq!(results[1].as_ref().unwrap_err().reason(), "not_an_object");
        assert!(results[2].is_ok());
        assert_eq!(results[3].as_ref().unwrap_err().reason(), "not_an_object");
        assert!(live_batch(DataSource::Calls, "[]")
            .unwrap()
            .unwrap()
            .is_empty());
        for (bad, reason) in [
            ("[{}, ", "malformed_json"),
            ("[{}] x", "malformed_json"),
            (
                &*format!("{}{}", "[".repeat(40), "]".repeat(40)),
                "too_deep",
            ),
        ] {
            let e = live_batch(DataSource::Calls, bad).unwrap().unwrap_err();
            assert_eq!(e.reason(), reason, "{bad}");
        }
    }

    #[test]
    fn several_values_one_after_the_other_split_and_garbage_does_not() {
        let text = "{\"id_call\":\"a\"}\n{\"id_call\":\"b\"} \n";
        assert_eq!(
            live_sequence(text),
            Some(vec!["{\"id_call\":\"a\"}", "{\"id_call\":\"b\"}"])
        );
        assert_eq!(live_sequence("{}{}").map(|v| v.len()), Some(2));
        for bad in ["{\"id_call\":\"a\"}", "{\"id_call\":\"a\"} x", "{} {", ""] {
            assert_eq!(live_sequence(bad), None, "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = "[".repeat(100_000);
        let e = normalize_live(DataSource::Calls, deep.as_bytes()).unwrap_err();
        assert_eq!(e.reason(), "too_deep");
    }
}
