//! The historic window walk, shared by `replay` and the relay's gap
//! backfill: one window of one source of one tenant, read page by page in
//! order, each record normalized, encoded and handed to the publisher with
//! its layer as origin. Records already published are left out (see
//! [`Skip`]); a record that cannot be normalized or encoded is
//! dead-lettered. The walk ends when every record it handed over is settled.
//!
//! Pages come through [`HistoricPages`], implemented by
//! [`GraphqlClient`]: the walk's tests script pages, retries and cursor
//! errors without a socket.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::model::{self, DataSource, Envelope};
use crate::ops::internal_events::{
    EventSuppressed, HistoricPageFetched, HistoricRecordQueued, HistoricRequestRetried,
    WindowRecordsRejected,
};
use crate::ops::Metrics;
use crate::publish::dead_letter::DeadLetter;
use crate::publish::message_builder::MessageBuilder;
use crate::publish::outgoing::{BatchTracker, Outgoing};
use crate::publish::recent_ids::RecentIds;
use crate::publish::spool::Intake;
use crate::upstream::historic::{CursorGuard, GraphqlClient, HistoricError, OverviewFilter, Page};

/// One page of a historic root query, retried as the source sees fit.
pub trait HistoricPages: Sync {
    /// The page of `root` after cursor `after` (the first page without
    /// one); `on_retry` is told about each retry and its delay.
    fn page(
        &self,
        root: &'static str,
        selection: &str,
        filter: &OverviewFilter,
        first: u32,
        after: Option<&str>,
        on_retry: &mut (dyn FnMut(&HistoricError, Duration) + Send),
    ) -> impl Future<Output = Result<Page, HistoricError>> + Send;
}

impl HistoricPages for GraphqlClient {
    fn page(
        &self,
        root: &'static str,
        selection: &str,
        filter: &OverviewFilter,
        first: u32,
        after: Option<&str>,
        on_retry: &mut (dyn FnMut(&HistoricError, Duration) + Send),
    ) -> impl Future<Output = Result<Page, HistoricError>> + Send {
        self.fetch_page(root, selection, filter, first, after, on_retry)
    }
}

/// What a walk counts, per source (shared by the windows of a source).
#[derive(Debug, Default)]
pub struct Counters {
    /// Records handed to the publisher.
    pub records: AtomicU64,
    /// Records left out because they were published already.
    pub skipped: AtomicU64,
    /// Records left out because this run took them already (a record two
    /// overlapping windows both return).
    pub repeats: AtomicU64,
    pub pages: AtomicU64,
    pub retries: AtomicU64,
    /// Records dead-lettered by the walk (they did not normalize or encode).
    pub dead: AtomicU64,
}

/// How a walk ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowOutcome {
    /// Every page was read and every record settled.
    Done,
    /// Stopped between pages (shutdown), or the publisher is gone.
    Interrupted,
}

/// What a window walk leaves out as already published, and why.
#[derive(Default)]
pub struct Skip<'a> {
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
    pub covered: Option<&'a Mutex<Vec<String>>>,
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

    fn cover(&self, env: &Envelope) {
        if let Some(covered) = self.covered {
            covered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(env.event_id.clone());
        }
    }
}

/// Where walks hand their records, shared by every window of a run.
#[derive(Clone)]
pub struct WalkOutput {
    /// The publisher's input.
    pub tx: Intake,
    pub builder: Arc<MessageBuilder>,
    pub metrics: Arc<Metrics>,
    /// Cancelled to stop every walk between pages.
    pub stop: CancellationToken,
}

/// One window to walk.
pub struct WindowRequest<'a, P> {
    pub pages: &'a P,
    pub tenant: Arc<str>,
    /// A source with a historic layer.
    pub source: DataSource,
    /// The window's dates and the other filters.
    pub filter: &'a OverviewFilter,
    pub page_size: u32,
    /// `Replay` or `Backfill`.
    pub origin: model::Origin,
    pub skip: &'a Skip<'a>,
    pub counters: &'a Counters,
}

