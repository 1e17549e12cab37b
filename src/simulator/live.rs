//! The live layer: one driver task per tenant walks the simulated clock,
//! renders each event once and fans the serialized frame out to that
//! (tenant, source)'s clients through a tokio broadcast channel.
//!
//! The driver keeps only a heap of pending `(time, journey index, event)`
//! references plus a capped cache of journeys in flight; a journey evicted
//! from (or never admitted to) the cache is regenerated from its index.
//!
//! With `--firehose` there is no driver: sockets are served by
//! [`super::firehose`] instead.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast;

use super::faults::{malformed_frame, oversized_payload, Dice, MalformedFrame, MalformedKind};
use super::journey::{
    presence_changes, queue_break, Journey, JourneyEvent, RecordRef, Source, HOUR_MS,
    MAX_JOURNEY_MS,
};
use super::render::{full_profile_live, full_record, live_payload};
use super::socket::{close, OpenGuard};
use super::stats::bump;
use super::window::profile_history_hour;
use super::{plain, AppState};

/// Frames a client may fall behind before it is disconnected (close 1008),
/// per (tenant, source).
pub const CHANNEL_CAPACITY: usize = 16_384;
/// Journeys in flight kept decoded; beyond this they are regenerated on
/// each event (bounded memory at any rate).
const JOURNEY_CACHE_CAP: usize = 100_000;
/// Longest real sleep of a driver between two looks at the clock.
const MAX_IDLE: Duration = Duration::from_millis(50);
/// Frames written to a socket before one flush.
const WRITE_BATCH: usize = 256;

/// One serialized live frame, shared by every client (cheap to clone).
#[derive(Clone, Debug)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// Broadcast channels per tenant and source.
pub struct Hub {
    channels: Vec<Vec<broadcast::Sender<Frame>>>,
}

impl Hub {
    pub fn new(tenants: usize) -> Hub {
        Hub {
            channels: (0..tenants)
                .map(|_| {
                    Source::ALL
                        .iter()
                        .map(|_| broadcast::channel(CHANNEL_CAPACITY).0)
                        .collect()
                })
                .collect(),
        }
    }
    fn sender(&self, tenant: usize, source: Source) -> &broadcast::Sender<Frame> {
        &self.channels[tenant][source.index()]
    }
}

enum What {
    Journey {
        k: i64,
        ev: JourneyEvent,
    },
    Presence {
        agent: usize,
    },
    /// The agent logged out of or back in to a queue.
    QueueLogin {
        agent: usize,
    },
    HourTick {
        hour: i64,
    },
}

struct Pending {
    time: i64,
    seq: u64,
    what: What,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // reversed: BinaryHeap is a max-heap, we want the earliest first
    fn cmp(&self, o: &Self) -> Ordering {
        (o.time, o.seq).cmp(&(self.time, self.seq))
    }
}

struct Emitter {
    state: Arc<AppState>,
    tenant: usize,
    dice: Dice,
    oversized: Bytes,
}

impl Emitter {
    /// Counts, maybe corrupts, serializes once and broadcasts one event.
    fn emit(&self, source: Source, render: impl FnOnce() -> serde_json::Value) {
        let c = &self.state.counters;
        let share = self.state.args.malformed_share;
        let fault = if share > 0.0 {
            let (u, pick) = self.dice.roll();
            (u < share)
                .then(|| MalformedKind::ALL[(pick % MalformedKind::ALL.len() as u64) as usize])
        } else {
            None
        };
        match fault {
            Some(kind) if kind.replaces_record() => bump(&c.records_replaced[source.index()]),
            _ => bump(&c.frames_pushed[source.index()]),
        }
        if let Some(kind) = fault {
            bump(&c.malformed[kind as usize]);
        }
        let sender = self.state.hub.sender(self.tenant, source);
        if sender.receiver_count() == 0 {
            return; // nobody listens: skip the rendering work
        }
        let payload = live_payload(source, render());
        let frame = match fault {
            None => match serde_json::to_string(&payload) {
                Ok(text) => Frame::Text(Utf8Bytes::from(text)),
                Err(_) => return, // cannot happen for a Value; never panic
            },
            Some(kind) => match malformed_frame(kind, &payload, &self.oversized) {
                MalformedFrame::Text(s) => Frame::Text(Utf8Bytes::from(s)),
                MalformedFrame::Binary(b) => Frame::Binary(b),
            },
        };
        let _ = sender.send(frame);
    }
}

