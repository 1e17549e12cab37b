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

use serde_json::{Map, Value};

use super::schema::{Field, Ty, FOLDED};
use super::{DataSource, Record};

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
    extra: Map<String, Value>,
}

impl Ctx {
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
pub fn normalize_live(source: DataSource, raw: &[u8]) -> Result<Record, NormalizeError> {
    let ctx = Ctx {
        source,
        live: true,
        extra: Map::new(),
    };
    let text = std::str::from_utf8(raw).map_err(|e| ctx.err("invalid_utf8", e.to_string()))?;
    if nesting_depth(text) > MAX_DEPTH {
        return Err(ctx.err("too_deep", format!("nesting deeper than {MAX_DEPTH}")));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| ctx.err("malformed_json", e.to_string()))?;
    normalize(ctx, &value)
}

/// Normalizes one historic (GraphQL) record.
pub fn normalize_historic(source: DataSource, value: &Value) -> Result<Record, NormalizeError> {
    normalize(
        Ctx {
            source,
            live: false,
            extra: Map::new(),
        },
        value,
    )
}

fn normalize(mut ctx: Ctx, value: &Value) -> Result<Record, NormalizeError> {
    let Value::Object(obj) = value else {
        return Err(ctx.err(
            "not_an_object",
            format!("expected a JSON object, got {}", kind(value)),
        ));
    };
    let fields = super::schema::fields(ctx.source);
    let out = record(&mut ctx, fields, obj, "")?;
    Ok(Record {
        source: ctx.source,
        value: out,
        extra: ctx.extra,
    })
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

fn record(
    ctx: &mut Ctx,
    fields: &[Field],
    obj: &Map<String, Value>,
    path: &str,
) -> Result<Map<String, Value>, NormalizeError> {
    let mut out = Map::with_capacity(fields.len());
    let mut folded: Vec<(usize, usize, &Value)> = Vec::new(); // (field index, slot number, value)
    for (key, v) in obj {
        if ctx.live {
            if let Some((fi, n)) = fold_slot(fields, key) {
                folded.push((fi, n, v));
                continue;
            }
        }
        let field = fields.iter().find(|f| if ctx.live { f.live.as_deref() } else { f.historic.as_deref() } == Some(key));
        match field {
            Some(f) => {
                let child = join(path, &f.name);
                let value = convert(ctx, f, v, &child)?;
                out.insert(f.name.clone(), value);
            }
            None => {
                ctx.extra.insert(join(path, key), v.clone());
            }
        }
    }
    // Fill the canonical shape: every field present, in schema order.
    let mut ordered = Map::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let mut slots: Vec<(usize, &Value)> = folded
            .iter()
            .filter(|(fi, _, _)| *fi == i)
            .map(|(_, n, v)| (*n, *v))
            .collect();
        if !slots.is_empty() {
            slots.sort_by_key(|(n, _)| *n);
            let Ty::RecordList(sub) = &f.ty else {
                unreachable!("folded fields are record lists")
            };
            let mut list = Vec::new();
            for (n, v) in slots {
                let p = format!("{}[{n}]", join(path, &f.name));
                match v {
                    Value::Null => {}
                    Value::Object(o) => list.push(Value::Object(record(ctx, sub, o, &p)?)),
                    other => {
                        return Err(ctx.err(
                            "wrong_type",
                            format!("{p}: expected an object, got {}", kind(other)),
                        ))
                    }
                }
            }
            ordered.insert(f.name.clone(), Value::Array(list));
            continue;
        }
        ordered.insert(f.name.clone(), out.remove(&f.name).unwrap_or(Value::Null));
    }
    Ok(ordered)
}

/// `extra_profile_available_3` → (index of the folded field, 3).
fn fold_slot(fields: &[Field], key: &str) -> Option<(usize, usize)> {
    let (prefix, name, max) = FOLDED.iter().find(|(p, _, _)| key.starts_with(p))?;
    let n: usize = key[prefix.len()..].parse().ok()?;
    if n == 0 || n > *max {
        return None;
    }
    let fi = fields.iter().position(|f| f.name == *name)?;
    Some((fi, n))
}

fn convert(ctx: &mut Ctx, f: &Field, v: &Value, path: &str) -> Result<Value, NormalizeError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let wrong = |ctx: &Ctx, want: &str| {
        ctx.err(
            "wrong_type",
            format!("{path}: expected {want}, got {}", kind(v)),
        )
    };
    Ok(match &f.ty {
        Ty::Long => Value::from(as_long(v).ok_or_else(|| wrong(ctx, "an integer"))?),
        Ty::Timestamp => Value::from(as_millis(v).ok_or_else(|| wrong(ctx, "a time"))?),
        Ty::Str => match v {
            Value::String(s) => Value::String(s.clone()),
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(b.to_string()),
            _ => return Err(wrong(ctx, "a string")),
        },
        Ty::Bool => match v {
            Value::Bool(b) => Value::Bool(*b),
            Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                Value::Bool(n.as_i64() == Some(1))
            }
            Value::String(s) if s == "true" || s == "false" => Value::Bool(s == "true"),
            _ => return Err(wrong(ctx, "a boolean")),
        },
        Ty::StrList => Value::Array(as_str_list(v).ok_or_else(|| wrong(ctx, "a list of strings"))?),
        Ty::Json => Value::String(v.to_string()),
        Ty::Record(sub) => match v {
            Value::Object(o) => Value::Object(record(ctx, sub, o, path)?),
            _ => return Err(wrong(ctx, "an object")),
        },
        Ty::RecordList(sub) => match v {
            Value::Object(o) => Value::Array(vec![Value::Object(record(ctx, sub, o, path)?)]),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(o) => {
                            out.push(Value::Object(record(ctx, sub, o, &format!("{path}[{i}]"))?))
                        }
                        other => {
                            return Err(ctx.err(
                                "wrong_type",
                                format!("{path}[{i}]: expected an object, got {}", kind(other)),
                            ))
                        }
                    }
                }
                Value::Array(out)
            }
            _ => return Err(wrong(ctx, "a list of objects")),
        },
    })
}

fn as_long(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
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

fn as_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.abs() >= 100_000_000_000 => Some(i),
            _ => number_to_millis(n.as_f64()?),
        },
        Value::String(s) => {
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
        _ => None,
    }
}

fn as_str_list(v: &Value) -> Option<Vec<Value>> {
    let item = |x: &Value| match x {
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Number(n) => Some(Value::String(n.to_string())),
        Value::Bool(b) => Some(Value::String(b.to_string())),
        _ => None,
    };
    match v {
        Value::Array(items) => items.iter().map(item).collect(),
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with('[') {
                let parsed: Value = serde_json::from_str(t).ok()?;
                return as_str_list(&parsed).filter(|_| parsed.is_array());
            }
            Some(
                t.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(|x| Value::String(x.into()))
                    .collect(),
            )
        }
        _ => None,
    }
}

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

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = "[".repeat(100_000);
        let e = normalize_live(DataSource::Calls, deep.as_bytes()).unwrap_err();
        assert_eq!(e.reason(), "too_deep");
    }
}
