//! The publishing loop shared by `run` and `replay`.
//!
//! Messages are handed to the sink strictly in arrival order (per-key order
//! holds), their acknowledgements are awaited concurrently with a bounded
//! window. A retryable failure is retried with capped backoff, ahead of new
//! input and without limit: while the broker is away the window fills, the
//! input channel fills and the producer upstream pauses (backpressure); nothing
//! is dropped. A rejection (the broker will never take this message) becomes a
//! dead letter carrying the encoded payload. So does a message larger than the
//! broker takes, found before it is sent: a NATS server closes the connection
//! over one, and sending it again after every reconnect would hold up
//! everything behind it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ops::internal_events::{
    DeadLetterDropped, EventPublished, EventPublishedChildren, PublishFailed, PublishQueueDepth,
    PublishesInFlight,
};
use crate::ops::Metrics;
use crate::publish::dead_letter::DeadLetter;
use crate::publish::message_builder::{fit_dead_letter, MessageBuilder};
use crate::publish::outgoing::{HandOver, Outgoing};
use crate::publish::recent_ids::RecentIds;
use crate::sink::{AckFuture, Sink, SinkError, SinkErrorKind};

/// Knobs of the loop.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// Messages awaiting their ack at once.
    pub window: usize,
    /// First retry delay; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Where the match keys of acknowledged records are remembered (gap
    /// backfill skips historic records with them).
    pub recent_ids: Option<Arc<RecentIds>>,
}

impl Default for PublisherSettings {
    fn default() -> Self {
        PublisherSettings {
            window: 4096,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            recent_ids: None,
        }
    }
}

/// What the loop did, returned when its input closes and everything settled.
#[derive(Debug, Default, Clone)]
pub struct PublisherStats {
    pub published: u64,
    /// Dead letters the broker acknowledged (also counted in `published`).
    pub dead_lettered: u64,
    pub retries: u64,
}

/// Live view of messages not yet settled (for the shutdown report).
#[derive(Default)]
pub struct Outstanding(AtomicI64);

impl Outstanding {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Starts the loop. Close every clone of the returned sender to stop it.
pub fn spawn(
    sink: Arc<dyn Sink>,
    builder: Arc<MessageBuilder>,
    metrics: Arc<Metrics>,
    settings: PublisherSettings,
    capacity: usize,
) -> (
    mpsc::Sender<Outgoing>,
    Arc<Outstanding>,
    JoinHandle<PublisherStats>,
) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let outstanding = Arc::new(Outstanding::default());
    let o = outstanding.clone();
    // The loop may sit in one long `send` while the broker is away; keep the
    // backlog gauge current from outside it. A weak sender does not keep the
    // channel open, so this ends with the loop's input.
    let weak = tx.downgrade();
    let m = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(tx) => PublishQueueDepth {
                    depth: (tx.max_capacity() - tx.capacity()) as i64,
                }
                .emit(&m),
                None => return,
            }
        }
    });
    let handle = tokio::spawn(run_loop(sink, builder, metrics, settings, rx, o));
    (tx, outstanding, handle)
}

type Settled = (Outgoing, u32, Result<(), SinkError>);

/// A message awaiting its acknowledgement: the sink's ack future and the
/// message with its attempt number (a plain future rather than an `async`
/// block around the ack, which would be one more allocation per message).
struct Inflight {
    ack: AckFuture,
    item: Option<(Outgoing, u32)>,
}

impl Future for Inflight {
    type Output = Settled;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Settled> {
        let this = self.get_mut();
        let result = std::task::ready!(this.ack.as_mut().poll(cx));
        let (item, attempt) = this.item.take().expect("an ack settles once");
        Poll::Ready((item, attempt, result))
    }
}

struct Retry {
    item: Outgoing,
    attempt: u32,
    ready_at: tokio::time::Instant,
}

