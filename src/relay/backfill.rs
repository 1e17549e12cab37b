//! Gap backfill: what a socket missed while it was down, fetched from GraphQL.
//!
//! A WebSocket cannot be replayed, so every reconnect of a historic source
//! (`calls`, `queues`, `agents`, `profile_history`) queries the historic layer
//! over the gap, widened by `relay.gap_margin` on both sides, and publishes
//! what it finds with origin `backfill`; the same window is queried again
//! after `relay.gap_recheck_after`, because historic data can lag the live
//! stream. Records already acknowledged (same event id, see [`RecentIds`]) are
//! left out. `profile_live` has no historic layer: its gaps become a marker
//! event on the control topic, so consumers know that window is incomplete.
//!
//! The gap is measured on the upstream's clock, not the relay's: the
//! [`UpstreamClock`] is the newest record time seen per tenant, so a skewed
//! relay clock (or the simulator's accelerated one) cannot shift the window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Intake, MessageBuilder, Outgoing, RecentIds};
use crate::config::Config;
use crate::model::{DataSource, Origin};
use crate::ops::internal_events::{GapBackfilled, GapDetected};
use crate::ops::Metrics;
use crate::replay::{replay_window, Counters, WindowOutcome};
use crate::upstream::historic::{GraphqlClient, OverviewFilter, RetryPolicy};
use crate::upstream::live::SocketEvent;

/// Records per GraphQL page during backfill.
const PAGE_SIZE: u32 = 500;
/// How long to wait after a reconnect for the upstream clock to move on
/// before closing the gap with what is known.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Newest record time (epoch ms) seen per tenant: the upstream's "now";
/// and the gaps not yet backfilled, which hold the restart checkpoint back.
#[derive(Debug, Default)]
pub struct UpstreamClock {
    now: Mutex<HashMap<Arc<str>, i64>>,
    /// Open gaps by id: (tenant, start). Several may be open for one socket
    /// (a second drop while the first gap is still being filled).
    holds: Mutex<HashMap<u64, (Arc<str>, i64)>>,
    next_hold: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UpstreamClock {
    pub fn observe(&self, tenant: &Arc<str>, at_ms: i64) {
        let mut g = lock(&self.now);
        let e = g.entry(tenant.clone()).or_insert(at_ms);
        *e = (*e).max(at_ms);
    }

    pub fn now(&self, tenant: &str) -> Option<i64> {
        lock(&self.now).get(tenant).copied()
    }

    /// A gap from `from` is open: checkpoints stay at or before it until
    /// [`UpstreamClock::release`] of the returned id.
    pub fn hold(&self, tenant: &Arc<str>, from: i64) -> u64 {
        let id = self
            .next_hold
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.holds).insert(id, (tenant.clone(), from));
        id
    }

    pub fn release(&self, hold: u64) {
        lock(&self.holds).remove(&hold);
    }

    /// Per tenant, the time a restart checkpoint may claim: the clock, but
    /// never past the start of a gap still being filled.
    pub fn snapshot(&self) -> Vec<(Arc<str>, i64)> {
        let holds = lock(&self.holds);
        lock(&self.now)
            .iter()
            .map(|(t, now)| {
                let held = holds
                    .values()
                    .filter(|(ht, _)| ht == t)
                    .map(|(_, from)| *from)
                    .min()
                    .unwrap_or(i64::MAX);
                (t.clone(), (*now).min(held))
            })
            .collect()
    }
}

/// What gap backfill publishes with and into.
pub struct BackfillDeps {
    pub builder: Arc<MessageBuilder>,
    pub metrics: Arc<Metrics>,
    /// Ids already acknowledged: not published again.
    pub recent: Arc<RecentIds>,
    pub clock: Arc<UpstreamClock>,
    /// The publisher's input (shared with the live path).
    pub tx: Intake,
    /// Cancelled at shutdown: running backfills stop between pages.
    pub stop: CancellationToken,
    /// Per tenant, the restart checkpoint: everything since is treated as a
    /// gap of every socket, filled once the socket first connects.
    pub resume_from: HashMap<String, i64>,
}

/// Everything a gap task needs, shared.
struct Shared {
    clients: HashMap<Arc<str>, GraphqlClient>,
    deps: BackfillDeps,
    margin: Duration,
    recheck_after: Duration,
}

