//! `studio-relay replay`: backfill a historic range from GraphQL into the same
//! topics, with the same schemas and event ids as the live relay (origin
//! `replay`).
//!
//! The range is split into windows; several windows are in flight at once
//! (`concurrency`) while each window is read page by page, in order
//! (`publish::window`). A window counts as done only when every one of its
//! records is acknowledged by the broker; then it is written to the
//! checkpoint, so a rerun skips it. The phases:
//!
//! ```text
//! plan_windows ─▶ connect_sink ─▶ read_destinations ─▶ walk_windows ─▶ drain ─▶ summarize
//!  (checkpoint)   (publish::pipeline)  (publish::on_broker)  (publish::window)
//! ```
//!
//! The command line (`cli::replay`) parses and checks the arguments into a
//! [`ReplayRequest`], prints the plan, the progress and the summary.

pub mod checkpoint;
pub mod plan;
mod published;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TenantConfig};
use crate::model::{self, DataSource};
use crate::ops::internal_events::{
    ReplayFinished, ReplayPlanned, ReplayWindowCompleted, ReplayWindowFailed,
};
use crate::ops::Metrics;
use crate::publish::on_broker::OnBroker;
use crate::publish::pipeline::{self, Pipeline, PipelineError, PipelineSettings};
use crate::publish::publisher::PublisherSettings;
use crate::publish::recent_ids::RecentIds;
use crate::publish::window::{self, Counters, Skip, WalkOutput, WindowOutcome, WindowRequest};
use crate::replay::checkpoint::{Checkpoint, CheckpointError};
use crate::replay::plan::{split, Window};
use crate::replay::published::PublishedRecord;
use crate::sink::{Sink, StateStore};
use crate::upstream::historic::{GraphqlClient, HistoricError, OverviewFilter, RetryPolicy};
use crate::upstream::tls::UpstreamTls;

/// The publisher's queue during a replay.
const QUEUE_CAPACITY: usize = 8192;
/// How long publishing may take to settle after the last window.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the final flush may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// A checked replay: what to fetch and how.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    /// Sources with a historic layer.
    pub sources: Vec<DataSource>,
    /// Window size: the range is fetched one window at a time per source.
    pub window: Duration,
    /// Records per GraphQL page.
    pub page_size: u32,
    /// Windows fetched at once.
    pub concurrency: usize,
    /// Completed windows are recorded here; a rerun skips them.
    pub checkpoint: Option<PathBuf>,
    /// Publish records already on the destination too.
    pub republish: bool,
    /// The filters besides the dates.
    pub filter: OverviewFilter,
}

impl ReplayRequest {
    /// The request, if it can be run: a range, a page size and a
    /// concurrency above zero, only sources with a historic layer.
    pub fn validate(self) -> Result<ReplayRequest, ReplayError> {
        if self.from >= self.to {
            return Err(ReplayError::BadArgs(format!(
                "--from {} is not before --to {}",
                self.from, self.to
            )));
        }
        if self.page_size == 0 || self.concurrency == 0 {
            return Err(ReplayError::BadArgs(
                "--page-size and --concurrency must be above zero".into(),
            ));
        }
        if let Some(s) = self.sources.iter().find(|s| s.graphql_root().is_none()) {
            return Err(ReplayError::BadArgs(format!(
                "{s} has no historic layer (live only)"
            )));
        }
        Ok(self)
    }

    /// The windows of the range, per source and tenant.
    pub fn windows(&self) -> Vec<Window> {
        split(self.from, self.to, self.window)
    }
}

/// Why a replay failed. [`ReplayError::exit_code`] maps each to the documented code.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("bad arguments: {0}")]
    BadArgs(String),
    #[error(transparent)]
    CaFile(#[from] crate::upstream::tls::CaFileError),
    #[error(transparent)]
    Historic(#[from] HistoricError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("sink: {0}")]
    Sink(#[from] crate::sink::SinkError),
    #[error("schema registry: {0}")]
    Registry(crate::registry::RegistryError),
    #[error("{failed} window(s) failed (first: {first}); rerun the same command to retry them")]
    WindowsFailed { failed: usize, first: String },
    #[error("publishing did not finish within {0:?} after the last window")]
    DrainTimeout(Duration),
}

impl ReplayError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::BadArgs(_) | ReplayError::CaFile(_) => 2,
            ReplayError::Registry(e) => e.exit_code(),
            _ => 1,
        }
    }
}

