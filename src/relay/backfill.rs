//! Gap backfill: what a socket missed while it was down, fetched from GraphQL.
//!
//! A WebSocket cannot be replayed, so every reconnect of a historic source
//! (`calls`, `queues`, `agents`, `profile_history`) queries the historic layer
//! over the gap, widened by `relay.gap_margin` on both sides, and publishes
//! what it finds with origin `backfill`; the same window is queried again
//! after `relay.gap_recheck_after`, because historic data can lag the live
//! stream. Records whose match key was already published (live, or by an
//! earlier pass; see [`crate::publish::RecentIds`]) are left out and counted as suppressed
//! (`already_live`). `profile_live` has no historic layer: its gaps become a marker
//! event on the control topic, so consumers know that window is incomplete.
//!
//! The gap is measured on the upstream's clock, not the relay's: the
//! [`UpstreamClock`] is the newest record time seen per tenant, so a skewed
//! relay clock (or the simulator's accelerated one) cannot shift the window.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::model::{self, DataSource};
use crate::ops::internal_events::{GapBackfilled, GapDetected};
use crate::publish::outgoing::Outgoing;
use crate::publish::recent_ids::{self, RecentIds};
use crate::publish::window::{
    self, Counters, HistoricPages, Skip, WalkOutput, WindowOutcome, WindowRequest,
};
use crate::relay::checkpoint::ClockMark;
use crate::relay::clock::UpstreamClock;
use crate::sink::Sink;
use crate::upstream::historic::{GraphqlClient, OverviewFilter};
use crate::upstream::live::SocketEvent;

/// Records per GraphQL page during backfill.
const PAGE_SIZE: u32 = 500;
/// How long to wait after a reconnect for the upstream clock to move on
/// before closing the gap with what is known.
const SETTLE_MAX: Duration = Duration::from_secs(30);
/// How often the upstream clock is looked at meanwhile.
const SETTLE_POLL: Duration = Duration::from_millis(200);

/// What gap backfill publishes with and into.
pub struct BackfillDeps {
    /// The publisher's input (shared with the live path), the builder, the
    /// metrics, and the stop (cancelled at shutdown: running backfills stop
    /// between pages).
    pub out: WalkOutput,
    /// Match keys already published (live or backfill): a historic record
    /// with one is not published again.
    pub recent: Arc<RecentIds>,
    /// Event ids of live records (seeded after a restart, so an exact
    /// repeat of a push already on the broker is not published again).
    pub live_ids: Arc<RecentIds>,
    pub clock: Arc<UpstreamClock>,
    /// Per tenant, the restart checkpoint: everything since is treated as a
    /// gap of every socket, filled once the socket first connects.
    pub resume_from: HashMap<String, ClockMark>,
    /// After a restart: where to read the event ids already published, so
    /// the resume backfill does not publish them again. Done before any gap
    /// is filled.
    pub seed: Option<SeedFrom>,
    /// Tenants taken over from and handed to other replicas (`ha`).
    pub handovers: Option<mpsc::UnboundedReceiver<Handover>>,
}

/// The broker to seed [`RecentIds`] from after a restart.
pub struct SeedFrom {
    pub sink: Arc<dyn Sink>,
    /// The topics / subjects backfill publishes records to.
    pub destinations: Vec<String>,
}

/// What gap backfill takes from the configuration.
#[derive(Debug, Clone)]
pub struct BackfillPlan {
    /// Each tenant with the sources it relays.
    pub tenants: Vec<(Arc<str>, Vec<DataSource>)>,
    /// `relay.gap_margin`: each gap is widened by this on both sides.
    pub margin: Duration,
    /// `relay.gap_recheck_after`: the second pass (zero: none).
    pub recheck_after: Duration,
}

impl BackfillPlan {
    pub fn from_config(config: &Config) -> BackfillPlan {
        BackfillPlan {
            tenants: config
                .tenants
                .iter()
                .map(|t| {
                    (
                        Arc::from(t.name.as_str()),
                        config.tenant_sources(t).to_vec(),
                    )
                })
                .collect(),
            margin: config.relay.gap_margin,
            recheck_after: config.relay.gap_recheck_after,
        }
    }
}

