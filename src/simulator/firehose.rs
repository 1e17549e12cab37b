//! `--firehose RATE`: a benchmark mode in which every live socket streams
//! real rendered frames, each a distinct record, instead of the journey
//! simulation (which is too slow to find the relay's limits).
//!
//! - Templates: per tenant and source, a small pool of records of the seeded
//!   world (the first journeys' pushes, the current hour's profile_history
//!   slots), rendered by the same functions the journey driver uses and
//!   serialized once as `(prefix, suffix)` around the identity value. A frame
//!   is `prefix + id + suffix`: one allocation, no serde.
//! - Identity: `id_call` (calls, queues, agents: a JSON string) or `agent.id`
//!   (profile_live, profile_history: a JSON number), the fields the relay keys
//!   on, so content-derived event ids are distinct. It encodes the send time
//!   (see [`firehose_send_time_us`]).
//! - Pacing (RATE > 0): RATE is per tenant and split equally over the
//!   tenant's live sockets connected at each tick (RATE / 5 per socket when one
//!   client has all five open). Every `TICK` a socket credits
//!   `elapsed x RATE / sockets` and sends the whole frames due, carrying the
//!   fraction, so the long-run rate is exact and a late tick sends only what
//!   became due. A client slower than its share simply reads at its own pace
//!   (the credit waits); it is never disconnected.
//! - RATE 0: batches back to back; TCP back-pressure sets the pace.
//! - Stats: each frame is its own event, so `frames_pushed` (or
//!   `records_replaced` under `--malformed-share`) counts every frame built
//!   and `frames_delivered` every frame flushed to a client.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::Value;

use super::faults::{malformed_frame, oversized_payload, Dice, MalformedFrame, MalformedKind};
use super::journey::{
    presence_slots, Journey, JourneyEvent, RecordRef, Source, World, HOUR_MS, MAX_JOURNEY_MS,
};
use super::render::{
    call_summaries, full_profile_history, full_profile_live, full_record, live_payload,
};
use super::socket::{close, OpenGuard};
use super::stats::bump;
use super::AppState;

/// Distinct records per (tenant, source) that frames cycle through.
const POOL: usize = 8;
/// Journeys scanned for templates; a handful normally fills every pool.
const MAX_TEMPLATE_JOURNEYS: i64 = 1_000;
/// Journeys whose calls feed the profile_history templates' call summaries
/// (bounded so that a high `--rate` does not make start-up slow).
const SUMMARY_JOURNEYS: usize = 2_000;
/// Pacing tick for RATE > 0.
const TICK: Duration = Duration::from_millis(2);
/// Frames fed to a socket before one flush.
const WRITE_BATCH: u64 = 256;
/// How long a close frame may wait for a client that does not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Stands in for the identity value while a template is serialized.
const SENTINEL: &str = "__studio_relay_firehose_identity__";

/// Frames sent by this process so far: the sequence part of identities.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The send time (unix microseconds) encoded in a firehose identity value:
/// `"<micros>-<seq>"` (the `id_call` of calls, queues and agents) or the
/// decimal text of `micros * 1000 + seq % 1000` (the `agent.id` of
/// profile_live and profile_history, which is a JSON number). `None` for
/// anything else.
pub fn firehose_send_time_us(id: &str) -> Option<i64> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match id.split_once('-') {
        Some((micros, seq)) if digits(micros) && digits(seq) => micros.parse().ok(),
        Some(_) => None,
        None if digits(id) => id.parse::<i64>().ok().map(|n| n / 1000),
        None => None,
    }
}

/// Whether a source's identity is `id_call` (a string) or `agent.id` (a number).
fn text_identity(source: Source) -> bool {
    matches!(source, Source::Calls | Source::Queues | Source::Agents)
}

/// An identity value as it appears in the JSON text (without quotes).
struct Identity {
    buf: [u8; 48],
    len: usize,
}