impl From<PipelineError> for ReplayError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Registry(e) => ReplayError::Registry(e),
            PipelineError::Sink(e) => ReplayError::Sink(e),
            // A replay publishes without a spool; kept for completeness.
            PipelineError::Spool(e) => ReplayError::Sink(crate::sink::SinkError::new(
                crate::sink::SinkErrorKind::Config,
                e.to_string(),
            )),
        }
    }
}

/// Per-source totals.
#[derive(Debug, Clone, Default)]
pub struct SourceSummary {
    pub records: u64,
    /// Records left out because they were on the destination already.
    pub already_on_broker: u64,
    pub pages: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    pub windows: u64,
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    pub per_source: BTreeMap<DataSource, SourceSummary>,
    pub windows_skipped: usize,
    pub elapsed: Duration,
    /// True when stopped by a signal (exit 130).
    pub interrupted: bool,
    /// Dead letters the broker acknowledged (the walk's, and those of
    /// records the broker refused).
    pub dead_letters_acknowledged: u64,
}

impl ReplaySummary {
    pub fn records(&self) -> u64 {
        self.per_source.values().map(|s| s.records).sum()
    }

    /// Records left out as already on the destination.
    pub fn already_on_broker(&self) -> u64 {
        self.per_source.values().map(|s| s.already_on_broker).sum()
    }
}

/// A replay that ran its windows: what it did, and why it failed if it did
/// (the summary is there either way).
#[derive(Debug)]
pub struct ReplayReport {
    pub summary: ReplaySummary,
    pub failure: Option<ReplayError>,
}

impl ReplayReport {
    pub fn into_result(self) -> Result<ReplaySummary, ReplayError> {
        match self.failure {
            Some(e) => Err(e),
            None => Ok(self.summary),
        }
    }
}

/// How far a running replay is, for a progress line.
#[derive(Debug, Default)]
pub struct Progress {
    planned: OnceLock<(usize, Vec<Arc<Counters>>)>,
    windows_done: AtomicU64,
}

impl Progress {
    /// Windows to fetch (known once the checkpoint is read).
    pub fn windows_planned(&self) -> Option<usize> {
        self.planned.get().map(|(n, _)| *n)
    }

    pub fn windows_done(&self) -> usize {
        self.windows_done.load(Ordering::Relaxed) as usize
    }

    /// Records handed to the publisher so far.
    pub fn records(&self) -> u64 {
        self.planned.get().map_or(0, |(_, counters)| {
            counters
                .iter()
                .map(|c| c.records.load(Ordering::Relaxed))
                .sum()
        })
    }
}

/// The estimated size of one source of one tenant over the range.
#[derive(Debug, Clone)]
pub struct Estimate {
    pub tenant: String,
    pub source: DataSource,
    /// GraphQL's `totalCount` for the range (None: not given).
    pub records: Option<u64>,
}

/// GraphQL's count of records per tenant and source over the range,
/// without fetching them (a dry run).
pub async fn estimate(
    request: &ReplayRequest,
    config: &Config,
) -> Result<Vec<Estimate>, ReplayError> {
    let clients = graphql_clients(config)?;
    let whole = OverviewFilter::window(&request.filter, request.from, request.to);
    let mut out = Vec::new();
    for (client, tenant) in clients.iter().zip(&config.tenants) {
        for &source in &request.sources {
            let root = source.graphql_root().unwrap_or_default();
            let page = client
                .fetch_page(root, "{ __typename }", &whole, 1, None, |_, _| {})
                .await?;
            out.push(Estimate {
                tenant: tenant.name.clone(),
                source,
                records: page.total_count,
            });
        }
    }
    Ok(out)
}

