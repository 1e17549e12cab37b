//! The publish pipeline on a scripted in-memory sink under paused tokio
//! time: the publisher (acks, retries with backoff, ordering, dead letters,
//! the ack window, settling on close) and the intake with its on-disk spool.
//!
//! Paused time makes these exact and fast: a sleep or a backoff completes
//! as soon as nothing else can run, and `tokio::time::Instant` reads the
//! virtual clock, so a backoff schedule can be asserted to the millisecond.
//! What brokers do is tested against real ones in the other test files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use studio_relay::config::{EncodingFormat, SinkConfig};
use studio_relay::model::DataSource;
use studio_relay::ops::Metrics;
use studio_relay::publish::message_builder::{
    MessageBuilder, DL_PAYLOAD_BYTES, DL_REASON, DL_TRUNCATED,
};
use studio_relay::publish::publisher::{self, PublisherSettings, PublisherStats};
use studio_relay::publish::spool::{Intake, Spool};
use studio_relay::publish::{BatchTracker, Origin, Outgoing};
use studio_relay::sink::memory::{MemorySink, Outcome};
use studio_relay::sink::{OutboundMessage, Sink, SinkErrorKind};

const TOPIC: &str = "telavox.studio.calls.v1";
const DEADLETTER: &str = "telavox.studio.deadletter";
/// Longer than any wait below needs in virtual time; a condition that never
/// comes true fails the test after this much of it (at once, in real time).
const DEADLINE: Duration = Duration::from_secs(600);

/// A live record `id` with a payload of `bytes` bytes.
fn outgoing(id: &str, bytes: usize) -> Outgoing {
    let message = OutboundMessage {
        destination: TOPIC.into(),
        key: Some(format!("call-{id}")),
        headers: vec![("ce_id".into(), id.to_string().into())],
        payload: Bytes::from(vec![b'r'; bytes]),
        event_id: id.into(),
    };
    Outgoing::new(message, Arc::from("acme"), DataSource::Calls, Origin::Live)
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i:03}")).collect()
}

/// A publisher on `sink`, with what a test needs to drive and observe it.
struct Publisher {
    tx: mpsc::Sender<Outgoing>,
    handle: JoinHandle<PublisherStats>,
    metrics: Arc<Metrics>,
}

fn start(sink: &MemorySink, settings: PublisherSettings) -> Publisher {
    let metrics = Arc::new(Metrics::new());
    let builder = Arc::new(MessageBuilder::without_registry(
        EncodingFormat::Json,
        &SinkConfig::default(),
    ));
    let dyn_sink: Arc<dyn Sink> = Arc::new(sink.clone());
    let (tx, _, handle) = publisher::spawn(dyn_sink, builder, metrics.clone(), settings, 1024);
    Publisher {
        tx,
        handle,
        metrics,
    }
}

impl Publisher {
    async fn send(&self, o: Outgoing) {
        self.tx.send(o).await.expect("the publisher is running");
    }

    /// Closes the input and waits for the loop to settle everything.
    async fn finish(self) -> (PublisherStats, String) {
        drop(self.tx);
        let stats = tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("the publisher ends once its input is closed and all settled")
            .expect("the publisher does not panic");
        (stats, self.metrics.render())
    }
}

/// The value of the sample of `metric` whose line contains every `label`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(metric) && !l.starts_with('#'))
        .filter(|l| l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn header<'a>(m: &'a OutboundMessage, name: &str) -> Option<&'a str> {
    m.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_ref())
}

/// Lets every task run as far as it can. Under paused time a sleep returns
/// only once nothing else is runnable, so this asserts that nothing more
/// happens; it never waits for something to happen (see `sink.wait_until`).
async fn run_until_idle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

