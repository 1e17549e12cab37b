//! The live pipeline behind `studio-relay run`, wired in the phases of
//! ARCHITECTURE.md's diagram:
//!
//! ```text
//! read_token_dir ─▶ serve_ops ─▶ connect_sink ─▶ watch_sink_health ─▶ open_checkpoint
//!   (publish::pipeline: encoder → builder → publisher)
//!          ─▶ join_group ─▶ spawn_backfill ─▶ spawn_processor ─▶ spawn_tenants ─▶ … ─▶ drain
//!
//! token_dir ──TenantChange──▶ tenants (supervisor: start / reconnect / stop)
//! leases (ha) ──LeaseEvent──▶ tenants (take over / hand over, via ownership)
//! LiveSocket ×(tenants × sources) ──LiveFrame──▶ [bounded queue] ──▶ processor
//!     (upstream::live)                            normalize + encode (publish::frames)
//!                                  ──Outgoing──▶ Intake ──▶ publisher ──▶ Sink
//! ```
//!
//! Shutdown: cancel → sockets stop reading and drop their senders → the
//! processor drains the queue → the publisher settles every in-flight message
//! and flushes the sink, all within `relay.shutdown_deadline`.
//!
//! What only the live path keeps: the tenants' supervisor ([`tenants`]),
//! the token directory ([`token_dir`]), the tenants' moves between
//! replicas ([`ownership`]), the upstream clock ([`clock`]), the
//! restart checkpoint ([`checkpoint`]), gap backfill ([`backfill`]) and the
//! processor's epochs ([`processor`]).

pub mod backfill;
pub mod checkpoint;
pub mod clock;
pub mod ownership;
pub mod processor;
pub mod tenants;
pub mod token_dir;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, OpsConfig, TenantConfig, TenantLabelMode};
use crate::ops::internal_events::{
    CheckpointLoaded, FinalFlushFailed, GroupJoined, OpsListening, RelayDraining, RelayStarted,
    RelayStopped, SinkHealthChanged, TokenFileSkipped,
};
use crate::ops::{Health, Metrics, TenantLabel};
use crate::publish::pipeline::{self, Pipeline, PipelineError, PipelineSettings};
use crate::publish::publisher::{Outstanding, PublisherStats};
use crate::publish::spool::SpoolSettings;
use crate::publish::window::WalkOutput;
use crate::relay::backfill::{BackfillDeps, Handover, HistoricClients, SeedFrom};
use crate::relay::checkpoint::{CheckpointStore, ClockMark, Epoch};
use crate::relay::ownership::{Handovers, Owned};
use crate::relay::processor::{Barrier, Checkpointing, LiveMemory};
use crate::relay::tenants::{SocketFactory, TenantSpec};
use crate::relay::token_dir::{Skipped, TokenDir, Tokens};
use crate::sink::leases::{default_member_name, GroupSettings, Membership};
use crate::sink::{Sink, SinkError};
use crate::upstream::egress::Egress;
use crate::upstream::historic::GraphqlClient;
use crate::upstream::live::{LiveFrame, SocketEvent};
use crate::upstream::tls::{CaFileError, UpstreamTls};

// The live path's API as benchmarks, examples and tests use it: the
// publishing types it is built on, and its own frame → message step.
pub use crate::publish::{MessageBuilder, Outgoing, PublisherSettings, RecentIds};
pub use crate::relay::clock::UpstreamClock;
pub use crate::relay::processor::{frame_to_outgoing, frame_to_outgoing_into};

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
    Spool(#[from] crate::publish::spool::SpoolError),
    /// Exit code 2, as the config's other errors.
    #[error(transparent)]
    CaFile(#[from] CaFileError),
    /// Exit code 2: the directory the config names cannot be read.
    #[error("config key `token_dir.path`: cannot read {path}: {source}")]
    TokenDir {
        path: String,
        source: std::io::Error,
    },
    #[error("shutdown deadline of {deadline:?} passed with {unsettled} event(s) not acknowledged by the broker")]
    DrainTimeout { deadline: Duration, unsettled: i64 },
}

impl From<PipelineError> for RelayError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Registry(e) => RelayError::Registry(e),
            PipelineError::Sink(e) => RelayError::Sink(e),
            PipelineError::Spool(e) => RelayError::Spool(e),
        }
    }
}

