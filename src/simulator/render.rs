//! Turns model state into JSON records.
//!
//! Every record is first rendered once as a "full" snake_case document (the
//! union of the live and historic fields, times as epoch milliseconds). The
//! live payload and the historic (GraphQL) record are both *projections* of
//! that one document through the field references of the API reference
//! (`specs/*.json`, copied verbatim from docs/reference/studio-api.txt), so the
//! two layers cannot disagree on a value:
//!
//! - live: keys kept as in the § 2.x field reference; `DateTime` values are
//!   epoch milliseconds (like the sample payloads); lists documented as
//!   `String` (`agent_list`, `call_summary.id_calls`, ...) are JSON arrays, and
//!   `profile.not_active` / `queue_login.*` are arrays of objects, like the
//!   samples.
//! - historic: keys of the § 3.x field reference (camelCase, looked up by
//!   their snake_case spelling); `DateTime` becomes an ISO-8601 UTC string with
//!   milliseconds (`2026-05-18T10:26:37.234Z`); `Float` times (profile_history
//!   `slot.startDate`, `slot.endDate`, `profileAvailable.timeStart`) are epoch
//!   milliseconds as a float (`1779099033656.0`).
//!
//! Quirk kept: live `profile_available.time_start` (documented `String`) is an
//! ISO-8601 UTC string; its historic twin `timeStart` is the Float millis.

use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use super::journey::{
    last_entered, presence_view, profile_id, AgentInfo, Journey, Offer, PresenceSlot, RecordRef,
    Source, Tenant, World, PROFILES,
};

/// Epoch milliseconds to ISO-8601 UTC with milliseconds and a `Z`.
pub fn iso(ms: i64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// ISO-8601 / RFC 3339 to epoch milliseconds.
pub fn parse_iso(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The field references of the API reference, per source.
pub struct Specs {
    pub live: [Value; 5],
    /// `None` for profile_live (no historic equivalent).
    pub historic: [Option<Value>; 5],
}

fn load(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// `account_type_id` is in the agents and profile_live sample payloads but not
/// in their field references; the simulator sends it like the samples do.
fn with_account_type_id(mut spec: Value) -> Value {
    if let Some(agent) = spec.get_mut("agent").and_then(Value::as_object_mut) {
        agent.insert("account_type_id".into(), Value::String("Int".into()));
    }
    spec
}

pub static SPECS: LazyLock<Specs> = LazyLock::new(|| Specs {
    live: [
        load(include_str!("specs/live_calls.json")),
        load(include_str!("specs/live_queues.json")),
        with_account_type_id(load(include_str!("specs/live_agents.json"))),
        with_account_type_id(load(include_str!("specs/live_profile_live.json"))),
        load(include_str!("specs/live_profile_history.json")),
    ],
    historic: [
        Some(load(include_str!("specs/historic_calls.json"))),
        Some(load(include_str!("specs/historic_queues.json"))),
        Some(load(include_str!("specs/historic_agents.json"))),
        None,
        Some(load(include_str!("specs/historic_profile_history.json"))),
    ],
});

fn spec_child<'a>(spec: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    spec.get(key).or_else(|| {
        if !key.starts_with("extra_profile_") {
            return None;
        }
        spec.iter().find_map(|(sk, sv)| {
            let prefix = sk
                .strip_suffix("_1..10")
                .or_else(|| sk.strip_suffix("_1..20"))?;
            let n = key.strip_prefix(prefix)?.strip_prefix('_')?;
            n.parse::<u32>().is_ok().then_some(sv)
        })
    })
}

/// Projects a full record onto a live field reference in place (drops the
/// keys the reference does not list; no copy).
pub fn retain_live(full: &mut Value, spec: &Value) {
    match (full, spec) {
        (Value::Object(f), Value::Object(s)) => {
            f.retain(|k, v| match spec_child(s, k) {
                Some(sub) => {
                    retain_live(v, sub);
                    true
                }
                None => false,
            });
        }
        (Value::Array(items), Value::Object(_)) => {
            items.iter_mut().for_each(|i| retain_live(i, spec))
        }
        _ => {}
    }
}

/// Projects a full record onto a live field reference.
pub fn project_live(full: &Value, spec: &Value) -> Value {
    match (full, spec) {
        (Value::Object(f), Value::Object(s)) => {
            let mut out = Map::new();
            for (key, sub) in s {
                if let Some(prefix) = key
                    .strip_suffix("_1..10")
                    .or_else(|| key.strip_suffix("_1..20"))
                {
                    // flattened numbered keys: extra_profile_available_1, _2, ...
                    for (fk, fv) in f {
                        if fk
                            .strip_prefix(prefix)
                            .and_then(|n| n.strip_prefix('_'))
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                        {
                            out.insert(fk.clone(), project_live(fv, sub));
                        }
                    }
                    continue;
                }
                if let Some(v) = f.get(key) {
                    out.insert(key.clone(), project_live(v, sub));
                }
            }
            Value::Object(out)
        }
        (Value::Array(items), Value::Object(_)) => {
            Value::Array(items.iter().map(|i| project_live(i, spec)).collect())
        }
        _ => full.clone(),
    }
}

