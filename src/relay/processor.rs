//! The live processor: frames off the queue → messages into the publisher's
//! intake, in arrival order. It observes the upstream clock, holds back an
//! exact repeat of a push, remembers match keys for gap backfill, and
//! groups live messages into epochs for the restart checkpoint.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ops::internal_events::EventSuppressed;
use crate::ops::Metrics;
use crate::publish::frames::prepare_frame;
use crate::publish::message_builder::MessageBuilder;
use crate::publish::outgoing::{BatchTracker, HandOver, Origin, Outgoing};
use crate::publish::recent_ids::RecentIds;
use crate::publish::spool::Intake;
use crate::relay::checkpoint::Epoch;
use crate::relay::clock::UpstreamClock;
use crate::upstream::live::LiveFrame;

/// Frames → envelopes → messages. Bad input becomes a dead letter; nothing
/// here can stop the loop but the closing of its input.
///
/// Normalizing and encoding (most of this stage's CPU) run in batches of
/// what the queue holds, on spawned tasks, several at once on machines with
/// cores to spare. Batches are
/// taken back in the order they were cut, so everything after them (the
/// upstream clock, the recent-ids check, epochs, the hand-over to the
/// publisher) sees the frames in arrival order, as one loop would: per-key
/// order, duplicate suppression and checkpoints are unchanged.
pub async fn process_frames(
    mut rx: mpsc::Receiver<LiveFrame>,
    tx: Intake,
    builder: Arc<MessageBuilder>,
    metrics: Arc<Metrics>,
    clock: Arc<UpstreamClock>,
    recent: LiveMemory,
    epochs: Option<mpsc::UnboundedSender<Epoch>>,
) {
    let in_flight = batches_in_flight();
    let mut epochs = Epochs::new(epochs);
    let mut batches: FuturesOrdered<Batch> = FuturesOrdered::new();
    let mut input_open = true;
    let mut frames = Vec::with_capacity(BATCH);
    loop {
        let prepared = tokio::select! {
            // Finished work first: it is what the publisher waits for.
            biased;
            Some(done) = batches.next(), if !batches.is_empty() => match taken_back(done) {
                Some(prepared) => prepared,
                None => return,
            },
            n = rx.recv_many(&mut frames, BATCH), if input_open && batches.len() < in_flight => {
                if n == 0 {
                    input_open = false;
                } else {
                    let batch = std::mem::replace(&mut frames, Vec::with_capacity(BATCH));
                    batches.push_back(spawn_batch(batch, &builder, &metrics));
                }
                continue;
            }
            else => break,
        };
        for (outgoing, event_time) in prepared {
            let Some(outgoing) = admit(outgoing, event_time, &clock, &recent, &epochs, &metrics)
            else {
                continue;
            };
            if tx.send(outgoing).await.is_err() {
                return;
            }
        }
        // Checked once a batch: reading the clock per event was a visible
        // share of this loop's CPU, and an epoch only needs to be close to
        // EPOCH long.
        epochs.roll(&clock);
    }
    epochs.close(&clock);
}

/// Live messages are grouped in epochs of EPOCH; a closed epoch carries
/// the upstream clock to the checkpoint writer.
const EPOCH: Duration = Duration::from_secs(2);
/// Small enough that one batch keeps a runtime thread for well under a
/// millisecond, large enough that spawning costs little per frame.
const BATCH: usize = 32;

/// Batches being normalized at once: one per core but the one the
/// publisher and the broker client need. (On 2 cores next to the broker,
/// a second concurrent batch cost 20% of the throughput in contention.)
fn batches_in_flight() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// Prepared messages, each with its record's time (for the upstream clock).
type Prepared = Vec<(Outgoing, Option<i64>)>;

/// A batch: when it left the frame queue, and its frames prepared.
type Batch = JoinHandle<(std::time::Instant, Prepared)>;

/// Normalizes and encodes `frames` on a task of their own.
fn spawn_batch(
    frames: Vec<LiveFrame>,
    builder: &Arc<MessageBuilder>,
    metrics: &Arc<Metrics>,
) -> Batch {
    let (builder, metrics) = (builder.clone(), metrics.clone());
    let dequeued = std::time::Instant::now();
    tokio::spawn(async move {
        let mut prepared = Vec::with_capacity(frames.len());
        for f in frames {
            prepare_frame(f, &builder, &metrics, &mut |o, t| prepared.push((o, t)));
        }
        (dequeued, prepared)
    })
}