/// How long reading the ids already on the broker may take at start.
pub const SEED_TIMEOUT: Duration = Duration::from_secs(60);
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
    // A resume window reaches back further for a batch source (see
    // `fill`): what was published of it then must be remembered too.
    Some(
        earliest
            - margin.as_millis() as i64
            - SEED_CLOCK_SLACK.as_millis() as i64
            - DataSource::MAX_PUSH_DELAY_MS,
    )
}

/// Everything a gap task needs, shared.
struct Shared<P> {
    clients: Arc<HistoricClients<P>>,
    deps: BackfillDeps,
    margin: Duration,
    recheck_after: Duration,
}

/// The GraphQL client of each running tenant, kept in step with the
/// tenants' tokens by [`super::tenants`]; a gap is filled with the client
/// its tenant has when the fill starts.
pub type HistoricClients<P> = RwLock<HashMap<Arc<str>, Arc<P>>>;

/// Watches socket events until they end (all sockets stopped) and fills
/// gaps from the tenants' GraphQL endpoints.
pub async fn run(
    config: &Config,
    clients: Arc<HistoricClients<GraphqlClient>>,
    events: mpsc::UnboundedReceiver<SocketEvent>,
    deps: BackfillDeps,
) {
    run_with(BackfillPlan::from_config(config), clients, events, deps).await
}

/// [`run`] with the historic pages from `clients` (per tenant).
pub async fn run_with<P: HistoricPages + Send + Sync + 'static>(
    plan: BackfillPlan,
    clients: Arc<HistoricClients<P>>,
    mut events: mpsc::UnboundedReceiver<SocketEvent>,
    mut deps: BackfillDeps,
) {
    // Before any gap is filled (socket events wait in their channel).
    seed_memory(&deps, plan.margin).await;
    let mut gaps = OpenGaps::resumed(&plan, &deps);
    let mut handovers = deps.handovers.take();
    let shared = Arc::new(Shared {
        clients,
        deps,
        margin: plan.margin,
        recheck_after: plan.recheck_after,
    });
    let mut fills = Fills::default();
    loop {
        let ev = tokio::select! {
            // A tenant taken over opens its gaps before its sockets report.
            biased;
            Some(h) = next_handover(&mut handovers) => {
                gaps.hand_over(h, &shared.deps.clock, &mut fills);
                continue;
            }
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
        };
        match ev {
            SocketEvent::Disconnected {
                tenant,
                source,
                at_ms,
            } => gaps.open(&shared.deps.clock, tenant, source, at_ms),
            SocketEvent::Connected { tenant, source, .. } => {
                if let Some((from, hold)) = gaps.close(&tenant, source) {
                    let shared = shared.clone();
                    let (out, tracker) = fills.output(&shared.deps.out, &tenant);
                    fills.tasks.spawn(tracker.track_future(async move {
                        // Released only when every pass finished (not when
                        // stopped by shutdown: the next start redoes it).
                        if fill(&shared, &out, &tenant, source, from).await {
                            shared.deps.clock.release(hold);
                        }
                    }));
                }
            }
        }
        while fills.tasks.try_join_next().is_some() {}
    }
    // Sockets are gone (shutdown): let running backfills see the stop and end.
    while fills.tasks.join_next().await.is_some() {}
}

/// A tenant that moved between replicas (`ha`).
pub enum Handover {
    /// Taken over: each of its sockets has a gap from the tenant's
    /// checkpoint, filled once the socket connects (the memories were
    /// seeded from the broker before).
    Resumed {
        tenant: Arc<str>,
        sources: Vec<DataSource>,
        from: ClockMark,
    },
    /// Handed over: its fills stop, its gaps and clock are dropped (the
    /// next owner resumes from the checkpoint); `stopped` is answered once
    /// its fills ended.
    Released {
        tenant: Arc<str>,
        stopped: oneshot::Sender<()>,
    },
}

