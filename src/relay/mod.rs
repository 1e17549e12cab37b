//! The live pipeline behind `studio-relay run`.
//!
//! ```text
//! LiveSocket ×(tenants × sources) ──LiveFrame──▶ [bounded queue] ──▶ processor
//!     (upstream::live)                                 normalize (model) → envelope
//!                                                      → encode + headers (MessageBuilder)
//!                                   ──Outgoing──▶ [bounded queue] ──▶ publisher ──▶ Sink
//!                                                      ordered send, windowed acks,
//!                                                      retries, dead letters
//! ```
//!
//! Shutdown: cancel → sockets stop reading and drop their senders → the
//! processor drains the queue → the publisher settles every in-flight message
//! and flushes the sink, all within `relay.shutdown_deadline`.

pub mod backfill;
pub mod checkpoint;
pub mod message_builder;
pub mod publisher;
pub mod recent_ids;
pub mod spool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::{self, Envelope, Origin};
use crate::ops::internal_events::{
    CheckpointLoaded, EventDeadLettered, EventSuppressed, PartialPushReceived, SinkHealthChanged,
    UnknownFieldsKept,
};
use crate::ops::{Health, Metrics};
use crate::sink::{Sink, SinkError};
use crate::upstream::live::{FramePayload, LiveFrame, LiveSocket};
pub use backfill::UpstreamClock;
pub use message_builder::MessageBuilder;
pub use publisher::{
    BatchTracker, HandOver, Outgoing, PublisherSettings, PublisherStats, StageTimes,
};
pub use recent_ids::RecentIds;
pub use spool::Intake;

