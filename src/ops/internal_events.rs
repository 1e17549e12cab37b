//! Every log line and metric update of the relay, as typed events (Vector's
//! `internal_events` pattern). Names are noun + past verb. A state change logs
//! one line; per-event happenings only touch metrics (no log per event).

use std::collections::HashMap;
use std::time::Duration;

use prometheus::{Gauge, Histogram, IntCounter};

use super::health::TenantState;
use super::Metrics;

// ── The publishing path, the relay's and replay's wiring, the spool ──────

/// The ops listener is up.
pub struct OpsListening {
    pub addr: std::net::SocketAddr,
}

impl OpsListening {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(addr = %self.addr, "ops endpoints listening (/metrics, /healthz, /readyz)");
    }
}

/// The relay is running: sockets spawned.
pub struct RelayStarted<'a> {
    pub tenants: usize,
    pub sources: usize,
    pub sink: &'a str,
    pub encoding: &'a str,
}

impl RelayStarted<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(
            tenants = self.tenants,
            sources = self.sources,
            sink = self.sink,
            encoding = %self.encoding,
            "relay started"
        );
    }
}

/// Shutdown began: sockets stop, what is in flight is published.
pub struct RelayDraining {
    pub deadline: Duration,
}

impl RelayDraining {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(deadline = ?self.deadline, "draining: sockets stopped, publishing what is in flight");
    }
}

/// The sink's last flush at shutdown failed.
pub struct FinalFlushFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl FinalFlushFailed<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::error!(error = %self.error, "final flush failed");
    }
}

/// The relay stopped after draining.
pub struct RelayStopped {
    pub published: u64,
    pub dead_lettered: u64,
}

impl RelayStopped {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(
            published = self.published,
            dead_lettered = self.dead_lettered,
            "relay stopped"
        );
    }
}

/// Loading the restart checkpoint failed in a way worth another try (at
/// start-up, before metrics are served).
pub struct CheckpointLoadRetried<'a> {
    pub error: &'a dyn std::fmt::Display,
    pub attempt: u32,
}

impl CheckpointLoadRetried<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, attempt = self.attempt, "cannot load the restart checkpoint; trying again");
    }
}

/// A tenant gets no gap backfill: its GraphQL client could not be built.
pub struct BackfillClientFailed<'a> {
    pub tenant: &'a str,
    pub error: &'a str,
}

impl BackfillClientFailed<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::error!(
            tenant = %self.tenant,
            error = %self.error,
            "gap backfill disabled for this tenant: GraphQL client failed"
        );
    }
}

/// A GraphQL page request failed and is retried (replay and backfill).
pub struct HistoricRequestRetried<'a> {
    pub source: &'a str,
    pub error: &'a dyn std::fmt::Display,
    pub retry_in: Duration,
}

impl HistoricRequestRetried<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.replay_retries.with_label_values(&[self.source]).inc();
        tracing::warn!(
            source = self.source,
            error = %self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "GraphQL request failed, retrying"
        );
    }
}

/// A GraphQL page was read (replay and backfill; counts only).
pub struct HistoricPageFetched<'a> {
    pub source: &'a str,
}

impl HistoricPageFetched<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.replay_pages.with_label_values(&[self.source]).inc();
    }
}

/// A historic record was handed to the publisher (per record: counts only).
pub struct HistoricRecordQueued<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub origin: crate::model::Origin,
}

impl HistoricRecordQueued<'_> {
    pub fn emit(&self, m: &Metrics) {
        match self.origin {
            crate::model::Origin::Backfill => m
                .backfill_records
                .with_label_values(&[&m.event_tenant(self.tenant), self.source])
                .inc(),
            _ => m.replay_records.with_label_values(&[self.source]).inc(),
        }
    }
}

/// The broker refused records of a historic window; they were dead-lettered.
pub struct WindowRecordsRejected<'a> {
    pub source: &'a str,
    pub rejected: u64,
}

impl WindowRecordsRejected<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::warn!(
            source = self.source,
            rejected = self.rejected,
            "broker rejected records of this window; they are in the dead-letter destination"
        );
    }
}

/// `replay` knows its windows.
pub struct ReplayPlanned {
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    pub windows: usize,
    pub sources: usize,
    pub tenants: usize,
    pub to_fetch: usize,
    pub already_done: usize,
    /// Windows to fetch per source (the `studio_relay_replay_windows` gauge).
    pub to_fetch_by_source: Vec<(&'static str, usize)>,
}

impl ReplayPlanned {
    pub fn emit(&self, m: &Metrics) {
        for (source, n) in &self.to_fetch_by_source {
            m.replay_windows_total
                .with_label_values(&[source])
                .set(*n as i64);
        }
        tracing::info!(
            from = %self.from, to = %self.to, windows = self.windows, sources = self.sources,
            tenants = self.tenants, to_fetch = self.to_fetch, already_done = self.already_done,
            "replay planned"
        );
    }
}

/// A replay window is published and checkpointed (counts only).
pub struct ReplayWindowCompleted<'a> {
    pub source: &'a str,
}

impl ReplayWindowCompleted<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.replay_windows_completed
            .with_label_values(&[self.source])
            .inc();
    }
}

