//! The historic layer: one GraphQL endpoint, a date window per query, cursor
//! pages (reference §3). Used by `replay` and by gap backfill.
//!
//! Filters travel only as GraphQL variables, never spliced into the query
//! text, so an agent name with quotes or braces is just data.

use std::collections::HashSet;
use std::time::Duration;

use backon::Retryable;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::{redact_url, Secret};

/// How far [`OverviewFilter::window_within`] reaches into the next window.
pub const WINDOW_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// The §3.1 `OverviewFilter`. `start_date`/`end_date` are required by the API.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OverviewFilter {
    pub start_date: String,
    pub end_date: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_account_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivr_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivr_account_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ivr_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_account_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

impl OverviewFilter {
    /// A filter for the window `[from, to)` with the other fields of `template`.
    pub fn window(template: &OverviewFilter, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        OverviewFilter {
            start_date: from.to_rfc3339_opts(SecondsFormat::Millis, true),
            end_date: to.to_rfc3339_opts(SecondsFormat::Millis, true),
            ..template.clone()
        }
    }

    /// [`OverviewFilter::window`] with `endDate` one [`WINDOW_OVERLAP`]
    /// later, but never past `range_end`: adjacent windows of one range
    /// then overlap. The reference does not say whether `startDate` and
    /// `endDate` are inclusive (its examples end at `23:59:59Z`); were both
    /// exclusive, a record exactly on the boundary of two windows would be
    /// in neither. With the overlap it is in one window whatever the
    /// reading, or in two, and the second copy is suppressed by its match
    /// key (docs/upstream-contract.md).
    pub fn window_within(
        template: &OverviewFilter,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        range_end: DateTime<Utc>,
    ) -> Self {
        let end = (to + WINDOW_OVERLAP).min(range_end).max(to);
        Self::window(template, from, end)
    }

    /// True when only the date window is set (then `totalCount` is trustworthy, §3.1).
    pub fn is_unfiltered(&self) -> bool {
        self.queue_id.is_none()
            && self.queue_account_id.is_none()
            && self.queue_name.is_none()
            && self.ivr_id.is_none()
            && self.ivr_account_id.is_none()
            && self.ivr_name.is_none()
            && self.agent_id.is_none()
            && self.agent_account_id.is_none()
            && self.agent_name.is_none()
            && self.call_id.is_none()
    }
}

/// One page of a root query.
#[derive(Debug, Clone)]
pub struct Page {
    pub data: Vec<Value>,
    pub total_count: Option<u64>,
    pub cursor: Option<String>,
    pub has_next_page: bool,
}

/// What can go wrong talking to the historic layer.
#[derive(Debug, thiserror::Error)]
pub enum HistoricError {
    #[error("HTTP 401 from {url}: the Statistics Token is missing, expired or revoked")]
    Unauthorized { url: String },
    #[error("GraphQL error: {message} (query: {query})")]
    GraphQl { message: String, query: String },
    #[error("HTTP {status} from {url}")]
    Http {
        status: u16,
        url: String,
        retry_after: Option<Duration>,
    },
    #[error("network error talking to {url}: {message}")]
    Network { url: String, message: String },
    #[error("unexpected response: {0}")]
    Protocol(String),
    #[error("the API repeated cursor {cursor:?}; stopping this window instead of looping")]
    RepeatedCursor { cursor: String },
    #[error("the API returned {got} records for first: {first}; stopping this window")]
    PageTooLarge { got: usize, first: u32 },
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<HistoricError>,
    },
}

impl HistoricError {
    /// 429, 5xx and network errors are worth another try; the rest are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            HistoricError::Http { status, .. } => *status == 429 || *status >= 500,
            HistoricError::Network { .. } => true,
            _ => false,
        }
    }

    /// The delay the server asked for (HTTP `Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        match self {
            HistoricError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Retry policy for retryable errors.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delays before each retry: from `min_delay`, doubling, capped at
    /// `max_delay`, `max_attempts - 1` of them.
    fn delays(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// A GraphQL client for one tenant.
#[derive(Clone)]
pub struct GraphqlClient {
    http: reqwest::Client,
    url: String,
    token: Secret,
    retry: RetryPolicy,
}

impl std::fmt::Debug for GraphqlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphqlClient")
            .field("url", &redact_url(&self.url))
            .field("token", &self.token)
            .finish()
    }
}

/// The query text for one root query; every filter is a variable.
pub fn page_query(root: &str, selection: &str) -> String {
    format!(
        "query StudioRelayPage($filter: OverviewFilter, $first: Int!, $after: String) {{ \
         {root}(filter: $filter, first: $first, after: $after) {{ data {selection} totalCount cursor hasNextPage }} }}"
    )
}

