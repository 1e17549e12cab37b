//! The canonical schema of each data source, declared once as data.
//!
//! The reference's own field lists (`reference/*.json`, copied verbatim from
//! docs/reference/studio-api.txt §2.1–2.5 and §3.2–3.5) are merged per source:
//! the canonical field set is the union of the live and historic fields, named
//! in snake_case. The reference is inconsistent in places; every correction is
//! one line in [`override_type`] or [`extra_fields`], with the reason.
//! Avro and JSON schemas, the GraphQL selection set and the event id all derive
//! from this tree.

use std::sync::OnceLock;

use serde_json::Value;

use super::DataSource;

/// Type of a canonical field. Every field is nullable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Long,
    Str,
    Bool,
    /// UTC epoch milliseconds (Avro timestamp-millis).
    Timestamp,
    /// A list of strings (documented as String but sent as an array).
    StrList,
    /// An opaque JSON value, kept as JSON text.
    Json,
    Record(Vec<Field>),
    RecordList(Vec<Field>),
}

/// One canonical field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Canonical (snake_case) name.
    pub name: String,
    /// Key in live payloads, if the live layer has this field.
    pub live: Option<String>,
    /// Key in historic payloads (camelCase), if the historic layer has it.
    pub historic: Option<String>,
    pub ty: Ty,
}

impl Field {
    /// Present in both layers: only such fields feed the event id.
    pub fn in_both(&self) -> bool {
        self.live.is_some() && self.historic.is_some()
    }
}

/// The profile_history live keys `extra_profile_available_1..10` and
/// `extra_profile_not_available_1..20` are folded into these lists: one
/// item per key sent, in slot-number order, `{slot, profile}` (see
/// [`FOLDED_ITEM`]). A slot sent as null is kept as an item whose `profile`
/// is null, so the list says which slots were sent and which were empty.
pub const FOLDED: [(&str, &str, usize); 2] = [
    ("extra_profile_available_", "extra_profiles_available", 10),
    (
        "extra_profile_not_available_",
        "extra_profiles_not_available",
        20,
    ),
];

/// The fields of a folded list's item: the slot number `N` of the key
/// `extra_profile_…_N`, and the key's value (null when it was null).
pub const FOLDED_ITEM: [&str; 2] = ["slot", "profile"];

/// What a field means where its name and layer keys do not say it (the
/// folded lists and their items), for the schema files' docs.
pub fn note(name: &str) -> Option<&'static str> {
    Some(match name {
        "extra_profiles_available" => {
            "Live keys `extra_profile_available_1..10`, one item per key sent, in slot order."
        }
        "extra_profiles_not_available" => {
            "Live keys `extra_profile_not_available_1..20`, one item per key sent, in slot order."
        }
        "slot" => "The slot number N of the key `extra_profile_…_N`.",
        "profile" => "The key's value; null when the slot was sent as null.",
        _ => return None,
    })
}

fn reference(source: DataSource) -> (Option<&'static str>, Option<&'static str>) {
    match source {
        DataSource::Calls => (
            Some(include_str!("reference/live_calls.json")),
            Some(include_str!("reference/historic_calls.json")),
        ),
        DataSource::Queues => (
            Some(include_str!("reference/live_queues.json")),
            Some(include_str!("reference/historic_queues.json")),
        ),
        DataSource::Agents => (
            Some(include_str!("reference/live_agents.json")),
            Some(include_str!("reference/historic_agents.json")),
        ),
        DataSource::ProfileLive => (Some(include_str!("reference/live_profile_live.json")), None),
        DataSource::ProfileHistory => (
            Some(include_str!("reference/live_profile_history.json")),
            Some(include_str!("reference/historic_profile_history.json")),
        ),
    }
}

/// camelCase → snake_case (`idCall` → `id_call`).
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for ch in name.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Corrections of documented types, by canonical name.
fn override_type(name: &str, documented: &Ty) -> Ty {
    match name {
        // Documented as String, sent as JSON arrays (§2.1 sample; §3.2 says [String!]).
        "agent_list"
        | "agent_list_answer"
        | "agent_list_no_answer"
        | "queue_list"
        | "ivr_list"
        | "active_calls"
        | "answered_calls"
        | "completed_calls"
        | "id_calls" => Ty::StrList,
        // Times documented as Int, String or Float: all are instants.
        "start_date" | "end_date" | "time_start" | "timestart" | "timestamp" => Ty::Timestamp,
        _ => documented.clone(),
    }
}

/// Lists documented as objects but sent as lists (§2.4 sample), the same
/// shape in profile_history's `queue_summary` (an agent is logged in to
/// several queues at once, one entry each, like §2.4's `queue_login`), and
/// the object-vs-list `save_key_input` (live object, historic list). The
/// normalizer accepts a lone object for any list and wraps it.
fn is_list(path: &str) -> bool {
    matches!(
        path,
        "profile.not_active"
            | "queue_login.logged_in"
            | "queue_login.logged_out"
            | "queue_summary.logged_in"
            | "queue_summary.logged_out"
            | "save_key_input"
    )
}

/// Fields the samples carry that the field references omit.
fn extra_fields(source: DataSource, path: &str) -> Vec<Field> {
    let live_only = |name: &str, ty: Ty| Field {
        name: name.into(),
        live: Some(name.into()),
        historic: None,
        ty,
    };
    match (source, path) {
        // §2.3 and §2.4 samples: agent.account_type_id.
        (DataSource::Agents | DataSource::ProfileLive, "agent") => {
            vec![live_only("account_type_id", Ty::Long)]
        }
        _ => vec![],
    }
}

