//! `studio-relay replay`: backfill a historic range from GraphQL into the same
//! topics, with the same schemas and event ids as the live relay (origin
//! `replay`).
//!
//! The range is split into windows; several windows are in flight at once
//! (`--concurrency`) while each window is read page by page, in order. A
//! window counts as done only when every one of its records is acknowledged by
//! the broker; then it is written to the checkpoint, so a rerun skips it.

mod checkpoint;
pub mod plan;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub use checkpoint::{Checkpoint, CheckpointError};
use plan::{parse_instant, split, Window};

use crate::config::{Config, EncodingFormat, SinkKind, TenantConfig};
use crate::model::{self, DataSource, Envelope, Origin};
use crate::ops::internal_events::{
    EventDeadLettered, EventSuppressed, ReplayDestinationsScanned, ReplayFinished,
};
use crate::ops::Metrics;
use crate::relay::{BatchTracker, Intake, MessageBuilder, Outgoing, PublisherSettings, RecentIds};
use crate::sink::Sink;
use crate::upstream::historic::{
    CursorGuard, GraphqlClient, HistoricError, OverviewFilter, RetryPolicy,
};

/// Arguments of `studio-relay replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Start of the range (inclusive): RFC 3339, a day (2025-10-01), now, today, yesterday, or -7d.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_FROM", conflicts_with = "last")]
    pub from: Option<String>,
    /// End of the range (exclusive); same forms as --from. Default: now,
    /// rounded down to a whole --window, so rerunning the same relative
    /// command (`--last 1d`, a restarted Job) plans the same windows and
    /// finds them in its checkpoint.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_TO")]
    pub to: Option<String>,
    /// Replay the last period up to now instead of --from, e.g. `7d`, `12h`.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_LAST", value_parser = humantime::parse_duration)]
    pub last: Option<Duration>,
    /// Sources to replay (comma separated). profile_live has no historic layer.
    #[arg(
        long,
        env = "STUDIO_RELAY_REPLAY_SOURCES",
        value_delimiter = ',',
        default_value = "calls,queues,agents,profile_history"
    )]
    pub sources: Vec<DataSource>,
    /// Only this tenant (by its configured name). Default: every tenant.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_TENANT")]
    pub tenant: Option<String>,
    /// Window size: the range is fetched one window at a time per source.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Records per GraphQL page (`first`).
    #[arg(long, env = "STUDIO_RELAY_REPLAY_PAGE_SIZE", default_value_t = 500)]
    pub page_size: u32,
    /// Windows fetched at once.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Checkpoint file: completed windows are recorded; a rerun skips them.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,
    /// Print the plan (windows, sources, estimated counts) and publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Publish every record of the range, even those already on the
    /// destination (by default they are skipped: see docs/operations.md).
    #[arg(long, env = "STUDIO_RELAY_REPLAY_REPUBLISH")]
    pub republish: bool,
    /// Publish to this sink instead of the configured one (`stdout` writes NDJSON).
    #[arg(long, value_enum)]
    pub sink: Option<SinkChoice>,
    /// Payload encoding instead of the configured one.
    #[arg(long, value_enum)]
    pub format: Option<FormatChoice>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SinkChoice {
    Stdout,
    Kafka,
    Nats,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatChoice {
    Json,
    Avro,
}

/// The §3.1 OverviewFilter fields besides the dates.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Stats-system agent ID.
    #[arg(long)]
    pub agent_id: Option<i64>,
    /// Agent ID shared with CAPI/PAPI.
    #[arg(long)]
    pub agent_account_id: Option<i64>,
    /// Stats-system queue ID.
    #[arg(long)]
    pub queue_id: Option<i64>,
    /// Queue ID shared with CAPI/PAPI.
    #[arg(long)]
    pub queue_account_id: Option<i64>,
    /// Stats-system IVR ID.
    #[arg(long)]
    pub ivr_id: Option<i64>,
    /// IVR ID shared with CAPI/PAPI.
    #[arg(long)]
    pub ivr_account_id: Option<i64>,
    /// Exact agent display name.
    #[arg(long)]
    pub agent_name: Option<String>,
    /// Exact queue display name.
    #[arg(long)]
    pub queue_name: Option<String>,
    /// Exact IVR display name.
    #[arg(long)]
    pub ivr_name: Option<String>,
    /// Exact call UUID.
    #[arg(long)]
    pub call_id: Option<String>,
}

