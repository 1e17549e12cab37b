//! The live processor: frames off the queue → messages into the publisher's
//! intake, in arrival order. It observes the upstream clock, holds back an
//! exact repeat of a push, remembers match keys for gap backfill, and
//! groups live messages into epochs for the restart checkpoint.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
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
    checkpointing: Option<Checkpointing>,
) {
    let in_flight = batches_in_flight();
    let (epochs, mut barriers) = match checkpointing {
        Some(c) => (Some(c.epochs), c.barriers),
        None => (None, None),
    };
    let mut epochs = Epochs::new(epochs);
    let mut batches: FuturesOrdered<Batch> = FuturesOrdered::new();
    let mut input_open = true;
    let mut frames = Vec::with_capacity(BATCH);
    let mut count = FrameCount::default();
    loop {
        let (prepared, batch_frames) = tokio::select! {
            // Finished work first: it is what the publisher waits for.
            biased;
            Some(done) = batches.next(), if !batches.is_empty() => match taken_back(done) {
                Some(prepared) => prepared,
                None => return,
            },
            barrier = next_barrier(&mut barriers), if barriers.is_some() && (input_open || !batches.is_empty()) => {
                match barrier {
                    // What is in the queue now came before the request.
                    Some(b) => {
                        count.wait_for(count.taken + rx.len() as u64, b);
                        epochs.close_for(&mut count, &clock);
                    }
                    // No more barriers: the loop ends with its input.
                    None => barriers = None,
                }
                continue;
            }
            n = rx.recv_many(&mut frames, BATCH), if input_open && batches.len() < in_flight => {
                if n == 0 {
                    input_open = false;
                } else {
                    count.taken += n as u64;
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
        count.admitted += batch_frames as u64;
        // Checked once a batch: reading the clock per event was a visible
        // share of this loop's CPU, and an epoch only needs to be close to
        // EPOCH long.
        epochs.roll(&clock);
        epochs.close_for(&mut count, &clock);
    }
    epochs.close(&clock, Vec::new());
}

/// With a checkpoint: where closed epochs go, and requests to be told when
/// everything taken so far is acknowledged.
pub struct Checkpointing {
    pub epochs: mpsc::UnboundedSender<Epoch>,
    pub barriers: Option<mpsc::UnboundedReceiver<Barrier>>,
}

/// Answered once every frame in the processor's queue or taken from it
/// when the barrier arrived is acknowledged by the broker (or
/// dead-lettered, or held back as a repeat).
pub type Barrier = oneshot::Sender<()>;

async fn next_barrier(rx: &mut Option<mpsc::UnboundedReceiver<Barrier>>) -> Option<Barrier> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Frames taken from the queue and admitted, and the barriers waiting for
/// a count of admitted frames.
#[derive(Default)]
struct FrameCount {
    taken: u64,
    admitted: u64,
    waiting: Vec<(u64, Barrier)>,
}

impl FrameCount {
    fn wait_for(&mut self, frames: u64, barrier: Barrier) {
        self.waiting.push((frames, barrier));
    }

    /// The barriers whose frames are all admitted.
    fn reached(&mut self) -> Vec<Barrier> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let admitted = self.admitted;
        let (done, waiting) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(frames, _)| *frames <= admitted);
        self.waiting = waiting;
        done.into_iter().map(|(_, b)| b).collect()
    }
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

/// A batch: when it left the frame queue, its frames prepared, and how
/// many frames it had.
type Batch = JoinHandle<(std::time::Instant, Prepared, usize)>;

/// Normalizes and encodes `frames` on a task of their own.
fn spawn_batch(
    frames: Vec<LiveFrame>,
    builder: &Arc<MessageBuilder>,
    metrics: &Arc<Metrics>,
) -> Batch {
    let (builder, metrics) = (builder.clone(), metrics.clone());
    let dequeued = std::time::Instant::now();
    tokio::spawn(async move {
        let n = frames.len();
        let mut prepared = Vec::with_capacity(n);
        for f in frames {
            prepare_frame(f, &builder, &metrics, &mut |o, t| prepared.push((o, t)));
        }
        (dequeued, prepared, n)
    })
}

/// A finished batch, its hand-overs stamped; None when the task was
/// cancelled (the runtime is going away).
fn taken_back(
    done: Result<(std::time::Instant, Prepared, usize), tokio::task::JoinError>,
) -> Option<(Prepared, usize)> {
    match done {
        Ok((dequeued, mut prepared, frames)) => {
            let now = std::time::Instant::now();
            for (o, _) in &mut prepared {
                if let Some(s) = &mut o.stages {
                    s.mark(HandOver::Dequeued, dequeued);
                    s.mark(HandOver::Prepared, now);
                }
            }
            Some((prepared, frames))
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
            self.close(clock, Vec::new());
            self.next();
        }
    }

    /// Closes the epoch early when barriers wait for what it holds: the
    /// writer answers them once it (and all before it) settled.
    fn close_for(&mut self, count: &mut FrameCount, clock: &UpstreamClock) {
        let reached = count.reached();
        if !reached.is_empty() {
            self.close(clock, reached);
            self.next();
        }
    }

    fn next(&mut self) {
        self.current = BatchTracker::new();
        self.started = tokio::time::Instant::now();
    }

    /// Hands the epoch, with the upstream clock now, to the checkpoint writer.
    fn close(&self, clock: &UpstreamClock, settled: Vec<Barrier>) {
        if let Some(tx) = &self.writer {
            let _ = tx.send(Epoch {
                tracker: self.current.clone(),
                clocks: clock.snapshot(),
                settled,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DataSource;
    use crate::publish::test_support::{publishing_to, MemorySink};
    use crate::sink::memory::Outcome;
    use crate::upstream::live::FramePayload;

    fn call(id: &str) -> LiveFrame {
        let json = serde_json::json!({
            "id_call": id,
            "time": {"start": 1_795_588_482_530_i64},
        });
        LiveFrame {
            tenant: Arc::from("acme"),
            source: DataSource::Calls,
            received_at_ms: 1_795_588_482_600,
            received: std::time::Instant::now(),
            payload: FramePayload::Text(json.to_string().into()),
        }
    }

    /// Waits (paused time) until `check` holds.
    async fn until(mut check: impl FnMut() -> bool) {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_barrier_is_answered_once_every_frame_queued_before_it_is_acknowledged() {
        let sink = Arc::new(MemorySink::new());
        sink.set_default(Outcome::Hold);
        let (out, _publisher) = publishing_to(sink.clone());
        let (frames, rx) = mpsc::channel(16);
        let (epochs, mut settled_epochs) = mpsc::unbounded_channel::<Epoch>();
        let (barriers, barrier_rx) = mpsc::unbounded_channel();
        // The checkpoint writer's part: an epoch's barriers are answered
        // once it settled, in order.
        tokio::spawn(async move {
            while let Some(epoch) = settled_epochs.recv().await {
                epoch.tracker.wait().await;
                for b in epoch.settled {
                    let _ = b.send(());
                }
            }
        });
        let processor = tokio::spawn(process_frames(
            rx,
            out.tx.clone(),
            out.builder.clone(),
            out.metrics.clone(),
            Arc::new(UpstreamClock::default()),
            LiveMemory::new(100),
            Some(Checkpointing {
                epochs,
                barriers: Some(barrier_rx),
            }),
        ));
        frames.send(call("a")).await.unwrap();
        frames.send(call("b")).await.unwrap();
        let (barrier, mut answered) = oneshot::channel();
        barriers.send(barrier).unwrap();
        until(|| sink.held().len() == 2).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(answered.try_recv().is_err(), "not before the acks");
        assert!(sink.ack_held(&sink.held()[0]));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(answered.try_recv().is_err(), "not before the last ack");
        sink.ack_all_held();
        tokio::time::timeout(Duration::from_secs(5), answered)
            .await
            .expect("answered once both are acknowledged")
            .unwrap();
        // With nothing queued, a barrier is answered at once.
        let (barrier, answered) = oneshot::channel();
        barriers.send(barrier).unwrap();
        tokio::time::timeout(Duration::from_secs(5), answered)
            .await
            .expect("answered with nothing in flight")
            .unwrap();
        // Barriers do not keep the processor running: it ends with its input.
        drop(frames);
        tokio::time::timeout(Duration::from_secs(5), processor)
            .await
            .expect("ends once its input closed")
            .unwrap();
        drop(barriers);
    }
}
