//! Helpers for tests of the live relay: a simulator on a port it picks, a relay
//! config pointing at it, an independent witness of what the simulator
//! pushed, and small readers of the Prometheus text.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use studio_relay::config::{self, Config};
use studio_relay::model::{self, DataSource, Envelope, Origin};
use studio_relay::simulator::{self, SimulateArgs, SimulatorHandle};

#[derive(Parser)]
struct Sim {
    #[command(flatten)]
    args: SimulateArgs,
}

/// Simulator flags as on the command line: `extra` plus defaults for the
/// flags it does not set (listen on port 0, 20 calls/s, speed 60, seed 11).
pub fn simulator_args(token: &str, extra: &[&str]) -> SimulateArgs {
    let defaults = [
        ("--listen", "127.0.0.1:0"),
        ("--token", token),
        ("--rate", "20"),
        ("--speed", "60"),
        ("--seed", "11"),
    ];
    let mut argv = vec!["sim"];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(extra);
    Sim::parse_from(argv).args
}

/// A simulator accepting `token`, 20 calls/s, a minute per second.
pub async fn start_simulator(token: &str, extra: &[&str]) -> SimulatorHandle {
    simulator::spawn(simulator_args(token, extra))
        .await
        .expect("simulator starts")
}

/// A relay config for tenant `acme` pointing at `sim` with `token`, fast
/// backoffs, ops on port 0, plus `STUDIO_RELAY__*` overrides.
pub fn relay_config(sim: &SimulatorHandle, token: &str, overrides: &[(&str, String)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("STUDIO_RELAY__TENANTS__0__NAME".into(), "acme".into()),
        ("STUDIO_RELAY__TENANTS__0__TOKEN".into(), token.into()),
        ("STUDIO_RELAY__UPSTREAM__LIVE_URL".into(), sim.live_url()),
        (
            "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL".into(),
            sim.graphql_url(),
        ),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MIN".into(), "100ms".into()),
        ("STUDIO_RELAY__UPSTREAM__BACKOFF_MAX".into(), "1s".into()),
        ("STUDIO_RELAY__UPSTREAM__AUTH_BACKOFF".into(), "2s".into()),
        ("STUDIO_RELAY__UPSTREAM__PING_INTERVAL".into(), "1s".into()),
        ("STUDIO_RELAY__OPS__LISTEN".into(), "127.0.0.1:0".into()),
    ];
    env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.clone())));
    config::load_from_str("", "test", env, |p| std::fs::read_to_string(p))
        .expect("valid test config")
}

/// (source, event id, partition key) of one event.
pub type Seen = (DataSource, String, Option<String>);

#[derive(Default)]
struct WitnessLog {
    events: Vec<Seen>,
    /// Frames the normalizer refuses (binary, bad JSON, wrong types, ...), raw.
    bad_frames: Vec<(DataSource, Bytes)>,
}

/// An independent WebSocket client recording what the simulator pushes: the
/// ground truth, as event ids per source in arrival order.
pub struct Witness {
    log: Arc<Mutex<WitnessLog>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Witness {
    pub async fn connect(sim: &SimulatorHandle, token: &str, sources: &[DataSource]) -> Witness {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let log = Arc::new(Mutex::new(WitnessLog::default()));
        let mut tasks = Vec::new();
        for &source in sources {
            let mut req = format!("{}{}", sim.live_url(), source.live_path())
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .expect("witness connects");
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    let raw: Bytes = match msg {
                        Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                        Message::Binary(b) => {
                            log.lock().unwrap().bad_frames.push((source, b));
                            continue;
                        }
                        _ => continue,
                    };
                    match model::normalize_live(source, &raw) {
                        Ok(record) => {
                            let key = record.partition_key();
                            let env = Envelope::new("acme".into(), Origin::Live, 0, record);
                            log.lock().unwrap().events.push((
                                source,
                                env.event_id.to_string(),
                                key,
                            ));
                        }
                        Err(_) => log.lock().unwrap().bad_frames.push((source, raw)),
                    }
                }
            }));
        }
        Witness { log, tasks }
    }

    /// Every normalizable event seen, in arrival order.
    pub fn ids(&self) -> Vec<Seen> {
        self.log.lock().unwrap().events.clone()
    }

    /// Every frame the normalizer refused, raw.
    pub fn bad_frames(&self) -> Vec<(DataSource, Bytes)> {
        self.log.lock().unwrap().bad_frames.clone()
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Polls `check` every 100 ms; fails the test after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of header `name`.
pub fn header<'a, K: AsRef<str>, V: AsRef<str>>(
    headers: &'a [(K, V)],
    name: &str,
) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| v.as_ref())
}