/// Walks one window's pages in order and hands each record to `out` with
/// the request's origin; records `skip` knows as published already are
/// left out. Returns once every record handed over is settled.
pub async fn walk<P: HistoricPages>(
    out: &WalkOutput,
    req: WindowRequest<'_, P>,
) -> Result<WindowOutcome, HistoricError> {
    let root = req
        .source
        .graphql_root()
        .expect("only sources with a historic layer are walked");
    let selection = model::graphql_selection(req.source);
    let tracker = BatchTracker::new();
    let mut guard = CursorGuard::default();
    let mut after: Option<String> = None;
    loop {
        if out.stop.is_cancelled() {
            tracker.wait().await;
            return Ok(WindowOutcome::Interrupted);
        }
        let page = fetch(out, &req, root, &selection, after.as_deref()).await?;
        let received_at_ms = Utc::now().timestamp_millis();
        for raw in &page.data {
            let Some(outgoing) = prepare(out, &req, &tracker, raw, received_at_ms) else {
                continue;
            };
            if out.tx.send(outgoing).await.is_err() {
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
        WindowRecordsRejected {
            source: req.source.as_str(),
            rejected,
        }
        .emit(&out.metrics);
    }
    Ok(WindowOutcome::Done)
}

/// One page, its retries and the page counted.
async fn fetch<P: HistoricPages>(
    out: &WalkOutput,
    req: &WindowRequest<'_, P>,
    root: &'static str,
    selection: &str,
    after: Option<&str>,
) -> Result<Page, HistoricError> {
    let source = req.source.as_str();
    let mut on_retry = |e: &HistoricError, delay: Duration| {
        req.counters.retries.fetch_add(1, Ordering::Relaxed);
        HistoricRequestRetried {
            source,
            error: e,
            retry_in: delay,
        }
        .emit(&out.metrics);
    };
    let page = req
        .pages
        .page(
            root,
            selection,
            req.filter,
            req.page_size,
            after,
            &mut on_retry,
        )
        .await?;
    req.counters.pages.fetch_add(1, Ordering::Relaxed);
    HistoricPageFetched { source }.emit(&out.metrics);
    Ok(page)
}

/// One historic record → its message (tracked), a dead letter, or None
/// when it is published already.
fn prepare<P>(
    out: &WalkOutput,
    req: &WindowRequest<'_, P>,
    tracker: &Arc<BatchTracker>,
    raw: &serde_json::Value,
    received_at_ms: i64,
) -> Option<Outgoing> {
    let record = match model::normalize_historic(req.source, raw) {
        Ok(record) => record,
        Err(e) => return Some(dead_letter(out, req, e.reason(), &e.to_string(), raw)),
    };
    let env = Envelope::new(req.tenant.to_string(), req.origin, received_at_ms, record);
    req.skip.cover(&env);
    // Claim the match key: a record the live stream (or an earlier pass)
    // already took is not published again.
    if let Some(reason) = req.skip.already_published(&env) {
        let counter = match reason {
            "repeat" => &req.counters.repeats,
            _ => &req.counters.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        EventSuppressed {
            tenant: &req.tenant,
            source: req.source.as_str(),
            origin: req.origin.as_str(),
            reason,
        }
        .emit(&out.metrics);
        return None;
    }
    match out.builder.build(&env) {
        Ok(message) => {
            tracker.add(1);
            req.counters.records.fetch_add(1, Ordering::Relaxed);
            HistoricRecordQueued {
                tenant: &req.tenant,
                source: req.source.as_str(),
                origin: req.origin,
            }
            .emit(&out.metrics);
            let outgoing = Outgoing::record(message, req.tenant.clone(), req.source, req.origin);
            Some(outgoing.tracked(tracker.clone()))
        }
        Err(e) => Some(dead_letter(out, req, "encode", &e.to_string(), raw)),
    }
}

fn dead_letter<P>(
    out: &WalkOutput,
    req: &WindowRequest<'_, P>,
    reason: &'static str,
    error: &str,
    raw: &serde_json::Value,
) -> Outgoing {
    req.counters.dead.fetch_add(1, Ordering::Relaxed);
    DeadLetter {
        tenant: &req.tenant,
        source: req.source,
        reason,
        error,
        at_ms: Utc::now().timestamp_millis(),
        element: None,
    }
    .build(
        &out.builder,
        &out.metrics,
        Bytes::from(serde_json::to_vec(raw).unwrap_or_default()),
    )
}