/// Why the relay could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("sink: {0}")]
    Sink(#[from] SinkError),
    #[error("schema registry: {0}")]
    Registry(crate::registry::RegistryError),
    #[error("cannot listen on ops address {addr}: {source}")]
    Ops {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{0}")]
    Spool(#[from] spool::SpoolError),
    #[error("shutdown deadline of {deadline:?} passed with {unsettled} event(s) not acknowledged by the broker")]
    DrainTimeout { deadline: Duration, unsettled: i64 },
}

impl RelayError {
    /// The process exit code: a registry that refuses the configuration
    /// (subject, credentials, CA, compatibility) is a configuration error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RelayError::Registry(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// What a finished run did.
#[derive(Debug, Clone, Default)]
pub struct RelaySummary {
    pub published: u64,
    pub dead_lettered: u64,
    pub retries: u64,
}

/// A started relay.
pub struct RelayHandle {
    /// Where `/metrics`, `/healthz`, `/readyz` listen (None when disabled).
    pub ops_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    join: JoinHandle<Result<RelaySummary, RelayError>>,
}

impl RelayHandle {
    /// Waits until the relay has stopped (after `shutdown` was cancelled).
    pub async fn wait(self) -> Result<RelaySummary, RelayError> {
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(RelayError::Sink(SinkError::new(
                crate::sink::SinkErrorKind::Config,
                format!("relay task failed: {e}"),
            ))),
        }
    }
}

/// Builds the sink from config and starts the relay.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<RelayHandle, RelayError> {
    let metrics = Arc::new(Metrics::new());
    let sink = crate::sink::build(&config.sink, metrics.clone()).await?;
    start_with_sink(config, sink, metrics, shutdown).await
}

/// Starts the relay on a given sink (tests and the demo pass their own).
pub async fn start_with_sink(
    config: Config,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<RelayHandle, RelayError> {
    let health = Arc::new(Health::new());
    let ops_shutdown = CancellationToken::new();
    let ops_addr = if config.ops.listen.trim().is_empty() {
        None
    } else {
        let addr = crate::ops::server::spawn(
            &config.ops.listen,
            metrics.clone(),
            health.clone(),
            ops_shutdown.clone(),
        )
        .await
        .map_err(|source| RelayError::Ops {
            addr: config.ops.listen.clone(),
            source,
        })?;
        tracing::info!(%addr, "ops endpoints listening (/metrics, /healthz, /readyz)");
        Some(addr)
    };

    let encoder = crate::registry::encoder_for(
        &config,
        &config
            .tenants
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        &metrics,
        &shutdown,
    )
    .await
    .map_err(RelayError::Registry)?;
    let builder = Arc::new(MessageBuilder::new(encoder, &config.sink));
    let destinations = builder.all_destinations(
        config.tenants.iter().map(|t| t.name.as_str()),
        &config.upstream.sources,
    );
    sink.prepare(&destinations).await?;
    let first = sink.check_health().await;
    SinkHealthChanged {
        sink: sink.name(),
        up: first.is_ok(),
        error: first.as_ref().err().map(|e| e.message.as_str()),
    }
    .emit(&metrics);
    health.set_sink(first.map_err(|e| e.message));
    spawn_sink_watcher(
        sink.clone(),
        metrics.clone(),
        health.clone(),
        ops_shutdown.clone(),
    );

    // Match keys published (live or backfill): backfill skips them. Event
    // ids of live records: an exact repeat of a push is skipped.
    let recent = Arc::new(RecentIds::new(config.relay.recent_ids));
    let recent_for_live = recent.clone();
    let live_ids = Arc::new(RecentIds::new(config.relay.recent_ids));
    let (publish_tx, outstanding, publisher) = publisher::spawn(
        sink.clone(),
        builder.clone(),
        metrics.clone(),
        PublisherSettings {
            recent_ids: Some(recent.clone()),
            ..PublisherSettings::default()
        },
        config.relay.queue_capacity,
    );
    // The way into the publisher: through the on-disk spool when the queue
    // is full, if one is configured.
    let intake = if config.relay.spool_dir.is_empty() {
        Intake::direct(publish_tx)
    } else {
        let spool = spool::Spool::open(
            &config.relay.spool_dir,
            config.relay.spool_max_bytes,
            config.relay.spool_fsync,
            metrics.clone(),
        )?;
        Intake::spooled(publish_tx, spool)
    };
    let clock = Arc::new(UpstreamClock::default());
    let socket_shutdown = shutdown.child_token();
    // Restart checkpoint: open its store (a broker bucket / topic, or a
    // file), load it (a failure stops start-up, naming the key), resume from
    // it, and keep it current as epochs settle.
    let (epoch_tx, checkpoint_task, resume_from) =
        match checkpoint::open(&config, sink.as_ref(), &metrics).await? {
            None => (None, None, Default::default()),
            Some(store) => {
                let state = store.load().await?;
                let tenants: Vec<(&str, i64)> = state
                    .iter()
                    .map(|(t, m)| (t.as_str(), m.upstream_ms))
                    .collect();
                CheckpointLoaded {
                    location: &store.location(),
                    tenants: &tenants,
                }
                .emit(&metrics);
                let resume: std::collections::HashMap<String, checkpoint::ClockMark> =
                    state.iter().map(|(k, v)| (k.clone(), *v)).collect();
                let (tx, rx) = mpsc::unbounded_channel();
                let stop = CancellationToken::new();
                let task = tokio::spawn(checkpoint::run_writer(
                    store,
                    state,
                    rx,
                    stop.clone(),
                    metrics.clone(),
                ));
                (Some(tx), Some((task, stop)), resume)
            }
        };
    // After a restart, the resume backfill first learns which of its records
    // are on the broker already (Kafka has no dedup of its own).
    let seed = (!resume_from.is_empty()).then(|| backfill::SeedFrom {
        sink: sink.clone(),
        destinations: backfill_destinations(&config, &builder),
    });
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let gap_task = if config.relay.gap_backfill {
        let deps = backfill::BackfillDeps {
            builder: builder.clone(),
            metrics: metrics.clone(),
            recent,
            live_ids: live_ids.clone(),
            clock: clock.clone(),
            tx: intake.clone(),
            stop: socket_shutdown.clone(),
            resume_from,
            seed,
        };
        let config = config.clone();
        Some(tokio::spawn(async move {
            backfill::run(&config, events_rx, deps).await
        }))
    } else {
        None
    };
    let (frame_tx, frame_rx) = mpsc::channel::<LiveFrame>(config.relay.queue_capacity);
    let processor = tokio::spawn(process_frames(
        frame_rx,
        intake,
        builder.clone(),
        metrics.clone(),
        clock,
        LiveMemory {
            event_ids: live_ids,
            match_keys: recent_for_live,
        },
        epoch_tx,
    ));

    let mut sockets = Vec::new();
    for tenant in &config.tenants {
        let tenant_name: Arc<str> = Arc::from(tenant.name.as_str());
        for &source in &config.upstream.sources {
            let socket = LiveSocket {
                tenant: tenant_name.clone(),
                source,
                token: tenant.token.clone(),
                settings: config.upstream.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                events: gap_task.is_some().then(|| events_tx.clone()),
            };
            sockets.push(tokio::spawn(
                socket.run(frame_tx.clone(), socket_shutdown.clone()),
            ));
        }
    }
    drop(frame_tx);
    drop(events_tx);
    health.mark_started();
    tracing::info!(
        tenants = config.tenants.len(),
        sources = config.upstream.sources.len(),
        sink = sink.name(),
        encoding = ?config.encoding.format,
        "relay started"
    );

    let deadline = config.relay.shutdown_deadline;
    let h = health.clone();
    let join = tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!(deadline = ?deadline, "draining: sockets stopped, publishing what is in flight");
        let drain = async {
            for s in sockets {
                let _ = s.await;
            }
            let _ = processor.await;
            if let Some(g) = gap_task {
                let _ = g.await;
            }
            let stats = publisher.await.unwrap_or_default();
            if let Some((task, stop)) = checkpoint_task {
                stop.cancel();
                let _ = task.await;
            }
            let flushed = sink.flush(deadline).await;
            (stats, flushed)
        };
        let result = match tokio::time::timeout(deadline, drain).await {
            Ok((stats, flushed)) => {
                if let Err(e) = flushed {
                    tracing::error!(error = %e, "final flush failed");
                }
                tracing::info!(
                    published = stats.published,
                    dead_lettered = stats.dead_lettered,
                    "relay stopped"
                );
                Ok(RelaySummary {
                    published: stats.published,
                    dead_lettered: stats.dead_lettered,
                    retries: stats.retries,
                })
            }
            Err(_) => Err(RelayError::DrainTimeout {
                deadline,
                unsettled: outstanding.get(),
            }),
        };
        h.set_sink(Err("stopped".into()));
        ops_shutdown.cancel();
        result
    });
    Ok(RelayHandle {
        ops_addr,
        metrics,
        health,
        join,
    })
}

