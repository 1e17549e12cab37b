//! Gap backfill: what a socket missed while it was down, fetched from GraphQL.
//!
//! A WebSocket cannot be replayed, so every reconnect of a historic source
//! (`calls`, `queues`, `agents`, `profile_history`) queries the historic layer
//! over the gap, widened by `relay.gap_margin` on both sides, and publishes
//! what it finds with origin `backfill`; the same window is queried again
//! after `relay.gap_recheck_after`, because historic data can lag the live
//! stream. Records whose match key was already published (live, or by an
//! earlier pass; see [`RecentIds`]) are left out and counted as suppressed
//! (`already_live`). `profile_live` has no historic layer: its gaps become a marker
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

use super::checkpoint::ClockMark;
use super::{Intake, MessageBuilder, Outgoing, RecentIds};
use crate::config::Config;
use crate::model::{DataSource, Origin};
use crate::ops::internal_events::{GapBackfilled, GapDetected};
use crate::ops::Metrics;
use crate::replay::{replay_window, Counters, Skip, WindowOutcome};
use crate::sink::Sink;
use crate::upstream::historic::{GraphqlClient, OverviewFilter, RetryPolicy};
use crate::upstream::live::SocketEvent;

/// Records per GraphQL page during backfill.
const PAGE_SIZE: u32 = 500;
/// How long to wait after a reconnect for the upstream clock to move on
/// before closing the gap with what is known.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Newest record time (epoch ms) seen per tenant: the upstream's "now",
/// with the relay's wall clock when it got there; and the gaps not yet
/// backfilled, which hold the restart checkpoint back.
#[derive(Debug, Default)]
pub struct UpstreamClock {
    now: Mutex<HashMap<Arc<str>, ClockMark>>,
    /// Open gaps by id: (tenant, start). Several may be open for one socket
    /// (a second drop while the first gap is still being filled).
    holds: Mutex<HashMap<u64, (Arc<str>, ClockMark)>>,
    next_hold: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UpstreamClock {
    pub fn observe(&self, tenant: &Arc<str>, at_ms: i64) {
        let mut g = lock(&self.now);
        match g.get_mut(tenant) {
            Some(e) if e.upstream_ms >= at_ms => {}
            // The wall clock is read only when the upstream clock moves on.
            Some(e) => *e = ClockMark::now(at_ms),
            None => {
                g.insert(tenant.clone(), ClockMark::now(at_ms));
            }
        }
    }

    pub fn now(&self, tenant: &str) -> Option<i64> {
        self.mark(tenant).map(|m| m.upstream_ms)
    }

    /// The upstream "now" and when the relay saw it.
    pub fn mark(&self, tenant: &str) -> Option<ClockMark> {
        lock(&self.now).get(tenant).copied()
    }

    /// A gap from `from` is open: checkpoints stay at or before it until
    /// [`UpstreamClock::release`] of the returned id.
    pub fn hold(&self, tenant: &Arc<str>, from: ClockMark) -> u64 {
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
    pub fn snapshot(&self) -> Vec<(Arc<str>, ClockMark)> {
        let holds = lock(&self.holds);
        lock(&self.now)
            .iter()
            .map(|(t, now)| {
                let held = holds
                    .values()
                    .filter(|(ht, _)| ht == t)
                    .map(|(_, from)| *from)
                    .min_by_key(|m| m.upstream_ms);
                match held {
                    Some(h) if h.upstream_ms < now.upstream_ms => (t.clone(), h),
                    _ => (t.clone(), *now),
                }
            })
            .collect()
    }
}

/// What gap backfill publishes with and into.
pub struct BackfillDeps {
    pub builder: Arc<MessageBuilder>,
    pub metrics: Arc<Metrics>,
    /// Match keys already published (live or backfill): a historic record
    /// with one is not published again.
    pub recent: Arc<RecentIds>,
    /// Event ids of live records (seeded after a restart, so an exact
    /// repeat of a push already on the broker is not published again).
    pub live_ids: Arc<RecentIds>,
    pub clock: Arc<UpstreamClock>,
    /// The publisher's input (shared with the live path).
    pub tx: Intake,
    /// Cancelled at shutdown: running backfills stop between pages.
    pub stop: CancellationToken,
    /// Per tenant, the restart checkpoint: everything since is treated as a
    /// gap of every socket, filled once the socket first connects.
    pub resume_from: HashMap<String, ClockMark>,
    /// After a restart: where to read the event ids already published, so
    /// the resume backfill does not publish them again. Done before any gap
    /// is filled.
    pub seed: Option<SeedFrom>,
}

/// The broker to seed [`RecentIds`] from after a restart.
pub struct SeedFrom {
    pub sink: Arc<dyn Sink>,
    /// The topics / subjects backfill publishes records to.
    pub destinations: Vec<String>,
}

/// How long reading the ids already on the broker may take at start.
const SEED_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra broker time read before the resume window: the broker stamps
/// messages with its own clock (or the previous relay process's), which
/// may be a little off the relay's.
const SEED_CLOCK_SLACK: Duration = Duration::from_secs(120);

/// Broker time (Unix ms) from which a resume backfill from `resume_from`
/// may meet records already published: a record of upstream time `t` at or
/// after `checkpoint - margin` reached the broker no earlier than the relay
/// saw the upstream clock at `t`, which is at most `margin` before it saw
/// the checkpoint (the upstream clock runs no slower than the wall clock).
/// None when there is nothing to resume.
pub fn seed_since(resume_from: &HashMap<String, ClockMark>, margin: Duration) -> Option<i64> {
    let earliest = resume_from.values().map(|m| m.seen_at_ms).min()?;
    Some(earliest - margin.as_millis() as i64 - SEED_CLOCK_SLACK.as_millis() as i64)
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
    // Before any gap is filled (socket events wait in their channel).
    if let (Some(seed), Some(since)) = (
        &deps.seed,
        seed_since(&deps.resume_from, config.relay.gap_margin),
    ) {
        super::recent_ids::seed_from_broker(
            &deps.live_ids,
            &deps.recent,
            seed.sink.as_ref(),
            &seed.destinations,
            since,
            SEED_TIMEOUT,
            &deps.metrics,
        )
        .await;
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
                down_since.insert((tenant, source), Some((from.upstream_ms, hold)));
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
                    let from = shared
                        .deps
                        .clock
                        .mark(&tenant)
                        .unwrap_or_else(|| ClockMark::now(at_ms));
                    *slot = Some((from.upstream_ms, shared.deps.clock.hold(&tenant, from)));
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
                stages: None,
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
        &Skip {
            match_keys: Some(&shared.deps.recent),
            reason: "already_live",
            ..Skip::default()
        },
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

    fn mark(upstream_ms: i64) -> ClockMark {
        ClockMark {
            upstream_ms,
            seen_at_ms: upstream_ms * 10,
        }
    }

    #[test]
    fn checkpoints_never_pass_an_open_gap() {
        let clock = UpstreamClock::default();
        let t: Arc<str> = Arc::from("acme");
        clock.observe(&t, 100);
        let up = |c: &UpstreamClock| -> Vec<(Arc<str>, i64)> {
            c.snapshot()
                .into_iter()
                .map(|(t, m)| (t, m.upstream_ms))
                .collect()
        };
        assert_eq!(up(&clock), vec![(t.clone(), 100)]);
        let first = clock.hold(&t, mark(50));
        let second = clock.hold(&t, mark(70));
        clock.observe(&t, 120);
        // A held checkpoint carries the wall time of the gap's start.
        assert_eq!(clock.snapshot(), vec![(t.clone(), mark(50))]);
        clock.release(first);
        assert_eq!(up(&clock), vec![(t.clone(), 70)]);
        clock.release(second);
        assert_eq!(up(&clock), vec![(t.clone(), 120)]);
        // Another tenant's gap holds only that tenant back.
        let other: Arc<str> = Arc::from("other");
        clock.hold(&other, mark(1));
        assert_eq!(up(&clock), vec![(t, 120)]);
    }

    #[test]
    fn the_wall_clock_mark_moves_only_with_the_upstream_clock() {
        let clock = UpstreamClock::default();
        let t: Arc<str> = Arc::from("acme");
        clock.observe(&t, 100);
        let first = clock.mark("acme").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        clock.observe(&t, 90);
        clock.observe(&t, 100);
        assert_eq!(clock.mark("acme").unwrap(), first);
        clock.observe(&t, 101);
        assert!(clock.mark("acme").unwrap().seen_at_ms > first.seen_at_ms);
    }

    #[test]
    fn seeding_starts_a_margin_and_some_slack_before_the_earliest_checkpoint() {
        let resume = HashMap::from([("a".to_string(), mark(100)), ("b".to_string(), mark(50))]);
        let slack = SEED_CLOCK_SLACK.as_millis() as i64;
        assert_eq!(
            seed_since(&resume, Duration::from_millis(30)),
            Some(500 - 30 - slack)
        );
        assert_eq!(seed_since(&HashMap::new(), Duration::ZERO), None);
    }
}
