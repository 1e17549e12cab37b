//! A checked-in corpus of hostile input run through the whole path.
//!
//! Frames (`tests/fixtures/hostile/frames/<source>.<case>[.ok].<ext>`) go
//! through the relay's own frame → normalize → encode → message step: a case
//! marked `.ok` must become a record (unknown fields kept in `extra`), every
//! other case a dead letter carrying the raw bytes and a reason, counted in
//! the metrics; nothing may panic. GraphQL answers (errors, cursor loops,
//! oversized pages, 401, 429, 5xx, non-JSON) come from a canned server and
//! must be retried or fail with the right error kind.

mod support;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use studio_relay::config::{EncodingFormat, Secret, SinkConfig};
use studio_relay::model::DataSource;
use studio_relay::ops::Metrics;
use studio_relay::relay::{frame_to_outgoing, MessageBuilder};
use studio_relay::upstream::historic::{
    CursorGuard, GraphqlClient, HistoricError, OverviewFilter, RetryPolicy,
};
use studio_relay::upstream::live::{FramePayload, LiveFrame};
use support::live::{header, metric_sum};

fn frame(source: DataSource, payload: FramePayload) -> LiveFrame {
    LiveFrame {
        tenant: Arc::from("acme"),
        source,
        received_at_ms: 1_779_100_000_000,
        received: Instant::now(),
        payload,
    }
}

#[test]
fn every_hostile_frame_is_dead_lettered_or_kept_and_nothing_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile/frames");
    let metrics = Metrics::new();
    let mut cases: Vec<(String, DataSource, FramePayload, bool)> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let source: DataSource = name.split('.').next().unwrap().parse().unwrap();
        let raw = Bytes::from(std::fs::read(&path).unwrap());
        cases.push((
            name.clone(),
            source,
            FramePayload::from_bytes(raw),
            name.contains(".ok."),
        ));
    }
    assert!(cases.len() >= 20, "corpus too small: {}", cases.len());
    // Generated cases too big or too odd to check in.
    let call = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/normalize/calls.simulator.live.json"),
    )
    .unwrap();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let mut huge = br#"{"id_call":""#.to_vec();
    huge.resize(5 << 20, b'x');
    for (name, payload) in [
        (
            "generated.deep-array",
            FramePayload::from_bytes(Bytes::from(deep)),
        ),
        (
            "generated.deep-object",
            FramePayload::from_bytes(Bytes::from(deep_obj)),
        ),
        (
            "generated.5mib-unterminated",
            FramePayload::from_bytes(Bytes::from(huge)),
        ),
        (
            "generated.binary",
            FramePayload::Binary(Bytes::from(call.clone())),
        ),
        (
            "generated.oversized",
            FramePayload::Oversized {
                head: Bytes::from(call[..100].to_vec()),
                len: 9 << 20,
            },
        ),
    ] {
        cases.push((name.into(), DataSource::Calls, payload, false));
    }

    let builder = MessageBuilder::without_registry(EncodingFormat::Avro, &SinkConfig::default());
    let mut dead = 0;
    for (name, source, payload, ok) in cases {
        let raw = match &payload {
            FramePayload::Text(t) => Bytes::from(t.clone()),
            FramePayload::Binary(b) => b.clone(),
            FramePayload::Oversized { head, .. } => head.clone(),
        };
        let outs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            frame_to_outgoing(frame(source, payload), &builder, &metrics, None)
        }))
        .unwrap_or_else(|_| panic!("{name}: the relay panicked"));
        assert!(
            !outs.is_empty(),
            "{name}: a frame gives at least one message"
        );
        // A batch frame (a JSON array) is relayed element by element.
        let elements: Option<Vec<&serde_json::value::RawValue>> = serde_json::from_slice(&raw)
            .ok()
            .filter(|_| outs.len() > 1 || name.contains("array"));
        for out in &outs {
            if ok {
                assert_eq!(out.origin, "live", "{name} should be relayed as a record");
                assert_eq!(
                    out.message.destination,
                    format!("telavox.studio.{source}.v1")
                );
                continue;
            }
            if out.origin == "live" {
                assert!(elements.is_some(), "{name}: only a batch may hold records");
                continue;
            }
            dead += 1;
            assert_eq!(out.origin, "deadletter", "{name} should be dead-lettered");
            assert_eq!(out.message.destination, "telavox.studio.deadletter");
            let reason = header(&out.message.headers, "studio_relay_reason").unwrap();
            assert!(!reason.is_empty(), "{name}");
            let kept = match header(&out.message.headers, "studio_relay_element_index") {
                Some(i) => {
                    let items = elements.as_ref().expect("an element of a batch");
                    Bytes::copy_from_slice(items[i.parse::<usize>().unwrap()].get().as_bytes())
                }
                None => raw.clone(),
            };
            let kept = &kept[..kept.len().min(SinkConfig::default().deadletter_max_bytes)];
            assert_eq!(
                &out.message.payload[..],
                kept,
                "{name}: the dead letter keeps the raw bytes"
            );
            eprintln!("{name}: dead-lettered ({reason})");
        }
        if !ok {
            assert!(
                outs.iter().any(|o| o.origin == "deadletter"),
                "{name} should be dead-lettered"
            );
        }
    }
    let text = metrics.render();
    assert_eq!(
        metric_sum(&text, "studio_relay_events_deadlettered_total", ""),
        dead as f64,
        "every dead letter is counted"
    );
    assert!(
        metric_sum(&text, "studio_relay_unknown_fields_total", "") >= 2.0,
        "unknown fields are counted\n{text}"
    );
}