/// A replay window failed; a rerun retries it.
pub struct ReplayWindowFailed<'a> {
    pub window: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl ReplayWindowFailed<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::error!(window = %self.window, error = %self.error, "window failed; it is not checkpointed and will be retried on rerun");
    }
}

/// How far a replay is (the command line's progress, when stderr is not a
/// terminal).
pub struct ReplayProgressReported<'a> {
    pub windows_done: usize,
    pub windows_total: usize,
    pub records: u64,
    pub rate: u64,
    pub eta: &'a str,
}

impl ReplayProgressReported<'_> {
    pub fn emit(&self) {
        tracing::info!(
            windows_done = self.windows_done,
            windows_total = self.windows_total,
            records = self.records,
            rate = self.rate,
            eta = %self.eta,
            "replay progress"
        );
    }
}

/// Messages waiting in the publisher's queue (a gauge).
pub struct PublishQueueDepth {
    pub depth: i64,
}

impl PublishQueueDepth {
    pub fn emit(&self, m: &Metrics) {
        m.queue_depth.set(self.depth);
    }
}

/// Messages awaiting their acknowledgement (a gauge).
pub struct PublishesInFlight {
    pub count: i64,
}

impl PublishesInFlight {
    pub fn emit(&self, m: &Metrics) {
        m.inflight_messages.set(self.count);
    }
}

/// The spool found what a previous run left, and drains it first.
pub struct SpoolLeftOver {
    pub segments: usize,
    pub bytes: u64,
}

impl SpoolLeftOver {
    pub fn emit(&self, _m: &Metrics) {
        tracing::warn!(
            segments = self.segments,
            bytes = self.bytes,
            "spool: draining what a previous run left, before anything new"
        );
    }
}

/// Bytes in the spool (a gauge).
pub struct SpoolSizeChanged {
    pub bytes: u64,
}

impl SpoolSizeChanged {
    pub fn emit(&self, m: &Metrics) {
        m.spool_bytes.set(self.bytes as i64);
    }
}

/// The spool could not write; the queue applies back-pressure instead.
pub struct SpoolWriteFailed<'a> {
    /// `create` (a new segment) or `write`.
    pub step: &'static str,
    pub error: &'a dyn std::fmt::Display,
}

impl SpoolWriteFailed<'_> {
    pub fn emit(&self, _m: &Metrics) {
        match self.step {
            "create" => {
                tracing::error!(error = %self.error, "spool: cannot create a segment; back-pressure instead")
            }
            _ => tracing::error!(error = %self.error, "spool: write failed; back-pressure instead"),
        }
    }
}

/// A spooled record could not be read back (torn by a crash, or corrupt).
pub struct SpoolRecordSkipped<'a> {
    pub segment: &'a std::path::Path,
    /// What was wrong with it.
    pub what: &'a str,
}

impl SpoolRecordSkipped<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.spool_corrupt_records.with_label_values::<&str>(&[]).inc();
        tracing::error!(segment = %self.segment.display(), "spool: {} skipped", self.what);
    }
}

/// A socket task stopped (shutdown).
pub struct WebSocketStopped<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
}

impl WebSocketStopped<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.socket_connected
            .with_label_values(&[self.tenant, self.source])
            .set(0);
    }
}

/// A tenant appeared while the relay runs (a token file added): its
/// sockets start.
pub struct TenantStarted<'a> {
    pub tenant: &'a str,
    pub sources: usize,
}

impl TenantStarted<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(
            tenant = self.tenant,
            sources = self.sources,
            "tenant added: its sockets start"
        );
        m.tenant_changes.with_label_values(&["added"]).inc();
    }
}

/// A tenant added while the relay runs: its destinations could not be
/// prepared on the sink (its events wait in the publisher's retries).
pub struct TenantDestinationsFailed<'a> {
    pub tenant: &'a str,
    pub error: &'a str,
}

impl TenantDestinationsFailed<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::error!(
            tenant = self.tenant,
            error = self.error,
            "tenant added: its topics could not be prepared on the broker"
        );
    }
}

/// A tenant's token (or its sources) changed while the relay runs: its
/// sockets reconnect with the new one; no other tenant's are touched.
pub struct TenantTokenRotated<'a> {
    pub tenant: &'a str,
}

impl TenantTokenRotated<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(
            tenant = self.tenant,
            "tenant's token changed: its sockets reconnect with the new one"
        );
        m.tenant_changes.with_label_values(&["rotated"]).inc();
    }
}

/// A tenant went away while the relay runs (its token file removed): its
/// sockets stopped, its state and series are gone.
pub struct TenantRemoved<'a> {
    pub tenant: &'a str,
}

impl TenantRemoved<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(tenant = self.tenant, "tenant removed: its sockets stopped");
        m.tenant_changes.with_label_values(&["removed"]).inc();
    }
}

/// This replica joined its deployment's group (`ha.enabled`).
pub struct GroupJoined<'a> {
    pub member: &'a str,
    pub leases: &'a str,
    pub shards: u32,
}

impl GroupJoined<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(
            member = self.member,
            leases = self.leases,
            shards = self.shards,
            "joined the replicas' group: tenants run where their shard's lease is"
        );
    }
}