/// Sum of the samples of metric `name` whose labels contain `label_filter`.
pub fn metric_sum(text: &str, name: &str, label_filter: &str) -> f64 {
    text.lines()
        .filter(|l| {
            let rest = l.strip_prefix(name).unwrap_or("");
            (rest.starts_with('{') || rest.starts_with(' ')) && l.contains(label_filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// How many sockets the relay reports connected.
pub fn connected_sockets(metrics_text: &str) -> usize {
    metric_sum(metrics_text, "studio_relay_socket_connected", "") as usize
}

/// Starts the relay on `sim` (see [`relay_config`]) and waits until
/// `sockets` sockets are connected. Cancel the token to stop it.
pub async fn start_relay(
    sim: &SimulatorHandle,
    token: &str,
    overrides: &[(&str, String)],
    sockets: usize,
) -> (
    studio_relay::relay::RelayHandle,
    tokio_util::sync::CancellationToken,
) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = studio_relay::relay::start(relay_config(sim, token, overrides), shutdown.clone())
        .await
        .expect("relay starts");
    let m = relay.metrics.clone();
    wait_until(
        &format!("{sockets} sockets connected"),
        Duration::from_secs(30),
        || connected_sockets(&m.render()) == sockets,
    )
    .await;
    (relay, shutdown)
}

/// A stand-in for Studio's live endpoint on a port it picks, for frames the
/// simulator does not send: the first connection to `path` gets `frames`
/// (text, in order); every socket then stays open, answering pings, until
/// the client closes it. Returns the base URL (`ws://127.0.0.1:port`).
pub async fn stand_in_live(path: &'static str, frames: Vec<String>) -> String {
    stand_in_live_paths(std::collections::HashMap::from([(
        path.to_string(),
        frames,
    )]))
    .await
}

/// [`stand_in_live`] for several sockets: the first connection to each
/// path gets that path's frames.
// (tungstenite's handshake callback fixes its large error type.)
#[allow(clippy::result_large_err)]
pub async fn stand_in_live_paths(frames: std::collections::HashMap<String, Vec<String>>) -> String {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::{handshake::server, Message};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let frames = Arc::new(Mutex::new(frames));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let frames = frames.clone();
            tokio::spawn(async move {
                let mut asked = String::new();
                let callback = |req: &server::Request, resp| {
                    asked = req.uri().path().to_string();
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                let mine = frames.lock().unwrap().remove(&asked).unwrap_or_default();
                for f in mine {
                    if ws.send(Message::text(f)).await.is_err() {
                        return;
                    }
                }
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    url
}

/// The match keys of every record of `source` the simulator's GraphQL holds
/// for `[from_ms, to_ms)` (record start), as `tenant`'s (whose token
/// `token` is): the ground truth a relay's output is judged against.
pub async fn historic_match_keys(
    sim: &SimulatorHandle,
    token: &str,
    tenant: &str,
    source: DataSource,
    from_ms: i64,
    to_ms: i64,
) -> std::collections::BTreeSet<String> {
    use studio_relay::config::Secret;
    use studio_relay::upstream::historic::{
        CursorGuard, GraphqlClient, OverviewFilter, RetryPolicy,
    };
    let client = GraphqlClient::new(
        &sim.graphql_url(),
        Secret::new(token),
        Duration::from_secs(10),
        RetryPolicy::default(),
    )
    .expect("a GraphQL client for the simulator");
    let ts = |ms| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).expect("a time");
    let filter = OverviewFilter::window(&OverviewFilter::default(), ts(from_ms), ts(to_ms));
    let root = source
        .graphql_root()
        .expect("a source with a historic layer");
    let selection = model::graphql_selection(source);
    let mut guard = CursorGuard::default();
    let mut after = None;
    let mut keys = std::collections::BTreeSet::new();
    loop {
        let page = client
            .fetch_page(root, &selection, &filter, 500, after.as_deref(), |_, _| {})
            .await
            .expect("a page of the simulator's GraphQL");
        for raw in &page.data {
            let record = model::normalize_historic(source, raw).expect("a valid record");
            keys.insert(Envelope::new(tenant.into(), Origin::Replay, 0, record).match_key);
        }
        match guard.next(&page).expect("a well-formed cursor") {
            Some(c) => after = Some(c),
            None => return keys,
        }
    }
}