async fn run_loop(
    sink: Arc<dyn Sink>,
    builder: Arc<MessageBuilder>,
    metrics: Arc<Metrics>,
    settings: PublisherSettings,
    mut rx: mpsc::Receiver<Outgoing>,
    outstanding: Arc<Outstanding>,
) -> PublisherStats {
    let mut stats = PublisherStats::default();
    let mut inflight: FuturesUnordered<Inflight> = FuturesUnordered::new();
    let mut retries: VecDeque<Retry> = VecDeque::new();
    let mut published = EventPublishedChildren::default();
    let mut input_open = true;
    loop {
        PublishesInFlight {
            count: inflight.len() as i64,
        }
        .emit(&metrics);
        PublishQueueDepth {
            depth: rx.len() as i64,
        }
        .emit(&metrics);
        outstanding
            .0
            .store((inflight.len() + retries.len()) as i64, Ordering::Relaxed);

        // Retries go first, in the order they failed; new input waits.
        // Each retry waits until its own ready time, so a batch that failed
        // together waits one backoff, not one per message.
        let next = if let Some(Retry {
            item,
            attempt,
            ready_at,
        }) = retries.pop_front()
        {
            let sleep = tokio::time::sleep_until(ready_at);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    Some(done) = inflight.next(), if !inflight.is_empty() => {
                        settle(done, &builder, &metrics, &settings, &mut stats, &mut retries, &mut published);
                    }
                }
            }
            Some((item, attempt))
        } else if inflight.len() < settings.window && input_open {
            tokio::select! {
                biased;
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    settle(done, &builder, &metrics, &settings, &mut stats, &mut retries, &mut published);
                    None
                }
                item = rx.recv() => match item {
                    Some(mut item) => {
                        if let Some(s) = &mut item.stages {
                            s.mark(HandOver::Taken, Instant::now());
                        }
                        Some((item, 0))
                    }
                    None => { input_open = false; None }
                },
            }
        } else if let Some(done) = inflight.next().await {
            settle(
                done,
                &builder,
                &metrics,
                &settings,
                &mut stats,
                &mut retries,
                &mut published,
            );
            None
        } else {
            // Input closed, nothing in flight, nothing to retry.
            break;
        };

        let Some((mut item, attempt)) = next else {
            continue;
        };
        // Hand over in order; keep settling acks while the sink makes us wait
        // (its own buffer may only free up as acks are polled).
        // (The send future borrows the message; it ends with this block.)
        let sent = match check_size(&*sink, &mut item) {
            Err(too_large) => Err(too_large),
            Ok(()) => {
                let send = sink.send(&item.message);
                tokio::pin!(send);
                loop {
                    tokio::select! {
                        r = &mut send => break r,
                        Some(done) = inflight.next(), if !inflight.is_empty() => {
                            settle(done, &builder, &metrics, &settings, &mut stats, &mut retries, &mut published);
                        }
                    }
                }
            }
        };
        match sent {
            Ok(ack) => {
                if let Some(s) = &mut item.stages {
                    s.mark(HandOver::Sent, Instant::now());
                }
                inflight.push(Inflight {
                    ack,
                    item: Some((item, attempt)),
                })
            }
            Err(e) => inflight.push(Inflight {
                ack: Box::pin(futures::future::ready(Err(e))),
                item: Some((item, attempt)),
            }),
        }
    }
    PublishesInFlight { count: 0 }.emit(&metrics);
    outstanding.0.store(0, Ordering::Relaxed);
    stats
}

/// Refuses a message larger than the sink says its destination takes (it
/// settles like a broker's refusal, as `TooLarge`); a dead letter is cut to
/// fit instead, so the incident is recorded.
fn check_size(sink: &dyn Sink, item: &mut Outgoing) -> Result<(), SinkError> {
    let Some(max) = sink.max_message_bytes(&item.message.destination) else {
        return Ok(());
    };
    let size = item.message.size();
    if size <= max {
        return Ok(());
    }
    if item.is_dead_letter() {
        fit_dead_letter(&mut item.message, max);
        return Ok(());
    }
    Err(SinkError::new(
        SinkErrorKind::TooLarge,
        format!(
            "the message is {size} bytes; {} takes at most {max}",
            item.message.destination
        ),
    ))
}

/// The delay before retry number `attempt`: `retry_min`, doubling, capped
/// at `retry_max` (reached long before the 17th).
fn backoff(s: &PublisherSettings, attempt: u32) -> Duration {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(s.retry_min)
        .with_max_delay(s.retry_max)
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1).min(16) as usize)
        .map(whole_micros)
        .unwrap_or(s.retry_max)
}

/// backon doubles in `f32`, which turns 200 ms into 200.000003 ms, and the
/// timer rounds that up to 201 ms; whole microseconds keep the doubling exact.
fn whole_micros(d: Duration) -> Duration {
    Duration::from_micros(d.as_micros() as u64)
}