fn documented_type(v: &Value) -> Ty {
    match v {
        Value::String(s) => match s.as_str() {
            "Int" => Ty::Long,
            "Boolean" => Ty::Bool,
            "DateTime" | "Float" => Ty::Timestamp,
            "[String!]" => Ty::StrList,
            "Object" => Ty::Json,
            _ => Ty::Str,
        },
        _ => Ty::Str,
    }
}

/// Merges one layer's field list into `fields`.
fn merge(
    fields: &mut Vec<Field>,
    doc: &serde_json::Map<String, Value>,
    live: bool,
    path: &str,
    source: DataSource,
) {
    for (key, v) in doc {
        if let Some((_, folded, _)) = FOLDED.iter().find(|(prefix, _, _)| key.starts_with(prefix)) {
            let Value::Object(inner) = v else { continue };
            let mut sub = Vec::new();
            merge(&mut sub, inner, live, folded, source);
            let [slot, profile] = FOLDED_ITEM;
            let synthetic = |name: &str, ty: Ty| Field {
                name: name.into(),
                live: None,
                historic: None,
                ty,
            };
            fields.push(Field {
                name: (*folded).into(),
                live: Some(key.clone()),
                historic: None,
                ty: Ty::RecordList(vec![
                    synthetic(slot, Ty::Long),
                    synthetic(profile, Ty::Record(sub)),
                ]),
            });
            continue;
        }
        let name = if live { key.clone() } else { snake(key) };
        let child_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let pos = match fields.iter().position(|f| f.name == name) {
            Some(p) => p,
            None => {
                fields.push(Field {
                    name: name.clone(),
                    live: None,
                    historic: None,
                    ty: Ty::Str,
                });
                fields.len() - 1
            }
        };
        let (object, listed) = match v {
            Value::Object(o) => (Some(o), false),
            Value::Array(a) => (a.first().and_then(Value::as_object), true),
            _ => (None, false),
        };
        let f = &mut fields[pos];
        if live {
            f.live = Some(key.clone());
        } else {
            f.historic = Some(key.clone());
        }
        match object {
            Some(o) => {
                let mut sub = match std::mem::replace(&mut f.ty, Ty::Str) {
                    Ty::Record(s) | Ty::RecordList(s) => s,
                    _ => Vec::new(),
                };
                merge(&mut sub, o, live, &child_path, source);
                for extra in extra_fields(source, &child_path) {
                    if !sub.iter().any(|x| x.name == extra.name) {
                        sub.push(extra);
                    }
                }
                let f = &mut fields[pos];
                f.ty = if listed || is_list(&child_path) {
                    Ty::RecordList(sub)
                } else {
                    Ty::Record(sub)
                };
            }
            None => {
                let ty = override_type(&name, &documented_type(v));
                let f = &mut fields[pos];
                let other_layer = if live {
                    f.historic.is_some()
                } else {
                    f.live.is_some()
                };
                f.ty = if other_layer { combine(&f.ty, ty) } else { ty };
            }
        }
    }
}

/// Where the layers disagree on a leaf type, the richer reading wins.
fn combine(a: &Ty, b: Ty) -> Ty {
    for wins in [Ty::Timestamp, Ty::StrList] {
        if *a == wins || b == wins {
            return wins;
        }
    }
    a.clone()
}

fn build(source: DataSource) -> Vec<Field> {
    let (live, historic) = reference(source);
    let mut fields = Vec::new();
    for (text, is_live) in [(live, true), (historic, false)] {
        if let Some(text) = text {
            let doc: serde_json::Map<String, Value> = serde_json::from_str(text)
                .expect("reference field list is valid JSON (checked by tests)");
            merge(&mut fields, &doc, is_live, "", source);
        }
    }
    fields
}

/// The canonical field tree of `source`.
pub fn fields(source: DataSource) -> &'static [Field] {
    static TREES: OnceLock<Vec<Vec<Field>>> = OnceLock::new();
    let trees = TREES.get_or_init(|| DataSource::ALL.iter().map(|s| build(*s)).collect());
    let idx = DataSource::ALL
        .iter()
        .position(|s| *s == source)
        .expect("every source is in ALL");
    &trees[idx]
}

/// Finds the canonical field for a documented path (`a.b.c`, layer keys).
pub fn resolve(source: DataSource, live: bool, path: &[&str]) -> Option<&'static Field> {
    let mut fields = fields(source);
    let mut found = None;
    for key in path {
        let key_is = |f: &&Field| {
            let k = if live {
                f.live.as_deref()
            } else {
                f.historic.as_deref()
            };
            k == Some(*key)
                || (live
                    && f.live.as_deref().is_some_and(|l| {
                        FOLDED
                            .iter()
                            .any(|(p, _, _)| l.starts_with(p) && key.starts_with(p))
                    }))
        };
        let f = fields.iter().find(key_is)?;
        found = Some(f);
        fields = match &f.ty {
            // A folded key's documented fields are its items' `profile`.
            Ty::RecordList(s) if FOLDED.iter().any(|(_, name, _)| f.name == *name) => {
                match &s[1].ty {
                    Ty::Record(profile) => profile,
                    _ => &[],
                }
            }
            Ty::Record(s) | Ty::RecordList(s) => s,
            _ => &[],
        };
    }
    found
}