// ---- publisher ----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn every_message_counts_as_published_once_its_ack_arrives() {
    let sink = MemorySink::new();
    let p = start(&sink, PublisherSettings::default());
    let tracker = BatchTracker::new();
    tracker.add(50);
    for id in ids(0..50) {
        let mut o = outgoing(&id, 100);
        o.tracker = Some(tracker.clone());
        p.send(o).await;
    }
    assert_eq!(tracker.wait().await, 0, "nothing was rejected");
    let (stats, metrics) = p.finish().await;
    assert_eq!(sink.acked_ids(), ids(0..50));
    assert_eq!(sink.sent_ids(), ids(0..50), "each sent once");
    assert_eq!(
        (stats.published, stats.dead_lettered, stats.retries),
        (50, 0, 0)
    );
    let published = sample(
        &metrics,
        "studio_relay_events_published_total",
        &["tenant=\"acme\"", "source=\"calls\"", "origin=\"live\""],
    );
    assert_eq!(published, Some(50.0), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_is_retried_with_doubling_capped_backoff_before_new_input() {
    let sink = MemorySink::new();
    let refused = Outcome::Refuse(SinkErrorKind::Unavailable);
    sink.script_for("b", vec![refused; 4]);
    let p = start(
        &sink,
        PublisherSettings {
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
            ..PublisherSettings::default()
        },
    );
    for id in ["a", "b", "c"] {
        p.send(outgoing(id, 10)).await;
    }
    let (stats, metrics) = p.finish().await;

    assert_eq!(sink.sent_ids(), ["a", "b", "b", "b", "b", "b", "c"]);
    assert_eq!(sink.acked_ids(), ["a", "b", "c"]);
    assert_eq!((stats.published, stats.retries), (3, 4));
    let attempts: Vec<Instant> = sink
        .sent()
        .iter()
        .filter(|s| s.message.event_id == "b")
        .map(|s| s.at)
        .collect();
    let waits: Vec<u128> = attempts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert_eq!(waits, [100, 200, 400, 400], "virtual time, exact");
    let failures = sample(
        &metrics,
        "studio_relay_publish_failures_total",
        &["kind=\"retryable\""],
    );
    assert_eq!(failures, Some(4.0), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn messages_reach_the_sink_in_arrival_order_while_acks_complete_in_any_order() {
    let sink = MemorySink::new();
    sink.set_default(Outcome::Hold);
    let p = start(&sink, PublisherSettings::default());
    for id in ids(0..20) {
        p.send(outgoing(&id, 10)).await;
    }
    assert!(sink.wait_until(DEADLINE, |s| s.held().len() == 20).await);
    assert_eq!(sink.sent_ids(), ids(0..20), "all sent before any ack");
    let mut reversed = ids(0..20);
    reversed.reverse();
    for id in &reversed {
        assert!(sink.ack_held(id));
    }
    let (stats, _) = p.finish().await;
    assert_eq!(sink.acked_ids(), reversed);
    assert_eq!(stats.published, 20);
}

#[tokio::test(start_paused = true)]
async fn a_message_whose_ack_fails_is_sent_again_after_those_in_flight_before_new_input() {
    let sink = MemorySink::new();
    sink.set_default(Outcome::Hold);
    let p = start(&sink, PublisherSettings::default());
    for id in ["a", "b", "c"] {
        p.send(outgoing(id, 10)).await;
    }
    assert!(sink.wait_until(DEADLINE, |s| s.held().len() == 3).await);
    sink.set_default(Outcome::Ack);
    assert!(sink.refuse_held("b", SinkErrorKind::Unavailable));
    p.send(outgoing("d", 10)).await;
    assert!(sink.wait_until(DEADLINE, |s| s.sent().len() == 5).await);
    assert_eq!(sink.sent_ids(), ["a", "b", "c", "b", "d"]);
    sink.ack_all_held();
    let (stats, _) = p.finish().await;
    assert_eq!((stats.published, stats.retries), (4, 1));
}

#[tokio::test(start_paused = true)]
async fn acks_the_broker_delays_are_awaited_together_not_one_after_another() {
    let sink = MemorySink::new();
    sink.set_default(Outcome::AckAfter(Duration::from_secs(1)));
    let p = start(&sink, PublisherSettings::default());
    let started = Instant::now();
    for id in ids(0..10) {
        p.send(outgoing(&id, 10)).await;
    }
    let (stats, _) = p.finish().await;
    assert_eq!(stats.published, 10);
    // One broker delay for all ten (virtual time), not ten of them.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_ack_window_bounds_the_messages_awaiting_their_ack() {
    let sink = MemorySink::new();
    sink.set_default(Outcome::Hold);
    let p = start(
        &sink,
        PublisherSettings {
            window: 4,
            ..PublisherSettings::default()
        },
    );
    for id in ids(0..10) {
        p.send(outgoing(&id, 10)).await;
    }
    assert!(sink.wait_until(DEADLINE, |s| s.held().len() == 4).await);
    run_until_idle().await;
    assert_eq!(
        sink.sent_ids(),
        ids(0..4),
        "a full window sends nothing more"
    );

    assert!(sink.ack_held("m001"));
    assert!(sink.wait_until(DEADLINE, |s| s.sent().len() == 5).await);
    run_until_idle().await;
    assert_eq!(sink.sent_ids(), ids(0..5), "one ack, one more send");
    assert_eq!(sink.held(), ["m000", "m002", "m003", "m004"]);

    sink.set_default(Outcome::Ack);
    sink.ack_all_held();
    let (stats, metrics) = p.finish().await;
    assert_eq!(stats.published, 10);
    assert_eq!(sink.sent_ids(), ids(0..10));
    assert_eq!(
        sample(&metrics, "studio_relay_inflight_messages", &[]),
        Some(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn acks_keep_settling_while_the_sink_makes_the_publisher_wait() {
    let sink = MemorySink::new();
    sink.set_default(Outcome::Hold);
    let p = start(&sink, PublisherSettings::default());
    p.send(outgoing("a", 10)).await;
    assert!(sink.wait_until(DEADLINE, |s| s.held() == ["a"]).await);
    // The client's buffer is full: the publisher waits in `send(b)`.
    sink.pause_sends();
    p.send(outgoing("b", 10)).await;
    run_until_idle().await;
    assert_eq!(sink.sent_ids(), ["a"]);
    assert!(sink.ack_held("a"));
    assert!(sink.wait_until(DEADLINE, |s| s.acked_ids() == ["a"]).await);
    sink.set_default(Outcome::Ack);
    sink.resume_sends();
    let (stats, _) = p.finish().await;
    assert_eq!(sink.acked_ids(), ["a", "b"]);
    assert_eq!(stats.published, 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_message_becomes_a_dead_letter_with_its_payload_before_new_input() {
    let sink = MemorySink::new();
    sink.script_for("b", [Outcome::Refuse(SinkErrorKind::Rejected)]);
    let p = start(&sink, PublisherSettings::default());
    let tracker = BatchTracker::new();
    tracker.add(3);
    for (id, bytes) in [("a", 10), ("b", 321), ("c", 10)] {
        let mut o = outgoing(id, bytes);
        o.tracker = Some(tracker.clone());
        p.send(o).await;
    }
    assert_eq!(tracker.wait().await, 1, "one rejected");
    let (stats, metrics) = p.finish().await;

    let order: Vec<String> = sink
        .sent()
        .iter()
        .map(|s| format!("{}:{}", s.message.destination, &s.message.event_id[..1]))
        .collect();
    let want = [
        format!("{TOPIC}:a"),
        format!("{TOPIC}:b"),
        format!("{DEADLETTER}:d"),
        format!("{TOPIC}:c"),
    ];
    assert_eq!(order, want);
    let dl = sink
        .acked()
        .into_iter()
        .find(|m| m.destination == DEADLETTER);
    let dl = dl.expect("the dead letter was acknowledged");
    assert_eq!(dl.payload, Bytes::from(vec![b'r'; 321]), "b's payload");
    assert_eq!(header(&dl, DL_REASON), Some("publish_rejected"));
    assert_eq!((stats.published, stats.dead_lettered), (3, 1));
    let counted = sample(
        &metrics,
        "studio_relay_events_deadlettered_total",
        &["reason=\"publish_rejected\""],
    );
    assert_eq!(counted, Some(1.0), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn a_message_larger_than_the_sink_takes_is_dead_lettered_unsent_and_cut_to_fit() {
    let sink = MemorySink::new();
    sink.set_max_message_bytes(Some(1_000));
    let p = start(&sink, PublisherSettings::default());
    for (id, bytes) in [("a", 10), ("big", 5_000), ("c", 10)] {
        p.send(outgoing(id, bytes)).await;
    }
    let (stats, metrics) = p.finish().await;
    assert!(!sink.sent_ids().contains(&"big".to_string()));
    let records: Vec<String> = sink
        .acked()
        .iter()
        .filter(|m| m.destination == TOPIC)
        .map(|m| m.event_id.clone())
        .collect();
    assert_eq!(records, ["a", "c"]);
    let dl = sink
        .acked()
        .into_iter()
        .find(|m| m.destination == DEADLETTER);
    let dl = dl.expect("the dead letter was acknowledged");
    assert!(dl.size() <= 1_000, "{}", dl.size());
    assert_eq!(header(&dl, DL_REASON), Some("too_large"));
    assert_eq!(header(&dl, DL_TRUNCATED), Some("true"));
    assert_eq!(header(&dl, DL_PAYLOAD_BYTES), Some("5000"));
    assert_eq!((stats.published, stats.dead_lettered), (3, 1));
    let counted = sample(
        &metrics,
        "studio_relay_events_deadlettered_total",
        &["reason=\"too_large\""],
    );
    assert_eq!(counted, Some(1.0), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_the_broker_refuses_for_its_size_is_halved_until_it_fits() {
    let sink = MemorySink::new();
    // A limit the publisher does not know beforehand.
    sink.set_broker_limit(Some(2_000));
    let p = start(&sink, PublisherSettings::default());
    for (id, bytes) in [("a", 10), ("big", 50_000), ("c", 10)] {
        p.send(outgoing(id, bytes)).await;
    }
    let (stats, _) = p.finish().await;
    let letters = sink
        .sent()
        .iter()
        .filter(|s| s.message.destination == DEADLETTER)
        .count();
    assert!(letters > 1, "cut and sent again: {letters}");
    let dl = sink
        .acked()
        .into_iter()
        .find(|m| m.destination == DEADLETTER);
    let dl = dl.expect("a dead letter that fits was acknowledged");
    assert!(dl.size() <= 2_000, "{}", dl.size());
    assert_eq!(header(&dl, DL_PAYLOAD_BYTES), Some("50000"));
    assert_eq!((stats.published, stats.dead_lettered), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_the_broker_rejects_is_dropped_and_nothing_behind_it_waits() {
    let sink = MemorySink::new();
    // In send order: a, b (rejected), b's dead letter (rejected), c.
    sink.script(Outcome::Ack);
    sink.script(Outcome::Refuse(SinkErrorKind::Rejected));
    sink.script(Outcome::Refuse(SinkErrorKind::Rejected));
    let p = start(&sink, PublisherSettings::default());
    for id in ["a", "b", "c"] {
        p.send(outgoing(id, 10)).await;
    }
    let (stats, metrics) = p.finish().await;
    assert_eq!(sink.acked_ids(), ["a", "c"]);
    assert_eq!(sink.sent().len(), 4, "the dead letter is not sent again");
    assert_eq!((stats.published, stats.dead_lettered), (2, 0));
    let rejected = sample(
        &metrics,
        "studio_relay_publish_failures_total",
        &["kind=\"rejected\""],
    );
    assert_eq!(rejected, Some(2.0), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn a_send_the_client_refuses_is_retried_like_a_failed_ack() {
    let sink = MemorySink::new();
    sink.script_for("a", [Outcome::SendFails(SinkErrorKind::Unavailable)]);
    let p = start(&sink, PublisherSettings::default());
    p.send(outgoing("a", 10)).await;
    let (stats, _) = p.finish().await;
    assert_eq!(sink.sent_ids(), ["a", "a"]);
    assert_eq!(sink.acked_ids(), ["a"]);
    assert_eq!((stats.published, stats.retries), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn closing_the_input_settles_every_message_in_flight_before_the_publisher_ends() {
    let sink = MemorySink::new();
    sink.set_default(Outcome::Hold);
    let Publisher {
        tx,
        handle,
        metrics: _,
    } = start(&sink, PublisherSettings::default());
    for id in ids(0..5) {
        tx.send(outgoing(&id, 10)).await.unwrap();
    }
    drop(tx);
    assert!(sink.wait_until(DEADLINE, |s| s.held().len() == 5).await);
    run_until_idle().await;
    assert!(!handle.is_finished(), "five acks are outstanding");
    // A flush waits for them, bounded by its timeout.
    let flushed = sink.flush(Duration::from_secs(5)).await;
    assert!(flushed.is_err_and(|e| e.message.contains("5 ack(s)")));

    assert_eq!(sink.ack_all_held(), 5);
    let stats = tokio::time::timeout(DEADLINE, handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.published, 5);
    assert_eq!(sink.acked_ids(), ids(0..5));
    assert!(sink.flush(Duration::from_secs(5)).await.is_ok());
    assert_eq!(sink.flushes().len(), 2);
}

// ---- intake and spool ---------------------------------------------------

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    v.sort();
    v
}

/// Polls `condition` every 10 ms of virtual time, at most [`DEADLINE`].
async fn wait_for(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn receive(rx: &mut mpsc::Receiver<Outgoing>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let o = tokio::time::timeout(DEADLINE, rx.recv()).await;
        got.push(o.expect("in time").expect("open").message.event_id);
    }
    got
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_spills_to_disk_in_order_and_drains_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let spool = Spool::open(dir.path(), 1 << 30, false, metrics.clone()).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let intake = Intake::spooled(tx, spool);
    for id in ids(0..200) {
        intake.send(outgoing(&id, 100)).await.unwrap();
    }
    assert!(metrics.spool_bytes.get() > 0, "spilled");
    assert!(!segments(dir.path()).is_empty(), "on disk");

    assert_eq!(receive(&mut rx, 200).await, ids(0..200), "order kept");
    let drained = || metrics.spool_bytes.get() == 0 && segments(dir.path()).is_empty();
    assert!(wait_for(drained).await, "the drained segment is removed");

    // With room in the queue again, a message goes straight in.
    intake.send(outgoing("direct", 10)).await.unwrap();
    let next = rx.try_recv().expect("in the queue at once");
    assert_eq!(next.message.event_id, "direct");
}

#[tokio::test(start_paused = true)]
async fn a_full_spool_holds_the_sender_back_until_the_queue_takes_more() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let spool = Spool::open(dir.path(), 2_000, false, metrics.clone()).unwrap();
    let (tx, mut rx) = mpsc::channel(1);
    let intake = Intake::spooled(tx, spool);
    let handed_on = Arc::new(AtomicUsize::new(0));
    let count = handed_on.clone();
    let sender = tokio::spawn(async move {
        for id in ids(0..40) {
            intake.send(outgoing(&id, 100)).await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
        }
        // Kept open: once every intake is gone, what is still spooled
        // stays on disk for the next start.
        intake
    });
    run_until_idle().await;
    let stalled_at = handed_on.load(Ordering::SeqCst);
    assert!((2..40).contains(&stalled_at), "{stalled_at}");
    assert!(metrics.spool_bytes.get() <= 2_000);
    assert!(!sender.is_finished());

    assert_eq!(receive(&mut rx, 40).await, ids(0..40), "order kept");
    tokio::time::timeout(DEADLINE, sender)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn what_a_previous_run_spooled_is_drained_first_and_its_torn_tail_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    {
        // A run whose queue is full: m000 in the queue, the rest on disk.
        let spool = Spool::open(dir.path(), 1 << 30, true, metrics.clone()).unwrap();
        let (tx, rx) = mpsc::channel(1);
        let intake = Intake::spooled(tx, spool.clone());
        for id in ids(0..10) {
            intake.send(outgoing(&id, 100)).await.unwrap();
        }
        drop((intake, rx));
        assert!(
            wait_for(|| Arc::strong_count(&spool) == 1).await,
            "drain ended"
        );
    }
    // It crashed mid-write: a record header promising 200 bytes, and 2.
    let written = segments(dir.path());
    let last = written.last().expect("a segment on disk");
    let mut torn = std::fs::read(last).unwrap();
    torn.extend_from_slice(&[200, 0, 0, 0, 9, 9, 9, 9, 1, 2]);
    std::fs::write(last, torn).unwrap();

    let metrics = Arc::new(Metrics::new());
    let spool = Spool::open(dir.path(), 1 << 30, false, metrics.clone()).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let intake = Intake::spooled(tx, spool);
    intake.send(outgoing("new", 10)).await.unwrap();

    let mut want = ids(1..10);
    want.push("new".into());
    assert_eq!(
        receive(&mut rx, 10).await,
        want,
        "old records first, in order"
    );
    let corrupt = || {
        let text = metrics.render();
        sample(&text, "studio_relay_spool_corrupt_records_total", &[]) == Some(1.0)
    };
    assert!(wait_for(corrupt).await, "the torn tail is counted once");
    assert!(wait_for(|| segments(dir.path()).is_empty()).await);
    assert!(
        rx.try_recv().is_err(),
        "nothing made up from the torn bytes"
    );
}