/// Runs until `shutdown`, then drains. The relay's main entry point.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<RelaySummary, RelayError> {
    start(config, shutdown).await?.wait().await
}

/// The topics / subjects gap backfill publishes records to (sources with a
/// historic layer).
fn backfill_destinations(config: &Config, builder: &MessageBuilder) -> Vec<String> {
    let mut out: Vec<String> = config
        .tenants
        .iter()
        .flat_map(|t| {
            config
                .upstream
                .sources
                .iter()
                .filter(|s| s.graphql_root().is_some())
                .map(|&s| builder.destination(s, &t.name))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Checks the broker every few seconds so readiness reflects broker health.
fn spawn_sink_watcher(
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut last_up = health.sink_up();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            let r = tokio::time::timeout(Duration::from_secs(5), sink.check_health())
                .await
                .unwrap_or_else(|_| {
                    Err(SinkError::new(
                        crate::sink::SinkErrorKind::Unavailable,
                        "health check timed out",
                    ))
                });
            let up = r.is_ok();
            if up != last_up {
                SinkHealthChanged {
                    sink: sink.name(),
                    up,
                    error: r.as_ref().err().map(|e| e.message.as_str()),
                }
                .emit(&metrics);
                last_up = up;
            }
            health.set_sink(r.map_err(|e| e.message));
        }
    });
}

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
async fn process_frames(
    mut rx: mpsc::Receiver<LiveFrame>,
    tx: Intake,
    builder: Arc<MessageBuilder>,
    metrics: Arc<Metrics>,
    clock: Arc<UpstreamClock>,
    recent: LiveMemory,
    epochs: Option<mpsc::UnboundedSender<checkpoint::Epoch>>,
) {
    // Live messages are grouped in epochs of EPOCH; a closed epoch carries
    // the upstream clock to the checkpoint writer.
    const EPOCH: Duration = Duration::from_secs(2);
    // Small enough that one batch keeps a runtime thread for well under a
    // millisecond, large enough that spawning costs little per frame.
    const BATCH: usize = 32;
    // Batches being normalized at once: one per core but the one the
    // publisher and the broker client need. (On 2 cores next to the broker,
    // a second concurrent batch cost 20% of the throughput in contention.)
    let in_flight = std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1);
    let mut epoch = BatchTracker::new();
    let mut epoch_started = tokio::time::Instant::now();
    let close = |epoch: &Arc<BatchTracker>| {
        if let Some(tx) = &epochs {
            let _ = tx.send(checkpoint::Epoch {
                tracker: epoch.clone(),
                clocks: clock.snapshot(),
            });
        }
    };
    // Each batch: when it left the frame queue, and its frames prepared.
    type Batch = JoinHandle<(std::time::Instant, Vec<(Outgoing, Option<i64>)>)>;
    let mut batches: FuturesOrdered<Batch> = FuturesOrdered::new();
    let mut input_open = true;
    let mut frames = Vec::with_capacity(BATCH);
    loop {
        let prepared = tokio::select! {
            // Finished work first: it is what the publisher waits for.
            biased;
            Some(done) = batches.next(), if !batches.is_empty() => match done {
                Ok((dequeued, mut prepared)) => {
                    let now = std::time::Instant::now();
                    for (o, _) in &mut prepared {
                        if let Some(s) = &mut o.stages {
                            s.mark(HandOver::Dequeued, dequeued);
                            s.mark(HandOver::Prepared, now);
                        }
                    }
                    prepared
                }
                // Preparing a frame never panics (bad input is a dead
                // letter); if it ever did, fail as the one loop would have.
                Err(e) => match tokio::task::JoinError::try_into_panic(e) {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => return,
                },
            },
            n = rx.recv_many(&mut frames, BATCH), if input_open && batches.len() < in_flight => {
                if n == 0 {
                    input_open = false;
                } else {
                    let batch = std::mem::replace(&mut frames, Vec::with_capacity(BATCH));
                    let (builder, metrics) = (builder.clone(), metrics.clone());
                    let dequeued = std::time::Instant::now();
                    batches.push_back(tokio::spawn(async move {
                        let mut prepared = Vec::with_capacity(batch.len());
                        for f in batch {
                            prepare_frame(f, &builder, &metrics, &mut |o, t| {
                                prepared.push((o, t))
                            });
                        }
                        (dequeued, prepared)
                    }));
                }
                continue;
            }
            else => break,
        };
        for (mut outgoing, event_time) in prepared {
            if let Some(t) = event_time {
                clock.observe(&outgoing.tenant, t);
            }
            // Only an exact repeat of a push already taken (same content,
            // same event id) is held back; a live record is never held back
            // for matching a historic one. Its match key tells gap backfill
            // that its historic version is out already.
            if outgoing.origin == "live" {
                if !recent.event_ids.insert(&outgoing.message.event_id) {
                    EventSuppressed {
                        tenant: &outgoing.tenant,
                        source: outgoing.source.as_str(),
                        origin: "live",
                        reason: "repeat",
                    }
                    .emit(&metrics);
                    continue;
                }
                if let Some(key) = outgoing.message.match_key() {
                    recent.match_keys.insert(key);
                }
            }
            if epochs.is_some() && outgoing.origin == "live" {
                epoch.add(1);
                outgoing.tracker = Some(epoch.clone());
            }
            if tx.send(outgoing).await.is_err() {
                return;
            }
        }
        // Checked once a batch: reading the clock per event was a visible
        // share of this loop's CPU, and an epoch only needs to be close to
        // EPOCH long.
        if epoch_started.elapsed() >= EPOCH {
            close(&epoch);
            epoch = BatchTracker::new();
            epoch_started = tokio::time::Instant::now();
        }
    }
    close(&epoch);
}

