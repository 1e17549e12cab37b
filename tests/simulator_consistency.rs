//! Live and historic tell the same story: the final state of every record
//! pushed on /calls, /queues and /agents equals the GraphQL record of its
//! window, field for field after casing (snake_case <-> camelCase, epoch
//! millis <-> ISO-8601).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use studio_relay::config::Secret;
use studio_relay::simulator::{spawn, SimulateArgs};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "consistency";

/// GraphQL selection of every documented field, built from the § 3 field reference.
fn selection(spec: &Value) -> String {
    match spec {
        Value::Object(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| match v {
                    Value::Object(_) => format!("{k} {}", selection(v)),
                    Value::Array(items) => format!("{k} {}", selection(&items[0])),
                    _ => k.clone(),
                })
                .collect();
            format!("{{ {} }}", inner.join(" "))
        }
        _ => String::new(),
    }
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn iso_to_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Compares every historic field that the live record also has; returns the
/// number of leaf values compared.
fn compare(path: &str, hist: &Value, live: &Value, spec: &Value) -> usize {
    match (hist, spec) {
        (Value::Object(h), Value::Object(s)) => {
            let mut n = 0;
            for (key, sub) in s {
                let snake = camel_to_snake(key);
                let Some(l) = live.get(&snake) else {
                    continue; // historic-only field
                };
                n += compare(
                    &format!("{path}.{key}"),
                    h.get(key).unwrap_or(&Value::Null),
                    l,
                    sub,
                );
            }
            n
        }
        (_, Value::Array(items)) => {
            // live save_key_input is one object, historic a list
            let l = match live {
                Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            let h = hist.as_array().cloned().unwrap_or_default();
            assert_eq!(h.len(), l.len(), "{path}: list lengths differ");
            h.iter()
                .zip(&l)
                .map(|(a, b)| compare(path, a, b, &items[0]))
                .sum()
        }
        (Value::Number(n), Value::String(t)) if t == "Float" => {
            // epoch millis as Float; live sends an Int, or an ISO string for time_start
            let live_ms = live
                .as_f64()
                .or_else(|| live.as_str().and_then(iso_to_ms).map(|m| m as f64));
            assert_eq!(n.as_f64(), live_ms, "{path}: {n} vs {live}");
            1
        }
        (Value::String(s), Value::String(t)) if t == "DateTime" => {
            assert_eq!(iso_to_ms(s), live.as_i64(), "{path}: {s} vs {live}");
            1
        }
        _ => {
            assert_eq!(hist, live, "{path} differs");
            1
        }
    }
}

#[tokio::test]
async fn live_final_states_equal_graphql_records() {
    let sim = spawn(SimulateArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tokens: vec![Secret::new(TOKEN)],
        speed: 900.0, // 15 simulated minutes per real second
        rate: 15.0,
        seed: 99,
        ..SimulateArgs::default()
    })
    .await
    .expect("spawn");
    let epoch = sim.stats().sim_epoch_ms;

    let mut latest: HashMap<(&str, String), Value> = HashMap::new();
    let mut sockets = Vec::new();
    for source in ["calls", "queues", "agents"] {
        let mut req = format!("{}/{source}", sim.live_url())
            .into_client_request()
            .expect("req");
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {TOKEN}").parse().expect("hdr"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        sockets.push((source, ws));
    }
    let key = |source: &str, v: &Value| -> String {
        match source {
            "calls" => v["id_call"].to_string(),
            "queues" => format!(
                "{}/{}/{}",
                v["id_call"], v["queue"]["id"], v["time"]["start"]
            ),
            _ => format!(
                "{}/{}/{}",
                v["id_call"], v["agent"]["id"], v["time"]["start"]
            ),
        }
    };
    // 3 real seconds = 45 simulated minutes: journeys (at most 20 minutes) end.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut streams = futures::stream::select_all(
        sockets
            .into_iter()
            .map(|(source, ws)| ws.map(move |m| (source, m))),
    );
    while let Ok(Some((source, msg))) =
        tokio::time::timeout_at(deadline.into(), streams.next()).await
    {
        if let Ok(Message::Text(t)) = msg {
            let v: Value = serde_json::from_str(&t).expect("live frame is JSON");
            latest.insert((source, key(source, &v)), v);
        }
    }
    drop(streams);

    let now_iso = |ms: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
            .expect("ts")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let (from, to) = (now_iso(epoch - 3_600_000), now_iso(epoch + 48 * 3_600_000));
    let specs: HashMap<&str, Value> = [
        (
            "calls",
            include_str!("../src/simulator/specs/historic_calls.json"),
        ),
        (
            "queues",
            include_str!("../src/simulator/specs/historic_queues.json"),
        ),
        (
            "agents",
            include_str!("../src/simulator/specs/historic_agents.json"),
        ),
    ]
    .into_iter()
    .map(|(k, s)| (k, serde_json::from_str(s).expect("spec")))
    .collect();
    let client = reqwest::Client::new();
    let mut compared = 0usize;
    let mut finals = 0usize;
    for source in ["calls", "queues", "agents"] {
        let spec = &specs[source];
        let mut historic: HashMap<String, Value> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let q = format!(
                "query($after: String) {{ {source}(filter: {{startDate: \"{from}\", endDate: \"{to}\"}}, first: 1000, after: $after) {{ data {} totalCount cursor hasNextPage }} }}",
                selection(spec)
            );
            let body: Value = client
                .post(sim.graphql_url())
                .bearer_auth(TOKEN)
                .json(&json!({"query": q, "variables": {"after": after}}))
                .send()
                .await
                .expect("gql")
                .json()
                .await
                .expect("json");
            assert!(body.get("errors").is_none(), "{body}");
            let conn = &body["data"][source];
            for rec in conn["data"].as_array().expect("data") {
                let k = match source {
                    "calls" => rec["idCall"].to_string(),
                    "queues" => format!(
                        "{}/{}/{}",
                        rec["idCall"],
                        rec["queue"]["id"],
                        iso_to_ms(rec["time"]["start"].as_str().unwrap_or("")).unwrap_or(0)
                    ),
                    _ => format!(
                        "{}/{}/{}",
                        rec["idCall"],
                        rec["agent"]["id"],
                        iso_to_ms(rec["time"]["start"].as_str().unwrap_or("")).unwrap_or(0)
                    ),
                };
                historic.insert(k, rec.clone());
            }
            if conn["hasNextPage"] != true {
                break;
            }
            after = conn["cursor"].as_str().map(str::to_string);
        }
        for ((s, k), live) in latest.iter().filter(|((s, _), _)| *s == source) {
            if live["active"] != 0 {
                continue; // still in progress: may have moved on since the last frame we read
            }
            finals += 1;
            let hist = historic
                .get(k)
                .unwrap_or_else(|| panic!("{s} record {k} pushed live is missing from GraphQL"));
            compared += compare(source, hist, live, spec);
        }
    }
    assert!(finals >= 30, "only {finals} finished records seen live");
    assert!(
        compared > finals * 10,
        "too few fields compared: {compared}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn profile_history_hourly_batch_equals_graphql() {
    let sim = spawn(SimulateArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tokens: vec![Secret::new(TOKEN)],
        speed: 3600.0, // one simulated hour per real second
        rate: 5.0,
        agents: 4,
        seed: 11,
        ..SimulateArgs::default()
    })
    .await
    .expect("spawn");
    let mut req = format!("{}/profile_history", sim.live_url())
        .into_client_request()
        .expect("req");
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {TOKEN}").parse().expect("hdr"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    // silent until HH:00, then the whole batch of the past hour at once
    let mut batch: Vec<Value> = Vec::new();
    let first_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while batch.is_empty() {
        match tokio::time::timeout_at(first_deadline, ws.next())
            .await
            .expect("no hourly batch within 10 s")
        {
            Some(Ok(Message::Text(t))) => batch.push(serde_json::from_str(&t).expect("json")),
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
    let hour_start = batch[0]["slot"]["start_date"]
        .as_i64()
        .expect("slot start")
        .div_euclid(3_600_000)
        * 3_600_000;
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(300), ws.next()).await
    {
        let v: Value = serde_json::from_str(&t).expect("json");
        if v["slot"]["start_date"].as_i64().unwrap_or(0) < hour_start + 3_600_000 {
            batch.push(v);
        }
    }
    assert!(
        batch.len() >= 4,
        "one slot per agent at least: {}",
        batch.len()
    );
    for rec in &batch {
        let (s, e) = (
            rec["slot"]["start_date"].as_i64().unwrap_or(0),
            rec["slot"]["end_date"].as_i64().unwrap_or(0),
        );
        assert!(
            s >= hour_start && e <= hour_start + 3_600_000 && s < e,
            "{rec}"
        );
    }
    let spec: Value = serde_json::from_str(include_str!(
        "../src/simulator/specs/historic_profile_history.json"
    ))
    .expect("spec");
    let iso = |ms: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
            .expect("ts")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let q = format!(
        "{{ profile_history(filter: {{startDate: \"{}\", endDate: \"{}\"}}, first: 1000) {{ data {} totalCount hasNextPage }} }}",
        iso(hour_start),
        iso(hour_start + 3_600_000),
        selection(&spec)
    );
    let body: Value = reqwest::Client::new()
        .post(sim.graphql_url())
        .bearer_auth(TOKEN)
        .json(&json!({ "query": q }))
        .send()
        .await
        .expect("gql")
        .json()
        .await
        .expect("json");
    assert!(body.get("errors").is_none(), "{body}");
    let hist = body["data"]["profile_history"]["data"]
        .as_array()
        .cloned()
        .expect("data");
    assert_eq!(
        hist.len(),
        batch.len(),
        "GraphQL and the live batch disagree on the number of slots"
    );
    assert_eq!(
        body["data"]["profile_history"]["totalCount"].as_u64(),
        Some(batch.len() as u64)
    );
    for live in &batch {
        let h = hist
            .iter()
            .find(|h| {
                h["agent"]["id"] == live["agent"]["id"]
                    && h["slot"]["startDate"].as_f64() == live["slot"]["start_date"].as_f64()
            })
            .unwrap_or_else(|| panic!("live slot missing from GraphQL: {live}"));
        // profileAvailable (historic) mirrors profile_available (live, absent for not-available slots)
        let n = compare("profile_history", h, live, &spec);
        assert!(n >= 8, "{n}");
    }
    sim.shutdown().await;
}