/// Walks the simulated clock for one tenant and pushes its events.
pub(crate) async fn drive_tenant(state: Arc<AppState>, tenant: usize) {
    let world = state.world.clone();
    let clock = state.clock.clone();
    let start = clock.epoch_ms();
    let emitter = Emitter {
        state: state.clone(),
        tenant,
        dice: Dice::new(state.args.seed, 100 + tenant as u64),
        oversized: if state.args.malformed_share > 0.0 {
            oversized_payload()
        } else {
            Bytes::new()
        },
    };
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut cache: HashMap<i64, (Arc<Journey>, usize)> = HashMap::new();
    // Journeys that began before start but are still in flight push their
    // remaining events live.
    let mut next_k = *world
        .journeys_starting_in(tenant, start - MAX_JOURNEY_MS, start + 1)
        .start();
    let mut scheduled_hour = start.div_euclid(HOUR_MS) - 1;
    let agents = world.tenants[tenant].agents.len();
    let mut processed = 0u64;
    loop {
        if state.shutdown.is_cancelled() {
            break;
        }
        let now = clock.now_ms();
        while scheduled_hour < now.div_euclid(HOUR_MS) {
            scheduled_hour += 1;
            for agent in 0..agents {
                for c in presence_changes(&world, tenant, agent, scheduled_hour) {
                    if c.at >= start {
                        seq += 1;
                        heap.push(Pending {
                            time: c.at,
                            seq,
                            what: What::Presence { agent },
                        });
                    }
                }
                // §2.4: profile_live also fires on queue-login changes.
                let breaks = queue_break(&world, tenant, agent, scheduled_hour);
                for at in breaks.iter().flat_map(|b| [b.out_at, b.back_at]) {
                    if at >= start {
                        seq += 1;
                        heap.push(Pending {
                            time: at,
                            seq,
                            what: What::QueueLogin { agent },
                        });
                    }
                }
            }
            seq += 1;
            heap.push(Pending {
                time: (scheduled_hour + 1) * HOUR_MS,
                seq,
                what: What::HourTick {
                    hour: scheduled_hour,
                },
            });
        }
        while world.journey_start(tenant, next_k) <= now {
            let j = world.journey(tenant, next_k);
            let mut n = 0;
            for (time, ev) in j.events() {
                if time >= start {
                    seq += 1;
                    heap.push(Pending {
                        time,
                        seq,
                        what: What::Journey { k: next_k, ev },
                    });
                    n += 1;
                }
            }
            if n > 0 && cache.len() < JOURNEY_CACHE_CAP {
                cache.insert(next_k, (Arc::new(j), n));
            }
            next_k += 1;
            processed += 1;
            if processed % 512 == 0 {
                tokio::task::yield_now().await;
            }
        }
        while heap.peek().is_some_and(|p| p.time <= now) {
            let Some(p) = heap.pop() else { break };
            match p.what {
                What::Journey { k, ev } => {
                    let j = match cache.get_mut(&k) {
                        Some((j, left)) => {
                            *left -= 1;
                            let j = j.clone();
                            if *left == 0 {
                                cache.remove(&k);
                            }
                            j
                        }
                        None => Arc::new(world.journey(tenant, k)),
                    };
                    match ev {
                        JourneyEvent::Record(r) => {
                            let source = match r {
                                RecordRef::Call => Source::Calls,
                                RecordRef::Queue(_) => Source::Queues,
                                RecordRef::Agent(_) => Source::Agents,
                            };
                            emitter.emit(source, || full_record(&world, &j, r, p.time));
                        }
                        JourneyEvent::AgentCallState(o) => {
                            let agent = j.offers[o].agent;
                            emitter.emit(Source::ProfileLive, || {
                                full_profile_live(&world, tenant, agent, p.time, Some((&j, o)))
                            });
                        }
                    }
                }
                What::Presence { agent } | What::QueueLogin { agent } => {
                    emitter.emit(Source::ProfileLive, || {
                        full_profile_live(&world, tenant, agent, p.time, None)
                    });
                }
                What::HourTick { hour } => {
                    if hour * HOUR_MS >= world.history_start_ms.div_euclid(HOUR_MS) * HOUR_MS {
                        let w = world.clone();
                        let batch = tokio::task::spawn_blocking(move || {
                            profile_history_hour(&w, tenant, hour)
                        })
                        .await
                        .unwrap_or_default();
                        for rec in batch {
                            emitter.emit(Source::ProfileHistory, || rec.full);
                        }
                    }
                }
            }
            processed += 1;
            if processed % 512 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let next = [
            heap.peek().map(|p| p.time).unwrap_or(i64::MAX),
            world.journey_start(tenant, next_k),
            (scheduled_hour + 1) * HOUR_MS,
        ]
        .into_iter()
        .min()
        .unwrap_or(i64::MAX);
        let wait = clock.real_until(next).min(MAX_IDLE);
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Every request that is not `/graphql` or `/_simulator/stats`: WebSocket
/// handshakes for the five datasources (and anything else).
pub(crate) async fn handle_upgrade(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let c = &state.counters;
    if let Some(refuse) = state.args.refuse_handshakes_for {
        if state.clock.real_elapsed() < refuse {
            bump(&c.handshakes_refused);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        }
    }
    let Some(tenant) = state.tenant_of(&headers) else {
        bump(&c.handshakes_unauthorized);
        return plain(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let source = Source::from_path(uri.path())
        .filter(|s| !state.args.invalid_paths.iter().any(|p| p == s.as_str()));
    match source {
        Some(source) if state.firehose.is_some() => {
            ws.on_upgrade(move |socket| super::firehose::client_loop(socket, state, tenant, source))
        }
        Some(source) => {
            let rx = state.hub.sender(tenant, source).subscribe();
            ws.on_upgrade(move |socket| client_loop(socket, rx, state, source))
        }
        None => {
            bump(&c.invalid_paths);
            ws.on_upgrade(|mut socket: WebSocket| async move {
                let _ = socket
                    .send(Message::Text(Utf8Bytes::from_static("Invalid path.")))
                    .await;
                let _ = socket.send(close(1000, "")).await;
            })
        }
    }
}

fn to_message(f: Frame) -> Message {
    match f {
        Frame::Text(t) => Message::Text(t),
        Frame::Binary(b) => Message::Binary(b),
    }
}

async fn client_loop(
    socket: WebSocket,
    mut rx: broadcast::Receiver<Frame>,
    state: Arc<AppState>,
    source: Source,
) {
    let c = &state.counters;
    bump(&c.connections_accepted);
    c.connections_open.fetch_add(1, Relaxed);
    let _guard = OpenGuard(state.clone());
    let (mut tx, mut incoming) = socket.split();
    let mut close_signal = state.close_signal.clone();
    close_signal.mark_unchanged();
    let mut close_fault = state.args.close_every.is_some();
    let delivered = &c.frames_delivered[source.index()];
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                let _ = tx.send(close(1001, "simulator shutting down")).await;
                break;
            }
            changed = close_signal.changed(), if close_fault => {
                if changed.is_err() {
                    close_fault = false;
                    continue;
                }
                bump(&c.sockets_closed_by_fault);
                let _ = tx.send(close(1001, "simulated fault: --close-every")).await;
                break;
            }
            msg = incoming.next() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {} // pings are answered by the WebSocket layer
            },
            frame = rx.recv() => {
                let mut lagged = false;
                match frame {
                    Ok(f) => {
                        let mut n = 1u64;
                        let mut ok = tx.feed(to_message(f)).await.is_ok();
                        while ok && (n as usize) < WRITE_BATCH {
                            match rx.try_recv() {
                                Ok(f) => {
                                    ok = tx.feed(to_message(f)).await.is_ok();
                                    n += 1;
                                }
                                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                    lagged = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if !ok || tx.flush().await.is_err() {
                            break;
                        }
                        delivered.fetch_add(n, Relaxed);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
                if lagged {
                    bump(&c.lagging_clients_disconnected);
                    let _ = tx.send(close(1008, "client too slow: fell too far behind the live stream")).await;
                    break;
                }
            }
        }
    }
}