/// How many tenants this replica knows and runs, after a change (only
/// updates gauges).
pub struct TenantsCounted {
    pub known: usize,
    pub running: usize,
}

impl TenantsCounted {
    pub fn emit(&self, m: &Metrics) {
        m.known_tenants.set(self.known as i64);
        m.owned_tenants.set(self.running as i64);
    }
}

/// Shards became this replica's: their tenants are taken over.
pub struct TenantsAcquired<'a> {
    pub shards: &'a [u32],
    pub tenants: &'a [&'a str],
}

impl TenantsAcquired<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(
            shards = ?self.shards,
            tenants = ?self.tenants,
            "shards acquired: their tenants resume from their checkpoints here"
        );
        m.owned_shards.add(self.shards.len() as i64);
        m.tenant_changes
            .with_label_values(&["acquired"])
            .inc_by(self.tenants.len() as u64);
    }
}

/// Shards went to another replica: their tenants stopped here.
pub struct TenantsReleased<'a> {
    pub shards: &'a [u32],
    pub tenants: &'a [&'a str],
    /// Whether their events in flight were acknowledged within
    /// `ha.handoff_timeout`.
    pub settled: bool,
}

impl TenantsReleased<'_> {
    pub fn emit(&self, m: &Metrics) {
        if self.settled {
            tracing::info!(
                shards = ?self.shards,
                tenants = ?self.tenants,
                "shards released: their tenants stopped here, their events acknowledged"
            );
        } else {
            tracing::warn!(
                shards = ?self.shards,
                tenants = ?self.tenants,
                "shards released after ha.handoff_timeout with events still unacknowledged: the next owner may publish some of them again"
            );
        }
        m.owned_shards.sub(self.shards.len() as i64);
        m.tenant_changes
            .with_label_values(&["released"])
            .inc_by(self.tenants.len() as u64);
    }
}

/// The leases' broker could not be read or written (logged at the first
/// failure after a success).
pub struct LeaseStoreFailed<'a> {
    pub error: &'a str,
}

impl LeaseStoreFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            error = self.error,
            "leases: the broker refused or timed out"
        );
    }
}

/// Leases found gone (another member holds them, or they were not
/// refreshed in time): their tenants stop at once.
pub struct LeaseLost<'a> {
    pub shards: usize,
    pub error: &'a str,
}

impl LeaseLost<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            shards = self.shards,
            error = self.error,
            "leases lost: their tenants stop here"
        );
    }
}

/// A tenant taken over could not load its checkpoint: it starts from its
/// live data alone (what its previous owner had not acknowledged is
/// missing unless a replay covers it).
pub struct TenantCheckpointLoadFailed<'a> {
    pub tenant: &'a str,
    pub error: &'a str,
}

impl TenantCheckpointLoadFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(
            tenant = self.tenant,
            error = self.error,
            "tenant taken over without its checkpoint: the time since its previous owner's checkpoint is not backfilled"
        );
    }
}

/// A file in the token directory cannot be a tenant (reported once).
pub struct TokenFileSkipped<'a> {
    pub file: &'a str,
    pub reason: &'static str,
}

impl TokenFileSkipped<'_> {
    pub fn emit(&self, m: &Metrics) {
        let why = match self.reason {
            "bad_name" => "its name is not a tenant name (letters, digits, `-`, `_`)",
            "reserved" => "the config file has a tenant of this name",
            "not_a_file" => "it is not a file",
            "empty" => "it is empty",
            _ => "it cannot be read",
        };
        tracing::warn!(
            file = self.file,
            reason = self.reason,
            "token directory: file skipped, {why}"
        );
        m.token_dir_problems.with_label_values(&[self.reason]).inc();
    }
}

/// The token directory cannot be read (reported once until it can again);
/// its tenants keep running as they were.
pub struct TokenDirReadFailed<'a> {
    pub path: &'a str,
    pub error: &'a str,
}

impl TokenDirReadFailed<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::error!(
            path = self.path,
            error = self.error,
            "token directory unreadable: tenants unchanged until it can be read"
        );
        m.token_dir_problems
            .with_label_values(&["unreadable_dir"])
            .inc();
    }
}

/// A tenant's state (the worst of its sockets') changed: a refused token or
/// an invalid path degrades that tenant only, and says so here.
pub struct TenantStateChanged<'a> {
    pub tenant: &'a str,
    pub state: TenantState,
}

impl TenantStateChanged<'_> {
    pub fn emit(&self, m: &Metrics) {
        let state = self.state.as_str();
        match self.state {
            TenantState::Unauthorized | TenantState::InvalidPath => {
                tracing::warn!(tenant = self.tenant, state, "tenant degraded")
            }
            _ => tracing::info!(tenant = self.tenant, state, "tenant state changed"),
        }
        for s in TenantState::ALL {
            m.tenant_state
                .with_label_values(&[self.tenant, s.as_str()])
                .set(i64::from(s == self.state));
        }
    }
}

// ── Sockets, frames, publishing, sinks ───────────────────────────────────

pub struct WebSocketConnectionEstablished<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub attempt: u32,
}