fn settle(
    (mut item, attempt, result): Settled,
    builder: &MessageBuilder,
    metrics: &Metrics,
    settings: &PublisherSettings,
    stats: &mut PublisherStats,
    retries: &mut VecDeque<Retry>,
    published: &mut EventPublishedChildren,
) {
    let source = item.source.as_str();
    match result {
        Ok(()) => {
            stats.published += 1;
            if item.is_dead_letter() {
                stats.dead_lettered += 1;
            } else {
                if let (Some(ids), Some(key)) = (&settings.recent_ids, item.message.match_key()) {
                    let _ = ids.insert(key);
                }
                EventPublished {
                    tenant: &item.tenant,
                    source,
                    origin: item.origin.as_str(),
                    stages: item.stages.map(|s| s.gaps(Instant::now())),
                }
                .emit_cached(metrics, published);
            }
            if let Some(t) = &item.tracker {
                t.settle(false);
            }
        }
        Err(e) if e.is_retryable() => {
            stats.retries += 1;
            PublishFailed {
                tenant: &item.tenant,
                source,
                retryable: true,
                error: &e.message,
            }
            .emit(metrics);
            let attempt = attempt.saturating_add(1);
            retries.push_back(Retry {
                item,
                attempt,
                ready_at: tokio::time::Instant::now() + backoff(settings, attempt),
            });
        }
        Err(e) => {
            PublishFailed {
                tenant: &item.tenant,
                source,
                retryable: false,
                error: &e.message,
            }
            .emit(metrics);
            if item.is_dead_letter() {
                if e.kind == SinkErrorKind::TooLarge && !item.message.payload.is_empty() {
                    // The broker takes less than the sink knew (a limit
                    // changed since start-up): keep halving the head.
                    let half = item.message.size() - item.message.payload.len().div_ceil(2);
                    fit_dead_letter(&mut item.message, half);
                    retries.push_back(Retry {
                        item,
                        attempt: 0,
                        ready_at: tokio::time::Instant::now(),
                    });
                    return;
                }
                // Nowhere left to put it: say so loudly, with the id to look for.
                DeadLetterDropped {
                    tenant: &item.tenant,
                    source,
                    event_id: &item.message.event_id,
                    error: &e.message,
                }
                .emit(metrics);
            } else {
                let reason = if e.kind == SinkErrorKind::TooLarge {
                    "too_large"
                } else {
                    "publish_rejected"
                };
                let dl = DeadLetter {
                    tenant: &item.tenant,
                    source: item.source,
                    reason,
                    error: &e.message,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    element: None,
                }
                .build(builder, metrics, item.message.payload.clone());
                retries.push_back(Retry {
                    item: dl,
                    attempt: 0,
                    ready_at: tokio::time::Instant::now(),
                });
            }
            if let Some(t) = &item.tracker {
                t.settle(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EncodingFormat, SinkConfig};
    use crate::model::DataSource;
    use crate::publish::message_builder::{DL_PAYLOAD_BYTES, DL_REASON, DL_TRUNCATED};
    use crate::sink::OutboundMessage;
    use std::sync::Mutex;

    /// Keeps what it is sent. `known_max` is the limit it tells the
    /// publisher; `broker_max` the one its "broker" enforces at the ack.
    struct MemorySink {
        known_max: Option<usize>,
        broker_max: usize,
        sent: Mutex<Vec<OutboundMessage>>,
        /// The event id of every message handed to `send`.
        attempts: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Sink for MemorySink {
        fn name(&self) -> &'static str {
            "memory"
        }
        async fn prepare(&self, _: &[String]) -> Result<(), SinkError> {
            Ok(())
        }
        fn max_message_bytes(&self, _: &str) -> Option<usize> {
            self.known_max
        }
        async fn send(&self, m: &OutboundMessage) -> Result<AckFuture, SinkError> {
            self.attempts.lock().unwrap().push(m.event_id.clone());
            let acked = if m.size() > self.broker_max {
                Err(SinkError::new(
                    SinkErrorKind::TooLarge,
                    "MSG_SIZE_TOO_LARGE",
                ))
            } else {
                self.sent.lock().unwrap().push(m.clone());
                Ok(())
            };
            Ok(Box::pin(futures::future::ready(acked)))
        }
        async fn flush(&self, _: Duration) -> Result<(), SinkError> {
            Ok(())
        }
        async fn check_health(&self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn outgoing(id: &str, payload_bytes: usize) -> Outgoing {
        let message = OutboundMessage {
            destination: "telavox.studio.calls.v1".into(),
            key: Some(id.into()),
            headers: vec![("ce_id".into(), id.to_string().into())],
            payload: bytes::Bytes::from(vec![b'r'; payload_bytes]),
            event_id: id.into(),
        };
        Outgoing::record(
            message,
            Arc::from("acme"),
            DataSource::Calls,
            crate::model::Origin::Live,
        )
    }

    /// Publishes three small records, one of `big` bytes, three small ones;
    /// returns what the sink kept, the stats and the metrics text.
    async fn publish_around_a_big_one(
        sink: MemorySink,
        big: usize,
    ) -> (Vec<OutboundMessage>, Vec<String>, PublisherStats, String) {
        let sink = Arc::new(sink);
        let metrics = Arc::new(Metrics::new());
        let builder = Arc::new(MessageBuilder::without_registry(
            EncodingFormat::Json,
            &SinkConfig::default(),
        ));
        let (tx, _, handle) = spawn(
            sink.clone(),
            builder,
            metrics.clone(),
            PublisherSettings::default(),
            16,
        );
        for (id, bytes) in [
            ("a", 100),
            ("b", 100),
            ("c", 100),
            ("big", big),
            ("d", 100),
            ("e", 100),
            ("f", 100),
        ] {
            tx.send(outgoing(id, bytes)).await.unwrap();
        }
        drop(tx);
        let stats = handle.await.unwrap();
        let sent = sink.sent.lock().unwrap().clone();
        let attempts = sink.attempts.lock().unwrap().clone();
        (sent, attempts, stats, metrics.render())
    }

    fn header<'a>(m: &'a OutboundMessage, name: &str) -> Option<&'a str> {
        m.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// Every small record was published in order, and the big one only as a
    /// dead letter that fits `max`, saying why and how large it was.
    fn assert_dead_lettered_as_too_large(sent: &[OutboundMessage], max: usize, big: usize) {
        let records: Vec<&str> = sent
            .iter()
            .filter(|m| m.destination == "telavox.studio.calls.v1")
            .map(|m| m.event_id.as_str())
            .collect();
        assert_eq!(records, ["a", "b", "c", "d", "e", "f"]);
        let letters: Vec<_> = sent
            .iter()
            .filter(|m| m.destination == "telavox.studio.deadletter")
            .collect();
        assert_eq!(letters.len(), 1, "{letters:?}");
        let dl = letters[0];
        assert!(dl.size() <= max, "{} > {max}", dl.size());
        assert!(!dl.payload.is_empty() && dl.payload.iter().all(|&c| c == b'r'));
        assert_eq!(header(dl, DL_REASON), Some("too_large"));
        assert_eq!(header(dl, DL_TRUNCATED), Some("true"));
        assert_eq!(header(dl, DL_PAYLOAD_BYTES), Some(big.to_string().as_str()));
    }

    #[tokio::test]
    async fn a_message_larger_than_the_sink_takes_is_dead_lettered_unsent() {
        let sink = MemorySink {
            known_max: Some(10_000),
            broker_max: 10_000,
            sent: Mutex::default(),
            attempts: Mutex::default(),
        };
        let (sent, attempts, stats, metrics) = publish_around_a_big_one(sink, 50_000).await;
        assert_dead_lettered_as_too_large(&sent, 10_000, 50_000);
        assert!(!attempts.iter().any(|id| id == "big"), "{attempts:?}");
        assert_eq!((stats.published, stats.dead_lettered), (7, 1));
        assert_eq!(stats.retries, 0);
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("studio_relay_events_deadlettered_total")
                    && l.contains("reason=\"too_large\"")
                    && l.ends_with(" 1")),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_broker_refusing_a_message_for_its_size_gets_a_dead_letter_that_fits() {
        // The limit is not known beforehand: the broker answers, and the
        // dead letter (first as large as the record) is cut until it fits.
        let sink = MemorySink {
            known_max: None,
            broker_max: 10_000,
            sent: Mutex::default(),
            attempts: Mutex::default(),
        };
        let (sent, attempts, stats, _) = publish_around_a_big_one(sink, 50_000).await;
        assert_dead_lettered_as_too_large(&sent, 10_000, 50_000);
        assert_eq!(attempts.iter().filter(|id| *id == "big").count(), 1);
        assert_eq!((stats.published, stats.dead_lettered), (7, 1));
    }
}