impl Identity {
    fn new(source: Source, micros: u64, seq: u64) -> Identity {
        let mut id = Identity {
            buf: [0; 48],
            len: 0,
        };
        if text_identity(source) {
            id.push(micros);
            id.buf[id.len] = b'-';
            id.len += 1;
            id.push(seq);
        } else {
            // A JSON number must fit an i64: micros x 1000 does until 2262.
            id.push(micros.saturating_mul(1000).saturating_add(seq % 1000));
        }
        id
    }
    fn push(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let d = &digits[i..];
        self.buf[self.len..self.len + d.len()].copy_from_slice(d);
        self.len += d.len();
    }
    fn as_str(&self) -> &str {
        // only ASCII digits and '-' were written
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// One serialized record with a hole for its identity value.
#[derive(Debug)]
pub(crate) struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    /// Serializes the live payload of `full` around its identity field;
    /// `None` if the payload has no such field.
    fn new(source: Source, full: Value) -> Option<Template> {
        let mut payload = live_payload(source, full);
        let slot = if text_identity(source) {
            payload.get_mut("id_call")?
        } else {
            payload.get_mut("agent")?.get_mut("id")?
        };
        *slot = Value::String(SENTINEL.into());
        let text = serde_json::to_string(&payload).ok()?;
        let quoted = format!("\"{SENTINEL}\"");
        let at = text.find(&quoted)?;
        // keep the quotes for a string identity, drop them for a number
        let (head, tail) = if text_identity(source) {
            (at + 1, at + quoted.len() - 1)
        } else {
            (at, at + quoted.len())
        };
        Some(Template {
            prefix: text[..head].to_string(),
            suffix: text[tail..].to_string(),
        })
    }

    fn frame(&self, id: &Identity) -> String {
        let id = id.as_str();
        let mut s = String::with_capacity(self.prefix.len() + id.len() + self.suffix.len());
        s.push_str(&self.prefix);
        s.push_str(id);
        s.push_str(&self.suffix);
        s
    }
}

/// The templates of one tenant and its connected live sockets.
#[derive(Debug)]
pub(crate) struct TenantPools {
    pools: [Vec<Template>; 5],
    /// Live sockets of this tenant streaming now (all sources, all clients).
    connected: AtomicUsize,
}

/// Everything the firehose sockets share.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Events per second per tenant; 0 = as fast as clients read.
    rate: f64,
    tenants: Vec<TenantPools>,
    /// The `oversized` malformed frame, built once when `--malformed-share` > 0.
    oversized: Bytes,
}

impl Plan {
    pub fn new(world: &World, rate: f64, malformed_share: f64) -> Plan {
        Plan {
            rate,
            tenants: (0..world.tenants.len())
                .map(|t| TenantPools {
                    pools: templates(world, t),
                    connected: AtomicUsize::new(0),
                })
                .collect(),
            oversized: if malformed_share > 0.0 {
                oversized_payload()
            } else {
                Bytes::new()
            },
        }
    }
}

/// A few records per source, pushed by the first journeys of `tenant` (as
/// the journey driver renders them) and the current hour's profile_history.
fn templates(world: &World, tenant: usize) -> [Vec<Template>; 5] {
    let mut pools: [Vec<Template>; 5] = Default::default();
    let full = |pools: &[Vec<Template>; 5], s: Source| pools[s.index()].len() >= POOL;
    fn add(pools: &mut [Vec<Template>; 5], s: Source, rec: Value) {
        if let Some(t) = Template::new(s, rec) {
            pools[s.index()].push(t);
        }
    }
    for k in 0..MAX_TEMPLATE_JOURNEYS {
        let j = world.journey(tenant, k);
        for (time, ev) in j.events() {
            match ev {
                JourneyEvent::Record(r) => {
                    let s = match r {
                        RecordRef::Call => Source::Calls,
                        RecordRef::Queue(_) => Source::Queues,
                        RecordRef::Agent(_) => Source::Agents,
                    };
                    if !full(&pools, s) {
                        add(&mut pools, s, full_record(world, &j, r, time));
                    }
                }
                JourneyEvent::AgentCallState(o) => {
                    if !full(&pools, Source::ProfileLive) {
                        let agent = j.offers[o].agent;
                        let rec = full_profile_live(world, tenant, agent, time, Some((&j, o)));
                        add(&mut pools, Source::ProfileLive, rec);
                    }
                }
            }
        }
        if [
            Source::Calls,
            Source::Queues,
            Source::Agents,
            Source::ProfileLive,
        ]
        .into_iter()
        .all(|s| full(&pools, s))
        {
            break;
        }
    }
    // The hourly batch the driver pushes (`profile_history_hour`), with the
    // call summaries computed from a bounded number of journeys.
    let hour = world.epoch_ms.div_euclid(HOUR_MS);
    let (hs, he) = (hour * HOUR_MS, (hour + 1) * HOUR_MS);
    let journeys: Vec<Journey> = world
        .journeys_starting_in(tenant, hs - MAX_JOURNEY_MS, he)
        .take(SUMMARY_JOURNEYS)
        .map(|k| world.journey(tenant, k))
        .collect();
    let refs: Vec<&Journey> = journeys.iter().collect();
    'agents: for agent in 0..world.tenants[tenant].agents.len() {
        let slots = presence_slots(world, tenant, agent, hour);
        let summaries = call_summaries(world, tenant, &slots, &refs);
        for (slot, cs) in slots.iter().zip(&summaries) {
            if full(&pools, Source::ProfileHistory) {
                break 'agents;
            }
            let rec = full_profile_history(world, tenant, slot, &slots, cs);
            add(&mut pools, Source::ProfileHistory, rec);
        }
    }
    pools
}

