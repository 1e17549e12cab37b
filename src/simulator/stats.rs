//! Ground-truth counters, served as JSON at `GET /_simulator/stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use super::faults::MalformedKind;
use super::journey::Source;

/// A snapshot of what the simulator did. Counts are totals since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimulatorStats {
    /// Live record frames broadcast per source (`calls`, `queues`, `agents`,
    /// `profile_live`, `profile_history`): each event counts once however
    /// many clients got it. Frames with extra unknown fields count here (they
    /// still carry the record).
    pub frames_pushed: BTreeMap<String, u64>,
    /// Frames written to client sockets per source (summed over clients).
    pub frames_delivered: BTreeMap<String, u64>,
    /// Events whose frame was replaced by a malformed one (the record was
    /// not sent live; it is still returned by GraphQL), per source.
    pub records_replaced: BTreeMap<String, u64>,
    /// Malformed frames broadcast, per kind (`bad_json`, `binary`,
    /// `oversized`, `wrong_types`, `unknown_fields`).
    pub malformed_frames: BTreeMap<String, u64>,
    /// WebSocket connections accepted (upgraded, valid datasource path).
    pub connections_accepted: u64,
    /// WebSocket connections open now.
    pub connections_open: u64,
    /// Sockets closed by `--close-every`.
    pub sockets_closed_by_fault: u64,
    /// Clients disconnected because they fell too far behind.
    pub lagging_clients_disconnected: u64,
    /// Handshakes answered 401 (missing or unknown token).
    pub handshakes_unauthorized: u64,
    /// Handshakes answered 503 (`--refuse-handshakes-for`).
    pub handshakes_refused: u64,
    /// Upgrades to an unknown path (answered `Invalid path.`).
    pub invalid_paths: u64,
    /// GraphQL requests received (including refused ones).
    pub graphql_requests: u64,
    /// GraphQL requests answered 401.
    pub graphql_unauthorized: u64,
    /// GraphQL requests answered 429 (`--graphql-429-share`).
    pub graphql_429: u64,
    /// GraphQL requests answered 5xx (`--graphql-5xx-share`).
    pub graphql_5xx: u64,
    /// Simulated clock now, epoch milliseconds.
    pub sim_now_ms: i64,
    /// Simulated clock at start, epoch milliseconds.
    pub sim_epoch_ms: i64,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub frames_pushed: [AtomicU64; 5],
    pub frames_delivered: [AtomicU64; 5],
    pub records_replaced: [AtomicU64; 5],
    pub malformed: [AtomicU64; 5],
    pub connections_accepted: AtomicU64,
    pub connections_open: AtomicI64,
    pub sockets_closed_by_fault: AtomicU64,
    pub lagging_clients_disconnected: AtomicU64,
    pub handshakes_unauthorized: AtomicU64,
    pub handshakes_refused: AtomicU64,
    pub invalid_paths: AtomicU64,
    pub graphql_requests: AtomicU64,
    pub graphql_unauthorized: AtomicU64,
    pub graphql_429: AtomicU64,
    pub graphql_5xx: AtomicU64,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    pub fn snapshot(&self, sim_now_ms: i64, sim_epoch_ms: i64) -> SimulatorStats {
        let per_source = |a: &[AtomicU64; 5]| {
            Source::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), a[s.index()].load(Relaxed)))
                .collect()
        };
        SimulatorStats {
            frames_pushed: per_source(&self.frames_pushed),
            frames_delivered: per_source(&self.frames_delivered),
            records_replaced: per_source(&self.records_replaced),
            malformed_frames: MalformedKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.as_str().to_string(),
                        self.malformed[*k as usize].load(Relaxed),
                    )
                })
                .collect(),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed).max(0) as u64,
            sockets_closed_by_fault: self.sockets_closed_by_fault.load(Relaxed),
            lagging_clients_disconnected: self.lagging_clients_disconnected.load(Relaxed),
            handshakes_unauthorized: self.handshakes_unauthorized.load(Relaxed),
            handshakes_refused: self.handshakes_refused.load(Relaxed),
            invalid_paths: self.invalid_paths.load(Relaxed),
            graphql_requests: self.graphql_requests.load(Relaxed),
            graphql_unauthorized: self.graphql_unauthorized.load(Relaxed),
            graphql_429: self.graphql_429.load(Relaxed),
            graphql_5xx: self.graphql_5xx.load(Relaxed),
            sim_now_ms,
            sim_epoch_ms,
        }
    }
}