async fn next_handover(rx: &mut Option<mpsc::UnboundedReceiver<Handover>>) -> Option<Handover> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The running fills, and per tenant a stop and a tracker of its fills, so
/// a tenant handed over stops filling without touching the others.
#[derive(Default)]
struct Fills {
    tasks: JoinSet<()>,
    tenants: HashMap<Arc<str>, (CancellationToken, TaskTracker)>,
}

impl Fills {
    /// Where a fill of `tenant` publishes (the relay's output, stopped by
    /// the relay's stop or the tenant's), and the tracker to run it in.
    fn output(&mut self, out: &WalkOutput, tenant: &Arc<str>) -> (WalkOutput, TaskTracker) {
        let (stop, tracker) = self
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| (out.stop.child_token(), TaskTracker::new()))
            .clone();
        let out = WalkOutput {
            stop,
            ..out.clone()
        };
        (out, tracker)
    }

    /// Stops `tenant`'s fills; `stopped` is answered once they ended (a
    /// walk ends once what it published is acknowledged).
    fn stop(&mut self, tenant: &str, stopped: oneshot::Sender<()>) {
        let Some((stop, tracker)) = self.tenants.remove(tenant) else {
            let _ = stopped.send(());
            return;
        };
        stop.cancel();
        tracker.close();
        tokio::spawn(async move {
            tracker.wait().await;
            let _ = stopped.send(());
        });
    }
}

/// After a restart, remembers what is on the broker since the checkpoint.
async fn seed_memory(deps: &BackfillDeps, margin: Duration) {
    let (Some(seed), Some(since)) = (&deps.seed, seed_since(&deps.resume_from, margin)) else {
        return;
    };
    recent_ids::seed_from_broker(
        &deps.live_ids,
        &deps.recent,
        seed.sink.as_ref(),
        &seed.destinations,
        since,
        SEED_TIMEOUT,
        &deps.out.metrics,
    )
    .await;
}

/// A gap still open: the upstream time when the socket was last seen up,
/// and the clock hold keeping the checkpoint before it.
type OpenGap = (i64, u64);

/// Per (tenant, source) that connected once: its open gap while it is down.
struct OpenGaps(HashMap<(Arc<str>, DataSource), Option<OpenGap>>);

impl OpenGaps {
    /// The restart checkpoint is a gap of every socket of its tenant.
    fn resumed(plan: &BackfillPlan, deps: &BackfillDeps) -> OpenGaps {
        let mut gaps = HashMap::new();
        for (tenant, sources) in &plan.tenants {
            if let Some(&from) = deps.resume_from.get(&**tenant) {
                for &source in sources {
                    let hold = deps.clock.hold(tenant, from);
                    gaps.insert((tenant.clone(), source), Some((from.upstream_ms, hold)));
                }
            }
        }
        OpenGaps(gaps)
    }

    /// A socket went down: only the first failure after being up opens a gap.
    fn open(&mut self, clock: &UpstreamClock, tenant: Arc<str>, source: DataSource, at_ms: i64) {
        if let Some(slot @ None) = self.0.get_mut(&(tenant.clone(), source)) {
            let from = clock.mark(&tenant).unwrap_or_else(|| ClockMark::now(at_ms));
            *slot = Some((from.upstream_ms, clock.hold(&tenant, from)));
        }
    }

    /// A tenant taken over or handed over.
    fn hand_over(&mut self, h: Handover, clock: &UpstreamClock, fills: &mut Fills) {
        match h {
            Handover::Resumed {
                tenant,
                sources,
                from,
            } => {
                for source in sources {
                    let hold = clock.hold(&tenant, from);
                    let old = self
                        .0
                        .insert((tenant.clone(), source), Some((from.upstream_ms, hold)));
                    if let Some(Some((_, old_hold))) = old {
                        clock.release(old_hold);
                    }
                }
            }
            Handover::Released { tenant, stopped } => {
                fills.stop(&tenant, stopped);
                self.0.retain(|(t, _), _| *t != tenant);
                clock.forget(&tenant);
            }
        }
    }

