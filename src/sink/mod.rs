//! Publishing: one [`Sink`] trait, one implementation per backbone.
//!
//! A sink takes fully built [`OutboundMessage`]s (destination, key, headers,
//! payload: everything was decided by `encode/`) and returns an [`AckFuture`]
//! per message. Callers keep a bounded window of those futures in flight, so
//! publishing is pipelined rather than one round trip per event. A message
//! counts as published only when its future resolves `Ok` (broker ack).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use crate::encode::Header;

/// One message ready for the broker.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// Kafka topic or NATS subject.
    pub destination: String,
    /// Kafka message key (per-key ordering); ignored by NATS.
    pub key: Option<String>,
    /// Headers (CloudEvents `ce_*`, `content-type`, schema name/version),
    /// named as the Kafka binding names them; the NATS sink writes the
    /// CloudEvents ones with the NATS binding's `ce-` prefix.
    pub headers: Vec<Header>,
    /// The encoded record.
    pub payload: Bytes,
    /// Deterministic event id; JetStream's `Nats-Msg-Id` (dedup).
    pub event_id: String,
}

/// What one header costs in [`OutboundMessage::size`]: `name: value\r\n`,
/// as NATS writes it (Kafka's varint framing is smaller for short headers).
pub fn header_size(name: &str, value: &str) -> usize {
    name.len() + value.len() + 4
}

impl OutboundMessage {
    /// The record's cross-layer match key (the `ce_matchkey` header), if
    /// this message carries a record.
    pub fn match_key(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == crate::encode::MATCH_KEY_HEADER)
            .map(|(_, v)| v.as_ref())
    }

    /// The bytes of this message that count against a broker's message
    /// limit: payload, key and headers, without the broker's own framing
    /// (which each sink subtracts from its limit in
    /// [`Sink::max_message_bytes`]).
    pub fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| header_size(k, v)).sum();
        self.payload.len() + self.key.as_ref().map_or(0, String::len) + headers
    }
}

/// Resolves when the broker acknowledged (or refused) one message.
pub type AckFuture = BoxFuture<'static, Result<(), SinkError>>;

/// What went wrong, with a kind so callers can decide to retry.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct SinkError {
    pub kind: SinkErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// Broker unreachable, timeout, queue full, leader moving: try again.
    Unavailable,
    /// The broker refused this message (invalid topic, not authorized): retrying will not help.
    Rejected,
    /// The message is larger than the broker takes (NATS `max_payload`,
    /// Kafka `message.max.bytes` / `max.message.bytes`): retrying will not
    /// help; it is dead-lettered with its payload cut to fit.
    TooLarge,
    /// Configuration or setup problem (bad credentials, stream config conflict).
    Config,
}

impl SinkError {
    pub fn new(kind: SinkErrorKind, message: impl Into<String>) -> Self {
        SinkError {
            kind,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == SinkErrorKind::Unavailable
    }
}

/// A publishing backend.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Short name for logs and metric labels (`kafka`, `nats`, `stdout`).
    fn name(&self) -> &'static str;

    /// Creates topics / streams that are missing, if the config asks for it.
    async fn prepare(&self, destinations: &[String]) -> Result<(), SinkError>;

    /// Hands one message to the client library and returns its ack future.
    /// May wait when the client's own buffer is full (backpressure).
    /// Borrows the message: the caller keeps it for a retry or a dead
    /// letter, and each client copies only what its wire format needs.
    async fn send(&self, message: &OutboundMessage) -> Result<AckFuture, SinkError>;

    /// The largest [`OutboundMessage::size`] `destination` takes, when the
    /// broker's limit is known. The publisher dead-letters a larger message
    /// instead of sending it: a NATS server closes the connection on one
    /// (and the publisher would send it again forever), a Kafka broker
    /// refuses it. Read on every message: keep it cheap.
    fn max_message_bytes(&self, _destination: &str) -> Option<usize> {
        None
    }

    /// Waits until everything sent so far is acknowledged, at most `timeout`.
    async fn flush(&self, timeout: Duration) -> Result<(), SinkError>;

    /// Is the broker reachable right now? (readiness)
    async fn check_health(&self) -> Result<(), SinkError>;

    /// Opens the broker-side store `name` for the relay's own small state
    /// (restart checkpoints), creating it when missing: a NATS KV bucket, a
    /// compacted Kafka topic. `None`: this sink has no broker to keep it in.
    async fn state_store(&self, _name: &str) -> Result<Option<Arc<dyn StateStore>>, SinkError> {
        Ok(None)
    }