impl FilterArgs {
    fn template(&self) -> OverviewFilter {
        OverviewFilter {
            agent_id: self.agent_id,
            agent_account_id: self.agent_account_id,
            queue_id: self.queue_id,
            queue_account_id: self.queue_account_id,
            ivr_id: self.ivr_id,
            ivr_account_id: self.ivr_account_id,
            agent_name: self.agent_name.clone(),
            queue_name: self.queue_name.clone(),
            ivr_name: self.ivr_name.clone(),
            call_id: self.call_id.clone(),
            ..Default::default()
        }
    }
}

/// Why a replay failed. [`ReplayError::exit_code`] maps each to the documented code.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("bad arguments: {0}")]
    BadArgs(String),
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
            ReplayError::BadArgs(_) => 2,
            ReplayError::Registry(e) => e.exit_code(),
            _ => 1,
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

#[derive(Default)]
pub(crate) struct Counters {
    pub records: AtomicU64,
    /// Records left out because their id was already published.
    pub skipped: AtomicU64,
    /// Records left out because this run published them already.
    pub repeats: AtomicU64,
    pages: AtomicU64,
    retries: AtomicU64,
    dead: AtomicU64,
}

/// Runs a replay. `shutdown` stops it between pages: in-flight publishes
/// finish, completed windows are checkpointed, and the summary says `interrupted`.
pub async fn run(
    args: ReplayArgs,
    mut config: Config,
    shutdown: CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let now = Utc::now();
    let to = match &args.to {
        Some(s) => parse_instant(s, now).map_err(ReplayError::BadArgs)?,
        None => plan::align_down(now, args.window),
    };
    let from = match (&args.from, args.last) {
        (Some(s), _) => parse_instant(s, now).map_err(ReplayError::BadArgs)?,
        (None, Some(d)) => {
            to - chrono::Duration::from_std(d).map_err(|e| ReplayError::BadArgs(e.to_string()))?
        }
        (None, None) => return Err(ReplayError::BadArgs("give --from (or --last)".into())),
    };
    if from >= to {
        return Err(ReplayError::BadArgs(format!(
            "--from {from} is not before --to {to}"
        )));
    }
    if args.page_size == 0 || args.concurrency == 0 {
        return Err(ReplayError::BadArgs(
            "--page-size and --concurrency must be above zero".into(),
        ));
    }
    if let Some(s) = args.sources.iter().find(|s| s.graphql_root().is_none()) {
        return Err(ReplayError::BadArgs(format!(
            "{s} has no historic layer (live only)"
        )));
    }
    if let Some(name) = &args.tenant {
        config.tenants.retain(|t| &t.name == name);
        if config.tenants.is_empty() {
            return Err(ReplayError::BadArgs(format!(
                "no tenant named {name:?} in the configuration"
            )));
        }
    }
    match args.sink {
        Some(SinkChoice::Stdout) => config.sink.kind = SinkKind::Stdout,
        Some(SinkChoice::Kafka) => config.sink.kind = SinkKind::Kafka,
        Some(SinkChoice::Nats) => config.sink.kind = SinkKind::Nats,
        None => {}
    }
    match args.format {
        Some(FormatChoice::Json) => config.encoding.format = EncodingFormat::Json,
        Some(FormatChoice::Avro) => config.encoding.format = EncodingFormat::Avro,
        None => {}
    }
    let template = args.filter.template();
    let clients: Vec<GraphqlClient> = config
        .tenants
        .iter()
        .map(|t| {
            GraphqlClient::new(
                &config.upstream.graphql_url,
                t.token.clone(),
                config.upstream.request_timeout,
                RetryPolicy::default(),
            )
        })
        .collect::<Result<_, _>>()?;
    let windows = split(from, to, args.window);

    if args.dry_run {
        print_plan(&args, &config, &clients, &template, from, to, windows.len()).await?;
        return Ok(ReplaySummary {
            elapsed: started.elapsed(),
            ..Default::default()
        });
    }

    let mut checkpoint = match &args.checkpoint {
        Some(p) => Checkpoint::open(p, &fingerprint(&args, &config, &template))?,
        None => Checkpoint::none(),
    };
    let mut units = Vec::new();
    let mut skipped = 0;
    for tenant in 0..config.tenants.len() {
        for &source in &args.sources {
            for w in &windows {
                let unit = Unit {
                    tenant,
                    source,
                    window: w.clone(),
                };
                if checkpoint.is_done(&unit.key(&config.tenants)) {
                    skipped += 1;
                } else {
                    units.push(unit);
                }
            }
        }
    }
    tracing::info!(
        from = %from, to = %to, windows = windows.len(), sources = args.sources.len(),
        tenants = config.tenants.len(), to_fetch = units.len(), already_done = skipped,
        "replay planned"
    );

    let metrics = Arc::new(Metrics::new());
    let sink: Arc<dyn Sink> = crate::sink::build(&config.sink, metrics.clone()).await?;
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
    .map_err(ReplayError::Registry)?;
    let builder = Arc::new(MessageBuilder::new(encoder, &config.sink));
    sink.prepare(&builder.all_destinations(
        config.tenants.iter().map(|t| t.name.as_str()),
        &args.sources,
    ))
    .await?;
    let on_broker =
        Arc::new(OnBroker::read(&args, &config, sink.as_ref(), &builder, from, &metrics).await);
    // Where each window's published ids are recorded (none for stdout).
    let store = sink.state_store(&config.relay.checkpoint_store).await?;
    let (tx, _outstanding, publisher) = crate::relay::publisher::spawn(
        sink.clone(),
        builder.clone(),
        metrics.clone(),
        PublisherSettings::default(),
        8192,
    );

    let counters: BTreeMap<DataSource, Arc<Counters>> = args
        .sources
        .iter()
        .map(|s| (*s, Arc::new(Counters::default())))
        .collect();
    let total_units = units.len();
    let done_units = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress(
        total_units,
        done_units.clone(),
        counters.clone(),
        shutdown.clone(),
    );

    let tenants = config.tenants.clone();
    let stop = shutdown.child_token();
    // Everything the window futures need, owned, so dropping the stream
    // releases its publisher sender.
    let (window_tx, w_clients, w_tenants, w_counters, w_template, w_builder, w_metrics, w_stop) = (
        Intake::direct(tx.clone()),
        clients.clone(),
        tenants.clone(),
        counters.clone(),
        template.clone(),
        builder.clone(),
        metrics.clone(),
        stop.clone(),
    );
    let page_size = args.page_size;
    // Windows overlap by a second (up to the range's end): see `window_within`.
    let range_end = to;
    let (w_on_broker, w_store) = (on_broker.clone(), store.clone());
    let mut results = Box::pin(
        futures::stream::iter(units.into_iter().map(move |unit| {
            let client = w_clients[unit.tenant].clone();
            let tenant: Arc<str> = Arc::from(w_tenants[unit.tenant].name.as_str());
            let c = w_counters[&unit.source].clone();
            let filter = OverviewFilter::window_within(
                &w_template,
                unit.window.from,
                unit.window.to,
                range_end,
            );
            let (tx, builder, metrics, stop, on_broker, store) = (
                window_tx.clone(),
                w_builder.clone(),
                w_metrics.clone(),
                w_stop.clone(),
                w_on_broker.clone(),
                w_store.clone(),
            );
            async move {
                let record = PublishedRecord {
                    store: store.as_deref(),
                    key: format!(
                        "replay/{}/{}",
                        builder.destination(unit.source, &tenant),
                        unit.window.key()
                    ),
                };
                let r = async {
                    let prior = record.load().await?;
                    let covered = std::sync::Mutex::new(Vec::new());
                    let skip = Skip {
                        event_ids: if on_broker.republish {
                            Vec::new()
                        } else {
                            vec![&on_broker.event_ids, &prior]
                        },
                        present_keys: Some(&on_broker.match_keys),
                        reason: "already_on_broker",
                        claimed: Some(&on_broker.claimed),
                        covered: Some(&covered),
                        ..Skip::default()
                    };
                    let outcome = replay_window(
                        &client,
                        tenant.clone(),
                        unit.source,
                        &filter,
                        page_size,
                        &tx,
                        &builder,
                        &metrics,
                        &c,
                        &stop,
                        Origin::Replay,
                        &skip,
                    )
                    .await?;
                    if matches!(outcome, WindowOutcome::Done) {
                        let covered = covered.into_inner().unwrap_or_else(|e| e.into_inner());
                        record.save(&prior, &covered).await?;
                    }
                    Ok::<_, WindowError>(outcome)
                }
                .await;
                (unit, r)
            }
        }))
        .buffer_unordered(args.concurrency),
    );

    let mut failures: Vec<String> = Vec::new();
    let mut fatal: Option<ReplayError> = None;
    let mut windows_done: BTreeMap<DataSource, u64> = BTreeMap::new();
    while let Some((unit, result)) = results.next().await {
        let key = unit.key(&tenants);
        match result {
            Ok(WindowOutcome::Done) => {
                checkpoint.mark_done(key)?;
                *windows_done.entry(unit.source).or_default() += 1;
                metrics
                    .replay_windows_completed
                    .with_label_values(&[unit.source.as_str()])
                    .inc();
                done_units.fetch_add(1, Ordering::Relaxed);
            }
            Ok(WindowOutcome::Interrupted) => {}
            Err(WindowError::Historic(
                e @ (HistoricError::Unauthorized { .. } | HistoricError::GraphQl { .. }),
            )) => {
                // Every other window would fail the same way: stop now.
                stop.cancel();
                fatal.get_or_insert(ReplayError::Historic(e));
            }
            Err(e) => {
                tracing::error!(window = %key, error = %e, "window failed; it is not checkpointed and will be retried on rerun");
                failures.push(format!("{key}: {e}"));
            }
        }
    }
    // Closing every sender lets the publisher finish once all is settled.
    drop(results);
    drop(tx);
    // Everything fetched is handed to the publisher; let it settle.
    let drain = Duration::from_secs(60);
    let publisher_stats = tokio::time::timeout(drain, publisher)
        .await
        .map_err(|_| ReplayError::DrainTimeout(drain))?;
    let _ = sink.flush(Duration::from_secs(30)).await;
    progress.abort();
    let publisher_stats = publisher_stats.unwrap_or_default();

    let mut summary = ReplaySummary {
        windows_skipped: skipped,
        elapsed: started.elapsed(),
        interrupted: shutdown.is_cancelled(),
        ..Default::default()
    };
    for (source, c) in &counters {
        summary.per_source.insert(
            *source,
            SourceSummary {
                records: c.records.load(Ordering::Relaxed),
                already_on_broker: c.skipped.load(Ordering::Relaxed),
                pages: c.pages.load(Ordering::Relaxed),
                retries: c.retries.load(Ordering::Relaxed),
                dead_lettered: c.dead.load(Ordering::Relaxed),
                windows: windows_done.get(source).copied().unwrap_or(0),
            },
        );
    }
    ReplayFinished {
        published: summary.records(),
        already_on_broker: summary.already_on_broker(),
        windows_skipped: summary.windows_skipped,
        interrupted: summary.interrupted,
    }
    .emit(&metrics);
    print_summary(&summary, publisher_stats.dead_lettered);
    if let Some(e) = fatal {
        return Err(e);
    }
    if !failures.is_empty() {
        return Err(ReplayError::WindowsFailed {
            failed: failures.len(),
            first: failures[0].clone(),
        });
    }
    Ok(summary)
}