pub fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Projects a full record onto a historic (camelCase) field reference.
pub fn project_historic(full: &Value, spec: &Value) -> Value {
    match spec {
        Value::Object(s) => match full {
            Value::Object(f) => {
                let mut out = Map::new();
                for (key, sub) in s {
                    let v = f
                        .get(&camel_to_snake(key))
                        .map(|v| project_historic(v, sub))
                        .unwrap_or(Value::Null);
                    out.insert(key.clone(), v);
                }
                Value::Object(out)
            }
            _ => Value::Null,
        },
        Value::Array(inner) => {
            let item = inner.first().cloned().unwrap_or(Value::Null);
            match full {
                Value::Array(items) => {
                    Value::Array(items.iter().map(|i| project_historic(i, &item)).collect())
                }
                Value::Null => Value::Null,
                // live `save_key_input` is one object, historic `saveKeyInput` a list
                other => Value::Array(vec![project_historic(other, &item)]),
            }
        }
        Value::String(t) => match (t.as_str(), full) {
            ("DateTime", Value::Number(n)) => n
                .as_i64()
                .map(|ms| Value::String(iso(ms)))
                .unwrap_or(Value::Null),
            ("Float", Value::Number(n)) => n.as_f64().map(|f| json!(f)).unwrap_or(Value::Null),
            ("Float", Value::String(s)) => parse_iso(s)
                .map(|ms| json!(ms as f64))
                .unwrap_or(Value::Null),
            _ => full.clone(),
        },
        _ => full.clone(),
    }
}

fn customer(t: &Tenant) -> Value {
    json!({ "id": t.customer_id, "name": t.customer_name })
}

fn licence(a: &AgentInfo) -> Value {
    json!({ "ccpro": a.ccpro, "type": a.licence_type })
}

/// The union of every agent object shape of the reference.
fn agent_obj(a: &AgentInfo, answered: Option<i64>, from_transfer: bool) -> Value {
    let mut v = json!({
        "account_id": a.account_id,
        "account_type_id": a.account_type_id,
        "avatar": a.avatar,
        "email": a.email,
        "from_transfer": i64::from(from_transfer),
        "id": a.id,
        "is_admin": a.is_admin,
        "licence": licence(a),
        "name": a.name,
        "phone": a.phone,
        "to_transfer": 0,
        "username": a.username,
    });
    if let (Some(ms), Some(o)) = (answered, v.as_object_mut()) {
        o.insert("answered".into(), json!(ms));
    }
    v
}

fn ivr_obj(t: &Tenant, j: &Journey) -> Option<Value> {
    j.ivr.as_ref().map(|v| {
        let i = &t.ivrs[v.ivr];
        json!({ "account_id": i.account_id, "id": i.id, "name": i.name, "phone": i.phone, "timestamp": v.at })
    })
}

fn queue_obj(t: &Tenant, j: &Journey, vi: usize, eff: i64) -> Value {
    let v = &j.visits[vi];
    let q = &t.queues[v.queue];
    let mut o = json!({
        "account_id": q.account_id,
        "id": q.id,
        "name": q.name,
        "phone": q.phone,
        "strategy": q.strategy,
        "timestart": v.enter,
        "free_agents": v.free_agents,
        "not_answer_risk": i64::from(v.offers.len() > 1),
        "queue_talking_agents": v.talking_agents.min(q.id % 3 + 1),
        "total_talking_agents": v.talking_agents,
    });
    if let (Some(reason), true) = (v.fail_reason, v.exit <= eff) {
        if let Some(m) = o.as_object_mut() {
            m.insert("fail_reason".into(), json!(reason));
        }
    }
    o
}