impl GraphqlClient {
    pub fn new(
        url: &str,
        token: Secret,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, HistoricError> {
        Self::with_roots(url, token, timeout, retry, Vec::new())
    }

    /// [`GraphqlClient::new`], trusting `roots` too (`upstream.ca_file`,
    /// [`crate::upstream::tls::UpstreamTls::extra_roots`]).
    pub fn with_roots(
        url: &str,
        token: Secret,
        timeout: Duration,
        retry: RetryPolicy,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, HistoricError> {
        let mut http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("studio-relay/", env!("CARGO_PKG_VERSION")));
        for root in roots {
            http = http.add_root_certificate(root);
        }
        let http = http
            .build()
            .map_err(|e| HistoricError::Protocol(format!("cannot build HTTP client: {e}")))?;
        Ok(GraphqlClient {
            http,
            url: url.to_string(),
            token,
            retry,
        })
    }

    /// Fetches one page, retrying retryable failures (honouring `Retry-After`).
    /// `on_retry` is told about each retry (for metrics and logs).
    pub async fn fetch_page(
        &self,
        root: &str,
        selection: &str,
        filter: &OverviewFilter,
        first: u32,
        after: Option<&str>,
        mut on_retry: impl FnMut(&HistoricError, Duration),
    ) -> Result<Page, HistoricError> {
        let query = page_query(root, selection);
        let body = serde_json::json!({
            "query": query,
            "variables": { "filter": filter, "first": first, "after": after },
        });
        let mut attempts = 0;
        let page = (|| {
            attempts += 1;
            self.post_once(root, &query, &body)
        })
        .retry(self.retry.delays())
        .when(HistoricError::is_retryable)
        // The server said when; honour it even above our own cap.
        .adjust(|e, delay| delay.map(|d| e.retry_after().unwrap_or(d)))
        .notify(|e, delay| on_retry(e, delay))
        .await;
        match page {
            Ok(page) if page.data.len() > first as usize => Err(HistoricError::PageTooLarge {
                got: page.data.len(),
                first,
            }),
            Ok(page) => Ok(page),
            Err(e) if e.is_retryable() => Err(HistoricError::RetriesExhausted {
                attempts,
                last: Box::new(e),
            }),
            Err(e) => Err(e),
        }
    }

    async fn post_once(
        &self,
        root: &str,
        query: &str,
        body: &Value,
    ) -> Result<Page, HistoricError> {
        let url = redact_url(&self.url);
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| HistoricError::Network {
                url: url.clone(),
                message: crate::ops::logging::error_chain(&e.without_url()),
            })?;
        let status = resp.status().as_u16();
        if status == 401 {
            return Err(HistoricError::Unauthorized { url });
        }
        if !(200..300).contains(&status) {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(HistoricError::Http {
                status,
                url,
                retry_after,
            });
        }
        let json: Value = resp.json().await.map_err(|e| HistoricError::Network {
            url: url.clone(),
            message: crate::ops::logging::error_chain(&e.without_url()),
        })?;
        if let Some(errors) = json
            .get("errors")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            let message = errors
                .iter()
                .map(|e| {
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("(no message)")
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(HistoricError::GraphQl {
                message,
                query: query.to_string(),
            });
        }
        let conn = json
            .get("data")
            .and_then(|d| d.get(root))
            .ok_or_else(|| HistoricError::Protocol(format!("response has no data.{root}")))?;
        let data = match conn.get("data") {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(HistoricError::Protocol(format!(
                    "data.{root}.data is not a list: {other}"
                )))
            }
        };
        Ok(Page {
            data,
            total_count: conn.get("totalCount").and_then(Value::as_u64),
            cursor: conn
                .get("cursor")
                .and_then(Value::as_str)
                .map(str::to_string),
            has_next_page: conn
                .get("hasNextPage")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// Guards a window's page walk against cursors that repeat.
#[derive(Default)]
pub struct CursorGuard {
    seen: HashSet<String>,
}

impl CursorGuard {
    /// Accepts the next cursor, or fails if it was seen before in this window.
    pub fn next(&mut self, page: &Page) -> Result<Option<String>, HistoricError> {
        if !page.has_next_page {
            return Ok(None);
        }
        let cursor = page.cursor.clone().ok_or_else(|| {
            HistoricError::Protocol("hasNextPage is true but cursor is missing".into())
        })?;
        if !self.seen.insert(cursor.clone()) {
            return Err(HistoricError::RepeatedCursor { cursor });
        }
        Ok(Some(cursor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_windows_overlap_by_a_second_but_not_past_the_range() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let none = OverviewFilter::default();
        let (a, b, end) = (
            t("2025-10-01T00:00:00Z"),
            t("2025-10-01T01:00:00Z"),
            t("2025-10-01T02:00:00Z"),
        );
        let first = OverviewFilter::window_within(&none, a, b, end);
        assert_eq!(first.start_date, "2025-10-01T00:00:00.000Z");
        assert_eq!(first.end_date, "2025-10-01T01:00:01.000Z");
        let last = OverviewFilter::window_within(&none, b, end, end);
        assert_eq!(
            last.end_date, "2025-10-01T02:00:00.000Z",
            "the range's end stays"
        );
    }

    #[test]
    fn filters_are_variables_not_query_text() {
        let q = page_query("agents", "{ idCall }");
        assert!(q.contains("$filter: OverviewFilter"));
        let f = OverviewFilter {
            agent_name: Some("O'Brien \"} { calls".into()),
            ..Default::default()
        };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["agentName"], "O'Brien \"} { calls");
        assert!(!f.is_unfiltered());
    }

    #[test]
    fn repeated_cursor_is_an_error() {
        let page = |c: &str| Page {
            data: vec![],
            total_count: None,
            cursor: Some(c.into()),
            has_next_page: true,
        };
        let mut g = CursorGuard::default();
        assert_eq!(g.next(&page("a")).unwrap().as_deref(), Some("a"));
        assert!(matches!(
            g.next(&page("a")),
            Err(HistoricError::RepeatedCursor { .. })
        ));
        let last = Page {
            data: vec![],
            total_count: None,
            cursor: None,
            has_next_page: false,
        };
        assert!(g.next(&last).unwrap().is_none());
    }

    #[test]
    fn retryable_kinds() {
        let http = |status| HistoricError::Http {
            status,
            url: String::new(),
            retry_after: None,
        };
        assert!(http(429).is_retryable());
        assert!(http(503).is_retryable());
        assert!(!http(400).is_retryable());
        assert!(!HistoricError::Unauthorized { url: String::new() }.is_retryable());
    }
}