pub(crate) enum WindowOutcome {
    Done,
    Interrupted,
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

/// What is on the destinations already, read from the broker before the
/// first window: the messages published since the range's start (broker
/// time). No message about a record reaches the broker before the record
/// happened, so this covers live, backfill and earlier replays of the
/// range, up to `relay.recent_ids` messages read within [`SCAN_TIMEOUT`].
struct OnBroker {
    /// Event ids found.
    event_ids: RecentIds,
    /// Match keys found.
    match_keys: RecentIds,
    /// Event ids this run took (windows overlap where a record spans
    /// their boundary).
    claimed: RecentIds,
    republish: bool,
}

/// How long reading what is on the destinations may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Broker time read before the range's start: the broker's clock (or the
/// publisher's) may be a little off the upstream's.
const SCAN_CLOCK_SLACK: Duration = Duration::from_secs(600);

impl OnBroker {
    async fn read(
        args: &ReplayArgs,
        config: &Config,
        sink: &dyn Sink,
        builder: &MessageBuilder,
        from: DateTime<Utc>,
        metrics: &Metrics,
    ) -> OnBroker {
        let capacity = config.relay.recent_ids;
        let known = OnBroker {
            event_ids: RecentIds::new(capacity),
            match_keys: RecentIds::new(capacity),
            claimed: RecentIds::new(capacity),
            republish: args.republish,
        };
        if args.republish {
            return known;
        }
        let destinations: Vec<String> = config
            .tenants
            .iter()
            .flat_map(|t| {
                args.sources
                    .iter()
                    .map(|s| builder.destination(*s, &t.name))
            })
            .collect();
        let since_ms = from.timestamp_millis() - SCAN_CLOCK_SLACK.as_millis() as i64;
        let started = Instant::now();
        let scan = sink
            .recent_event_ids(&destinations, since_ms, capacity, SCAN_TIMEOUT)
            .await;
        let (found, complete, error) = match &scan {
            Ok(scan) => {
                for id in &scan.ids {
                    known.event_ids.insert(id);
                }
                for key in &scan.match_keys {
                    known.match_keys.insert(key);
                }
                (
                    scan.ids.len(),
                    scan.complete && scan.ids.len() < capacity,
                    None,
                )
            }
            Err(e) => (0, false, Some(e.to_string())),
        };
        ReplayDestinationsScanned {
            sink: sink.name(),
            since_ms,
            found,
            complete,
            error: error.as_deref(),
            elapsed: started.elapsed(),
        }
        .emit(metrics);
        known
    }
}

/// Replay's durable record of the event ids it published into one
/// destination for one window, in the broker's state store (NATS KV bucket
/// or compacted Kafka topic `relay.checkpoint_store`): a rerun of the
/// window skips them however long ago they were published, on Kafka (no
/// dedup) and on NATS past the duplicate window alike. The value is the
/// ids as 16-byte binary, sorted.
struct PublishedRecord<'a> {
    store: Option<&'a dyn crate::sink::StateStore>,
    key: String,
}