/// What the live path remembers of the records it took.
struct LiveMemory {
    /// Event ids: an exact repeat is not published again.
    event_ids: Arc<RecentIds>,
    /// Match keys, shared with gap backfill.
    match_keys: Arc<RecentIds>,
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

/// [`frame_to_outgoing`] without the upstream clock: hands each message to
/// `out`, in order, with the record's own time for the clock (when it holds
/// a record). The caller observes the clock, in arrival order.
fn prepare_frame(
    frame: LiveFrame,
    builder: &MessageBuilder,
    metrics: &Metrics,
    out: &mut impl FnMut(Outgoing, Option<i64>),
) {
    let LiveFrame {
        tenant,
        source,
        received_at_ms,
        received,
        payload,
    } = frame;
    let frame = FrameContext {
        tenant: &tenant,
        source,
        received_at_ms,
        builder,
        metrics,
    };
    let text = match payload {
        FramePayload::Text(b) => b,
        FramePayload::Binary(b) => {
            let error = "binary WebSocket frame; the Studio API sends JSON text";
            out(frame.dead("binary_frame", error.into(), b, None), None);
            return;
        }
        FramePayload::Oversized { head, len } => {
            let error = format!(
                "frame of {len} bytes exceeds upstream.max_frame_bytes; first {} bytes kept",
                head.len()
            );
            out(frame.dead("oversized_frame", error, head, None), None);
            return;
        }
    };
    let elements = |values: Vec<&str>, out: &mut dyn FnMut(Outgoing, Option<i64>)| {
        let whole: bytes::Bytes = text.clone().into();
        for (i, element) in values.into_iter().enumerate() {
            let raw = || whole.slice_ref(element.as_bytes());
            let record = model::normalize_live_text(source, element);
            let (outgoing, time) = frame.record(record, received, raw, Some(i));
            out(outgoing, time);
        }
    };
    match model::live_batch(source, &text) {
        // The common case: one record, normalized from the frame's text.
        None => {
            let record = model::normalize_live_text(source, &text);
            // Not one JSON value: maybe several, one after the other.
            if record
                .as_ref()
                .is_err_and(|e| e.reason() == "malformed_json")
            {
                if let Some(values) = model::live_sequence(&text) {
                    return elements(values, out);
                }
            }
            let (outgoing, time) = frame.record(record, received, || text.clone().into(), None);
            out(outgoing, time);
        }
        Some(Err(e)) => out(
            frame.dead(e.reason(), e.to_string(), text.into(), None),
            None,
        ),
        Some(Ok(values)) => elements(values, out),
    }
}

/// What every message made from one frame shares.
struct FrameContext<'a> {
    tenant: &'a Arc<str>,
    source: model::DataSource,
    received_at_ms: i64,
    builder: &'a MessageBuilder,
    metrics: &'a Metrics,
}