    /// A socket is up: the gap it had open, if any.
    fn close(&mut self, tenant: &Arc<str>, source: DataSource) -> Option<OpenGap> {
        self.0.insert((tenant.clone(), source), None).flatten()
    }
}

/// Closes the gap once the upstream clock moved past the reconnect, then
/// backfills it (twice) or marks it.
async fn fill<P: HistoricPages>(
    shared: &Shared<P>,
    out: &WalkOutput,
    tenant: &Arc<str>,
    source: DataSource,
    from: i64,
) -> bool {
    let Some(to) = settle(shared, out, tenant, from).await else {
        return false;
    };
    let margin = shared.margin.as_millis() as i64;
    // A batch pushed during the gap holds records from before it.
    let (from, to) = (from - margin - source.push_delay_ms(), to + margin);
    GapDetected {
        tenant,
        source: source.as_str(),
        from_ms: from,
        to_ms: to,
    }
    .emit(&out.metrics);
    if source.graphql_root().is_none() {
        let marker = out.builder.gap_marker(tenant, source, from, to);
        let _ = shared
            .deps
            .out
            .tx
            .send(Outgoing::control(marker, tenant.clone(), source))
            .await;
        return true;
    }
    let passes = if shared.recheck_after.is_zero() { 1 } else { 2 };
    for pass in 1..=passes {
        if pass > 1 {
            tokio::select! {
                _ = out.stop.cancelled() => return false,
                _ = tokio::time::sleep(shared.recheck_after) => {}
            }
        }
        if !backfill_once(shared, out, tenant, source, from, to, pass).await {
            return false;
        }
    }
    true
}