/// One canned HTTP answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    body: String,
    retry_after: Option<&'static str>,
}

fn ok(body: serde_json::Value) -> Canned {
    Canned {
        status: 200,
        body: body.to_string(),
        retry_after: None,
    }
}

fn status(status: u16, retry_after: Option<&'static str>) -> Canned {
    Canned {
        status,
        body: "{}".into(),
        retry_after,
    }
}

fn page(n: usize, cursor: &str, next: bool) -> Canned {
    let data: Vec<_> = (0..n)
        .map(|i| serde_json::json!({ "idCall": format!("c{i}") }))
        .collect();
    // §3.1's connection: data, totalCount, cursor, hasNextPage.
    ok(serde_json::json!({ "data": { "calls": {
        "totalCount": 100, "data": data, "cursor": cursor, "hasNextPage": next
    }}}))
}

/// Serves the queued answers in order, then 500s; counts requests.
async fn canned_server(answers: Vec<Canned>) -> (String, Arc<Mutex<usize>>) {
    let queue = Arc::new(Mutex::new(VecDeque::from(answers)));
    let hits = Arc::new(Mutex::new(0usize));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move |_headers: HeaderMap| {
        let queue = queue.clone();
        let h = h.clone();
        async move {
            *h.lock().unwrap() += 1;
            let a = queue
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(status(500, None));
            let mut resp: Response =
                (StatusCode::from_u16(a.status).unwrap(), a.body).into_response();
            if let Some(r) = a.retry_after {
                resp.headers_mut().insert("retry-after", r.parse().unwrap());
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/graphql"), hits)
}

/// Walks every page like replay does; returns records or the error.
async fn walk(url: &str) -> Result<usize, HistoricError> {
    let client = GraphqlClient::new(
        url,
        Secret::new("hostile-token"),
        Duration::from_secs(5),
        RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
    )
    .unwrap();
    let filter = OverviewFilter {
        start_date: "2025-10-01T00:00:00Z".into(),
        end_date: "2025-10-02T00:00:00Z".into(),
        ..Default::default()
    };
    let mut guard = CursorGuard::default();
    let mut after = None;
    let mut n = 0;
    loop {
        let p = client
            .fetch_page(
                "calls",
                "{ idCall }",
                &filter,
                10,
                after.as_deref(),
                |_, _| {},
            )
            .await?;
        n += p.data.len();
        match guard.next(&p)? {
            Some(c) => after = Some(c),
            None => return Ok(n),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_graphql_answers_are_retried_or_fail_with_the_right_kind() {
    // 429 with Retry-After, then 502, then two good pages: retried, all records.
    let (url, hits) = canned_server(vec![
        status(429, Some("0")),
        status(502, None),
        page(10, "a", true),
        page(3, "b", false),
    ])
    .await;
    assert_eq!(walk(&url).await.unwrap(), 13);
    assert_eq!(*hits.lock().unwrap(), 4);

    // 401: no retry.
    let (url, hits) = canned_server(vec![status(401, None)]).await;
    let e = walk(&url).await.unwrap_err();
    assert!(matches!(e, HistoricError::Unauthorized { .. }), "{e}");
    assert_eq!(*hits.lock().unwrap(), 1, "401 is not retried");
    assert!(!e.to_string().contains("hostile-token"));

    // HTTP 200 with `errors`: the message and the query, no retry.
    let (url, _) = canned_server(vec![ok(serde_json::json!({
        "errors": [{ "message": "Variable \"$filter\" got invalid value" }], "data": null
    }))])
    .await;
    let e = walk(&url).await.unwrap_err();
    assert!(matches!(e, HistoricError::GraphQl { .. }), "{e}");
    assert!(e.to_string().contains("invalid value") && e.to_string().contains("calls"));

    // A cursor that repeats: stop instead of looping.
    let (url, _) = canned_server(vec![page(10, "same", true), page(10, "same", true)]).await;
    let e = walk(&url).await.unwrap_err();
    assert!(matches!(e, HistoricError::RepeatedCursor { .. }), "{e}");

    // More records than `first`: stop.
    let (url, _) = canned_server(vec![page(11, "a", false)]).await;
    let e = walk(&url).await.unwrap_err();
    assert!(
        matches!(e, HistoricError::PageTooLarge { got: 11, first: 10 }),
        "{e}"
    );

    // Non-JSON 200 and a JSON without data: protocol errors, not panics.
    for body in ["<html>maintenance</html>", "{\"data\": null}", "[]"] {
        let (url, _) = canned_server(vec![Canned {
            status: 200,
            body: body.into(),
            retry_after: None,
        }])
        .await;
        let e = walk(&url).await.unwrap_err();
        assert!(
            !e.is_retryable() || matches!(e, HistoricError::RetriesExhausted { .. }),
            "{body}: {e}"
        );
    }

    // 5xx forever: bounded attempts, then the last error.
    let (url, hits) = canned_server(vec![]).await;
    let e = walk(&url).await.unwrap_err();
    assert!(
        matches!(e, HistoricError::RetriesExhausted { attempts: 4, .. }),
        "{e}"
    );
    assert_eq!(*hits.lock().unwrap(), 4);
}