struct ConnectedGuard<'a>(&'a AtomicUsize);
impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

type Tx = SplitSink<WebSocket, Message>;

async fn close_socket(tx: &mut Tx, code: u16, reason: &'static str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, tx.send(close(code, reason))).await;
}

async fn write_batch(tx: &mut Tx, batch: &mut Vec<Message>) -> bool {
    for m in batch.drain(..) {
        if tx.feed(m).await.is_err() {
            return false;
        }
    }
    tx.flush().await.is_ok()
}

/// What one batch was made of, for the counters.
#[derive(Default)]
struct BatchCounts {
    records: u64,
    replaced: u64,
    malformed: [u64; 5],
}

/// Streams firehose frames of (`tenant`, `source`) to one client.
pub(crate) async fn client_loop(
    socket: WebSocket,
    state: Arc<AppState>,
    tenant: usize,
    source: Source,
) {
    let Some(plan) = state.firehose.as_ref() else {
        return;
    };
    let c = &state.counters;
    bump(&c.connections_accepted);
    c.connections_open.fetch_add(1, Relaxed);
    let _open = OpenGuard(state.clone());
    let pools = &plan.tenants[tenant];
    pools.connected.fetch_add(1, Relaxed);
    let _connected = ConnectedGuard(&pools.connected);
    let pool = &pools.pools[source.index()];
    let (mut tx, mut incoming) = socket.split();
    let mut close_signal = state.close_signal.clone();
    close_signal.mark_unchanged();
    let mut close_fault = state.args.close_every.is_some();
    let share = state.args.malformed_share;
    let dice = Dice::new(
        state.args.seed,
        1_000 + (tenant * Source::ALL.len() + source.index()) as u64,
    );

    // An empty pool cannot happen with the seeded world; such a socket idles.
    let streaming = !pool.is_empty();
    let paced = plan.rate > 0.0;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut credit = 0.0f64;
    let mut due = 0u64; // paced: frames due and not yet sent
    let mut next_template = 0usize;
    let mut batch: Vec<Message> = Vec::with_capacity(WRITE_BATCH as usize);
    loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => {
                close_socket(&mut tx, 1001, "simulator shutting down").await;
                break;
            }
            changed = close_signal.changed(), if close_fault => {
                if changed.is_err() {
                    close_fault = false;
                    continue;
                }
                bump(&c.sockets_closed_by_fault);
                close_socket(&mut tx, 1001, "simulated fault: --close-every").await;
                break;
            }
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue, // pings are answered by the WebSocket layer
            },
            _ = tick.tick(), if streaming && paced && due == 0 => {
                let now = Instant::now();
                let sockets = pools.connected.load(Relaxed).max(1) as f64;
                credit += now.duration_since(last).as_secs_f64() * plan.rate / sockets;
                last = now;
                let whole = credit.floor();
                credit -= whole;
                due = whole as u64;
            }
            _ = std::future::ready(()), if streaming && (!paced || due > 0) => {}
        }
        let n = if paced {
            due.min(WRITE_BATCH)
        } else {
            WRITE_BATCH
        };
        if n == 0 {
            continue;
        }
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let seq = SEQ.fetch_add(n, Relaxed);
        let mut counts = BatchCounts::default();
        for i in 0..n {
            let template = &pool[next_template];
            next_template = (next_template + 1) % pool.len();
            let text = template.frame(&Identity::new(source, micros, seq + i));
            let fault = if share > 0.0 {
                let (u, pick) = dice.roll();
                (u < share)
                    .then(|| MalformedKind::ALL[(pick % MalformedKind::ALL.len() as u64) as usize])
            } else {
                None
            };
            batch.push(match fault {
                None => {
                    counts.records += 1;
                    Message::Text(Utf8Bytes::from(text))
                }
                Some(kind) => {
                    if kind.replaces_record() {
                        counts.replaced += 1;
                    } else {
                        counts.records += 1;
                    }
                    counts.malformed[kind as usize] += 1;
                    let payload: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match malformed_frame(kind, &payload, &plan.oversized) {
                        MalformedFrame::Text(s) => Message::Text(Utf8Bytes::from(s)),
                        MalformedFrame::Binary(b) => Message::Binary(b),
                    }
                }
            });
        }
        c.frames_pushed[source.index()].fetch_add(counts.records, Relaxed);
        c.records_replaced[source.index()].fetch_add(counts.replaced, Relaxed);
        for (k, m) in counts.malformed.iter().enumerate() {
            if *m > 0 {
                c.malformed[k].fetch_add(*m, Relaxed);
            }
        }
        // A client that stops reading must not hold up shutdown.
        let ok = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => {
                close_socket(&mut tx, 1001, "simulator shutting down").await;
                break;
            }
            ok = write_batch(&mut tx, &mut batch) => ok,
        };
        batch.clear();
        if !ok {
            break;
        }
        c.frames_delivered[source.index()].fetch_add(n, Relaxed);
        if paced {
            due -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_encode_the_send_time() {
        let micros = 1_779_099_997_234_567u64;
        for source in Source::ALL {
            let a = Identity::new(source, micros, 41);
            let b = Identity::new(source, micros, 42);
            assert_ne!(a.as_str(), b.as_str());
            assert_eq!(firehose_send_time_us(a.as_str()), Some(micros as i64));
        }
        assert_eq!(
            Identity::new(Source::Calls, micros, 7).as_str(),
            "1779099997234567-7"
        );
        assert_eq!(
            Identity::new(Source::ProfileLive, micros, 1_007).as_str(),
            "1779099997234567007"
        );
        for bad in ["", "-", "12-", "-3", "ab-1", "1-2-3", "x", "d6e8feb8-6659"] {
            assert_eq!(firehose_send_time_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_source_has_templates_that_make_valid_distinct_frames() {
        let w = World::new(3, 1_779_099_997_234, 2, 10, 3, 1.0, 1.0, 0);
        let plan = Plan::new(&w, 0.0, 0.0);
        for tenant in 0..2 {
            for source in Source::ALL {
                let pool = &plan.tenants[tenant].pools[source.index()];
                assert_eq!(pool.len(), POOL, "{source:?}");
                let mut seen = std::collections::HashSet::new();
                for (i, t) in pool.iter().enumerate() {
                    let text = t.frame(&Identity::new(source, 1_779_099_997_234_567, i as u64));
                    let v: Value = serde_json::from_str(&text).expect("valid JSON");
                    let id = if text_identity(source) {
                        v["id_call"].as_str().map(str::to_string)
                    } else {
                        v["agent"]["id"].as_i64().map(|n| n.to_string())
                    }
                    .expect("identity of the right JSON type");
                    assert_eq!(firehose_send_time_us(&id), Some(1_779_099_997_234_567));
                    assert!(seen.insert(id));
                    assert!(!text.contains(SENTINEL));
                }
            }
        }
    }
}
