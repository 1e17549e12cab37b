//! Records of a time window, regenerated from the pure model: pages in a
//! stable order, counts, and the hourly profile_history batch.
//!
//! A record belongs to the window containing its `time.start` (profile_history:
//! its `slot.start_date`); windows are half-open `[startDate, endDate)`.
//! Order: `(time.start, journey index, record)`; profile_history:
//! `(slot start, agent, slot index)`.

use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::journey::{
    presence_slots, Journey, RecordRef, Source, World, HOUR_MS, MAX_JOURNEY_MS,
    MAX_RECORD_OFFSET_MS,
};
use super::render::{call_summaries, full_profile_history, full_record};

/// Position of a record in the stable order (what a cursor encodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    pub start: i64,
    pub k: i64,
    pub sub: u32,
}

impl RecordKey {
    /// Opaque cursor text: `c1.` + hex of `start:k:sub`.
    pub fn to_cursor(self) -> String {
        format!(
            "c1.{}",
            hex::encode(format!("{}:{}:{}", self.start, self.k, self.sub))
        )
    }
    pub fn from_cursor(s: &str) -> Option<RecordKey> {
        let raw = hex::decode(s.strip_prefix("c1.")?).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let mut parts = text.split(':');
        let key = RecordKey {
            start: parts.next()?.parse().ok()?,
            k: parts.next()?.parse().ok()?,
            sub: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(key)
    }
}

fn sub_of(r: RecordRef) -> u32 {
    match r {
        RecordRef::Call => 0,
        RecordRef::Queue(v) => 1 + v as u32,
        RecordRef::Agent(o) => 1000 + o as u32,
    }
}

fn refs_of(source: Source, j: &Journey) -> Vec<RecordRef> {
    match source {
        Source::Calls => vec![RecordRef::Call],
        Source::Queues => (0..j.visits.len()).map(RecordRef::Queue).collect(),
        Source::Agents => (0..j.offers.len()).map(RecordRef::Agent).collect(),
        Source::ProfileLive | Source::ProfileHistory => vec![],
    }
}

/// One regenerated record.
#[derive(Clone, Debug)]
pub struct WindowRecord {
    pub key: RecordKey,
    /// Full snake_case record (see `render`), in its state as of the query.
    pub full: Value,
}

/// The profile_history batch of one UTC hour (every agent's slots), as the
/// live layer pushes it at the next HH:00 and GraphQL returns it.
pub fn profile_history_hour(world: &World, tenant: usize, hour: i64) -> Vec<WindowRecord> {
    let (hs, he) = (hour * HOUR_MS, (hour + 1) * HOUR_MS);
    let journeys: Vec<Journey> = world
        .journeys_starting_in(tenant, hs - MAX_JOURNEY_MS, he)
        .map(|k| world.journey(tenant, k))
        .filter(|j| !j.offers.is_empty())
        .collect();
    let agents = world.tenants[tenant].agents.len();
    let mut by_agent: Vec<Vec<&Journey>> = vec![Vec::new(); agents];
    for j in &journeys {
        let mut seen: Vec<usize> = Vec::new();
        for o in &j.offers {
            if !seen.contains(&o.agent) {
                seen.push(o.agent);
                if let Some(list) = by_agent.get_mut(o.agent) {
                    list.push(j);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (agent, js) in by_agent.iter().enumerate() {
        let slots = presence_slots(world, tenant, agent, hour);
        let summaries = call_summaries(world, tenant, &slots, js);
        for (slot, cs) in slots.iter().zip(&summaries) {
            out.push(WindowRecord {
                key: RecordKey {
                    start: slot.start,
                    k: agent as i64,
                    sub: slot.index as u32,
                },
                full: full_profile_history(world, tenant, slot, &slots, cs),
            });
        }
    }
    out.sort_by_key(|r| r.key);
    out
}

/// First hour whose profile_history exists, and whether `hour` is complete
/// (aggregated) at `now`.
fn ph_hours(world: &World, from: i64, to: i64, now: i64) -> std::ops::Range<i64> {
    let first = world
        .history_start_ms
        .div_euclid(HOUR_MS)
        .max(from.div_euclid(HOUR_MS));
    let last_complete = now.div_euclid(HOUR_MS); // hours < this are complete
    let end = (to - 1).div_euclid(HOUR_MS) + 1;
    first..end.min(last_complete)
}

/// A page of records of `[from, to)` as of `now`, after `after`, passing
/// `keep`. Returns up to `first` records and whether more match.
#[allow(clippy::too_many_arguments)] // window, position and filter of one GraphQL page
pub fn page(
    world: &World,
    tenant: usize,
    source: Source,
    from: i64,
    to: i64,
    now: i64,
    after: Option<RecordKey>,
    first: usize,
    keep: &dyn Fn(&Value) -> bool,
) -> (Vec<WindowRecord>, bool) {
    let mut out: Vec<WindowRecord> = Vec::new();
    let lo = after.map(|a| a.start.max(from)).unwrap_or(from);
    let after_ok = |key: RecordKey| after.is_none_or(|a| key > a);
    if source == Source::ProfileHistory {
        for hour in ph_hours(world, lo, to, now) {
            for rec in profile_history_hour(world, tenant, hour) {
                if rec.key.start >= from
                    && rec.key.start < to
                    && after_ok(rec.key)
                    && keep(&rec.full)
                {
                    out.push(rec);
                    if out.len() > first {
                        out.truncate(first);
                        return (out, true);
                    }
                }
            }
        }
        return (out, false);
    }
    let to = to.min(now.saturating_add(1));
    let offset = if source == Source::Calls {
        0
    } else {
        MAX_RECORD_OFFSET_MS
    };
    // Min-heap (by key) of records whose journeys were generated but that
    // are not yet known to be the next in order.
    let mut pending: BinaryHeap<std::cmp::Reverse<(RecordKey, usize, RecordRef)>> =
        BinaryHeap::new();
    let mut journeys: HashMap<usize, (Journey, usize)> = HashMap::new();
    let mut next_slot = 0usize;
    let mut emit = |key: RecordKey, j: &Journey, r: RecordRef, out: &mut Vec<WindowRecord>| {
        if let Some(eff) = j.record_effective_time(r, now) {
            let full = full_record(world, j, r, eff);
            if keep(&full) {
                out.push(WindowRecord { key, full });
            }
        }
    };
    for k in world.journeys_starting_in(tenant, lo - offset, to) {
        let j = world.journey(tenant, k);
        let bound = RecordKey {
            start: j.start,
            k,
            sub: 0,
        };
        while let Some(std::cmp::Reverse((key, slot, r))) = pending.peek().copied() {
            if key >= bound {
                break;
            }
            pending.pop();
            take(&mut journeys, slot, key, r, &mut out, &mut emit);
            if out.len() > first {
                out.truncate(first);
                return (out, true);
            }
        }
        let mut any = 0usize;
        for r in refs_of(source, &j) {
            let s = j.record_start(r);
            let key = RecordKey {
                start: s,
                k,
                sub: sub_of(r),
            };
            if s >= from && s < to && s <= now && after_ok(key) {
                pending.push(std::cmp::Reverse((key, next_slot, r)));
                any += 1;
            }
        }
        if any > 0 {
            journeys.insert(next_slot, (j, any));
            next_slot += 1;
        }
    }
    while let Some(std::cmp::Reverse((key, slot, r))) = pending.pop() {
        take(&mut journeys, slot, key, r, &mut out, &mut emit);
        if out.len() > first {
            out.truncate(first);
            return (out, true);
        }
    }
    (out, false)
}

fn take(
    journeys: &mut HashMap<usize, (Journey, usize)>,
    slot: usize,
    key: RecordKey,
    r: RecordRef,
    out: &mut Vec<WindowRecord>,
    emit: &mut impl FnMut(RecordKey, &Journey, RecordRef, &mut Vec<WindowRecord>),
) {
    let done = match journeys.get_mut(&slot) {
        Some((j, left)) => {
            emit(key, j, r, out);
            *left -= 1;
            *left == 0
        }
        None => false,
    };
    if done {
        journeys.remove(&slot);
    }
}

/// Counts of settled hours (`(tenant, source, hour)` -> records), so that
/// `totalCount` of long windows is computed once. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct CountCache {
    inner: Mutex<HashMap<(usize, usize, i64), u64>>,
}

const COUNT_CACHE_CAP: usize = 200_000;

/// Number of records of `[from, to)` as of `now` (no other filter): the
/// `totalCount` quirk of the reference.
pub fn count(
    world: &World,
    cache: &Arc<CountCache>,
    tenant: usize,
    source: Source,
    from: i64,
    to: i64,
    now: i64,
) -> u64 {
    // Records exist only between the first journey and now: clamping keeps
    // absurd windows (year 0 to 9999) cheap.
    let first_hour = world.journey_start(tenant, world.k_min).div_euclid(HOUR_MS) - 1;
    let from = from.max(first_hour * HOUR_MS);
    let to = to.min(now.saturating_add(1));
    if to <= from {
        return 0;
    }
    match source {
        Source::ProfileHistory => {
            let mut n = 0u64;
            for hour in ph_hours(world, from, to, now) {
                for agent in 0..world.tenants[tenant].agents.len() {
                    n += presence_slots(world, tenant, agent, hour)
                        .iter()
                        .filter(|s| s.start >= from && s.start < to)
                        .count() as u64;
                }
            }
            n
        }
        Source::Calls => {
            let r = world.journeys_starting_in(tenant, from, to.min(now.saturating_add(1)));
            (r.end() - r.start() + 1).max(0) as u64
        }
        _ => {
            // whole settled hours from the cache, ragged edges directly
            let mut n = 0u64;
            let mut t = from;
            while t < to {
                let hour = t.div_euclid(HOUR_MS);
                let (hs, he) = (hour * HOUR_MS, (hour + 1) * HOUR_MS);
                if t == hs && he <= to && he <= now {
                    let key = (tenant, source.index(), hour);
                    let cached = cache.inner.lock().ok().and_then(|m| m.get(&key).copied());
                    let c = match cached {
                        Some(c) => c,
                        None => {
                            let c = count_direct(world, tenant, source, hs, he, now);
                            if let Ok(mut m) = cache.inner.lock() {
                                if m.len() >= COUNT_CACHE_CAP {
                                    m.clear();
                                }
                                m.insert(key, c);
                            }
                            c
                        }
                    };
                    n += c;
                    t = he;
                } else {
                    let end = he.min(to);
                    n += count_direct(world, tenant, source, t, end, now);
                    t = end;
                }
            }
            n
        }
    }
}

fn count_direct(world: &World, tenant: usize, source: Source, from: i64, to: i64, now: i64) -> u64 {
    let to = to.min(now.saturating_add(1));
    if to <= from {
        return 0;
    }
    let mut n = 0u64;
    for k in world.journeys_starting_in(tenant, from - MAX_RECORD_OFFSET_MS, to) {
        let j = world.journey(tenant, k);
        for r in refs_of(source, &j) {
            let s = j.record_start(r);
            if s >= from && s < to && s <= now {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_roundtrip() {
        let k = RecordKey {
            start: 1_779_099_997_234,
            k: -42,
            sub: 1001,
        };
        assert_eq!(RecordKey::from_cursor(&k.to_cursor()), Some(k));
        assert_eq!(RecordKey::from_cursor("garbage"), None);
        assert_eq!(RecordKey::from_cursor("c1.zz"), None);
    }

    #[test]
    fn paging_walk_equals_count() {
        let w = World::new(5, 1_779_000_000_000, 1, 8, 3, 1.0, 60.0, 1);
        let cache = Arc::new(CountCache::default());
        let now = w.epoch_ms + 3 * HOUR_MS;
        let (from, to) = (w.epoch_ms - 20 * HOUR_MS, w.epoch_ms + 2 * HOUR_MS);
        for source in [
            Source::Calls,
            Source::Queues,
            Source::Agents,
            Source::ProfileHistory,
        ] {
            let total = count(&w, &cache, 0, source, from, to, now);
            let mut after = None;
            let mut seen = Vec::new();
            loop {
                let (recs, more) = page(&w, 0, source, from, to, now, after, 37, &|_| true);
                if let Some(last) = recs.last() {
                    after = Some(last.key);
                }
                seen.extend(recs.iter().map(|r| r.key));
                if !more {
                    break;
                }
            }
            assert!(total > 0, "{source:?}");
            assert_eq!(seen.len() as u64, total, "{source:?}");
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, seen, "{source:?} not strictly ordered");
            // cached second count equals the first
            assert_eq!(count(&w, &cache, 0, source, from, to, now), total);
        }
    }
}