/// Hidden filter keys (`_agents`, `_queues`, `_ivrs`, `_calls`): lists of
/// `[id, account_id, name]` (or call ids) every record relates to. Both
/// projections drop them (they are in no field reference); the GraphQL
/// filters read them.
fn hide_relations(
    rec: &mut Value,
    agents: Vec<&AgentInfo>,
    queues: Vec<&super::journey::QueueInfo>,
    ivrs: Vec<&super::journey::IvrInfo>,
    calls: Vec<String>,
) {
    insert(
        rec,
        "_agents",
        Value::Array(
            agents
                .iter()
                .map(|a| json!([a.id, a.account_id, a.name]))
                .collect(),
        ),
    );
    insert(
        rec,
        "_queues",
        Value::Array(
            queues
                .iter()
                .map(|q| json!([q.id, q.account_id, q.name]))
                .collect(),
        ),
    );
    insert(
        rec,
        "_ivrs",
        Value::Array(
            ivrs.iter()
                .map(|i| json!([i.id, i.account_id, i.name]))
                .collect(),
        ),
    );
    insert(rec, "_calls", json!(calls));
}

fn journey_ivrs<'a>(t: &'a Tenant, j: &Journey) -> Vec<&'a super::journey::IvrInfo> {
    j.ivr.iter().map(|v| &t.ivrs[v.ivr]).collect()
}

fn insert(m: &mut Value, key: &str, v: Value) {
    if let Some(o) = m.as_object_mut() {
        o.insert(key.to_string(), v);
    }
}

fn first_last_total(parts: &[i64]) -> Value {
    json!({
        "first": parts.first().copied().unwrap_or(0),
        "last": parts.last().copied().unwrap_or(0),
        "total": parts.iter().sum::<i64>(),
    })
}

fn offer_visible(o: &Offer, eff: i64) -> bool {
    o.start <= eff
}

fn ring_ms(o: &Offer, eff: i64) -> i64 {
    o.ring_end.min(eff) - o.start
}

fn talk_ms(o: &Offer, eff: i64) -> i64 {
    match o.answered_at() {
        Some(a) if a <= eff => {
            (o.end.min(eff) - a - if o.end <= eff { o.hold_ms } else { 0 }).max(0)
        }
        _ => 0,
    }
}

/// The full record of `r` in state as of `eff` (which must be one of the
/// record's update times, see `Journey::record_effective_time`).
pub fn full_record(world: &World, j: &Journey, r: RecordRef, eff: i64) -> Value {
    let t = &world.tenants[j.tenant];
    match r {
        RecordRef::Call => full_call(world, t, j, eff),
        RecordRef::Queue(v) => full_queue(world, t, j, v, eff),
        RecordRef::Agent(o) => full_agent(world, t, j, o, eff),
    }
}