impl WebSocketConnectionEstablished<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(
            tenant = self.tenant,
            source = self.source,
            attempt = self.attempt,
            "websocket connected"
        );
        m.socket_connected
            .with_label_values(&[self.tenant, self.source])
            .set(1);
    }
}

pub struct WebSocketConnectionLost<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    /// Low-cardinality reason: `closed`, `network`, `pong_timeout`, `http_5xx`, `unauthorized`, `invalid_path`, `handshake`.
    pub reason: &'static str,
    pub detail: &'a str,
}

impl WebSocketConnectionLost<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::warn!(
            tenant = self.tenant,
            source = self.source,
            reason = self.reason,
            detail = self.detail,
            "websocket disconnected"
        );
        m.socket_connected
            .with_label_values(&[self.tenant, self.source])
            .set(0);
        m.reconnects
            .with_label_values(&[self.tenant, self.source, self.reason])
            .inc();
    }
}

pub struct WebSocketBackoffScheduled<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub attempt: u32,
    pub delay: Duration,
}

impl WebSocketBackoffScheduled<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(
            tenant = self.tenant,
            source = self.source,
            attempt = self.attempt,
            delay_ms = self.delay.as_millis() as u64,
            "websocket reconnect scheduled"
        );
    }
}

pub struct WebSocketUnauthorized<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub retry_in: Duration,
}

impl WebSocketUnauthorized<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::error!(
            tenant = self.tenant,
            source = self.source,
            retry_in_s = self.retry_in.as_secs(),
            "Telavox refused the Statistics Token (HTTP 401): it is missing, expired or revoked; \
             create a new one under Settings > My Account > Integration > Manage Token"
        );
        m.socket_connected
            .with_label_values(&[self.tenant, self.source])
            .set(0);
        m.reconnects
            .with_label_values(&[self.tenant, self.source, "unauthorized"])
            .inc();
    }
}

pub struct WebSocketPathRejected<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub url: &'a str,
    pub retry_in: Duration,
}

impl WebSocketPathRejected<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::error!(
            tenant = self.tenant,
            source = self.source,
            url = self.url,
            retry_in_s = self.retry_in.as_secs(),
            "Telavox answered `Invalid path.`: this data source does not exist at the configured upstream.live_url; \
             check upstream.live_url and upstream.sources (other sources are unaffected)"
        );
        m.socket_connected
            .with_label_values(&[self.tenant, self.source])
            .set(0);
        m.reconnects
            .with_label_values(&[self.tenant, self.source, "invalid_path"])
            .inc();
    }
}

pub struct FrameReceived<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
}

impl FrameReceived<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.frames_received
            .with_label_values(&[&m.event_tenant(self.tenant), self.source])
            .inc();
        m.mark_event(self.tenant, self.source);
    }
}

/// [`FrameReceived`] for one socket, its metric children looked up once:
/// a socket counts every frame, and each lookup hashes the labels under a
/// lock shared by every thread.
pub struct FrameReceivedCounter {
    received: IntCounter,
    last_event: Gauge,
}

impl FrameReceivedCounter {
    pub fn new(m: &Metrics, tenant: &str, source: &str) -> Self {
        FrameReceivedCounter {
            received: m
                .frames_received
                .with_label_values(&[&m.event_tenant(tenant), source]),
            last_event: m.last_event_timestamp.with_label_values(&[tenant, source]),
        }
    }

    /// Same updates as [`FrameReceived::emit`].
    pub fn emit(&self) {
        self.received.inc();
        self.last_event.set(super::metrics::unix_now_seconds());
    }
}

pub struct EventPublished<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub origin: &'a str,
    /// For an event from a live frame: the time it spent in each of
    /// [`LATENCY_STAGES`](super::metrics::LATENCY_STAGES); their sum is
    /// frame received → broker ack.
    pub stages: Option<[Duration; 5]>,
}

/// The metric children [`EventPublished::emit_cached`] has looked up, per
/// tenant, then per (source, origin), and the stage histograms: the
/// publisher counts every event.
#[derive(Default)]
pub struct EventPublishedChildren {
    per_tenant: HashMap<String, Vec<PublishedChildren>>,
    stages: Option<[Histogram; 5]>,
}

struct PublishedChildren {
    source: String,
    origin: String,
    published: IntCounter,
    latency: Histogram,
}

impl EventPublished<'_> {
    /// Counts the event and, for a live one, observes its latency, end to
    /// end and per stage; the metric children are kept in `cache` (the
    /// publisher calls this for every event).
    pub fn emit_cached(&self, m: &Metrics, cache: &mut EventPublishedChildren) {
        let per_tenant = match cache.per_tenant.get_mut(self.tenant) {
            Some(v) => v,
            None => cache.per_tenant.entry(self.tenant.to_string()).or_default(),
        };
        let at = per_tenant
            .iter()
            .position(|c| c.source == self.source && c.origin == self.origin);
        let c = match at {
            Some(i) => &per_tenant[i],
            None => {
                per_tenant.push(PublishedChildren {
                    source: self.source.to_string(),
                    origin: self.origin.to_string(),
                    published: m.events_published.with_label_values(&[
                        &m.event_tenant(self.tenant),
                        self.source,
                        self.origin,
                    ]),
                    latency: m.end_to_end_latency.with_label_values(&[self.source]),
                });
                &per_tenant[per_tenant.len() - 1]
            }
        };
        c.published.inc();
        if let Some(stages) = &self.stages {
            c.latency
                .observe(stages.iter().sum::<Duration>().as_secs_f64());
            let per_stage = cache.stages.get_or_insert_with(|| {
                super::metrics::LATENCY_STAGES.map(|s| m.stage_latency.with_label_values(&[s]))
            });
            for (h, d) in per_stage.iter().zip(stages) {
                h.observe(d.as_secs_f64());
            }
        }
    }
}

