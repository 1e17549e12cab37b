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
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::message_builder::{fit_dead_letter, MessageBuilder};
use super::recent_ids::RecentIds;
use crate::model::DataSource;
use crate::ops::internal_events::{
    DeadLetterDropped, EventDeadLettered, EventPublished, EventPublishedChildren, PublishFailed,
};
use crate::ops::Metrics;
use crate::sink::{AckFuture, OutboundMessage, Sink, SinkError, SinkErrorKind};

/// One message plus what the publisher needs to account for it.
pub struct Outgoing {
    pub message: OutboundMessage,
    pub tenant: Arc<str>,
    pub source: DataSource,
    /// `live`, `replay`, `backfill` or `deadletter` (metric label).
    pub origin: &'static str,
    /// When a live frame passed each hand-over, for the latency histograms.
    pub stages: Option<StageTimes>,
    /// Notified when this message is settled (acknowledged or dead-lettered).
    pub tracker: Option<Arc<BatchTracker>>,
}

/// When a live event passed each hand-over on its way to the broker: the
/// end-to-end histogram says how slow an event was, these say where it
/// waited (`studio_relay_stage_latency_seconds`, one stage per gap).
///
/// Kept small because it travels by value through both queues: the read
/// instant, then each later hand-over in whole microseconds after it
/// (saturating after 71 minutes; the last stage takes up the rest, so the
/// stages always add up to the end-to-end time).
#[derive(Debug, Clone, Copy)]
pub struct StageTimes {
    received: Instant,
    after_us: [u32; 4],
}

/// The hand-overs after the socket's read, in the order an event passes them.
#[derive(Debug, Clone, Copy)]
pub enum HandOver {
    /// The processor took it off the frame queue.
    Dequeued,
    /// Normalized and encoded, and back in arrival order.
    Prepared,
    /// The publisher took it off its queue.
    Taken,
    /// The sink accepted it; from here its ack is awaited.
    Sent,
}

impl StageTimes {
    /// A frame read at `received`.
    pub fn new(received: Instant) -> Self {
        StageTimes {
            received,
            after_us: [0; 4],
        }
    }

    /// Records that the event passed `hand_over` at `at`.
    pub fn mark(&mut self, hand_over: HandOver, at: Instant) {
        let us = at.saturating_duration_since(self.received).as_micros();
        self.after_us[hand_over as usize] = u32::try_from(us).unwrap_or(u32::MAX);
    }

    /// The time spent in each of [`LATENCY_STAGES`](crate::ops::LATENCY_STAGES)
    /// by an event acknowledged at `acked`.
    pub fn gaps(&self, acked: Instant) -> [Duration; 5] {
        let [a, b, c, d] = self.after_us;
        let us = |from: u32, to: u32| Duration::from_micros(u64::from(to.saturating_sub(from)));
        let total = acked.saturating_duration_since(self.received);
        [
            us(0, a),
            us(a, b),
            us(b, c),
            us(c, d),
            total.saturating_sub(Duration::from_micros(u64::from(d))),
        ]
    }
}

/// Counts a batch of messages until each is settled (replay uses one per window).
#[derive(Default)]
pub struct BatchTracker {
    pending: AtomicI64,
    rejected: AtomicU64,
    notify: Notify,
}

impl BatchTracker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Call before submitting `n` messages.
    pub fn add(&self, n: usize) {
        self.pending.fetch_add(n as i64, Ordering::SeqCst);
    }

    pub(crate) fn settle(&self, rejected: bool) {
        if rejected {
            self.rejected.fetch_add(1, Ordering::SeqCst);
        }
        if self.pending.fetch_sub(1, Ordering::SeqCst) <= 1 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until every added message is settled; returns how many were rejected.
    pub async fn wait(&self) -> u64 {
        loop {
            let notified = self.notify.notified();
            if self.pending.load(Ordering::SeqCst) <= 0 {
                return self.rejected.load(Ordering::SeqCst);
            }
            notified.await;
        }
    }
}

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
                Some(tx) => m
                    .queue_depth
                    .set((tx.max_capacity() - tx.capacity()) as i64),
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
        metrics.inflight_messages.set(inflight.len() as i64);
        metrics.queue_depth.set(rx.len() as i64);
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
    metrics.inflight_messages.set(0);
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
    if item.origin == "deadletter" {
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

fn backoff(s: &PublisherSettings, attempt: u32) -> Duration {
    s.retry_min
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(s.retry_max)
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
            if item.origin == "deadletter" {
                stats.dead_lettered += 1;
            } else {
                if let (Some(ids), Some(key)) = (&settings.recent_ids, item.message.match_key()) {
                    let _ = ids.insert(key);
                }
                EventPublished {
                    tenant: &item.tenant,
                    source,
                    origin: item.origin,
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
            if item.origin == "deadletter" {
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
                EventDeadLettered {
                    tenant: &item.tenant,
                    source,
                    reason,
                    error: &e.message,
                }
                .emit(metrics);
                let dl = builder.dead_letter(
                    &item.tenant,
                    item.source,
                    reason,
                    &e.message,
                    chrono::Utc::now().timestamp_millis(),
                    item.message.payload.clone(),
                );
                let dl = Outgoing {
                    message: dl,
                    tenant: item.tenant.clone(),
                    source: item.source,
                    origin: "deadletter",
                    stages: None,
                    tracker: None,
                };
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
    use crate::relay::message_builder::{DL_PAYLOAD_BYTES, DL_REASON, DL_TRUNCATED};
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
        Outgoing {
            message: OutboundMessage {
                destination: "telavox.studio.calls.v1".into(),
                key: Some(id.into()),
                headers: vec![("ce_id".into(), id.to_string().into())],
                payload: bytes::Bytes::from(vec![b'r'; payload_bytes]),
                event_id: id.into(),
            },
            tenant: Arc::from("acme"),
            source: DataSource::Calls,
            origin: "live",
            stages: None,
            tracker: None,
        }
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

    #[test]
    fn stages_split_the_end_to_end_time_and_add_up_to_it() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut s = StageTimes::new(t0);
        s.mark(HandOver::Dequeued, at(10));
        s.mark(HandOver::Prepared, at(35));
        s.mark(HandOver::Taken, at(40));
        s.mark(HandOver::Sent, at(47));
        let gaps = s.gaps(at(1_047));
        assert_eq!(
            gaps.map(|d| d.as_micros()),
            [10, 25, 5, 7, 1_000],
            "frame_queue, prepare, publish_queue, send, ack"
        );
        assert_eq!(gaps.iter().sum::<Duration>(), Duration::from_micros(1_047));
    }

    #[test]
    fn a_stage_past_71_minutes_saturates_and_the_ack_stage_keeps_the_sum() {
        let t0 = Instant::now();
        let two_hours = Duration::from_secs(7_200);
        let mut s = StageTimes::new(t0);
        s.mark(HandOver::Dequeued, t0);
        s.mark(HandOver::Prepared, t0);
        // Spooled through a two-hour broker outage.
        s.mark(HandOver::Taken, t0 + two_hours);
        s.mark(HandOver::Sent, t0 + two_hours);
        let acked = t0 + two_hours + Duration::from_millis(1);
        let gaps = s.gaps(acked);
        assert_eq!(gaps.iter().sum::<Duration>(), acked - t0);
        assert_eq!(gaps[2].as_micros(), u128::from(u32::MAX));
    }
}