impl RelayError {
    /// The process exit code: a registry that refuses the configuration
    /// (subject, credentials, CA, compatibility) is a configuration error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RelayError::Registry(e) => e.exit_code(),
            RelayError::TokenDir { .. } | RelayError::CaFile(_) => 2,
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
    let metrics = Arc::new(Metrics::with_tenant_label(tenant_label(&config.ops)));
    let sink = crate::sink::build(&config.sink, metrics.clone()).await?;
    start_with_sink(config, sink, metrics, shutdown).await
}

/// The metrics' tenant label that `ops.tenant_label` asks for.
fn tenant_label(ops: &OpsConfig) -> TenantLabel {
    match ops.tenant_label {
        TenantLabelMode::Name => TenantLabel::Name,
        TenantLabelMode::Hashed => TenantLabel::Hashed(ops.tenant_label_buckets),
        TenantLabelMode::None => TenantLabel::None,
    }
}

/// Runs until `shutdown`, then drains. The relay's main entry point.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<RelaySummary, RelayError> {
    start(config, shutdown).await?.wait().await
}

/// Starts the relay on a given sink (tests and the demo pass their own).
pub async fn start_with_sink(
    config: Config,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<RelayHandle, RelayError> {
    let (config, token_dir) = read_token_dir(config, &metrics).await?;
    let tls = UpstreamTls::load(config.upstream.ca_file.as_deref())?;
    let health = Arc::new(Health::new());
    let ops = serve_ops(&config, &metrics, &health).await?;
    let memory = LiveMemory::new(config.relay.recent_ids);
    let pipeline = connect_sink(&config, &sink, &metrics, &shutdown, &memory).await?;
    watch_sink_health(&sink, &metrics, &health, &ops.stop).await;
    let checkpoint = open_checkpoint(&config, &sink, &metrics).await?;
    let group = join_group(&config, &sink, &metrics).await?;
    let clock = Arc::new(UpstreamClock::default());
    let sockets_stop = shutdown.child_token();
    let mut gaps = spawn_backfill(
        &config,
        &sink,
        &metrics,
        &pipeline,
        &memory,
        &clock,
        &checkpoint,
        &sockets_stop,
    );
    let (frame_tx, frame_rx) = mpsc::channel::<LiveFrame>(config.relay.queue_capacity);
    let (barrier_tx, barriers) = mpsc::unbounded_channel();
    let (shared, leave) = match group {
        Some(group) => {
            let handovers = Handovers {
                checkpoint: checkpoint
                    .store
                    .clone()
                    .expect("ha needs a broker checkpoint"),
                sink: sink.clone(),
                builder: pipeline.builder.clone(),
                memory: memory.clone(),
                margin: config.relay.gap_margin,
                backfill: gaps.handovers.take().expect("ha needs gap backfill"),
                barriers: barrier_tx,
                handoff_timeout: config.ha.handoff_timeout,
                metrics: metrics.clone(),
            };
            let shared = tenants::Shared {
                owned: Owned::none(group.membership.shards),
                leases: group.membership.events,
                handovers,
            };
            (Some(shared), Some((group.leave, group.membership.left)))
        }
        None => (None, None),
    };
    let barriers = shared.is_some().then_some(barriers);
    let processor = spawn_processor(
        frame_rx,
        &pipeline,
        &metrics,
        clock,
        memory,
        &checkpoint,
        barriers,
    );
    let tenants = spawn_tenants(
        &config,
        shared,
        SocketFactory {
            settings: config.upstream.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            egress: Arc::new(Egress::from_env(tls)),
            frames: frame_tx,
            events: gaps.events.clone(),
            clients: gaps.clients.clone(),
            sink: sink.clone(),
            builder: pipeline.builder.clone(),
        },
        token_dir,
        &sockets_stop,
    );
    health.mark_started();
    RelayStarted {
        tenants: config.tenants.len(),
        sources: config.relayed_sources().len(),
        sink: sink.name(),
        encoding: &format!("{:?}", config.encoding.format),
    }
    .emit(&metrics);
    let running = Running {
        tenants,
        processor,
        backfill: gaps.task,
        publisher: pipeline.publisher,
        outstanding: pipeline.outstanding,
        checkpoint: checkpoint.writer,
        sink,
    };
    let stopping = Stopping {
        leave,
        deadline: config.relay.shutdown_deadline,
        health: health.clone(),
        metrics: metrics.clone(),
        ops_stop: ops.stop,
    };
    let join = tokio::spawn(drain(running, stopping, shutdown));
    Ok(RelayHandle {
        ops_addr: ops.addr,
        metrics,
        health,
        join,
    })
}

/// The ops listener (`/metrics`, `/healthz`, `/readyz`), unless disabled.
struct Ops {
    addr: Option<SocketAddr>,
    /// Stops the listener and the sink watcher, after the drain.
    stop: CancellationToken,
}

async fn serve_ops(
    config: &Config,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> Result<Ops, RelayError> {
    let stop = CancellationToken::new();
    let listen = &config.ops.listen;
    if listen.trim().is_empty() {
        return Ok(Ops { addr: None, stop });
    }
    let addr = crate::ops::server::spawn(listen, metrics.clone(), health.clone(), stop.clone())
        .await
        .map_err(|source| RelayError::Ops {
            addr: listen.clone(),
            source,
        })?;
    OpsListening { addr }.emit(metrics);
    Ok(Ops {
        addr: Some(addr),
        stop,
    })
}

/// The publishing path: encoder, builder, destinations prepared, the
/// publisher (remembering the match keys it publishes for gap backfill)
/// behind the spool, if one is configured.
async fn connect_sink(
    config: &Config,
    sink: &Arc<dyn Sink>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    memory: &LiveMemory,
) -> Result<Pipeline, RelayError> {
    let relay = &config.relay;
    let spool = (!relay.spool_dir.is_empty()).then(|| SpoolSettings {
        dir: relay.spool_dir.clone().into(),
        max_bytes: relay.spool_max_bytes,
        fsync: relay.spool_fsync,
    });
    let settings = PipelineSettings {
        sources: &config.relayed_sources(),
        publisher: PublisherSettings {
            recent_ids: Some(memory.match_keys.clone()),
            ..PublisherSettings::default()
        },
        queue_capacity: relay.queue_capacity,
        spool,
    };
    Ok(pipeline::start(config, sink, metrics, shutdown, settings).await?)
}

/// Checks the broker once now, then every few seconds, so readiness
/// reflects broker health.
async fn watch_sink_health(
    sink: &Arc<dyn Sink>,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
    stop: &CancellationToken,
) {
    let first = sink.check_health().await;
    SinkHealthChanged {
        sink: sink.name(),
        up: first.is_ok(),
        error: first.as_ref().err().map(|e| e.message.as_str()),
    }
    .emit(metrics);
    health.set_sink(first.map_err(|e| e.message));
    tokio::spawn(watch_sink(
        sink.clone(),
        metrics.clone(),
        health.clone(),
        stop.clone(),
    ));
}

async fn watch_sink(
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
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
}

/// The restart checkpoint, when one is kept: where to resume from, and
/// the writer that keeps it current as epochs settle.
#[derive(Default)]
struct Resume {
    /// Where checkpoints are kept (tenants taken over load theirs here).
    store: Option<CheckpointStore>,
    from: HashMap<String, ClockMark>,
    epochs: Option<mpsc::UnboundedSender<Epoch>>,
    writer: Option<(JoinHandle<()>, CancellationToken)>,
}

/// Opens the checkpoint's store (a broker bucket / topic, or a file) and
/// loads it (a failure stops start-up, naming the key).
async fn open_checkpoint(
    config: &Config,
    sink: &Arc<dyn Sink>,
    metrics: &Arc<Metrics>,
) -> Result<Resume, RelayError> {
    let Some(store) = checkpoint::open(config, sink.as_ref(), metrics).await? else {
        return Ok(Resume::default());
    };
    // Replicas sharing the tenants load each one's checkpoint when they
    // take it over.
    let state = if config.ha.enabled {
        Default::default()
    } else {
        store.load().await?
    };
    if !config.ha.enabled {
        let tenants: Vec<(&str, i64)> = state
            .iter()
            .map(|(t, m)| (t.as_str(), m.upstream_ms))
            .collect();
        CheckpointLoaded {
            location: &store.location(),
            tenants: &tenants,
        }
        .emit(metrics);
    }
    let from = state.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let task = tokio::spawn(checkpoint::run_writer(
        store.clone(),
        state,
        rx,
        stop.clone(),
        metrics.clone(),
    ));
    Ok(Resume {
        store: Some(store),
        from,
        epochs: Some(tx),
        writer: Some((task, stop)),
    })
}

/// With `ha.enabled`: this replica's place in the group, and the token
/// that makes it leave.
struct Group {
    membership: Membership,
    leave: CancellationToken,
}

async fn join_group(
    config: &Config,
    sink: &Arc<dyn Sink>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Group>, RelayError> {
    let ha = &config.ha;
    if !ha.enabled {
        return Ok(None);
    }
    let member = if ha.member.is_empty() {
        default_member_name()
    } else {
        ha.member.clone()
    };
    let settings = GroupSettings {
        group: ha.group.clone(),
        topic: ha.topic.clone(),
        bucket: ha.bucket.clone(),
        shards: ha.shards,
        lease_ttl: ha.lease_ttl,
        member: member.clone(),
    };
    let leave = CancellationToken::new();
    let Some(membership) = sink.join_group(&settings, leave.clone()).await? else {
        return Err(RelayError::Sink(SinkError::new(
            crate::sink::SinkErrorKind::Config,
            format!(
                "config key `ha.enabled`: the {} sink cannot keep leases",
                sink.name()
            ),
        )));
    };
    GroupJoined {
        member: &member,
        leases: &membership.describe,
        shards: membership.shards,
    }
    .emit(metrics);
    Ok(Some(Group { membership, leave }))
}

/// Gap backfill, when enabled: the task, and where sockets report
/// connects and disconnects to it.
struct Gaps {
    task: Option<JoinHandle<()>>,
    events: Option<mpsc::UnboundedSender<SocketEvent>>,
    /// Each tenant's GraphQL client, set by the tenants' supervisor.
    clients: Option<Arc<HistoricClients<GraphqlClient>>>,
    /// Tenants taken over and handed over (`ha`).
    handovers: Option<mpsc::UnboundedSender<Handover>>,
}

#[allow(clippy::too_many_arguments)]
fn spawn_backfill(
    config: &Config,
    sink: &Arc<dyn Sink>,
    metrics: &Arc<Metrics>,
    pipeline: &Pipeline,
    memory: &LiveMemory,
    clock: &Arc<UpstreamClock>,
    resume: &Resume,
    stop: &CancellationToken,
) -> Gaps {
    if !config.relay.gap_backfill {
        return Gaps {
            task: None,
            events: None,
            clients: None,
            handovers: None,
        };
    }
    // After a restart, the resume backfill first learns which of its
    // records are on the broker already (Kafka has no dedup of its own).
    let seed = (!resume.from.is_empty()).then(|| SeedFrom {
        sink: sink.clone(),
        destinations: backfill_destinations(config, &pipeline.builder),
    });
    let mut deps = BackfillDeps {
        out: WalkOutput {
            tx: pipeline.intake.clone(),
            builder: pipeline.builder.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
        },
        recent: memory.match_keys.clone(),
        live_ids: memory.event_ids.clone(),
        clock: clock.clone(),
        resume_from: resume.from.clone(),
        seed,
        handovers: None,
    };
    let (handovers_tx, handovers) = mpsc::unbounded_channel();
    let ha = config.ha.enabled;
    if ha {
        deps.handovers = Some(handovers);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let config = config.clone();
    let clients = Arc::new(HistoricClients::default());
    let task = {
        let clients = clients.clone();
        tokio::spawn(async move { backfill::run(&config, clients, rx, deps).await })
    };
    Gaps {
        task: Some(task),
        events: Some(tx),
        clients: Some(clients),
        handovers: ha.then_some(handovers_tx),
    }
}

/// The topics / subjects gap backfill publishes records to (sources with a
/// historic layer).
fn backfill_destinations(config: &Config, builder: &MessageBuilder) -> Vec<String> {
    let mut out: Vec<String> = config
        .tenants
        .iter()
        .flat_map(|t| {
            config
                .tenant_sources(t)
                .iter()
                .filter(|s| s.graphql_root().is_some())
                .map(|&s| builder.destination(s, &t.name))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The processor: frames → messages into the publisher's intake, in order.
fn spawn_processor(
    frames: mpsc::Receiver<LiveFrame>,
    pipeline: &Pipeline,
    metrics: &Arc<Metrics>,
    clock: Arc<UpstreamClock>,
    memory: LiveMemory,
    resume: &Resume,
    barriers: Option<mpsc::UnboundedReceiver<Barrier>>,
) -> JoinHandle<()> {
    let checkpointing = resume
        .epochs
        .clone()
        .map(|epochs| Checkpointing { epochs, barriers });
    tokio::spawn(processor::process_frames(
        frames,
        pipeline.intake.clone(),
        pipeline.builder.clone(),
        metrics.clone(),
        clock,
        memory,
        checkpointing,
    ))
}

/// The tenants' sockets, under a supervisor that applies the token
/// directory's changes while the relay runs.
fn spawn_tenants(
    config: &Config,
    shared: Option<tenants::Shared>,
    factory: SocketFactory,
    token_dir: Option<(TokenDir, (Tokens, Vec<Skipped>))>,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let initial = config
        .tenants
        .iter()
        .map(|t| TenantSpec {
            name: Arc::from(t.name.as_str()),
            token: t.token.clone(),
            sources: config.tenant_sources(t).to_vec(),
        })
        .collect();
    let (changes_tx, changes) = mpsc::channel(64);
    if let Some((dir, reading)) = token_dir {
        let metrics = factory.metrics.clone();
        tokio::spawn(dir.watch(reading, changes_tx, metrics, stop.clone()));
    }
    tokio::spawn(tenants::supervise(
        initial,
        changes,
        shared,
        factory,
        stop.clone(),
    ))
}

/// With a token directory: its tenants join the config's (they are
/// tenants from the start like any other), and the directory with what
/// was read is returned for the watcher.
async fn read_token_dir(
    mut config: Config,
    metrics: &Arc<Metrics>,
) -> Result<(Config, Option<(TokenDir, (Tokens, Vec<Skipped>))>), RelayError> {
    let Some(dir) = TokenDir::from_config(&config) else {
        return Ok((config, None));
    };
    let (dir, read) = tokio::task::spawn_blocking(move || {
        let read = dir.read();
        (dir, read)
    })
    .await
    .expect("reading the token directory does not panic");
    let (tokens, skipped) = read.map_err(|source| RelayError::TokenDir {
        path: dir.path().display().to_string(),
        source,
    })?;
    for s in &skipped {
        TokenFileSkipped {
            file: &s.file,
            reason: s.reason,
        }
        .emit(metrics);
    }
    for spec in dir.specs(&tokens) {
        config.tenants.push(TenantConfig {
            name: spec.name.to_string(),
            token: spec.token,
            sources: Some(spec.sources),
            ..TenantConfig::default()
        });
    }
    Ok((config, Some((dir, (tokens, skipped)))))
}

/// The relay's tasks, stopped in order by [`drain`].
struct Running {
    /// The tenants' supervisor: ends once every socket has.
    tenants: JoinHandle<()>,
    processor: JoinHandle<()>,
    backfill: Option<JoinHandle<()>>,
    publisher: JoinHandle<PublisherStats>,
    outstanding: Arc<Outstanding>,
    checkpoint: Option<(JoinHandle<()>, CancellationToken)>,
    sink: Arc<dyn Sink>,
}

/// How long leaving the replicas' group may take at the end of a drain.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the drain reports to.
struct Stopping {
    /// Leaves the replicas' group once everything settled, so the next
    /// owners resume from checkpoints that cover this replica's work; the
    /// receiver is answered once it has left.
    leave: Option<(CancellationToken, tokio::sync::oneshot::Receiver<()>)>,
    deadline: Duration,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    ops_stop: CancellationToken,
}

/// Waits for `shutdown`, then stops everything in order within the
/// deadline: sockets, processor, backfill, publisher, checkpoint, flush.
async fn drain(
    running: Running,
    stopping: Stopping,
    shutdown: CancellationToken,
) -> Result<RelaySummary, RelayError> {
    shutdown.cancelled().await;
    let deadline = stopping.deadline;
    RelayDraining { deadline }.emit(&stopping.metrics);
    let outstanding = running.outstanding.clone();
    let result = match tokio::time::timeout(deadline, settle(running, deadline)).await {
        Ok((stats, flushed)) => {
            if let Err(e) = flushed {
                FinalFlushFailed { error: &e }.emit(&stopping.metrics);
            }
            RelayStopped {
                published: stats.published,
                dead_lettered: stats.dead_lettered,
            }
            .emit(&stopping.metrics);
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
    if let Some((leave, left)) = stopping.leave {
        leave.cancel();
        // Bounded: a broker gone by now leaves the leases to expire.
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, left).await;
    }
    stopping.health.set_sink(Err("stopped".into()));
    stopping.ops_stop.cancel();
    result
}

/// Each stage ends once the one before it has (closing its input).
async fn settle(running: Running, deadline: Duration) -> (PublisherStats, Result<(), SinkError>) {
    let _ = running.tenants.await;
    let _ = running.processor.await;
    if let Some(g) = running.backfill {
        let _ = g.await;
    }
    let stats = running.publisher.await.unwrap_or_default();
    if let Some((task, stop)) = running.checkpoint {
        stop.cancel();
        let _ = task.await;
    }
    let flushed = running.sink.flush(deadline).await;
    (stats, flushed)
}