    /// The event ids already on the broker in `destinations`, published
    /// since `since_ms` (broker time, Unix ms), oldest first; at most `limit`
    /// of them (the newest are kept), read for at most `timeout`. After a
    /// restart they seed [`crate::publish::RecentIds`], so the resume backfill
    /// does not publish again what is already there. Default: none known.
    /// Joins the group of this deployment's replicas, whose leases say
    /// which shards of the tenants this one owns (see [`leases`]); the
    /// member leaves when `leave` is cancelled. None: this sink has no
    /// broker to keep leases in (stdout, core NATS).
    async fn join_group(
        &self,
        _settings: &leases::GroupSettings,
        _leave: tokio_util::sync::CancellationToken,
    ) -> Result<Option<leases::Membership>, SinkError> {
        Ok(None)
    }

    async fn recent_event_ids(
        &self,
        _destinations: &[String],
        _since_ms: i64,
        _limit: usize,
        _timeout: Duration,
    ) -> Result<EventIdScan, SinkError> {
        Ok(EventIdScan {
            complete: true,
            ..Default::default()
        })
    }
}

/// A small key/value store in the broker (see [`Sink::state_store`]).
/// Values are whole documents: `put` replaces, `get` returns the last `put`.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// What and where, for logs and errors (`NATS KV bucket X`).
    fn describe(&self) -> String;

    /// Low-cardinality backend name for metric labels (`nats`, `kafka`).
    fn backend(&self) -> &'static str;

    /// The last value stored under `key`; `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError>;

    /// Stores `value` under `key`, acknowledged by the broker.
    async fn put(&self, key: &str, value: Bytes) -> Result<(), SinkError>;
}

/// What [`Sink::recent_event_ids`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventIdScan {
    /// Event ids, oldest first.
    pub ids: Vec<String>,
    /// The match keys (`ce_matchkey`) of the same messages, oldest first;
    /// a message without one (published before the relay wrote match keys,
    /// when its event id was the match key) gives its event id.
    pub match_keys: Vec<String>,
    /// False when the timeout cut the reading short.
    pub complete: bool,
}

/// The newest `limit` messages' ids seen, by broker timestamp; messages
/// arrive per partition in order but interleaved across partitions, so the
/// cut is made on timestamps, not on arrival.
pub(crate) struct NewestIds {
    limit: usize,
    seq: u64,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Seen>>,
}

/// Broker timestamp, arrival sequence, event id, match key.
type Seen = (i64, u64, String, Option<String>);

impl NewestIds {
    pub(crate) fn new(limit: usize) -> Self {
        NewestIds {
            limit,
            seq: 0,
            heap: Default::default(),
        }
    }

    /// One message's event id and match key (if it carries one).
    pub(crate) fn push(&mut self, timestamp_ms: i64, id: String, match_key: Option<String>) {
        if self.limit == 0 {
            return;
        }
        self.seq += 1;
        self.heap
            .push(std::cmp::Reverse((timestamp_ms, self.seq, id, match_key)));
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    /// Oldest first (the order [`crate::publish::RecentIds`] forgets in).
    pub(crate) fn into_scan(self, complete: bool) -> EventIdScan {
        let mut v: Vec<_> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort();
        let match_keys = v
            .iter()
            .map(|(_, _, id, key)| key.clone().unwrap_or_else(|| id.clone()))
            .collect();
        EventIdScan {
            ids: v.into_iter().map(|(_, _, id, _)| id).collect(),
            match_keys,
            complete,
        }
    }
}

mod kafka;
mod kafka_group;
pub mod leases;
pub mod memory;
mod nats;
mod nats_leases;
mod stdout;

pub use kafka::{KafkaSink, KafkaStateStore};
pub use nats::{JetStreamSink, KvStateStore};
pub use stdout::StdoutSink;

/// Builds the configured sink (connects for NATS; Kafka connects lazily);
/// the client's own statistics go to `metrics`.
pub async fn build(
    config: &crate::config::SinkConfig,
    metrics: Arc<crate::ops::Metrics>,
) -> Result<std::sync::Arc<dyn Sink>, SinkError> {
    use crate::config::SinkKind;
    Ok(match config.kind {
        SinkKind::Kafka => std::sync::Arc::new(KafkaSink::with_metrics(&config.kafka, metrics)?),
        SinkKind::Nats => std::sync::Arc::new(JetStreamSink::connect(&config.nats).await?),
        SinkKind::Stdout => std::sync::Arc::new(StdoutSink::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_ids_keeps_the_newest_by_timestamp_oldest_first() {
        let mut n = NewestIds::new(3);
        // Two partitions interleaved: arrival order is not time order.
        for (ts, id) in [(10, "a"), (50, "e"), (20, "b"), (40, "d"), (30, "c")] {
            let key = (id != "d").then(|| format!("k{id}"));
            n.push(ts, id.to_string(), key);
        }
        let scan = n.into_scan(true);
        assert_eq!(scan.ids, ["c", "d", "e"]);
        // A message without a match key gives its event id.
        assert_eq!(scan.match_keys, ["kc", "d", "ke"]);
        let mut off = NewestIds::new(0);
        off.push(1, "x".into(), None);
        assert!(off.into_scan(true).ids.is_empty());
    }
}