/// Runs a replay of `config`'s tenants. `shutdown` stops it between pages:
/// in-flight publishes finish, completed windows are checkpointed, and the
/// summary says `interrupted`.
pub async fn run(
    request: ReplayRequest,
    config: Config,
    shutdown: CancellationToken,
    progress: Arc<Progress>,
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let clients = graphql_clients(&config)?;
    let metrics = Arc::new(Metrics::new());
    let (checkpoint, plan) = plan_windows(&request, &config, &metrics).await?;
    let sink: Arc<dyn Sink> = crate::sink::build(&config.sink, metrics.clone()).await?;
    let pipeline = connect_sink(&request, &config, &sink, &metrics, &shutdown).await?;
    let on_broker = read_destinations(&request, &config, &sink, &pipeline, &metrics).await;
    // Where each window's published ids are recorded (none for stdout).
    let store = sink.state_store(&config.relay.checkpoint_store).await?;
    let counters: BTreeMap<DataSource, Arc<Counters>> = request
        .sources
        .iter()
        .map(|s| (*s, Arc::new(Counters::default())))
        .collect();
    let _ = progress
        .planned
        .set((plan.units.len(), counters.values().cloned().collect()));
    let windows = Windows {
        clients,
        tenants: config.tenants.clone(),
        counters: counters.clone(),
        out: WalkOutput {
            tx: pipeline.intake.clone(),
            builder: pipeline.builder.clone(),
            metrics: metrics.clone(),
            stop: shutdown.child_token(),
        },
        request: request.clone(),
        on_broker: Arc::new(on_broker),
        store,
    };
    let walked = walk_windows(windows, plan.units, checkpoint, &progress).await?;
    let acknowledged_dead_letters = drain(pipeline, &sink).await?;
    let summary = summarize(&counters, &walked, plan.skipped, acknowledged_dead_letters);
    let summary = ReplaySummary {
        elapsed: started.elapsed(),
        interrupted: shutdown.is_cancelled(),
        ..summary
    };
    ReplayFinished {
        published: summary.records(),
        already_on_broker: summary.already_on_broker(),
        windows_skipped: summary.windows_skipped,
        interrupted: summary.interrupted,
    }
    .emit(&metrics);
    Ok(ReplayReport {
        summary,
        failure: walked.failure(),
    })
}