/// The gap's end: the upstream clock once it moved past the reconnect (or
/// after [`SETTLE_MAX`]); None when stopped meanwhile.
async fn settle<P>(
    shared: &Shared<P>,
    out: &WalkOutput,
    tenant: &Arc<str>,
    from: i64,
) -> Option<i64> {
    let clock = &shared.deps.clock;
    let at_reconnect = clock.now(tenant).unwrap_or(from);
    let waited = tokio::time::Instant::now();
    loop {
        let now = clock.now(tenant).unwrap_or(from);
        if now > at_reconnect || waited.elapsed() >= SETTLE_MAX {
            return Some(now.max(from));
        }
        tokio::select! {
            _ = out.stop.cancelled() => return None,
            _ = tokio::time::sleep(SETTLE_POLL) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn backfill_once<P: HistoricPages>(
    shared: &Shared<P>,
    out: &WalkOutput,
    tenant: &Arc<str>,
    source: DataSource,
    from: i64,
    to: i64,
    pass: u32,
) -> bool {
    let client = shared
        .clients
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(tenant)
        .cloned();
    let Some(pages) = client else {
        return false;
    };
    let ts = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    let filter = OverviewFilter::window(&OverviewFilter::default(), ts(from), ts(to));
    let counters = Counters::default();
    let skip = Skip {
        match_keys: Some(&shared.deps.recent),
        reason: "already_live",
        ..Skip::default()
    };
    let request = WindowRequest {
        pages: &*pages,
        tenant: tenant.clone(),
        source,
        filter: &filter,
        page_size: PAGE_SIZE,
        origin: model::Origin::Backfill,
        skip: &skip,
        counters: &counters,
    };
    let result = window::walk(out, request).await;
    GapBackfilled {
        tenant,
        source: source.as_str(),
        pass,
        published: counters.records.load(std::sync::atomic::Ordering::Relaxed),
        already_published: counters.skipped.load(std::sync::atomic::Ordering::Relaxed),
        error: match &result {
            Err(e) => Some(e.to_string()),
            Ok(WindowOutcome::Interrupted) => Some("interrupted by shutdown".into()),
            Ok(WindowOutcome::Done) => None,
        },
    }
    .emit(&out.metrics);
    matches!(result, Ok(WindowOutcome::Done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Envelope;
    use crate::publish::test_support::{
        ids_on, page, publishing_to, MemorySink, Reply, ScriptedPages,
    };
    use crate::upstream::live::SocketEvent::{Connected, Disconnected};
    use serde_json::{json, Value};

    /// The upstream's "now" when the socket drops, Unix ms.
    const T0: i64 = 1_779_100_000_000;
    const MARGIN: Duration = Duration::from_secs(60);

    fn call(id: &str) -> Value {
        json!({"idCall": id, "time": {"start": "2026-05-18T10:26:37.234Z"}})
    }

    fn envelope(record: &Value) -> Envelope {
        let r = model::normalize_historic(DataSource::Calls, record).unwrap();
        Envelope::new("acme".into(), model::Origin::Backfill, 0, r)
    }

    fn iso(ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn plan(source: DataSource, recheck_after: Duration) -> BackfillPlan {
        BackfillPlan {
            tenants: vec![(Arc::from("acme"), vec![source])],
            margin: MARGIN,
            recheck_after,
        }
    }

    fn deps(out: WalkOutput, clock: &Arc<UpstreamClock>) -> BackfillDeps {
        BackfillDeps {
            out,
            recent: Arc::new(RecentIds::new(100)),
            live_ids: Arc::new(RecentIds::new(100)),
            clock: clock.clone(),
            resume_from: HashMap::new(),
            seed: None,
            handovers: None,
        }
    }

    /// A socket of `source` that connects, is lost and connects again.
    fn reconnect(source: DataSource) -> Vec<SocketEvent> {
        vec![
            event(true, source),
            event(false, source),
            event(true, source),
        ]
    }

    fn event(connected: bool, source: DataSource) -> SocketEvent {
        let tenant: Arc<str> = Arc::from("acme");
        match connected {
            true => Connected {
                tenant,
                source,
                at_ms: T0,
            },
            false => Disconnected {
                tenant,
                source,
                at_ms: T0,
            },
        }
    }

    /// Runs backfill over `events` (then the sockets are gone) to the end.
    async fn backfill(
        plan: BackfillPlan,
        pages: ScriptedPages,
        events: Vec<SocketEvent>,
        deps: BackfillDeps,
    ) -> Arc<ScriptedPages> {
        let pages = Arc::new(pages);
        let clients = Arc::new(RwLock::new(HashMap::from([(
            Arc::from("acme"),
            pages.clone(),
        )])));
        let (tx, rx) = mpsc::unbounded_channel();
        for e in events {
            tx.send(e).unwrap();
        }
        drop(tx);
        run_with(plan, clients, rx, deps).await;
        pages
    }

    /// The upstream time a restart checkpoint could claim for "acme" now.
    fn checkpointable(clock: &UpstreamClock) -> i64 {
        clock.snapshot()[0].1.upstream_ms
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_backfills_its_gap_twice_leaving_out_what_was_published() {
        let (a, b, c) = (call("a"), call("b"), call("c"));
        let sink = Arc::new(MemorySink::new());
        let (out, _publisher) = publishing_to(sink.clone());
        let clock = Arc::new(UpstreamClock::default());
        clock.observe(&Arc::from("acme"), T0);
        let deps = deps(out.clone(), &clock);
        // `a` went out live before the socket dropped.
        deps.recent.insert(&envelope(&a).match_key);
        let pages = ScriptedPages::new([
            Reply::Page(page(vec![a.clone(), b.clone()], None)),
            // The recheck finds a record that was late in the historic layer.
            Reply::Page(page(vec![a.clone(), b.clone(), c.clone()], None)),
        ]);
        let events = reconnect(DataSource::Calls);
        let plan = plan(DataSource::Calls, Duration::from_secs(600));
        let pages = backfill(plan, pages, events, deps).await;

        assert_eq!(
            ids_on(&sink, "telavox.studio.calls"),
            [envelope(&b).event_id, envelope(&c).event_id]
        );
        // Both passes cover the gap, widened by the margin on both sides.
        let asked = pages.asked();
        assert_eq!(asked.len(), 2);
        for a in &asked {
            assert_eq!(a.start_date, iso(T0 - 60_000));
            assert_eq!(a.end_date, iso(T0 + 60_000));
        }
        // The gap is filled: it no longer holds the checkpoint back.
        clock.observe(&Arc::from("acme"), T0 + 1_000);
        assert_eq!(checkpointable(&clock), T0 + 1_000);
        let metrics = out.metrics.render();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("studio_relay_events_suppressed_total")
                    && l.contains("reason=\"already_live\"")
                    && l.ends_with(" 3")),
            "a once, then a and b again: {metrics}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_backfills_from_the_checkpoint_once_the_socket_connects() {
        let a = call("a");
        let sink = Arc::new(MemorySink::new());
        let (out, _publisher) = publishing_to(sink.clone());
        let clock = Arc::new(UpstreamClock::default());
        let mut deps = deps(out, &clock);
        deps.resume_from = HashMap::from([(
            "acme".to_string(),
            ClockMark {
                upstream_ms: T0,
                seen_at_ms: T0,
            },
        )]);
        let pages = ScriptedPages::new([Reply::Page(page(vec![a.clone()], None))]);
        let events = vec![event(true, DataSource::Calls)];
        let pages = backfill(plan(DataSource::Calls, Duration::ZERO), pages, events, deps).await;

        assert_eq!(pages.asked().len(), 1, "no recheck when it is off");
        assert_eq!(pages.asked()[0].start_date, iso(T0 - 60_000));
        assert_eq!(
            ids_on(&sink, "telavox.studio.calls"),
            [envelope(&a).event_id]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_profile_live_gap_becomes_a_marker_on_the_control_topic() {
        let sink = Arc::new(MemorySink::new());
        let (out, _publisher) = publishing_to(sink.clone());
        let clock = Arc::new(UpstreamClock::default());
        clock.observe(&Arc::from("acme"), T0);
        let deps = deps(out, &clock);
        let events = reconnect(DataSource::ProfileLive);
        let pages = ScriptedPages::default();
        let plan = plan(DataSource::ProfileLive, Duration::from_secs(600));
        let pages = backfill(plan, pages, events, deps).await;

        assert!(
            pages.asked().is_empty(),
            "profile_live has no historic layer"
        );
        // The marker is published once the publisher has it; wait for it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sink.acked().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sent = sink.acked();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].destination, "telavox.studio.control");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_before_the_recheck_keeps_the_gap_holding_the_checkpoint() {
        let sink = Arc::new(MemorySink::new());
        let (out, _publisher) = publishing_to(sink.clone());
        let clock = Arc::new(UpstreamClock::default());
        clock.observe(&Arc::from("acme"), T0);
        let stop = out.stop.clone();
        let deps = deps(out, &clock);
        let mut pages = ScriptedPages::new([Reply::Page(page(vec![call("a")], None))]);
        // Shutdown comes while the first pass runs; the recheck never does.
        pages.on_first = Some(stop);
        let events = reconnect(DataSource::Calls);
        let plan = plan(DataSource::Calls, Duration::from_secs(600));
        let pages = backfill(plan, pages, events, deps).await;

        assert_eq!(pages.asked().len(), 1);
        assert_eq!(
            ids_on(&sink, "telavox.studio.calls").len(),
            1,
            "the first pass finished"
        );
        // The next start must redo the gap: the checkpoint stays at its start.
        clock.observe(&Arc::from("acme"), T0 + 1_000);
        assert_eq!(checkpointable(&clock), T0);
    }

    fn mark(upstream_ms: i64) -> ClockMark {
        ClockMark {
            upstream_ms,
            seen_at_ms: upstream_ms * 10,
        }
    }

    #[test]
    fn seeding_starts_a_margin_and_some_slack_before_the_earliest_checkpoint() {
        let resume = HashMap::from([("a".to_string(), mark(100)), ("b".to_string(), mark(50))]);
        let slack = SEED_CLOCK_SLACK.as_millis() as i64;
        assert_eq!(
            seed_since(&resume, Duration::from_millis(30)),
            Some(500 - 30 - slack - DataSource::MAX_PUSH_DELAY_MS)
        );
        assert_eq!(seed_since(&HashMap::new(), Duration::ZERO), None);
    }
}