pub struct PublishFailed<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub retryable: bool,
    pub error: &'a str,
}

impl PublishFailed<'_> {
    pub fn emit(&self, m: &Metrics) {
        let kind = if self.retryable {
            "retryable"
        } else {
            "rejected"
        };
        m.publish_failures
            .with_label_values(&[&m.event_tenant(self.tenant), self.source, kind])
            .inc();
        // Retryable failures come in storms during an outage; the sink health
        // watcher logs the outage once. Rejections are rare and each matters.
        if self.retryable {
            tracing::debug!(
                tenant = self.tenant,
                source = self.source,
                error = self.error,
                "publish failed, retrying"
            );
        } else {
            tracing::error!(
                tenant = self.tenant,
                source = self.source,
                error = self.error,
                "broker rejected an event"
            );
        }
    }
}

pub struct EventDeadLettered<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub reason: &'static str,
    pub error: &'a str,
}

impl EventDeadLettered<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::warn!(
            tenant = self.tenant,
            source = self.source,
            reason = self.reason,
            error = self.error,
            "payload sent to the dead-letter destination"
        );
        m.events_deadlettered
            .with_label_values(&[&m.event_tenant(self.tenant), self.source, self.reason])
            .inc();
    }
}

/// The broker refused a dead letter for a reason other than its size, so
/// the payload is lost; logged with the id to look for.
pub struct DeadLetterDropped<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub event_id: &'a str,
    pub error: &'a str,
}

impl DeadLetterDropped<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::error!(
            tenant = self.tenant,
            source = self.source,
            event_id = self.event_id,
            error = self.error,
            "the broker rejected a dead letter; payload dropped"
        );
    }
}

/// The largest message the broker takes became known (at start-up, or
/// changed after a reconnect); larger ones are dead-lettered as `too_large`.
/// Sinks log this without a [`Metrics`] at hand: it touches none.
pub struct BrokerMessageLimitFound<'a> {
    pub sink: &'a str,
    /// Where the limit comes from (`max_payload`, `message.max.bytes`, ...).
    pub setting: &'a str,
    pub bytes: usize,
}

impl BrokerMessageLimitFound<'_> {
    pub fn emit(&self) {
        tracing::info!(
            sink = self.sink,
            setting = self.setting,
            bytes = self.bytes,
            "broker message limit known: larger records are dead-lettered (reason too_large)"
        );
    }
}

/// The relay created its JetStream stream or KV bucket (it was missing).
pub struct JetStreamStreamCreated<'a> {
    pub stream: &'a str,
    pub subjects: &'a [String],
}

impl JetStreamStreamCreated<'_> {
    pub fn emit(&self) {
        tracing::info!(
            stream = self.stream,
            subjects = ?self.subjects,
            "JetStream stream created"
        );
    }
}

/// An existing JetStream stream (or KV bucket) differs from what the relay
/// would have created; the relay uses it as it is and never alters it.
/// One line per setting, at start-up.
pub struct JetStreamStreamSettingKept<'a> {
    pub stream: &'a str,
    pub setting: &'a str,
    pub existing: &'a str,
    pub relay_default: &'a str,
}

impl JetStreamStreamSettingKept<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            stream = self.stream,
            setting = self.setting,
            existing = self.existing,
            relay_default = self.relay_default,
            "the existing JetStream stream differs from what the relay would create; kept as it is (the relay never alters an existing stream)"
        );
    }
}

pub struct UnknownFieldsKept<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub count: usize,
}

impl UnknownFieldsKept<'_> {
    pub fn emit(&self, m: &Metrics) {
        if self.count > 0 {
            m.unknown_fields
                .with_label_values(&[&m.event_tenant(self.tenant), self.source])
                .inc_by(self.count as u64);
        }
    }
}

/// A live push without a field every whole document of its source carries:
/// the relay takes each push as the whole document, and this one looks
/// like a partial update. It is relayed as it is; only counted.
pub struct PartialPushReceived<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
}

impl PartialPushReceived<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.partial_pushes
            .with_label_values(&[&m.event_tenant(self.tenant), self.source])
            .inc();
    }
}

pub struct SinkHealthChanged<'a> {
    pub sink: &'a str,
    pub up: bool,
    pub error: Option<&'a str>,
}

