//! The simulator's API surface: auth, `Invalid path.`, live frames, GraphQL
//! quirks, pagination, and the fault flags.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use studio_relay::config::Secret;
use studio_relay::simulator::{spawn, SimulateArgs, SimulatorHandle};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "test-token";
const LIMIT: Duration = Duration::from_secs(20);

fn args() -> SimulateArgs {
    SimulateArgs {
        listen: "127.0.0.1:0".parse().expect("addr"),
        tokens: vec![Secret::new(TOKEN), Secret::new("second-tenant")],
        speed: 600.0,
        rate: 20.0,
        seed: 7,
        ..SimulateArgs::default()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    sim: &SimulatorHandle,
    path: &str,
    token: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("{}{path}", sim.live_url()).into_client_request()?;
    if let Some(t) = token {
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

fn http_status(err: tokio_tungstenite::tungstenite::Error) -> u16 {
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP error, got {other}"),
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("no frame in time")
            .expect("stream ended")
            .expect("ws error");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn gql(sim: &SimulatorHandle, token: Option<&str>, body: Value) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.post(sim.graphql_url()).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("graphql request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn handshake_auth_and_invalid_path() {
    let sim = spawn(args()).await.expect("spawn");
    assert_eq!(
        http_status(
            connect(&sim, "/calls", None)
                .await
                .expect_err("no token must fail")
        ),
        401
    );
    assert_eq!(
        http_status(
            connect(&sim, "/calls", Some("wrong"))
                .await
                .expect_err("bad token must fail")
        ),
        401
    );

    let mut ws = connect(&sim, "/foo", Some(TOKEN))
        .await
        .expect("unknown path still upgrades (101)");
    assert_eq!(next_text(&mut ws).await, "Invalid path.");
    let after = tokio::time::timeout(LIMIT, ws.next())
        .await
        .expect("close in time");
    assert!(
        matches!(after, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{after:?}"
    );

    let (status, _) = gql(&sim, None, json!({"query": "{ __typename }"})).await;
    assert_eq!(status, 401);
    let (status, _) = gql(&sim, Some("wrong"), json!({"query": "{ __typename }"})).await;
    assert_eq!(status, 401);

    let stats = sim.stats();
    assert_eq!(stats.handshakes_unauthorized, 2);
    assert_eq!(stats.invalid_paths, 1);
    assert_eq!(stats.graphql_unauthorized, 2);
    // an absurd window is answered quickly (records only exist up to now)
    let (status, body) = gql(
        &sim,
        Some(TOKEN),
        json!({"query": "{ queues(filter: {startDate: \"0001-01-01T00:00:00Z\", endDate: \"9999-12-31T23:59:59Z\"}, first: 1) { totalCount } }"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["data"]["queues"]["totalCount"].is_u64(), "{body}");
    let token = sim.shutdown_token();
    token.cancel();
    sim.join().await.expect("clean stop");
}

#[tokio::test]
async fn live_sockets_push_documented_payloads_and_answer_pings() {
    let sim = spawn(args()).await.expect("spawn");
    let mut calls = connect(&sim, "/calls", Some(TOKEN)).await.expect("calls");
    let mut agents = connect(&sim, "/agents", Some(TOKEN)).await.expect("agents");
    let mut presence = connect(&sim, "/profile_live", Some(TOKEN))
        .await
        .expect("profile_live");
    let call: Value = serde_json::from_str(&next_text(&mut calls).await).expect("json");
    assert!(
        call["id_call"].is_string() && call["time"]["start"].is_i64(),
        "{call}"
    );
    assert!(
        call["agent_list"].is_array(),
        "agent_list is sent as an array: {call}"
    );
    assert!(call["customer_telavox"]["name"].is_string());
    let agent: Value = serde_json::from_str(&next_text(&mut agents).await).expect("json");
    assert!(agent["agent"]["account_id"].is_i64(), "{agent}");
    let p: Value = serde_json::from_str(&next_text(&mut presence).await).expect("json");
    assert!(
        p["profile"]["not_active"].is_array() && p["queue_login"]["logged_in"].is_array(),
        "{p}"
    );

    // liveness: a ping is answered with a pong
    use futures::SinkExt;
    calls
        .send(Message::Ping(b"alive?".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(LIMIT, async {
        loop {
            match calls.next().await {
                Some(Ok(Message::Pong(p))) => return p.to_vec(),
                Some(Ok(_)) => continue,
                other => panic!("socket ended before pong: {other:?}"),
            }
        }
    })
    .await
    .expect("pong in time");
    assert_eq!(pong, b"alive?");

    let stats: Value = reqwest::get(format!("http://{}/_simulator/stats", sim.addr()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert!(
        stats["frames_pushed"]["calls"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert!(
        stats["frames_delivered"]["calls"].as_u64().unwrap_or(0) >= 1,
        "{stats}"
    );
    assert_eq!(stats["connections_open"], 3, "{stats}");
    sim.shutdown().await;
}

#[tokio::test]
async fn graphql_quirks() {
    let sim = spawn(args()).await.expect("spawn");
    for root in ["calls", "queues", "agents", "profile_history"] {
        let (status, body) = gql(
            &sim,
            Some(TOKEN),
            json!({"query": format!("{{ {root}(first: 5) {{ totalCount }} }}")}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body["errors"][0]["message"], "too_long_http_line_exception",
            "{root}: {body}"
        );
        let (_, body) = gql(
            &sim,
            Some(TOKEN),
            json!({"query": format!("{{ {root}(filter: {{startDate: \"2025-10-01T00:00:00Z\"}}, first: 5) {{ totalCount }} }}")}),
        )
        .await;
        assert_eq!(
            body["errors"][0]["message"], "too_long_http_line_exception",
            "{root}: {body}"
        );
    }
    let (status, body) = gql(
        &sim,
        Some(TOKEN),
        json!({"query": "{ calls(filter: {startDate: \"2025-10-01T00:00:00Z\", endDate: \"2025-10-02T00:00:00Z\"}, first: 5) { data { noSuchField } totalCount } }"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    sim.shutdown().await;
}

async fn walk(
    sim: &SimulatorHandle,
    root: &str,
    selection: &str,
    filter_extra: &str,
    from: &str,
    to: &str,
) -> (u64, Vec<Value>) {
    let mut after: Option<String> = None;
    let mut all = Vec::new();
    let mut total = None;
    for _ in 0..10_000 {
        let query = format!(
            "query($after: String) {{ {root}(filter: {{startDate: \"{from}\", endDate: \"{to}\"{filter_extra}}}, first: 250, after: $after) {{ data {{ {selection} }} totalCount cursor hasNextPage }} }}"
        );
        let (status, body) = gql(
            sim,
            Some(TOKEN),
            json!({"query": query, "variables": {"after": after}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        let conn = &body["data"][root];
        let t = conn["totalCount"].as_u64().expect("totalCount");
        assert_eq!(
            *total.get_or_insert(t),
            t,
            "totalCount changed between pages"
        );
        all.extend(conn["data"].as_array().cloned().unwrap_or_default());
        if conn["hasNextPage"] != true {
            return (t, all);
        }
        after = conn["cursor"].as_str().map(str::to_string);
        assert!(after.is_some(), "hasNextPage without cursor");
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn pagination_walks_return_exactly_total_count_and_filters_do_not_shrink_it() {
    let mut a = args();
    a.history_days = 1;
    a.speed = 60.0;
    a.rate = 1.0; // one call per simulated minute per tenant: 1440 per history day
    let sim = spawn(a).await.expect("spawn");
    let epoch = sim.stats().sim_epoch_ms;
    let iso = |ms: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
            .expect("ts")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let (from, to) = (iso(epoch - 12 * 3_600_000), iso(epoch - 3_600_000));
    for (root, selection) in [
        ("calls", "idCall time { start }"),
        ("queues", "idCall queue { id } time { start }"),
        ("agents", "idCall agent { id name } time { start }"),
        ("profile_history", "agent { id } slot { startDate endDate }"),
    ] {
        let (total, records) = walk(&sim, root, selection, "", &from, &to).await;
        assert!(total > 10, "{root}: only {total} records in 11 hours");
        assert_eq!(
            records.len() as u64,
            total,
            "{root}: walk returned a different number than totalCount"
        );
        let mut keys: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len() as u64, total, "{root}: duplicates in the walk");
    }
    // a filtered query keeps the window's totalCount but returns fewer records
    let (_, agents) = walk(&sim, "agents", "agent { id name }", "", &from, &to).await;
    let agent_id = agents[0]["agent"]["id"].as_i64().expect("agent id");
    let (total_all, all) = walk(&sim, "agents", "agent { id }", "", &from, &to).await;
    let (total_f, some) = walk(
        &sim,
        "agents",
        "agent { id }",
        &format!(", agentId: {agent_id}"),
        &from,
        &to,
    )
    .await;
    assert_eq!(
        total_f, total_all,
        "totalCount must not shrink with a filter"
    );
    assert!(
        !some.is_empty() && some.len() < all.len(),
        "{} of {}",
        some.len(),
        all.len()
    );
    assert!(some.iter().all(|r| r["agent"]["id"] == agent_id));
    let (_, calls) = walk(&sim, "calls", "idCall", "", &from, &to).await;
    let id = calls[3]["idCall"].as_str().expect("id");
    let (_, one) = walk(
        &sim,
        "calls",
        "idCall",
        &format!(", callId: \"{id}\""),
        &from,
        &to,
    )
    .await;
    assert_eq!(one.len(), 1);
    // the other tenant sees its own calls only
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_are_injected_and_counted() {
    let mut a = args();
    a.malformed_share = 1.0;
    let sim = spawn(a).await.expect("spawn");
    let mut ws = connect(&sim, "/calls", Some(TOKEN)).await.expect("calls");
    let (mut binary, mut not_json, mut oversized, mut parsed) = (0, 0, 0, 0);
    for _ in 0..40 {
        match tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("frame in time")
        {
            Some(Ok(Message::Binary(_))) => binary += 1,
            Some(Ok(Message::Text(t))) => {
                if t.len() >= 2 * 1024 * 1024 {
                    oversized += 1;
                } else if serde_json::from_str::<Value>(&t).is_err() {
                    not_json += 1;
                } else {
                    parsed += 1;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        binary > 0 && not_json > 0 && oversized > 0 && parsed > 0,
        "{binary} {not_json} {oversized} {parsed}"
    );
    let stats = sim.stats();
    let malformed: u64 = stats.malformed_frames.values().sum();
    assert!(malformed >= 40, "{stats:?}");
    assert!(stats.records_replaced["calls"] > 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn graphql_faults_429_and_5xx() {
    let body = json!({"query": "{ __typename }"});
    let mut a = args();
    a.graphql_429_share = 1.0;
    let sim = spawn(a).await.expect("spawn");
    let resp = reqwest::Client::new()
        .post(sim.graphql_url())
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(sim.stats().graphql_429, 1);
    sim.shutdown().await;

    let mut a = args();
    a.graphql_5xx_share = 1.0;
    let sim = spawn(a).await.expect("spawn");
    for _ in 0..5 {
        let (status, _) = gql(&sim, Some(TOKEN), body.clone()).await;
        assert!((500..600).contains(&status), "{status}");
    }
    assert_eq!(sim.stats().graphql_5xx, 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn refused_handshakes_then_forced_closes() {
    let mut a = args();
    a.refuse_handshakes_for = Some(Duration::from_millis(700));
    a.close_every = Some(Duration::from_millis(500));
    let sim = spawn(a).await.expect("spawn");
    assert_eq!(
        http_status(
            connect(&sim, "/calls", Some(TOKEN))
                .await
                .expect_err("refused")
        ),
        503
    );
    // Refused until the period ends, then accepted.
    let mut refused = 1;
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut ws = loop {
        match connect(&sim, "/calls", Some(TOKEN)).await {
            Ok(ws) => break ws,
            Err(e) => assert_eq!(http_status(e), 503, "refused while the period lasts"),
        }
        refused += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused after {refused} attempts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let closed = tokio::time::timeout(LIMIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("socket ended without close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, 1001);
    let stats = sim.stats();
    assert_eq!(stats.handshakes_refused, refused);
    assert!(stats.sockets_closed_by_fault >= 1);
    sim.shutdown().await;
}