/// One client per tenant, in `config.tenants`' order.
fn graphql_clients(config: &Config) -> Result<Vec<GraphqlClient>, ReplayError> {
    let tls = UpstreamTls::load(config.upstream.ca_file.as_deref())?;
    let clients = config
        .tenants
        .iter()
        .map(|t| {
            GraphqlClient::with_roots(
                &config.upstream.graphql_url,
                t.token.clone(),
                config.upstream.request_timeout,
                RetryPolicy::default(),
                tls.extra_roots(),
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(clients)
}

/// One window of one source of one tenant.
struct Unit {
    tenant: usize,
    source: DataSource,
    window: Window,
}

impl Unit {
    fn key(&self, tenants: &[TenantConfig]) -> String {
        format!(
            "{}/{}/{}",
            tenants[self.tenant].name,
            self.source,
            self.window.key()
        )
    }
}

/// The windows to fetch, and how many the checkpoint says are done.
struct Plan {
    units: Vec<Unit>,
    skipped: usize,
}

/// Opens the checkpoint and lists every window it does not hold yet.
async fn plan_windows(
    request: &ReplayRequest,
    config: &Config,
    metrics: &Metrics,
) -> Result<(Checkpoint, Plan), ReplayError> {
    let checkpoint = match &request.checkpoint {
        Some(p) => Checkpoint::open_off_runtime(p.clone(), fingerprint(request, config)).await?,
        None => Checkpoint::none(),
    };
    let windows = request.windows();
    let mut plan = Plan {
        units: Vec::new(),
        skipped: 0,
    };
    for tenant in 0..config.tenants.len() {
        for &source in &request.sources {
            for w in &windows {
                let unit = Unit {
                    tenant,
                    source,
                    window: w.clone(),
                };
                if checkpoint.is_done(&unit.key(&config.tenants)) {
                    plan.skipped += 1;
                } else {
                    plan.units.push(unit);
                }
            }
        }
    }
    ReplayPlanned {
        from: request.from,
        to: request.to,
        windows: windows.len(),
        sources: request.sources.len(),
        tenants: config.tenants.len(),
        to_fetch: plan.units.len(),
        already_done: plan.skipped,
        to_fetch_by_source: request
            .sources
            .iter()
            .map(|s| {
                (
                    s.as_str(),
                    plan.units.iter().filter(|u| u.source == *s).count(),
                )
            })
            .collect(),
    }
    .emit(metrics);
    Ok((checkpoint, plan))
}

/// Identifies what a checkpoint is valid for: sources, tenants, filter, window size.
fn fingerprint(request: &ReplayRequest, config: &Config) -> String {
    let mut h = Sha256::new();
    let mut sources: Vec<&str> = request.sources.iter().map(|s| s.as_str()).collect();
    sources.sort();
    h.update(sources.join(",").as_bytes());
    for t in &config.tenants {
        h.update(t.name.as_bytes());
    }
    h.update(serde_json::to_vec(&request.filter).unwrap_or_default());
    h.update(request.window.as_millis().to_le_bytes());
    hex::encode(h.finalize())[..16].to_string()
}

/// The publishing path for the requested sources.
async fn connect_sink(
    request: &ReplayRequest,
    config: &Config,
    sink: &Arc<dyn Sink>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<Pipeline, ReplayError> {
    let settings = PipelineSettings {
        sources: &request.sources,
        publisher: PublisherSettings::default(),
        queue_capacity: QUEUE_CAPACITY,
        spool: None,
    };
    Ok(pipeline::start(config, sink, metrics, shutdown, settings).await?)
}

/// What is on the destinations since the range's start (nothing is read
/// with `republish`).
async fn read_destinations(
    request: &ReplayRequest,
    config: &Config,
    sink: &Arc<dyn Sink>,
    pipeline: &Pipeline,
    metrics: &Metrics,
) -> OnBroker {
    let capacity = config.relay.recent_ids;
    if request.republish {
        return OnBroker::new(capacity);
    }
    let destinations: Vec<String> = config
        .tenants
        .iter()
        .flat_map(|t| {
            request
                .sources
                .iter()
                .map(|s| pipeline.builder.destination(*s, &t.name))
        })
        .collect();
    let from_ms = request.from.timestamp_millis();
    OnBroker::read(sink.as_ref(), &destinations, from_ms, capacity, metrics).await
}

/// Everything the window walks share, owned: dropping it (with the walks)
/// releases its publisher sender.
struct Windows {
    clients: Vec<GraphqlClient>,
    tenants: Vec<TenantConfig>,
    counters: BTreeMap<DataSource, Arc<Counters>>,
    out: WalkOutput,
    request: ReplayRequest,
    on_broker: Arc<OnBroker>,
    store: Option<Arc<dyn StateStore>>,
}

/// Why one replay window failed.
#[derive(Debug, thiserror::Error)]
enum WindowError {
    #[error(transparent)]
    Historic(#[from] HistoricError),
    /// Its record of published ids could not be read or written.
    #[error("replay record: {0}")]
    Record(#[from] crate::sink::SinkError),
}

/// What the walks came to.
#[derive(Default)]
struct Walked {
    windows_done: BTreeMap<DataSource, u64>,
    /// A failure every other window would meet too (stopped the replay).
    fatal: Option<ReplayError>,
    /// Windows that failed on their own: `key: error`.
    failures: Vec<String>,
}

impl Walked {
    fn failure(self) -> Option<ReplayError> {
        if let Some(e) = self.fatal {
            return Some(e);
        }
        let first = self.failures.first()?.clone();
        Some(ReplayError::WindowsFailed {
            failed: self.failures.len(),
            first,
        })
    }
}

/// Walks the windows, `concurrency` at once, checkpointing each done one.
async fn walk_windows(
    windows: Windows,
    units: Vec<Unit>,
    mut checkpoint: Checkpoint,
    progress: &Progress,
) -> Result<Walked, ReplayError> {
    let windows = Arc::new(windows);
    let (tenants, stop, metrics) = (
        windows.tenants.clone(),
        windows.out.stop.clone(),
        windows.out.metrics.clone(),
    );
    let concurrency = windows.request.concurrency;
    let mut results = Box::pin(
        futures::stream::iter(units.into_iter().map(move |unit| {
            let windows = windows.clone();
            async move {
                let r = walk_unit(&windows, &unit).await;
                (unit, r)
            }
        }))
        .buffer_unordered(concurrency),
    );
    let mut walked = Walked::default();
    while let Some((unit, result)) = results.next().await {
        let key = unit.key(&tenants);
        match result {
            Ok(WindowOutcome::Done) => {
                checkpoint.mark_done(key).await?;
                *walked.windows_done.entry(unit.source).or_default() += 1;
                ReplayWindowCompleted {
                    source: unit.source.as_str(),
                }
                .emit(&metrics);
                progress.windows_done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(WindowOutcome::Interrupted) => {}
            Err(WindowError::Historic(
                e @ (HistoricError::Unauthorized { .. } | HistoricError::GraphQl { .. }),
            )) => {
                // Every other window would fail the same way: stop now.
                stop.cancel();
                walked.fatal.get_or_insert(ReplayError::Historic(e));
            }
            Err(e) => {
                ReplayWindowFailed {
                    window: &key,
                    error: &e,
                }
                .emit(&metrics);
                walked.failures.push(format!("{key}: {e}"));
            }
        }
    }
    Ok(walked)
}

/// One window: skips what its record and the destinations hold, walks it,
/// and records what it covered once done.
async fn walk_unit(windows: &Windows, unit: &Unit) -> Result<WindowOutcome, WindowError> {
    let tenant: Arc<str> = Arc::from(windows.tenants[unit.tenant].name.as_str());
    let request = &windows.request;
    let record = PublishedRecord {
        store: windows.store.as_deref(),
        key: format!(
            "replay/{}/{}",
            windows.out.builder.destination(unit.source, &tenant),
            unit.window.key()
        ),
    };
    let prior = record.load().await?;
    let covered = Mutex::new(Vec::new());
    let skip = already_published(&windows.on_broker, &prior, request.republish, &covered);
    // Windows overlap by a second (up to the range's end): see `window_within`.
    let filter = OverviewFilter::window_within(
        &request.filter,
        unit.window.from,
        unit.window.to,
        request.to,
    );
    let walk = WindowRequest {
        pages: &windows.clients[unit.tenant],
        tenant,
        source: unit.source,
        filter: &filter,
        page_size: request.page_size,
        origin: model::Origin::Replay,
        skip: &skip,
        counters: &windows.counters[&unit.source],
    };
    let outcome = window::walk(&windows.out, walk).await?;
    if outcome == WindowOutcome::Done {
        let covered = covered.into_inner().unwrap_or_else(|e| e.into_inner());
        record.save(&prior, &covered).await?;
    }
    Ok(outcome)
}

/// What a replay window leaves out: what is on the destinations (unless
/// `republish`), what its own record holds, and what this run took.
fn already_published<'a>(
    on_broker: &'a OnBroker,
    prior: &'a RecentIds,
    republish: bool,
    covered: &'a Mutex<Vec<String>>,
) -> Skip<'a> {
    Skip {
        event_ids: if republish {
            Vec::new()
        } else {
            vec![&on_broker.event_ids, prior]
        },
        present_keys: Some(&on_broker.match_keys),
        reason: "already_on_broker",
        claimed: Some(&on_broker.claimed),
        covered: Some(covered),
        ..Skip::default()
    }
}

/// Lets the publisher settle everything fetched, then flushes; returns the
/// dead letters the broker acknowledged.
async fn drain(pipeline: Pipeline, sink: &Arc<dyn Sink>) -> Result<u64, ReplayError> {
    let Pipeline {
        intake, publisher, ..
    } = pipeline;
    // Closing the last sender lets the publisher finish once all is settled.
    drop(intake);
    let stats = tokio::time::timeout(DRAIN_TIMEOUT, publisher)
        .await
        .map_err(|_| ReplayError::DrainTimeout(DRAIN_TIMEOUT))?;
    let _ = sink.flush(FLUSH_TIMEOUT).await;
    Ok(stats.unwrap_or_default().dead_lettered)
}

fn summarize(
    counters: &BTreeMap<DataSource, Arc<Counters>>,
    walked: &Walked,
    windows_skipped: usize,
    dead_letters_acknowledged: u64,
) -> ReplaySummary {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let per_source = counters
        .iter()
        .map(|(source, c)| {
            let summary = SourceSummary {
                records: load(&c.records),
                already_on_broker: load(&c.skipped),
                pages: load(&c.pages),
                retries: load(&c.retries),
                dead_lettered: load(&c.dead),
                windows: walked.windows_done.get(source).copied().unwrap_or(0),
            };
            (*source, summary)
        })
        .collect();
    ReplaySummary {
        per_source,
        windows_skipped,
        dead_letters_acknowledged,
        ..Default::default()
    }
}