impl SinkHealthChanged<'_> {
    pub fn emit(&self, m: &Metrics) {
        if self.up {
            tracing::info!(sink = self.sink, "broker reachable");
        } else {
            tracing::error!(
                sink = self.sink,
                error = self.error.unwrap_or(""),
                "broker unreachable"
            );
        }
        m.sink_up
            .with_label_values(&[self.sink])
            .set(i64::from(self.up));
    }
}

/// A socket came back after a gap (upstream times, widened by the margin).
pub struct GapDetected<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
}

impl GapDetected<'_> {
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(
            tenant = self.tenant,
            source = self.source,
            from_ms = self.from_ms,
            to_ms = self.to_ms,
            gap_s = (self.to_ms - self.from_ms) / 1000,
            "socket gap detected: backfilling it from GraphQL (or marking it, for profile_live)"
        );
        m.gaps.with_label_values(&[self.tenant, self.source]).inc();
    }
}

/// One backfill pass over a gap finished.
pub struct GapBackfilled<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    pub pass: u32,
    pub published: u64,
    pub already_published: u64,
    pub error: Option<String>,
}

impl GapBackfilled<'_> {
    pub fn emit(&self, _m: &Metrics) {
        match &self.error {
            None => tracing::info!(
                tenant = self.tenant,
                source = self.source,
                pass = self.pass,
                published = self.published,
                already_published = self.already_published,
                "gap backfill pass done"
            ),
            Some(error) => tracing::error!(
                tenant = self.tenant,
                source = self.source,
                pass = self.pass,
                published = self.published,
                error = %error,
                "gap backfill pass failed; run `studio-relay replay` over the gap to repair it"
            ),
        }
    }
}

/// The restart checkpoint is not kept (logged once, at start).
pub struct CheckpointDisabled {
    pub reason: &'static str,
}

impl CheckpointDisabled {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(
            reason = self.reason,
            "no restart checkpoint: a restart will not backfill the time it was down"
        );
    }
}

/// The restart checkpoint was read at start.
pub struct CheckpointLoaded<'a> {
    pub location: &'a str,
    /// Per tenant, the upstream time (Unix ms) to resume from.
    pub tenants: &'a [(&'a str, i64)],
}

impl CheckpointLoaded<'_> {
    pub fn emit(&self, _m: &Metrics) {
        if self.tenants.is_empty() {
            tracing::info!(
                checkpoint = self.location,
                "no restart checkpoint yet: starting fresh"
            );
        } else {
            tracing::info!(
                checkpoint = self.location,
                tenants = ?self.tenants,
                "resuming: the time since the checkpoint is backfilled once the sockets connect"
            );
        }
    }
}

/// The restart checkpoint was written (per tenant; only updates a gauge).
pub struct CheckpointSaved<'a> {
    pub tenant: &'a str,
    pub upstream_ms: i64,
}

impl CheckpointSaved<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.checkpoint_timestamp
            .with_label_values(&[self.tenant])
            .set(self.upstream_ms as f64 / 1000.0);
    }
}

/// Writing the restart checkpoint failed; it is tried again at the next
/// epoch. Logged when the failures start, counted every time.
pub struct CheckpointSaveFailed<'a> {
    /// `file`, `nats` or `kafka`.
    pub store: &'static str,
    pub error: &'a str,
    /// The first failure since the last successful save.
    pub first: bool,
}

impl CheckpointSaveFailed<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.checkpoint_save_failures
            .with_label_values(&[self.store])
            .inc();
        if self.first {
            tracing::error!(
                store = self.store,
                error = self.error,
                "cannot write the restart checkpoint; retrying at every epoch (a restart meanwhile backfills from the last one written)"
            );
        } else {
            tracing::debug!(
                store = self.store,
                error = self.error,
                "checkpoint write failed again"
            );
        }
    }
}

/// The restart checkpoint is written again after failures.
pub struct CheckpointSaveRecovered<'a> {
    pub location: &'a str,
    pub failures: u64,
}

impl CheckpointSaveRecovered<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(
            checkpoint = self.location,
            failures = self.failures,
            "restart checkpoint written again"
        );
    }
}

/// After a restart, the event ids already on the broker were remembered.
pub struct RecentIdsSeeded<'a> {
    pub sink: &'a str,
    pub ids: usize,
    pub since_ms: i64,
    pub elapsed: Duration,
}

impl RecentIdsSeeded<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(
            sink = self.sink,
            ids = self.ids,
            since_ms = self.since_ms,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "event ids already on the broker remembered: the resume backfill skips them"
        );
    }
}

/// A record was not published because it already was (per event: counts only).
pub struct EventSuppressed<'a> {
    pub tenant: &'a str,
    pub source: &'a str,
    /// `live`, `backfill` or `replay`.
    pub origin: &'a str,
    /// `repeat` (live: same event id as a push already taken),
    /// `already_live` (historic: its match key was already published),
    /// `already_on_broker` (replay: found on the destination).
    pub reason: &'static str,
}

impl EventSuppressed<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.events_suppressed
            .with_label_values(&[
                &m.event_tenant(self.tenant),
                self.source,
                self.origin,
                self.reason,
            ])
            .inc();
    }
}