impl PublishedRecord<'_> {
    /// The ids recorded for this window.
    async fn load(&self) -> Result<RecentIds, crate::sink::SinkError> {
        let ids = RecentIds::new(usize::MAX);
        let Some(store) = self.store else {
            return Ok(ids);
        };
        if let Some(value) = store.get(&self.key).await? {
            for id in value.chunks_exact(16) {
                ids.insert(&hex::encode(id));
            }
        }
        Ok(ids)
    }

    /// Records `prior` and `covered` together, when `covered` adds any.
    async fn save(
        &self,
        prior: &RecentIds,
        covered: &[String],
    ) -> Result<(), crate::sink::SinkError> {
        let Some(store) = self.store else {
            return Ok(());
        };
        if covered.iter().all(|id| prior.contains(id)) {
            return Ok(());
        }
        let mut all: Vec<[u8; 16]> = prior
            .ids()
            .into_iter()
            .chain(covered.iter().filter_map(|id| {
                let mut b = [0u8; 16];
                hex::decode_to_slice(id, &mut b).ok().map(|()| b)
            }))
            .collect();
        all.sort_unstable();
        all.dedup();
        store.put(&self.key, Bytes::from(all.concat())).await
    }
}

/// What a window walk leaves out as already published, and why.
#[derive(Default)]
pub(crate) struct Skip<'a> {
    /// Match keys already published: a record's key is claimed here, and a
    /// record whose key was claimed already is left out.
    pub match_keys: Option<&'a RecentIds>,
    /// Event ids already on the destination: left out.
    pub event_ids: Vec<&'a RecentIds>,
    /// Match keys already on the destination: left out (not claimed).
    pub present_keys: Option<&'a RecentIds>,
    /// The suppression reason counted for what is left out.
    pub reason: &'static str,
    /// Event ids this run took already: a record two windows both return
    /// is published once (counted as `repeat`).
    pub claimed: Option<&'a RecentIds>,
    /// Collects the event ids of every record of the window, published now
    /// or found published (replay's record of what is on the destination).
    pub covered: Option<&'a std::sync::Mutex<Vec<String>>>,
}

