//! Publishing: one [`Sink`] trait, one implementation per backbone.
//!
//! A sink takes fully built [`OutboundMessage`]s (destination, key, headers,
//! payload: everything was decided by `encode/`) and returns an [`AckFuture`]
//! per message. Callers keep a bounded window of those futures in flight, so
//! publishing is pipelined rather than one round trip per event. A message
//! counts as published only when its future resolves `Ok` (broker ack).

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

/// One message ready for the broker.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// Kafka topic or NATS subject.
    pub destination: String,
    /// Kafka message key (per-key ordering); ignored by NATS.
    pub key: Option<String>,
    /// Headers (CloudEvents `ce_*`, `content-type`, schema name/version).
    pub headers: Vec<(String, String)>,
    /// The encoded record.
    pub payload: Bytes,
    /// Deterministic event id; JetStream's `Nats-Msg-Id` (dedup).
    pub event_id: String,
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
    /// The broker refused this message (too large, invalid topic, not authorized): retrying will not help.
    Rejected,
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
    async fn send(&self, message: OutboundMessage) -> Result<AckFuture, SinkError>;

    /// Waits until everything sent so far is acknowledged, at most `timeout`.
    async fn flush(&self, timeout: Duration) -> Result<(), SinkError>;

    /// Is the broker reachable right now? (readiness)
    async fn check_health(&self) -> Result<(), SinkError>;
}

mod kafka;
mod nats;
mod stdout;

pub use kafka::KafkaSink;
pub use nats::JetStreamSink;
pub use stdout::StdoutSink;

/// Builds the configured sink (connects for NATS; Kafka connects lazily).
pub async fn build(
    config: &crate::config::SinkConfig,
) -> Result<std::sync::Arc<dyn Sink>, SinkError> {
    use crate::config::SinkKind;
    Ok(match config.kind {
        SinkKind::Kafka => std::sync::Arc::new(KafkaSink::new(&config.kafka)?),
        SinkKind::Nats => std::sync::Arc::new(JetStreamSink::connect(&config.nats).await?),
        SinkKind::Stdout => std::sync::Arc::new(StdoutSink::new()),
    })
}