/// Watches socket events until they end (all sockets stopped) and fills gaps.
pub async fn run(
    config: &Config,
    mut events: mpsc::UnboundedReceiver<SocketEvent>,
    deps: BackfillDeps,
) {
    let mut clients = HashMap::new();
    for t in &config.tenants {
        match GraphqlClient::new(
            &config.upstream.graphql_url,
            t.token.clone(),
            config.upstream.request_timeout,
            RetryPolicy::default(),
        ) {
            Ok(c) => {
                clients.insert(Arc::from(t.name.as_str()), c);
            }
            Err(e) => {
                tracing::error!(tenant = %t.name, error = %e, "gap backfill disabled for this tenant: GraphQL client failed")
            }
        }
    }
    let shared = Arc::new(Shared {
        clients,
        deps,
        margin: config.relay.gap_margin,
        recheck_after: config.relay.gap_recheck_after,
    });
    // Per (tenant, source), while the socket is down: upstream time when it
    // was last seen up, and the hold keeping the checkpoint before it.
    type OpenGap = Option<(i64, u64)>;
    let mut down_since: HashMap<(Arc<str>, DataSource), OpenGap> = HashMap::new();
    for t in &config.tenants {
        if let Some(&from) = shared.deps.resume_from.get(&t.name) {
            for &source in &config.upstream.sources {
                let tenant: Arc<str> = Arc::from(t.name.as_str());
                let hold = shared.deps.clock.hold(&tenant, from);
                down_since.insert((tenant, source), Some((from, hold)));
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(ev) = events.recv().await {
        match ev {
            SocketEvent::Disconnected {
                tenant,
                source,
                at_ms,
            } => {
                // Only the first failure after being up opens a gap.
                if let Some(slot @ None) = down_since.get_mut(&(tenant.clone(), source)) {
                    let from = shared.deps.clock.now(&tenant).unwrap_or(at_ms);
                    *slot = Some((from, shared.deps.clock.hold(&tenant, from)));
                }
            }
            SocketEvent::Connected { tenant, source, .. } => {
                let key = (tenant.clone(), source);
                if let Some(Some((from, hold))) = down_since.insert(key, None) {
                    let shared = shared.clone();
                    tasks.spawn(async move {
                        // Released only when every pass finished (not when
                        // stopped by shutdown: the next start redoes it).
                        if fill(&shared, &tenant, source, from).await {
                            shared.deps.clock.release(hold);
                        }
                    });
                }
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    // Sockets are gone (shutdown): let running backfills see the stop and end.
    while tasks.join_next().await.is_some() {}
}

/// Closes the gap once the upstream clock moved past the reconnect, then
/// backfills it (twice) or marks it.
async fn fill(shared: &Shared, tenant: &Arc<str>, source: DataSource, from: i64) -> bool {
    let at_reconnect = shared.deps.clock.now(tenant).unwrap_or(from);
    let waited = tokio::time::Instant::now();
    let to = loop {
        let now = shared.deps.clock.now(tenant).unwrap_or(from);
        if now > at_reconnect || waited.elapsed() >= SETTLE_MAX {
            break now.max(from);
        }
        tokio::select! {
            _ = shared.deps.stop.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    let margin = shared.margin.as_millis() as i64;
    let (from, to) = (from - margin, to + margin);
    GapDetected {
        tenant,
        source: source.as_str(),
        from_ms: from,
        to_ms: to,
    }
    .emit(&shared.deps.metrics);
    if source.graphql_root().is_none() {
        let marker = shared.deps.builder.gap_marker(tenant, source, from, to);
        let _ = shared
            .deps
            .tx
            .send(Outgoing {
                message: marker,
                tenant: tenant.clone(),
                source,
                origin: "control",
                received: None,
                tracker: None,
            })
            .await;
        return true;
    }
    let passes = if shared.recheck_after.is_zero() { 1 } else { 2 };
    for pass in 1..=passes {
        if pass > 1 {
            tokio::select! {
                _ = shared.deps.stop.cancelled() => return false,
                _ = tokio::time::sleep(shared.recheck_after) => {}
            }
        }
        if !backfill_once(shared, tenant, source, from, to, pass).await {
            return false;
        }
    }
    true
}

async fn backfill_once(
    shared: &Shared,
    tenant: &Arc<str>,
    source: DataSource,
    from: i64,
    to: i64,
    pass: u32,
) -> bool {
    let Some(client) = shared.clients.get(tenant) else {
        return false;
    };
    let ts = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    let filter = OverviewFilter::window(&OverviewFilter::default(), ts(from), ts(to));
    let counters = Counters::default();
    let result = replay_window(
        client,
        tenant.clone(),
        source,
        &filter,
        PAGE_SIZE,
        &shared.deps.tx,
        &shared.deps.builder,
        &shared.deps.metrics,
        &counters,
        &shared.deps.stop,
        Origin::Backfill,
        Some(&shared.deps.recent),
    )
    .await;
    let published = counters.records.load(std::sync::atomic::Ordering::Relaxed);
    let skipped = counters.skipped.load(std::sync::atomic::Ordering::Relaxed);
    GapBackfilled {
        tenant,
        source: source.as_str(),
        pass,
        published,
        already_published: skipped,
        error: match &result {
            Err(e) => Some(e.to_string()),
            Ok(WindowOutcome::Interrupted) => Some("interrupted by shutdown".into()),
            Ok(WindowOutcome::Done) => None,
        },
    }
    .emit(&shared.deps.metrics);
    matches!(result, Ok(WindowOutcome::Done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_never_pass_an_open_gap() {
        let clock = UpstreamClock::default();
        let t: Arc<str> = Arc::from("acme");
        clock.observe(&t, 100);
        assert_eq!(clock.snapshot(), vec![(t.clone(), 100)]);
        let first = clock.hold(&t, 50);
        let second = clock.hold(&t, 70);
        clock.observe(&t, 120);
        assert_eq!(clock.snapshot(), vec![(t.clone(), 50)]);
        clock.release(first);
        assert_eq!(clock.snapshot(), vec![(t.clone(), 70)]);
        clock.release(second);
        assert_eq!(clock.snapshot(), vec![(t.clone(), 120)]);
        // Another tenant's gap holds only that tenant back.
        let other: Arc<str> = Arc::from("other");
        clock.hold(&other, 1);
        assert_eq!(clock.snapshot(), vec![(t, 120)]);
    }
}
