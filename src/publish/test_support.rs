//! Test doubles for the publishing path, for tests that run on paused
//! time without sockets: the scripted in-memory sink, and historic pages
//! read from a script.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{EncodingFormat, SinkConfig};
use crate::ops::Metrics;
use crate::publish::message_builder::MessageBuilder;
use crate::publish::publisher::{self, PublisherSettings, PublisherStats};
use crate::publish::spool::Intake;
use crate::publish::window::{HistoricPages, WalkOutput};
use crate::sink::memory::Outcome;
use crate::sink::SinkErrorKind;
use crate::upstream::historic::{HistoricError, OverviewFilter, Page};

pub use crate::sink::memory::MemorySink;

/// A sink that refuses `event_id` at the ack (once), as a broker would.
pub fn refusing(event_id: &str) -> MemorySink {
    let sink = MemorySink::new();
    sink.script_for(event_id, [Outcome::Refuse(SinkErrorKind::Rejected)]);
    sink
}

/// The event ids acknowledged on destinations starting with `prefix`.
pub fn ids_on(sink: &MemorySink, prefix: &str) -> Vec<String> {
    sink.acked()
        .into_iter()
        .filter(|m| m.destination.starts_with(prefix))
        .map(|m| m.event_id)
        .collect()
}

/// A publisher on `sink` and everything a window walk hands records to.
pub fn publishing_to(
    sink: Arc<MemorySink>,
) -> (WalkOutput, tokio::task::JoinHandle<PublisherStats>) {
    let builder = Arc::new(MessageBuilder::without_registry(
        EncodingFormat::Json,
        &SinkConfig::default(),
    ));
    let metrics = Arc::new(Metrics::new());
    let (tx, _, publisher) = publisher::spawn(
        sink,
        builder.clone(),
        metrics.clone(),
        PublisherSettings::default(),
        64,
    );
    let out = WalkOutput {
        tx: Intake::direct(tx),
        builder,
        metrics,
        stop: CancellationToken::new(),
    };
    (out, publisher)
}

/// One answer of [`ScriptedPages`].
pub enum Reply {
    Page(Page),
    /// Fails with `error`, says it retries after `delay`, waits, then
    /// answers the page (as the GraphQL client's retries do).
    Retried {
        error: HistoricError,
        delay: Duration,
        then: Page,
    },
    Fail(HistoricError),
}

/// A page of `records` with `next` as the cursor to the next page.
pub fn page(records: Vec<Value>, next: Option<&str>) -> Page {
    Page {
        total_count: Some(records.len() as u64),
        data: records,
        cursor: next.map(str::to_string),
        has_next_page: next.is_some(),
    }
}

/// What a walk asked for: the filter's dates and the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub start_date: String,
    pub end_date: String,
    pub after: Option<String>,
}

/// Answers page requests from a script, in order; records what was asked.
/// Past the script's end it fails (a walk asking for more is a bug).
#[derive(Default)]
pub struct ScriptedPages {
    replies: Mutex<VecDeque<Reply>>,
    asked: Mutex<Vec<Asked>>,
    /// Cancelled when the script's first reply is taken (to stop a walk
    /// between pages).
    pub on_first: Option<CancellationToken>,
}

impl ScriptedPages {
    pub fn new(replies: impl IntoIterator<Item = Reply>) -> ScriptedPages {
        ScriptedPages {
            replies: Mutex::new(replies.into_iter().collect()),
            ..ScriptedPages::default()
        }
    }

    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

impl HistoricPages for ScriptedPages {
    fn page(
        &self,
        _root: &'static str,
        _selection: &str,
        filter: &OverviewFilter,
        _first: u32,
        after: Option<&str>,
        on_retry: &mut (dyn FnMut(&HistoricError, Duration) + Send),
    ) -> impl Future<Output = Result<Page, HistoricError>> + Send {
        let first = {
            let mut asked = self.asked.lock().unwrap();
            asked.push(Asked {
                start_date: filter.start_date.clone(),
                end_date: filter.end_date.clone(),
                after: after.map(str::to_string),
            });
            asked.len() == 1
        };
        let reply = self.replies.lock().unwrap().pop_front();
        if let (true, Some(stop)) = (first, &self.on_first) {
            stop.cancel();
        }
        async move {
            match reply {
                None => Err(HistoricError::Protocol(
                    "the script has no more pages".into(),
                )),
                Some(Reply::Page(page)) => Ok(page),
                Some(Reply::Fail(e)) => Err(e),
                Some(Reply::Retried { error, delay, then }) => {
                    on_retry(&error, delay);
                    tokio::time::sleep(delay).await;
                    Ok(then)
                }
            }
        }
    }
}