/// A finished batch, its hand-overs stamped; None when the task was
/// cancelled (the runtime is going away).
fn taken_back(
    done: Result<(std::time::Instant, Prepared), tokio::task::JoinError>,
) -> Option<Prepared> {
    match done {
        Ok((dequeued, mut prepared)) => {
            let now = std::time::Instant::now();
            for (o, _) in &mut prepared {
                if let Some(s) = &mut o.stages {
                    s.mark(HandOver::Dequeued, dequeued);
                    s.mark(HandOver::Prepared, now);
                }
            }
            Some(prepared)
        }
        // Preparing a frame never panics (bad input is a dead letter); if
        // it ever did, fail as one loop would have.
        Err(e) => match tokio::task::JoinError::try_into_panic(e) {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

/// Observes the upstream clock with the record's time; then, for a live
/// record, holds back an exact repeat of a push already taken (None) and
/// remembers its ids, and counts it in the current epoch.
fn admit(
    mut outgoing: Outgoing,
    event_time: Option<i64>,
    clock: &UpstreamClock,
    memory: &LiveMemory,
    epochs: &Epochs,
    metrics: &Metrics,
) -> Option<Outgoing> {
    if let Some(t) = event_time {
        clock.observe(&outgoing.tenant, t);
    }
    if outgoing.origin != Origin::Live {
        return Some(outgoing);
    }
    // Only an exact repeat (same content, same event id) is held back; a
    // live record is never held back for matching a historic one. Its
    // match key tells gap backfill that its historic version is out already.
    if !memory.event_ids.insert(&outgoing.message.event_id) {
        EventSuppressed {
            tenant: &outgoing.tenant,
            source: outgoing.source.as_str(),
            origin: "live",
            reason: "repeat",
        }
        .emit(metrics);
        return None;
    }
    if let Some(key) = outgoing.message.match_key() {
        memory.match_keys.insert(key);
    }
    epochs.track(&mut outgoing);
    Some(outgoing)
}

/// The epoch live messages are counted in, when a checkpoint is kept.
struct Epochs {
    writer: Option<mpsc::UnboundedSender<Epoch>>,
    current: Arc<BatchTracker>,
    started: tokio::time::Instant,
}

impl Epochs {
    fn new(writer: Option<mpsc::UnboundedSender<Epoch>>) -> Epochs {
        Epochs {
            writer,
            current: BatchTracker::new(),
            started: tokio::time::Instant::now(),
        }
    }

    fn track(&self, outgoing: &mut Outgoing) {
        if self.writer.is_some() {
            self.current.add(1);
            outgoing.tracker = Some(self.current.clone());
        }
    }

    /// Closes the epoch once it is EPOCH old and starts the next.
    fn roll(&mut self, clock: &UpstreamClock) {
        if self.started.elapsed() >= EPOCH {
            self.close(clock);
            self.current = BatchTracker::new();
            self.started = tokio::time::Instant::now();
        }
    }

    /// Hands the epoch, with the upstream clock now, to the checkpoint writer.
    fn close(&self, clock: &UpstreamClock) {
        if let Some(tx) = &self.writer {
            let _ = tx.send(Epoch {
                tracker: self.current.clone(),
                clocks: clock.snapshot(),
            });
        }
    }
}

/// What the live path remembers of the records it took.
#[derive(Clone)]
pub struct LiveMemory {
    /// Event ids: an exact repeat is not published again.
    pub event_ids: Arc<RecentIds>,
    /// Match keys, shared with gap backfill.
    pub match_keys: Arc<RecentIds>,
}

impl LiveMemory {
    /// Both memories empty, each holding up to `capacity` ids (`relay.recent_ids`).
    pub fn new(capacity: usize) -> LiveMemory {
        LiveMemory {
            event_ids: Arc::new(RecentIds::new(capacity)),
            match_keys: Arc::new(RecentIds::new(capacity)),
        }
    }
}

/// One frame → the messages to publish: its record (or each record of a
/// batch frame), or dead letters.
pub fn frame_to_outgoing(
    frame: LiveFrame,
    builder: &MessageBuilder,
    metrics: &Metrics,
    clock: Option<&UpstreamClock>,
) -> Vec<Outgoing> {
    let mut out = Vec::with_capacity(1);
    frame_to_outgoing_into(frame, builder, metrics, clock, &mut out);
    out
}

/// [`frame_to_outgoing`], appending to `out` (which a caller can reuse).
pub fn frame_to_outgoing_into(
    frame: LiveFrame,
    builder: &MessageBuilder,
    metrics: &Metrics,
    clock: Option<&UpstreamClock>,
    out: &mut Vec<Outgoing>,
) {
    prepare_frame(frame, builder, metrics, &mut |outgoing, event_time| {
        if let (Some(clock), Some(t)) = (clock, event_time) {
            clock.observe(&outgoing.tenant, t);
        }
        out.push(outgoing);
    });
}