impl Skip<'_> {
    /// Why `env` is left out, if it is; claims its ids when it is not.
    fn already_published(&self, env: &Envelope) -> Option<&'static str> {
        if self.claimed.is_some_and(|ids| !ids.insert(&env.event_id)) {
            return Some("repeat");
        }
        let present = self.event_ids.iter().any(|ids| ids.contains(&env.event_id))
            || self
                .present_keys
                .is_some_and(|keys| keys.contains(&env.match_key))
            || self
                .match_keys
                .is_some_and(|keys| !keys.insert(&env.match_key));
        present.then_some(self.reason)
    }
}

/// Walks one window's pages in order and hands each record to `tx` with
/// `origin`; records `skip` knows as published already are left out.
/// Shared by `replay` and the relay's gap backfill.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn replay_window(
    client: &GraphqlClient,
    tenant: Arc<str>,
    source: DataSource,
    filter: &OverviewFilter,
    page_size: u32,
    tx: &Intake,
    builder: &MessageBuilder,
    metrics: &Metrics,
    counters: &Counters,
    stop: &CancellationToken,
    origin: Origin,
    skip: &Skip<'_>,
) -> Result<WindowOutcome, HistoricError> {
    let root = source
        .graphql_root()
        .expect("only historic sources are planned");
    let selection = model::graphql_selection(source);
    let tracker = BatchTracker::new();
    let mut guard = CursorGuard::default();
    let mut after: Option<String> = None;
    loop {
        if stop.is_cancelled() {
            tracker.wait().await;
            return Ok(WindowOutcome::Interrupted);
        }
        let page = client
            .fetch_page(root, &selection, filter, page_size, after.as_deref(), |e, delay| {
                counters.retries.fetch_add(1, Ordering::Relaxed);
                metrics.replay_retries.with_label_values(&[source.as_str()]).inc();
                tracing::warn!(source = source.as_str(), error = %e, retry_in_ms = delay.as_millis() as u64, "GraphQL request failed, retrying");
            })
            .await?;
        counters.pages.fetch_add(1, Ordering::Relaxed);
        metrics
            .replay_pages
            .with_label_values(&[source.as_str()])
            .inc();
        let received_at_ms = Utc::now().timestamp_millis();
        for raw in &page.data {
            let outgoing = match model::normalize_historic(source, raw) {
                Ok(record) => {
                    let env = Envelope::new(tenant.to_string(), origin, received_at_ms, record);
                    if let Some(p) = skip.covered {
                        p.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(env.event_id.clone());
                    }
                    // Claim the match key: a record the live stream (or an
                    // earlier pass) already took is not published again.
                    if let Some(reason) = skip.already_published(&env) {
                        let counter = match reason {
                            "repeat" => &counters.repeats,
                            _ => &counters.skipped,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        EventSuppressed {
                            tenant: &tenant,
                            source: source.as_str(),
                            origin: origin.as_str(),
                            reason,
                        }
                        .emit(metrics);
                        continue;
                    }
                    match builder.build(&env) {
                        Ok(message) => {
                            tracker.add(1);
                            counters.records.fetch_add(1, Ordering::Relaxed);
                            match origin {
                                Origin::Backfill => metrics
                                    .backfill_records
                                    .with_label_values(&[&*tenant, source.as_str()])
                                    .inc(),
                                _ => metrics
                                    .replay_records
                                    .with_label_values(&[source.as_str()])
                                    .inc(),
                            }
                            Outgoing {
                                message,
                                tenant: tenant.clone(),
                                source,
                                origin: origin.as_str(),
                                stages: None,
                                tracker: Some(tracker.clone()),
                            }
                        }
                        Err(e) => dead_letter(
                            builder,
                            metrics,
                            counters,
                            &tenant,
                            source,
                            "encode",
                            &e.to_string(),
                            raw,
                        ),
                    }
                }
                Err(e) => dead_letter(
                    builder,
                    metrics,
                    counters,
                    &tenant,
                    source,
                    e.reason(),
                    &e.to_string(),
                    raw,
                ),
            };
            if tx.send(outgoing).await.is_err() {
                return Ok(WindowOutcome::Interrupted);
            }
        }
        match guard.next(&page)? {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    let rejected = tracker.wait().await;
    if rejected > 0 {
        tracing::warn!(
            source = source.as_str(),
            rejected,
            "broker rejected records of this window; they are in the dead-letter destination"
        );
    }
    Ok(WindowOutcome::Done)
}

#[allow(clippy::too_many_arguments)]
fn dead_letter(
    builder: &MessageBuilder,
    metrics: &Metrics,
    counters: &Counters,
    tenant: &Arc<str>,
    source: DataSource,
    reason: &'static str,
    error: &str,
    raw: &serde_json::Value,
) -> Outgoing {
    counters.dead.fetch_add(1, Ordering::Relaxed);
    EventDeadLettered {
        tenant,
        source: source.as_str(),
        reason,
        error,
    }
    .emit(metrics);
    let bytes = Bytes::from(serde_json::to_vec(raw).unwrap_or_default());
    Outgoing {
        message: builder.dead_letter(
            tenant,
            source,
            reason,
            error,
            Utc::now().timestamp_millis(),
            bytes,
        ),
        tenant: tenant.clone(),
        source,
        origin: "deadletter",
        stages: None,
        tracker: None,
    }
}

/// Identifies what a checkpoint is valid for: sources, tenants, filter, window size.
fn fingerprint(args: &ReplayArgs, config: &Config, template: &OverviewFilter) -> String {
    let mut h = Sha256::new();
    let mut sources: Vec<&str> = args.sources.iter().map(|s| s.as_str()).collect();
    sources.sort();
    h.update(sources.join(",").as_bytes());
    for t in &config.tenants {
        h.update(t.name.as_bytes());
    }
    h.update(serde_json::to_vec(template).unwrap_or_default());
    h.update(args.window.as_millis().to_le_bytes());
    hex::encode(h.finalize())[..16].to_string()
}

async fn print_plan(
    args: &ReplayArgs,
    config: &Config,
    clients: &[GraphqlClient],
    template: &OverviewFilter,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    windows: usize,
) -> Result<(), ReplayError> {
    println!("replay plan (dry run, nothing is published)");
    println!("  range:   {from} .. {to}");
    println!(
        "  windows: {windows} per source ({:?} each), page size {}, concurrency {}",
        args.window, args.page_size, args.concurrency
    );
    let whole = OverviewFilter::window(template, from, to);
    for (i, tenant) in config.tenants.iter().enumerate() {
        for &source in &args.sources {
            let root = source.graphql_root().unwrap_or_default();
            let page = clients[i]
                .fetch_page(root, "{ __typename }", &whole, 1, None, |_, _| {})
                .await?;
            let estimate = page
                .total_count
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unknown".into());
            let note = if template.is_unfiltered() {
                ""
            } else {
                " (upper bound: totalCount ignores non-date filters)"
            };
            println!(
                "  {:<16} tenant {:<12} ~{estimate} records{note}",
                source.as_str(),
                tenant.name
            );
        }
    }
    Ok(())
}

fn spawn_progress(
    total: usize,
    done: Arc<AtomicU64>,
    counters: BTreeMap<DataSource, Arc<Counters>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let started = Instant::now();
        let period = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let d = done.load(Ordering::Relaxed) as usize;
            let records: u64 = counters
                .values()
                .map(|c| c.records.load(Ordering::Relaxed))
                .sum();
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = records as f64 / secs;
            let eta = if d > 0 && d < total {
                Some(secs * (total - d) as f64 / d as f64)
            } else {
                None
            };
            let eta = eta
                .map(|s| humantime::format_duration(Duration::from_secs(s as u64)).to_string())
                .unwrap_or_else(|| "-".into());
            if tty {
                eprint!(
                    "\rreplay: windows {d}/{total}  records {records}  {rate:.0}/s  eta {eta}   "
                );
            } else {
                tracing::info!(windows_done = d, windows_total = total, records, rate = rate as u64, eta = %eta, "replay progress");
            }
        }
    })
}

fn print_summary(s: &ReplaySummary, rejected: u64) {
    let secs = s.elapsed.as_secs_f64().max(0.001);
    eprintln!();
    eprintln!(
        "replay summary{}:",
        if s.interrupted {
            " (interrupted; checkpoint written)"
        } else {
            ""
        }
    );
    eprintln!(
        "  {:<16} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10}",
        "source", "records", "present", "pages", "retries", "windows", "records/s"
    );
    for (source, x) in &s.per_source {
        eprintln!(
            "  {:<16} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10.0}",
            source.as_str(),
            x.records,
            x.already_on_broker,
            x.pages,
            x.retries,
            x.windows,
            x.records as f64 / secs
        );
    }
    eprintln!(
        "  total {} records in {:.1}s ({:.0}/s); {} already on the destination, not published again; {} window(s) skipped from checkpoint; {} dead letter(s)",
        s.records(), secs, s.records() as f64 / secs, s.already_on_broker(), s.windows_skipped,
        s.per_source.values().map(|x| x.dead_lettered).sum::<u64>() + rejected
    );
}