impl FrameContext<'_> {
    /// A dead letter of `raw`; `element`: its index in a batch frame.
    fn dead(
        &self,
        reason: &'static str,
        error: String,
        raw: bytes::Bytes,
        element: Option<usize>,
    ) -> Outgoing {
        let error = match element {
            Some(i) => format!("element {i} of a batch frame: {error}"),
            None => error,
        };
        EventDeadLettered {
            tenant: self.tenant,
            source: self.source.as_str(),
            reason,
            error: &error,
        }
        .emit(self.metrics);
        let mut message = self.builder.dead_letter(
            self.tenant,
            self.source,
            reason,
            &error,
            self.received_at_ms,
            raw,
        );
        if let Some(i) = element {
            message_builder::mark_element(&mut message, i);
        }
        Outgoing {
            message,
            tenant: self.tenant.clone(),
            source: self.source,
            origin: "deadletter",
            stages: None,
            tracker: None,
        }
    }

    /// One normalized record → its message and own time, or a dead letter
    /// of `raw()` (the record's bytes, only made when needed).
    fn record(
        &self,
        record: Result<model::Record, model::NormalizeError>,
        received: std::time::Instant,
        raw: impl FnOnce() -> bytes::Bytes,
        element: Option<usize>,
    ) -> (Outgoing, Option<i64>) {
        let record = match record {
            Ok(r) => r,
            Err(e) => return (self.dead(e.reason(), e.to_string(), raw(), element), None),
        };
        UnknownFieldsKept {
            tenant: self.tenant,
            source: self.source.as_str(),
            count: record.unknown_field_count(),
        }
        .emit(self.metrics);
        if record.missing_expected_field().is_some() {
            PartialPushReceived {
                tenant: self.tenant,
                source: self.source.as_str(),
            }
            .emit(self.metrics);
        }
        let event_time = record.event_time_ms();
        let env = Envelope::new(
            self.tenant.to_string(),
            Origin::Live,
            self.received_at_ms,
            record,
        );
        let outgoing = match self.builder.build(&env) {
            Ok(message) => Outgoing {
                message,
                tenant: self.tenant.clone(),
                source: self.source,
                origin: "live",
                stages: Some(StageTimes::new(received)),
                tracker: None,
            },
            Err(e) => self.dead("encode", e.to_string(), raw(), element),
        };
        (outgoing, event_time)
    }
}