/// `replay` read what is on its destinations already, before the first window.
pub struct ReplayDestinationsScanned<'a> {
    pub sink: &'a str,
    pub since_ms: i64,
    /// Messages whose ids were read.
    pub found: usize,
    /// False when the reading was cut short (timeout, `relay.recent_ids`).
    pub complete: bool,
    pub error: Option<&'a str>,
    pub elapsed: Duration,
}

impl ReplayDestinationsScanned<'_> {
    pub fn emit(&self, m: &Metrics) {
        if self.complete {
            tracing::info!(
                sink = self.sink,
                since_ms = self.since_ms,
                found = self.found,
                elapsed_ms = self.elapsed.as_millis() as u64,
                "ids already on the destinations read: records among them are not published again"
            );
            return;
        }
        m.recent_ids_seed_failures
            .with_label_values::<&str>(&[])
            .inc();
        tracing::warn!(
            sink = self.sink,
            since_ms = self.since_ms,
            found = self.found,
            error = self.error.unwrap_or("cut short by the time limit or relay.recent_ids"),
            "not everything on the destinations since the range's start was read: records published live or by other runs may be published again (replay's own record of earlier runs still applies)"
        );
    }
}

/// `replay` ended.
pub struct ReplayFinished {
    pub published: u64,
    /// Records left out because they were on the destination already.
    pub already_on_broker: u64,
    pub windows_skipped: usize,
    pub interrupted: bool,
}

impl ReplayFinished {
    pub fn emit(&self, _m: &Metrics) {
        tracing::info!(
            published = self.published,
            already_on_broker = self.already_on_broker,
            windows_skipped = self.windows_skipped,
            interrupted = self.interrupted,
            "replay finished"
        );
    }
}

/// Reading the event ids already on the broker failed or was cut short;
/// the resume backfill may then publish some records a second time.
pub struct RecentIdsSeedFailed<'a> {
    pub sink: &'a str,
    pub error: &'a str,
}

impl RecentIdsSeedFailed<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.recent_ids_seed_failures
            .with_label_values::<&str>(&[])
            .inc();
        tracing::warn!(
            sink = self.sink,
            error = self.error,
            "cannot read the event ids already on the broker: the resume backfill may publish duplicates"
        );
    }
}

/// A schema registry request failed in a way worth retrying (unreachable,
/// HTTP 5xx or 429) during start-up; logged when the failures start, then
/// at debug level.
pub struct SchemaRegistryRequestRetried<'a> {
    /// The registry URL, credentials redacted.
    pub url: &'a str,
    pub subject: &'a str,
    pub attempt: u32,
    pub delay: Duration,
    pub error: &'a str,
}

impl SchemaRegistryRequestRetried<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.schema_registry_retries
            .with_label_values::<&str>(&[])
            .inc();
        if self.attempt == 1 {
            tracing::warn!(
                registry = self.url,
                subject = self.subject,
                delay_ms = self.delay.as_millis() as u64,
                error = self.error,
                "schema registry not available yet: retrying with backoff (encoding.schema_registry.retry_for bounds the wait)"
            );
        } else {
            tracing::debug!(
                registry = self.url,
                subject = self.subject,
                attempt = self.attempt,
                delay_ms = self.delay.as_millis() as u64,
                error = self.error,
                "schema registry request failed again"
            );
        }
    }
}

/// One subject's schema id was resolved (registered or found).
pub struct SchemaIdResolved<'a> {
    pub subject: &'a str,
    pub id: u32,
    /// `registered` or `found`.
    pub action: &'static str,
}

impl SchemaIdResolved<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::debug!(
            subject = self.subject,
            id = self.id,
            action = self.action,
            "schema id resolved"
        );
    }
}

/// Every subject's schema id is known; logged once at start-up.
pub struct SchemaIdsResolved<'a> {
    pub url: &'a str,
    /// `register` or `lookup`.
    pub mode: &'static str,
    pub subjects: usize,
    /// Distinct ids: one per schema on most registries, one per subject
    /// where the registry numbers subject versions.
    pub ids: usize,
    pub compatibility_checked: bool,
    pub elapsed: Duration,
}

impl SchemaIdsResolved<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.schema_registry_subjects
            .with_label_values::<&str>(&[])
            .set(self.subjects as i64);
        tracing::info!(
            registry = self.url,
            mode = self.mode,
            subjects = self.subjects,
            ids = self.ids,
            compatibility_checked = self.compatibility_checked,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "Avro schema ids resolved with the schema registry"
        );
    }
}

/// A `[sink.kafka.properties]` entry overrides one of the relay's delivery
/// settings in a way that weakens what consumers get; logged once at start-up.
pub struct KafkaDeliverySettingWeakened<'a> {
    pub key: &'a str,
    pub value: &'a str,
    pub consequence: &'a str,
}

impl KafkaDeliverySettingWeakened<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::warn!(
            key = self.key,
            value = self.value,
            "sink.kafka.properties weakens a delivery guarantee: {}",
            self.consequence
        );
    }
}

/// One broker in librdkafka's statistics.
pub struct KafkaBrokerStatistics<'a> {
    pub broker: &'a str,
    pub up: bool,
    pub rtt_avg: Duration,
    pub rtt_p99: Duration,
    pub in_flight: i64,
    /// Totals since the client started.
    pub transmit_errors: u64,
    pub receive_errors: u64,
    pub timeouts: u64,
}