fn names(t: &Tenant, offers: &[&Offer], pred: impl Fn(&Offer) -> bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in offers.iter().filter(|o| pred(o)) {
        let n = &t.agents[o.agent].name;
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

fn full_call(world: &World, t: &Tenant, j: &Journey, eff: i64) -> Value {
    let ended = j.end <= eff;
    let offers: Vec<&Offer> = j.offers.iter().filter(|o| offer_visible(o, eff)).collect();
    let answered = j
        .answered_offer()
        .and_then(|o| o.answered_at())
        .filter(|a| *a <= eff);
    let no_answer: Vec<&&Offer> = offers
        .iter()
        .filter(|o| !o.answered && o.ring_end <= eff)
        .collect();
    let visits: Vec<usize> = (0..j.visits.len())
        .filter(|v| j.visits[*v].enter <= eff)
        .collect();
    let mut rec = json!({
        "id_call": world.call_id(j.tenant, j.k),
        "answered": i64::from(answered.is_some()),
        "active": i64::from(!ended),
        "call_direction": j.direction.as_str(),
        "internal": i64::from(j.internal),
        "time": if ended { json!({ "start": j.start, "end": j.end }) } else { json!({ "start": j.start }) },
        "offered_and_answered": i64::from(answered.is_some()),
        "offered_and_not_answered": no_answer.len(),
        "customer_telavox": customer(t),
        "customer_target": { "number": world.customer_number(j.tenant, j.k) },
        "agent_list": names(t, &offers, |_| true),
        "agent_list_answer": names(t, &offers, |o| o.answered_at().is_some_and(|a| a <= eff)),
        "agent_list_no_answer": names(t, &offers, |o| !o.answered && o.ring_end <= eff),
        "inactive_number": 0,
        "ohw_ordered": false,
        "on_hooked_calls": {
            "answer_wait_request": 0,
            "customer_no_answer": i64::from(ended && j.customer_no_answer),
            "no_wait_request": 0,
        },
        "queue_pickup": i64::from(answered.is_some() && j.answered_offer().is_some_and(|o| o.visit.is_some())),
        "recorded": i64::from(j.recorded && answered.is_some()),
        "redirected": {
            "no_answer": no_answer.len(),
            "no_reason": 0,
            "not_reachable": 0,
            "total": no_answer.len(),
            "unconditional": 0,
            "user_busy": 0,
        },
        "simultaneous_device_calls": 1,
        "transfers": visits.len().saturating_sub(1),
        "voicemail": i64::from(ended && j.voicemail),
        "timestamp": eff,
    });
    // durations
    let before_queue = match j.visits.first() {
        Some(v) if v.enter <= eff => v.enter - j.start,
        _ => j.ivr.as_ref().map(|_| eff - j.start).unwrap_or(0),
    };
    let queue_parts: Vec<i64> = visits
        .iter()
        .map(|v| j.visits[*v].exit.min(eff) - j.visits[*v].enter)
        .collect();
    let ring_parts: Vec<i64> = offers.iter().map(|o| ring_ms(o, eff)).collect();
    let talk_parts: Vec<i64> = offers
        .iter()
        .filter(|o| o.answered_at().is_some_and(|a| a <= eff))
        .map(|o| talk_ms(o, eff))
        .collect();
    let hold: i64 = offers
        .iter()
        .filter(|o| o.end <= eff)
        .map(|o| o.hold_ms)
        .sum();
    let wait = answered.unwrap_or(if ended { j.end } else { eff }) - j.start;
    insert(
        &mut rec,
        "duration",
        json!({
            "before_queue": before_queue,
            "on_hold": hold,
            "queue": first_last_total(&queue_parts),
            "ring": first_last_total(&ring_parts),
            "talk": first_last_total(&talk_parts),
            "total": (if ended { j.end } else { eff }) - j.start,
            "wait": wait,
        }),
    );
    if let (Some(first), Some(last)) = (offers.first(), offers.last()) {
        let af = |o: &Offer| {
            let from_transfer = o.visit.is_some_and(|v| j.visits[v].from_transfer);
            agent_obj(
                &t.agents[o.agent],
                o.answered_at().filter(|a| *a <= eff),
                from_transfer,
            )
        };
        insert(&mut rec, "agent_first", af(first));
        insert(&mut rec, "agent_last", af(last));
    }
    if let Some(ivr) = ivr_obj(t, j) {
        let name = ivr.get("name").cloned().unwrap_or(Value::Null);
        insert(&mut rec, "ivr_first", ivr.clone());
        insert(&mut rec, "ivr_last", ivr);
        insert(&mut rec, "ivr_list", json!([name]));
        if let Some(v) = &j.ivr {
            let dest = j
                .visits
                .first()
                .map(|q| t.queues[q.queue].name.clone())
                .unwrap_or_else(|| "hangup".into());
            insert(
                &mut rec,
                "menu_digit",
                json!({ "destination": dest, "dialed_number": v.digit.to_string(), "type": if j.visits.is_empty() { "hangup" } else { "queue" } }),
            );
            insert(
                &mut rec,
                "save_key_input",
                json!({ "input": format!("{}", 1000 + j.k.rem_euclid(9000)), "variable_name": "customer_number" }),
            );
        }
    } else {
        insert(&mut rec, "ivr_list", json!([]));
    }
    if let (Some(first), Some(last)) = (visits.first(), visits.last()) {
        insert(&mut rec, "queue_first", queue_obj(t, j, *first, eff));
        insert(&mut rec, "queue_last", queue_obj(t, j, *last, eff));
    }
    insert(
        &mut rec,
        "queue_list",
        json!(visits
            .iter()
            .map(|v| t.queues[j.visits[*v].queue].name.clone())
            .collect::<Vec<_>>()),
    );
    if visits.len() > 1 {
        let tr = |v: usize| json!({ "answered": i64::from(j.visits[v].answered_at.is_some_and(|a| a <= eff)), "type": "queue" });
        insert(&mut rec, "transfer_first", tr(visits[1]));
        insert(&mut rec, "transfer_last", tr(visits[visits.len() - 1]));
    }
    if ended {
        insert(
            &mut rec,
            "terminated_call_reason",
            json!(j.terminated_reason),
        );
    }
    hide_relations(
        &mut rec,
        offers.iter().map(|o| &t.agents[o.agent]).collect(),
        visits
            .iter()
            .map(|v| &t.queues[j.visits[*v].queue])
            .collect(),
        journey_ivrs(t, j),
        vec![world.call_id(j.tenant, j.k)],
    );
    rec
}

fn full_queue(world: &World, t: &Tenant, j: &Journey, vi: usize, eff: i64) -> Value {
    let v = &j.visits[vi];
    let q = &t.queues[v.queue];
    let ended = v.end <= eff;
    let offers: Vec<&Offer> = j.offers[v.offers.clone()]
        .iter()
        .filter(|o| offer_visible(o, eff))
        .collect();
    let answered = v.answered_at.filter(|a| *a <= eff);
    let ring_parts: Vec<i64> = offers.iter().map(|o| ring_ms(o, eff)).collect();
    let talk: i64 = offers.iter().map(|o| talk_ms(o, eff)).sum();
    let hold: i64 = offers
        .iter()
        .filter(|o| o.end <= eff)
        .map(|o| o.hold_ms)
        .sum();
    let mut rec = json!({
        "account_id": q.account_id,
        "id_call": world.call_id(j.tenant, j.k),
        "active": i64::from(!ended),
        "answered": i64::from(answered.is_some()),
        "call_direction": j.direction.as_str(),
        "internal": i64::from(j.internal),
        "customer_telavox": customer(t),
        "customer_target": { "number": world.customer_number(j.tenant, j.k) },
        "agent_list": names(t, &offers, |_| true),
        "agent_list_answer": names(t, &offers, |o| o.answered_at().is_some_and(|a| a <= eff)),
        "agent_list_no_answer": names(t, &offers, |o| !o.answered && o.ring_end <= eff),
        "duration": {
            "hold": hold,
            "queue": v.exit.min(eff) - v.enter,
            "ring": first_last_total(&ring_parts),
            "talk": talk,
            "total": (if ended { v.end } else { eff }) - v.enter,
            "wait": answered.unwrap_or(if ended { v.exit } else { eff }) - v.enter,
        },
        "on_hooked_calls": i64::from(ended && answered.is_none() && j.customer_no_answer && vi + 1 == j.visits.len()),
        "queue": queue_obj(t, j, vi, eff),
        "recorded": i64::from(j.recorded && answered.is_some()),
        "time": if ended { json!({ "start": v.enter, "end": v.end }) } else { json!({ "start": v.enter }) },
        "transfer": i64::from(v.from_transfer),
        "voicemail": i64::from(ended && j.voicemail && vi + 1 == j.visits.len()),
        "simultaneous_device_calls": 1,
    });
    if let Some(last) = offers.last() {
        if last.end <= eff || last.ring_end <= eff {
            insert(
                &mut rec,
                "agent_end_reason",
                json!(if last.answered && last.end > eff {
                    "ANSWERED"
                } else {
                    last.end_reason
                }),
            );
        }
    }
    if let (Some(first), Some(last)) = (offers.first(), offers.last()) {
        let af = |o: &Offer| {
            agent_obj(
                &t.agents[o.agent],
                o.answered_at().filter(|a| *a <= eff),
                v.from_transfer,
            )
        };
        insert(&mut rec, "agent_first", af(first));
        insert(&mut rec, "agent_last", af(last));
    }
    if let Some(ivr) = ivr_obj(t, j) {
        insert(&mut rec, "ivr", ivr);
    }
    hide_relations(
        &mut rec,
        offers.iter().map(|o| &t.agents[o.agent]).collect(),
        vec![q],
        journey_ivrs(t, j),
        vec![world.call_id(j.tenant, j.k)],
    );
    rec
}

fn full_agent(world: &World, t: &Tenant, j: &Journey, oi: usize, eff: i64) -> Value {
    let o = &j.offers[oi];
    let a = &t.agents[o.agent];
    let ended = o.end <= eff;
    let answered = o.answered_at().filter(|x| *x <= eff);
    let from_transfer = o.visit.is_some_and(|v| j.visits[v].from_transfer);
    let mut time = json!({ "start": o.start });
    if let Some(at) = answered {
        insert(&mut time, "answered", json!(at));
    }
    if ended {
        insert(&mut time, "end", json!(o.end));
    }
    let mut rec = json!({
        "account_id": a.account_id,
        "id_call": world.call_id(j.tenant, j.k),
        "call_direction": j.direction.as_str(),
        "active": i64::from(!ended),
        "answered": i64::from(answered.is_some()),
        "agent": agent_obj(a, answered, from_transfer),
        "customer_telavox": customer(t),
        "customer_target": { "number": world.customer_number(j.tenant, j.k) },
        "time": time,
        "duration": {
            "total": (if ended { o.end } else { eff }) - o.start,
            "ring": ring_ms(o, eff),
            "talk": talk_ms(o, eff),
            "hold": if ended { o.hold_ms } else { 0 },
        },
        "simultaneous_device_calls": 1,
        "internal": i64::from(j.internal),
        "on_hooked_calls": i64::from(ended && !o.answered && j.customer_no_answer),
        "recorded": i64::from(j.recorded && answered.is_some()),
        "transfer": i64::from(from_transfer),
        "voicemail": i64::from(ended && j.voicemail),
    });
    if ended {
        insert(&mut rec, "agent_end_reason", json!(o.end_reason));
    } else if answered.is_some() {
        insert(&mut rec, "agent_end_reason", json!("ANSWERED"));
    }
    if let Some(vi) = o.visit {
        insert(&mut rec, "queue", queue_obj(t, j, vi, eff));
    }
    if let Some(ivr) = ivr_obj(t, j) {
        insert(&mut rec, "ivr", ivr);
    }
    hide_relations(
        &mut rec,
        vec![a],
        o.visit
            .iter()
            .map(|v| &t.queues[j.visits[*v].queue])
            .collect(),
        journey_ivrs(t, j),
        vec![world.call_id(j.tenant, j.k)],
    );
    rec
}

/// A profile_live document for agent `agent` at `at`; `call` is the offer
/// whose state change triggered it (active_call is present while it rings or
/// is answered and absent once it ended).
pub fn full_profile_live(
    world: &World,
    tenant: usize,
    agent: usize,
    at: i64,
    call: Option<(&Journey, usize)>,
) -> Value {
    let t = &world.tenants[tenant];
    let a = &t.agents[agent];
    let view = presence_view(world, tenant, agent, at);
    let (active_profile, since) = (view.active, view.since);
    let profile = |p: usize, start: Option<i64>| {
        let d = &PROFILES[p];
        let mut v = json!({
            "id": profile_id(a, p),
            "name": d.name,
            "status": if d.available { "available" } else { "unavailable" },
            "status_message": d.name,
            "is_wrapup": d.is_wrapup,
        });
        if let Some(s) = start {
            insert(&mut v, "start_date", json!(s));
        }
        v
    };
    let mut active = profile(active_profile, Some(since));
    // default_duration: when the profile is planned to end (next full hour), as in the sample.
    insert(
        &mut active,
        "default_duration",
        json!((at.div_euclid(super::journey::HOUR_MS) + 1) * super::journey::HOUR_MS),
    );
    let not_active: Vec<Value> = (0..PROFILES.len())
        .filter(|p| *p != active_profile)
        .map(|p| profile(p, view.last_entered[p]))
        .collect();
    let login_start = world.history_start_ms.min(world.epoch_ms);
    let (logged_in, logged_out) =
        super::journey::queue_login_at(world, tenant, agent, at, login_start);
    let entries = |list: Vec<(usize, i64)>| -> Vec<Value> {
        list.into_iter()
            .map(|(q, since)| json!({ "id": t.queues[q].id, "name": t.queues[q].name, "start_date": since }))
            .collect()
    };
    let (logged_in, logged_out) = (entries(logged_in), entries(logged_out));
    let mut rec = json!({
        "customer_telavox": customer(t),
        "agent": agent_obj(a, None, false),
        "profile": { "active": active, "not_active": not_active },
        "queue_login": { "logged_in": logged_in, "logged_out": logged_out },
        "mobile_active": i64::from(agent % 3 == 0),
        "web_active": 1,
        "admin_active": a.is_admin,
    });
    if let Some((j, oi)) = call {
        let o = &j.offers[oi];
        insert(&mut rec, "last_call_update", json!(at));
        insert(&mut rec, "last_call_update_sec", json!(at.div_euclid(1000)));
        if o.end > at {
            let answered = o.answered_at().filter(|x| *x <= at);
            let mut time = json!({ "start": o.start });
            if let Some(x) = answered {
                insert(&mut time, "answered", json!(x));
            }
            let mut ac = json!({
                "id_call": world.call_id(j.tenant, j.k),
                "answered": i64::from(answered.is_some()),
                "call_direction": j.direction.as_str(),
                "internal": i64::from(j.internal),
                "on_hooked_calls": 0,
                "recorded": i64::from(j.recorded && answered.is_some()),
                "transfer": i64::from(o.visit.is_some_and(|v| j.visits[v].from_transfer)),
                "time": time,
            });
            if let Some(vi) = o.visit {
                let q = &t.queues[j.visits[vi].queue];
                insert(&mut ac, "queue_id", json!(q.id));
                insert(&mut ac, "queue_description", json!(q.name));
            }
            if let Some(v) = &j.ivr {
                insert(&mut ac, "ivr_id", json!(t.ivrs[v.ivr].id));
                insert(&mut ac, "ivr_description", json!(t.ivrs[v.ivr].name));
            }
            insert(&mut rec, "active_call", ac);
        }
    }
    rec
}

/// What an agent did on calls during one presence slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallSummary {
    pub id_calls: Vec<String>,
    pub answered_calls: Vec<String>,
    pub completed_calls: Vec<String>,
    pub active_calls: Vec<String>,
    pub talk_ms: i64,
}

/// Computes the call summary of every slot of one agent-hour from the
/// journeys that could overlap it.
pub fn call_summaries(
    world: &World,
    tenant: usize,
    slots: &[PresenceSlot],
    journeys: &[&Journey],
) -> Vec<CallSummary> {
    slots
        .iter()
        .map(|s| {
            let mut cs = CallSummary::default();
            for j in journeys {
                for o in j.offers.iter().filter(|o| o.agent == s.agent) {
                    let id = || world.call_id(tenant, j.k);
                    if o.start >= s.start && o.start < s.end {
                        cs.id_calls.push(id());
                    }
                    if let Some(a) = o.answered_at() {
                        if a >= s.start && a < s.end {
                            cs.answered_calls.push(id());
                            if o.end <= s.end {
                                cs.completed_calls.push(id());
                            }
                        }
                        if a < s.end && o.end > s.end {
                            cs.active_calls.push(id());
                        }
                        let overlap = o.end.min(s.end) - a.max(s.start);
                        if overlap > 0 {
                            cs.talk_ms += overlap;
                        }
                    }
                }
            }
            cs
        })
        .collect()
}

/// A profile_history record (one agent profile slot inside one UTC hour).
pub fn full_profile_history(
    world: &World,
    tenant: usize,
    slot: &PresenceSlot,
    hour_slots: &[PresenceSlot],
    cs: &CallSummary,
) -> Value {
    let t = &world.tenants[tenant];
    let a = &t.agents[slot.agent];
    let d = &PROFILES[slot.profile];
    let range = slot.end - slot.start;
    let time_start = last_entered(world, tenant, slot.agent, slot.profile, slot.start, true)
        .unwrap_or(slot.start);
    let times_in = hour_slots
        .iter()
        .filter(|s| s.profile == slot.profile)
        .count();
    let profile = json!({
        "active": slot.active_at_end,
        "available": d.available,
        "busy": cs.talk_ms,
        "id": profile_id(a, slot.profile),
        "is_wrapup": d.is_wrapup,
        "name": d.name,
        "time_start": iso(time_start),
        "times_in_profile": times_in,
        "usage": range,
    });
    let hour_usage = |p: usize| {
        hour_slots
            .iter()
            .filter(|s| s.profile == p)
            .map(|s| s.end - s.start)
            .sum::<i64>()
    };
    let login_start = world.history_start_ms.min(world.epoch_ms);
    // A queue break inside the slot: logged out for part of it (the same
    // changes `/profile_live` pushed).
    let brk = super::journey::queue_break(
        world,
        tenant,
        slot.agent,
        slot.start.div_euclid(super::journey::HOUR_MS),
    )
    .filter(|b| b.out_at < slot.end && b.back_at > slot.start);
    let away = brk.map_or(0, |b| b.back_at.min(slot.end) - b.out_at.max(slot.start));
    let logged_in: Vec<Value> = a
        .queues
        .iter()
        .map(|q| {
            let (usage, back, active) = match brk.filter(|b| b.queue == *q) {
                Some(b) => (range - away, i64::from(b.back_at < slot.end), b.back_at < slot.end),
                None => (range, 0, true),
            };
            json!({ "account_id": t.queues[*q].account_id, "active": active, "number_times_logged_in": 1 + back,
                    "queue_id": t.queues[*q].id, "queue_name": t.queues[*q].name, "time_start": login_start, "usage": usage })
        })
        .collect();
    let logged_out: Vec<Value> = brk
        .map(|b| {
            let q = &t.queues[b.queue];
            json!({ "account_id": q.account_id, "active": b.back_at >= slot.end, "number_times_logged_out": 1,
                    "queue_id": q.id, "queue_name": q.name, "time_start": b.out_at, "usage": away })
        })
        .into_iter()
        .chain((0..t.queues.len()).filter(|q| !a.queues.contains(q)).map(|q| {
            json!({ "account_id": t.queues[q].account_id, "active": true, "number_times_logged_out": 1,
                    "queue_id": t.queues[q].id, "queue_name": t.queues[q].name, "time_start": login_start, "usage": range })
        }))
        .collect();
    let mut rec = json!({
        "agent": agent_obj(a, None, false),
        "call_summary": {
            "active_calls": cs.active_calls,
            "answered_calls": cs.answered_calls,
            "completed_calls": cs.completed_calls,
            "duration": { "talk": cs.talk_ms },
            "id_calls": cs.id_calls,
            "total_answered": cs.answered_calls.len(),
            "total_calls": cs.id_calls.len(),
        },
        "customer_telavox": customer(t),
        "queue_summary": { "logged_in": logged_in, "logged_out": logged_out },
        "slot": { "busy": cs.talk_ms, "end_date": slot.end, "start_date": slot.start, "time_range": range },
    });
    insert(
        &mut rec,
        if d.available {
            "profile_available"
        } else {
            "profile_not_available"
        },
        profile,
    );
    let (mut n_av, mut n_na) = (0, 0);
    for (p, def) in PROFILES
        .iter()
        .enumerate()
        .filter(|(p, _)| *p != slot.profile)
    {
        let key = if def.available {
            n_av += 1;
            format!("extra_profile_available_{n_av}")
        } else {
            n_na += 1;
            format!("extra_profile_not_available_{n_na}")
        };
        insert(
            &mut rec,
            &key,
            json!({ "id": profile_id(a, p), "name": def.name, "usage": hour_usage(p) }),
        );
    }
    hide_relations(
        &mut rec,
        vec![a],
        a.queues.iter().map(|q| &t.queues[*q]).collect(),
        vec![],
        cs.id_calls.clone(),
    );
    rec
}

/// Full record -> live payload for `source`.
pub fn live_payload(source: Source, mut full: Value) -> Value {
    retain_live(&mut full, &SPECS.live[source.index()]);
    full
}

/// Full record -> historic record for `source` (`None` for profile_live).
pub fn historic_record(source: Source, full: &Value) -> Option<Value> {
    SPECS.historic[source.index()]
        .as_ref()
        .map(|spec| project_historic(full, spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::journey::{JourneyPlan, Rng};

    #[test]
    fn specs_parse() {
        for s in SPECS.live.iter() {
            assert!(s.is_object());
        }
        assert!(SPECS.historic[0]
            .as_ref()
            .and_then(|s| s.get("saveKeyInput"))
            .is_some_and(Value::is_array));
    }

    #[test]
    fn profile_live_shows_a_queue_logout_while_it_lasts() {
        let w = World::new(1, 1_779_099_997_234, 1, 10, 3, 1.0, 1.0, 0);
        let hour = w.epoch_ms.div_euclid(super::super::journey::HOUR_MS);
        let (agent, b) = (0..10)
            .flat_map(|a| (hour..hour + 48).map(move |h| (a, h)))
            .find_map(|(a, h)| Some((a, super::super::journey::queue_break(&w, 0, a, h)?)))
            .expect("some agent takes a queue break");
        let queue_id = w.tenants[0].queues[b.queue].id;
        let ids = |at: i64, list: &str| -> Vec<i64> {
            full_profile_live(&w, 0, agent, at, None)["queue_login"][list]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q["id"].as_i64().unwrap())
                .collect()
        };
        assert!(ids(b.out_at - 1, "logged_in").contains(&queue_id));
        assert!(ids(b.out_at, "logged_out").contains(&queue_id));
        assert!(!ids(b.out_at, "logged_in").contains(&queue_id));
        assert!(ids(b.back_at, "logged_in").contains(&queue_id));
    }

    #[test]
    fn worked_example_renders_like_the_samples() {
        let w = World::new(1, 1_779_099_997_234, 1, 10, 3, 1.0, 1.0, 0);
        let j = Journey::with_plan(
            &w,
            0,
            0,
            &JourneyPlan::worked_example(),
            &mut Rng::new(&[3]),
        );
        let full = full_record(&w, &j, RecordRef::Call, j.end);
        assert_eq!(
            project_live(&full, &SPECS.live[0]),
            live_payload(Source::Calls, full.clone())
        );
        let call = live_payload(Source::Calls, full);
        assert_eq!(call["answered"], 1);
        assert_eq!(call["active"], 0);
        assert_eq!(call["agent_list"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            call["agent_list_no_answer"].as_array().map(Vec::len),
            Some(2)
        );
        assert!(call["time"]["start"].is_i64() && call["time"]["end"].is_i64());
        assert!(
            call.get("timestamp").is_none(),
            "historic-only field leaked into live"
        );
        let hist = historic_record(Source::Calls, &full_record(&w, &j, RecordRef::Call, j.end))
            .unwrap_or_default();
        assert_eq!(hist["idCall"], call["id_call"]);
        assert_eq!(
            hist["time"]["start"].as_str().and_then(parse_iso),
            call["time"]["start"].as_i64()
        );
        assert!(hist["saveKeyInput"].is_array());
        let agent = live_payload(
            Source::Agents,
            full_record(&w, &j, RecordRef::Agent(0), j.offers[0].end),
        );
        assert_eq!(agent["agent_end_reason"], "NO_ANSWER");
        assert_eq!(agent["duration"]["total"], agent["duration"]["ring"]);
        assert_eq!(agent["agent"]["account_type_id"], 1);
    }
}
