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
    /// Cancelled to stop every walk: between pages, or while a page is
    /// being fetched and retried.
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
        // A page's retries can outlast the drain deadline (the upstream is
        // down at shutdown, say): a stop ends the wait for it too.
        let page = tokio::select! {
            biased;
            _ = out.stop.cancelled() => {
                tracker.wait().await;
                return Ok(WindowOutcome::Interrupted);
            }
            page = fetch(out, &req, root, &selection, after.as_deref()) => page?,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::test_support::{
        ids_on, page, publishing_to, refusing, MemorySink, Reply, ScriptedPages,
    };
    use serde_json::{json, Value};

    const CALLS: &str = "telavox.studio.calls";
    const DEAD_LETTERS: &str = "telavox.studio.deadletter";

    fn call(id: &str) -> Value {
        json!({"idCall": id, "time": {"start": "2026-05-18T10:26:37.234Z"}})
    }

    fn event_id(record: &Value) -> String {
        let r = model::normalize_historic(DataSource::Calls, record).unwrap();
        Envelope::new("acme".into(), model::Origin::Replay, 0, r).event_id
    }

    async fn walk_calls(
        pages: &ScriptedPages,
        out: &WalkOutput,
        skip: &Skip<'_>,
        counters: &Counters,
    ) -> Result<WindowOutcome, HistoricError> {
        let filter = OverviewFilter {
            start_date: "2026-05-18T10:00:00.000Z".into(),
            end_date: "2026-05-18T11:00:00.000Z".into(),
            ..OverviewFilter::default()
        };
        let request = WindowRequest {
            pages,
            tenant: Arc::from("acme"),
            source: DataSource::Calls,
            filter: &filter,
            page_size: 2,
            origin: model::Origin::Replay,
            skip,
            counters,
        };
        walk(out, request).await
    }

    fn count(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn pages_are_walked_in_order_through_retries_and_each_record_published_once() {
        let (a, b, c) = (call("a"), call("b"), call("c"));
        let throttled = HistoricError::Http {
            status: 429,
            url: "http://127.0.0.1/graphql".into(),
            retry_after: Some(Duration::from_secs(30)),
        };
        let pages = ScriptedPages::new([
            Reply::Page(page(vec![a.clone(), b.clone()], Some("p2"))),
            // The second page repeats `b` (overlapping windows do).
            Reply::Retried {
                error: throttled,
                delay: Duration::from_secs(30),
                then: page(vec![b.clone(), c.clone()], None),
            },
        ]);
        let sink = Arc::new(MemorySink::new());
        let (out, publisher) = publishing_to(sink.clone());
        let claimed = RecentIds::new(100);
        let skip = Skip {
            claimed: Some(&claimed),
            reason: "already_on_broker",
            ..Skip::default()
        };
        let counters = Counters::default();
        let outcome = walk_calls(&pages, &out, &skip, &counters).await.unwrap();

        assert_eq!(outcome, WindowOutcome::Done);
        // Done means settled: everything is on the broker, in page order.
        assert_eq!(
            ids_on(&sink, CALLS),
            [event_id(&a), event_id(&b), event_id(&c)]
        );
        let cursors: Vec<_> = pages.asked().into_iter().map(|a| a.after).collect();
        assert_eq!(cursors, [None, Some("p2".to_string())]);
        assert_eq!(
            (
                count(&counters.records),
                count(&counters.repeats),
                count(&counters.pages),
                count(&counters.retries)
            ),
            (3, 1, 2, 1)
        );
        let metrics = out.metrics.render();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("studio_relay_replay_retries_total") && l.ends_with(" 1")),
            "{metrics}"
        );
        drop(out);
        assert_eq!(publisher.await.unwrap().published, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_records_and_records_the_broker_refuses_become_dead_letters() {
        let (a, b) = (call("a"), call("b"));
        let pages = ScriptedPages::new([Reply::Page(page(
            vec![json!(42), a.clone(), b.clone()],
            None,
        ))]);
        let sink = Arc::new(refusing(&event_id(&b)));
        let (out, publisher) = publishing_to(sink.clone());
        let counters = Counters::default();
        let outcome = walk_calls(&pages, &out, &Skip::default(), &counters)
            .await
            .unwrap();

        // A refused record does not fail its window: it is a dead letter.
        assert_eq!(outcome, WindowOutcome::Done);
        assert_eq!(ids_on(&sink, CALLS), [event_id(&a)]);
        assert_eq!(
            count(&counters.dead),
            1,
            "the walk dead-letters what does not normalize"
        );
        drop(out);
        let stats = publisher.await.unwrap();
        assert_eq!(
            stats.dead_lettered, 2,
            "the bad record's and the refused one's"
        );
        assert_eq!(ids_on(&sink, DEAD_LETTERS).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn records_on_the_destination_are_left_out_and_still_covered() {
        let (a, b) = (call("a"), call("b"));
        let pages = ScriptedPages::new([Reply::Page(page(vec![a.clone(), b.clone()], None))]);
        let sink = Arc::new(MemorySink::new());
        let (out, _publisher) = publishing_to(sink.clone());
        let on_destination = RecentIds::new(10);
        on_destination.insert(&event_id(&a));
        let covered = Mutex::new(Vec::new());
        let skip = Skip {
            event_ids: vec![&on_destination],
            reason: "already_on_broker",
            covered: Some(&covered),
            ..Skip::default()
        };
        let counters = Counters::default();
        walk_calls(&pages, &out, &skip, &counters).await.unwrap();

        assert_eq!(ids_on(&sink, CALLS), [event_id(&b)]);
        assert_eq!(count(&counters.skipped), 1);
        assert_eq!(
            covered.into_inner().unwrap(),
            [event_id(&a), event_id(&b)],
            "both are on the destination now"
        );
        let metrics = out.metrics.render();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("studio_relay_events_suppressed_total")
                    && l.contains("reason=\"already_on_broker\"")
                    && l.ends_with(" 1")),
            "{metrics}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeated_cursor_ends_the_window_with_an_error() {
        let pages = ScriptedPages::new([
            Reply::Page(page(vec![call("a")], Some("x"))),
            Reply::Page(page(vec![call("b")], Some("x"))),
        ]);
        let (out, _publisher) = publishing_to(Arc::new(MemorySink::new()));
        let e = walk_calls(&pages, &out, &Skip::default(), &Counters::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HistoricError::RepeatedCursor { cursor } if cursor == "x"),
            "{e}"
        );
        assert_eq!(pages.asked().len(), 2, "no third page is asked for");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_between_pages_interrupts_once_what_was_handed_over_settled() {
        let (a, b) = (call("a"), call("b"));
        let sink = Arc::new(MemorySink::new());
        let (out, _publisher) = publishing_to(sink.clone());
        let mut pages = ScriptedPages::new([
            Reply::Page(page(vec![a.clone(), b.clone()], Some("p2"))),
            Reply::Page(page(vec![call("c")], None)),
        ]);
        pages.on_first = Some(out.stop.clone());
        let counters = Counters::default();
        let outcome = walk_calls(&pages, &out, &Skip::default(), &counters)
            .await
            .unwrap();

        assert_eq!(outcome, WindowOutcome::Interrupted);
        assert_eq!(pages.asked().len(), 1);
        assert_eq!(ids_on(&sink, CALLS), [event_id(&a), event_id(&b)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_while_a_page_is_retried_interrupts_without_waiting_for_it() {
        let (a, b) = (call("a"), call("b"));
        let sink = Arc::new(MemorySink::new());
        let (out, _publisher) = publishing_to(sink.clone());
        let down = HistoricError::Protocol("connection refused".into());
        let pages = ScriptedPages::new([
            Reply::Page(page(vec![a.clone(), b.clone()], Some("p2"))),
            Reply::Retried {
                error: down,
                delay: Duration::from_secs(3600),
                then: page(vec![call("c")], None),
            },
        ]);
        let stop = out.stop.clone();
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
        let outcome = walk_calls(&pages, &out, &Skip::default(), &Counters::default())
            .await
            .unwrap();

        assert_eq!(outcome, WindowOutcome::Interrupted);
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "the walk waited for the retry: {:?}",
            started.elapsed()
        );
        assert_eq!(ids_on(&sink, CALLS), [event_id(&a), event_id(&b)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unauthorized_answer_fails_the_window() {
        let pages = ScriptedPages::new([Reply::Fail(HistoricError::Unauthorized {
            url: "http://127.0.0.1/graphql".into(),
        })]);
        let sink = Arc::new(MemorySink::new());
        let (out, _publisher) = publishing_to(sink.clone());
        let e = walk_calls(&pages, &out, &Skip::default(), &Counters::default())
            .await
            .unwrap_err();
        assert!(matches!(e, HistoricError::Unauthorized { .. }), "{e}");
        assert!(sink.acked().is_empty());
    }
}