/// One topic's producer batches in librdkafka's statistics.
pub struct KafkaTopicStatistics<'a> {
    pub topic: &'a str,
    pub batch_bytes_avg: f64,
    pub batch_messages_avg: f64,
}

/// librdkafka reported its statistics (every `statistics_interval`).
pub struct KafkaStatisticsReported<'a> {
    pub queue_messages: u64,
    pub queue_bytes: u64,
    pub brokers: &'a [KafkaBrokerStatistics<'a>],
    pub topics: &'a [KafkaTopicStatistics<'a>],
}

impl KafkaStatisticsReported<'_> {
    pub fn emit(&self, m: &Metrics) {
        let k = &m.kafka;
        k.queue_messages.set(self.queue_messages as i64);
        k.queue_bytes.set(self.queue_bytes as i64);
        for b in self.brokers {
            k.broker_up
                .with_label_values(&[b.broker])
                .set(i64::from(b.up));
            k.broker_in_flight
                .with_label_values(&[b.broker])
                .set(b.in_flight);
            for (stat, rtt) in [("avg", b.rtt_avg), ("p99", b.rtt_p99)] {
                k.broker_rtt
                    .with_label_values(&[b.broker, stat])
                    .set(rtt.as_secs_f64());
            }
            for (kind, total) in [
                ("transmit", b.transmit_errors),
                ("receive", b.receive_errors),
                ("timeout", b.timeouts),
            ] {
                // librdkafka reports totals; the counter catches up to them.
                let counter = k.broker_errors.with_label_values(&[b.broker, kind]);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        for t in self.topics {
            k.batch_bytes
                .with_label_values(&[t.topic])
                .set(t.batch_bytes_avg);
            k.batch_messages
                .with_label_values(&[t.topic])
                .set(t.batch_messages_avg);
        }
    }
}

/// A topic takes smaller record batches than the producer may build: a full
/// batch of small records would be refused as too large (and dead-lettered).
pub struct KafkaBatchLargerThanTopicLimit<'a> {
    pub topic: &'a str,
    pub batch_bytes: u64,
    pub topic_limit: usize,
}

impl KafkaBatchLargerThanTopicLimit<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            topic = self.topic,
            batch_bytes = self.batch_bytes,
            topic_max_message_bytes = self.topic_limit,
            "the topic's max.message.bytes is below sink.kafka.batch_bytes: set batch_bytes to at most the topic's limit, or full batches are refused as too large"
        );
    }
}

/// The relay created a Kafka topic that was missing: a records' topic at
/// start-up (`sink.kafka.create_topics`), or its compacted checkpoint topic.
/// Touches no metric.
pub struct KafkaTopicCreated<'a> {
    pub topic: &'a str,
    /// The relay's own compacted state topic rather than a records' topic.
    pub checkpoint: bool,
}

impl KafkaTopicCreated<'_> {
    pub fn emit(&self) {
        if self.checkpoint {
            tracing::info!(
                topic = self.topic,
                "Kafka checkpoint topic created (cleanup.policy=compact)"
            );
        } else {
            tracing::info!(topic = self.topic, "Kafka topic created");
        }
    }
}

/// The existing checkpoint topic is not compacted: retention may delete the
/// checkpoint. It is used as it is (the relay never alters a topic).
pub struct KafkaCheckpointTopicNotCompacted<'a> {
    pub topic: &'a str,
    pub cleanup_policy: &'a str,
}

impl KafkaCheckpointTopicNotCompacted<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            topic = self.topic,
            cleanup_policy = self.cleanup_policy,
            "the checkpoint topic is not compacted: retention may delete the checkpoint; set cleanup.policy=compact"
        );
    }
}

/// SIGTERM or SIGINT arrived: the first starts the drain, a second one
/// exits at once. Touches no metric.
pub struct ShutdownSignalReceived {
    /// A drain was already under way.
    pub repeated: bool,
}

impl ShutdownSignalReceived {
    pub fn emit(&self) {
        if self.repeated {
            tracing::warn!("second shutdown signal: exiting without draining");
        } else {
            tracing::info!("shutdown signal received: draining (send it again to exit at once)");
        }
    }
}

/// The ops HTTP listener (`/metrics`, `/healthz`, `/readyz`) stopped with an
/// error; the relay keeps running without it.
pub struct OpsListenerFailed<'a> {
    pub error: &'a str,
}

impl OpsListenerFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(error = self.error, "ops listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planned_replay_sets_the_windows_gauge_per_source() {
        let m = Metrics::new();
        ReplayPlanned {
            from: chrono::DateTime::UNIX_EPOCH,
            to: chrono::DateTime::UNIX_EPOCH,
            windows: 3,
            sources: 2,
            tenants: 1,
            to_fetch: 5,
            already_done: 1,
            to_fetch_by_source: vec![("calls", 3), ("queues", 2)],
        }
        .emit(&m);
        let text = m.render();
        assert!(
            text.contains("studio_relay_replay_windows{source=\"calls\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("studio_relay_replay_windows{source=\"queues\"} 2"),
            "{text}"
        );
    }
}
