//! A faithful, deterministic local Telavox Studio API (`studio-relay simulate`).
//!
//! Built from docs/reference/studio-api.txt only (it does not use the relay's
//! model or encoders, so it can catch their bugs):
//!
//! - live layer: `ws://HOST:PORT/calls|queues|agents|profile_live|profile_history`
//!   ([`live`]), Bearer token on the handshake;
//! - historic layer: `POST http://HOST:PORT/graphql` ([`graphql`]);
//! - ground truth: `GET http://HOST:PORT/_simulator/stats` ([`SimulatorStats`]).
//!
//! Both layers render the same pure model ([`journey`]) through the same
//! renderer ([`render`]), so every record the live layer pushed is returned by
//! GraphQL for its window with identical values.
//!
//! Each `--token` is one tenant (customer) with its own agents, queues and
//! journeys, generated from `--seed` and the token's position.
//!
//! `--firehose RATE` replaces the journey driver by [`firehose`]: every live
//! socket streams distinct records of the same world as fast as asked, for
//! throughput and latency benchmarks ([`firehose_send_time_us`]).

pub mod clock;
pub mod faults;
pub mod firehose;
pub mod graphql;
pub mod journey;
pub mod live;
pub mod render;
mod socket;
pub mod stats;
pub mod window;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
pub use firehose::firehose_send_time_us;
pub use stats::SimulatorStats;

use clock::SimClock;
use faults::Dice;
use journey::World;
use stats::Counters;

fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.trim().is_empty() {
        Err("a token must not be empty".into())
    } else {
        Ok(Secret::new(s))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h)"))
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 1".into())
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err("must be 0 or a positive number".into())
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err("must be a positive number".into())
    }
}

/// Runs a local, deterministic Telavox Studio API: live WebSockets and
/// historic GraphQL on one port, telling the same story.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "STUDIO_SIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Accepted Statistics Token; repeat for several tenants (or comma-separate
    /// in the env var). Each token is its own customer with its own agents,
    /// queues and journeys.
    #[arg(long = "token", env = "STUDIO_SIM_TOKEN", value_delimiter = ',', default_value = "sim-token", value_parser = parse_secret)]
    pub tokens: Vec<Secret>,

    /// Simulated-clock factor: 60 makes one real second one simulated minute.
    /// Call durations, presence changes and the hourly profile_history batch
    /// follow the simulated clock.
    #[arg(long, env = "STUDIO_SIM_SPEED", default_value_t = 1.0, value_parser = parse_positive)]
    pub speed: f64,

    /// New calls per real second, total across tenants.
    #[arg(long, env = "STUDIO_SIM_RATE", default_value_t = 1.0, value_parser = parse_positive)]
    pub rate: f64,

    /// Seed of every random choice; same seed, same tokens and same flags give
    /// the same agents, queues and journeys (times are relative to start).
    #[arg(long, env = "STUDIO_SIM_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Days of past journeys (before start) that GraphQL returns, so replay
    /// has something to fetch. They follow the same arrival rate.
    #[arg(long, env = "STUDIO_SIM_HISTORY_DAYS", default_value_t = 0)]
    pub history_days: u32,

    /// Agents per tenant.
    #[arg(long, env = "STUDIO_SIM_AGENTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub agents: u32,

    /// Queues per tenant.
    #[arg(long, env = "STUDIO_SIM_QUEUES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub queues: u32,

    /// Fault: close every open live socket (close code 1001) every DURATION
    /// of real time, e.g. `30s`.
    #[arg(long, env = "STUDIO_SIM_CLOSE_EVERY", value_parser = parse_duration, value_name = "DURATION")]
    pub close_every: Option<Duration>,

    /// Fault: share (0..1) of live frames replaced by malformed ones (bad
    /// JSON, binary frames, 2 MiB frames, wrong types, unknown fields).
    #[arg(long, env = "STUDIO_SIM_MALFORMED_SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub malformed_share: f64,

    /// Fault: answer WebSocket handshakes with HTTP 503 for this long (real
    /// time) after start, e.g. `10s`.
    #[arg(long, env = "STUDIO_SIM_REFUSE_HANDSHAKES_FOR", value_parser = parse_duration, value_name = "DURATION")]
    pub refuse_handshakes_for: Option<Duration>,

    /// Fault: share (0..1) of GraphQL requests answered HTTP 429 with a
    /// `Retry-After: 1` header.
    #[arg(long = "graphql-429-share", env = "STUDIO_SIM_GRAPHQL_429_SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub graphql_429_share: f64,

    /// Fault: share (0..1) of GraphQL requests answered HTTP 5xx (500, 502
    /// or 503).
    #[arg(long = "graphql-5xx-share", env = "STUDIO_SIM_GRAPHQL_5XX_SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub graphql_5xx_share: f64,

    /// Fault: answer these live paths (e.g. `profile_live`) as if they did
    /// not exist: HTTP 101, then the single text frame `Invalid path.` (§2.0).
    /// Mimics an account or API version without that data source.
    #[arg(
        long = "invalid-path",
        env = "STUDIO_SIM_INVALID_PATHS",
        value_delimiter = ',',
        value_name = "SOURCE"
    )]
    pub invalid_paths: Vec<String>,

    /// Benchmark mode: instead of the journey simulation, every live socket
    /// streams real rendered frames (a few records of the seeded world per
    /// source, cycled), each a distinct record. RATE is events per second
    /// per tenant, split equally over the tenant's connected live sockets
    /// (RATE / 5 per socket when one client has all five paths open), sent
    /// every 2 ms as due; `0` sends as fast as each client reads (TCP
    /// back-pressure; slow clients are never disconnected). Each frame's
    /// identity carries its send time and a per-process sequence number:
    /// `id_call` (calls, queues, agents) is the string `"<unix µs>-<seq>"`,
    /// `agent.id` (profile_live, profile_history) the number
    /// `unix µs * 1000 + seq % 1000`; `firehose_send_time_us` parses both.
    /// GraphQL is unchanged.
    #[arg(long, env = "STUDIO_SIM_FIREHOSE", value_name = "RATE", value_parser = parse_non_negative)]
    pub firehose: Option<f64>,
    /// Kernel send buffer per connection, in bytes (0: the kernel's own
    /// tuning, up to `net.ipv4.tcp_wmem`'s 4 MiB per socket). A firehose
    /// into thousands of sockets faster than the client reads fills every
    /// one of them: at 1,000 tenants that is gigabytes of kernel memory,
    /// past `net.ipv4.tcp_mem`, and TCP memory pressure then slows every
    /// connection on the machine. The scale benchmark sets it.
    #[arg(
        long,
        env = "STUDIO_SIM_SEND_BUFFER",
        value_name = "BYTES",
        default_value_t = 0
    )]
    pub send_buffer: u32,
}

impl Default for SimulateArgs {
    fn default() -> Self {
        SimulateArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: vec![Secret::new("sim-token")],
            speed: 1.0,
            rate: 1.0,
            seed: 1,
            history_days: 0,
            agents: 10,
            queues: 3,
            close_every: None,
            malformed_share: 0.0,
            refuse_handshakes_for: None,
            graphql_429_share: 0.0,
            graphql_5xx_share: 0.0,
            invalid_paths: Vec::new(),
            firehose: None,
            send_buffer: 0,
        }
    }
}

/// Why the simulator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("simulator server failed: {0}")]
    Serve(std::io::Error),
    #[error("invalid simulator settings: {0}")]
    InvalidArgs(String),
    #[error("GraphQL schema could not be built: {0}")]
    Schema(String),
    #[error("simulator task failed: {0}")]
    Join(String),
}

impl SimulatorError {
    /// Only serving errors may go away by trying again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SimulatorError::Serve(_) | SimulatorError::Bind { .. })
    }
}

/// Shared state of one running simulator.
pub(crate) struct AppState {
    pub world: Arc<World>,
    pub clock: SimClock,
    pub tokens: Vec<Secret>,
    pub counters: Arc<Counters>,
    pub args: SimulateArgs,
    pub hub: live::Hub,
    pub graphql: graphql::Historic,
    pub graphql_dice: Dice,
    pub close_signal: tokio::sync::watch::Receiver<u64>,
    pub shutdown: CancellationToken,
    /// Set in `--firehose` mode (templates and connected sockets).
    pub firehose: Option<firehose::Plan>,
}

impl AppState {
    /// The tenant index of a `Authorization: Bearer <token>` header.
    pub fn tenant_of(&self, headers: &HeaderMap) -> Option<usize> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?
            .trim();
        self.tokens
            .iter()
            .position(|t| constant_time_eq(t.expose().as_bytes(), token.as_bytes()))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn validate(args: &SimulateArgs) -> Result<(), SimulatorError> {
    if args.tokens.is_empty() || args.tokens.iter().any(Secret::is_empty) {
        return Err(SimulatorError::InvalidArgs(
            "at least one non-empty --token is needed".into(),
        ));
    }
    if !(args.speed.is_finite() && args.speed > 0.0 && args.rate.is_finite() && args.rate > 0.0) {
        return Err(SimulatorError::InvalidArgs(
            "--speed and --rate must be positive".into(),
        ));
    }
    for (name, share) in [
        ("--malformed-share", args.malformed_share),
        ("--graphql-429-share", args.graphql_429_share),
        ("--graphql-5xx-share", args.graphql_5xx_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            return Err(SimulatorError::InvalidArgs(format!(
                "{name} must be between 0 and 1"
            )));
        }
    }
    if args.firehose.is_some_and(|r| !(r.is_finite() && r >= 0.0)) {
        return Err(SimulatorError::InvalidArgs(
            "--firehose must be 0 or a positive number".into(),
        ));
    }
    for name in &args.invalid_paths {
        if journey::Source::from_path(&format!("/{name}")).is_none() {
            return Err(SimulatorError::InvalidArgs(format!(
                "--invalid-path {name}: not one of calls, queues, agents, profile_live, profile_history"
            )));
        }
    }
    Ok(())
}

/// Serves the simulator on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    args: SimulateArgs,
    shutdown: CancellationToken,
) -> Result<(), SimulatorError> {
    let (state, close_tx) = build_state(args, shutdown)?;
    run(listener, state, close_tx).await
}

fn build_state(
    args: SimulateArgs,
    shutdown: CancellationToken,
) -> Result<(Arc<AppState>, tokio::sync::watch::Sender<u64>), SimulatorError> {
    validate(&args)?;
    let epoch_ms = SimClock::wall_now_ms();
    let clock = SimClock::new(epoch_ms, args.speed);
    let world = Arc::new(World::new(
        args.seed,
        epoch_ms,
        args.tokens.len(),
        args.agents as usize,
        args.queues as usize,
        args.rate,
        args.speed,
        args.history_days,
    ));
    let (close_tx, close_rx) = tokio::sync::watch::channel(0u64);
    let historic = graphql::Historic::new().map_err(|e| SimulatorError::Schema(e.to_string()))?;
    let hub = live::Hub::new(world.tenants.len());
    let firehose = args
        .firehose
        .map(|rate| firehose::Plan::new(&world, rate, args.malformed_share));
    let state = Arc::new(AppState {
        world,
        clock,
        tokens: args.tokens.clone(),
        counters: Arc::new(Counters::default()),
        hub,
        graphql: historic,
        graphql_dice: Dice::new(args.seed, 2),
        close_signal: close_rx,
        shutdown,
        firehose,
        args,
    });
    Ok((state, close_tx))
}

async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    close_tx: tokio::sync::watch::Sender<u64>,
) -> Result<(), SimulatorError> {
    let addr = listener.local_addr().map_err(SimulatorError::Serve)?;
    let shutdown = state.shutdown.clone();
    let args = state.args.clone();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    if state.firehose.is_none() {
        for tenant in 0..state.world.tenants.len() {
            tasks.push(tokio::spawn(live::drive_tenant(state.clone(), tenant)));
        }
    }
    if let Some(every) = args.close_every.filter(|d| !d.is_zero()) {
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let mut generation = 0u64;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        generation += 1;
                        let _ = close_tx.send(generation);
                    }
                }
            }
        }));
    }

    let router = Router::new()
        .route("/graphql", post(graphql::handle))
        .route("/_simulator/stats", get(stats_handler))
        .fallback(live::handle_upgrade)
        .with_state(state.clone());

    tracing::info!(
        live_url = %format!("ws://{addr}"),
        graphql_url = %format!("http://{addr}/graphql"),
        stats_url = %format!("http://{addr}/_simulator/stats"),
        tenants = state.world.tenants.len(),
        speed = args.speed,
        rate = args.rate,
        seed = args.seed,
        firehose = ?args.firehose,
        "Studio API simulator listening: live ws://{addr}/{{calls,queues,agents,profile_live,profile_history}}, GraphQL http://{addr}/graphql"
    );
    // Nagle off: with a small `--send-buffer` (below one loopback segment),
    // Nagle would hold each partial segment until the peer's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .map_err(SimulatorError::Serve);
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    result
}

async fn stats_handler(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> Response {
    Json(
        state
            .counters
            .snapshot(state.clock.now_ms(), state.clock.epoch_ms()),
    )
    .into_response()
}

/// A simulator running in a background task.
pub struct SimulatorHandle {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), SimulatorError>>,
}

impl std::fmt::Debug for SimulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimulatorHandle {
    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `ws://127.0.0.1:PORT` (append `/calls` etc.).
    pub fn live_url(&self) -> String {
        format!("ws://{}", self.addr)
    }
    /// `http://127.0.0.1:PORT/graphql`.
    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }
    /// `http://127.0.0.1:PORT/_simulator/stats`.
    pub fn stats_url(&self) -> String {
        format!("http://{}/_simulator/stats", self.addr)
    }
    /// Ground truth so far (same JSON as `GET /_simulator/stats`).
    pub fn stats(&self) -> SimulatorStats {
        self.state
            .counters
            .snapshot(self.state.clock.now_ms(), self.state.clock.epoch_ms())
    }
    /// Simulated clock now (epoch milliseconds).
    pub fn sim_now_ms(&self) -> i64 {
        self.state.clock.now_ms()
    }
    /// A token that stops the simulator when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
    /// Stops the simulator and waits for it (a failure is logged; use
    /// [`SimulatorHandle::shutdown_token`] + [`SimulatorHandle::join`] to get it).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(e) = self.join().await {
            tracing::warn!(error = %e, "simulator stopped with an error");
        }
    }
    /// Waits for the simulator to stop (after its shutdown token is cancelled).
    pub async fn join(self) -> Result<(), SimulatorError> {
        self.task
            .await
            .map_err(|e| SimulatorError::Join(e.to_string()))?
    }
}

/// Connections the kernel queues before `accept`: a relay of 1,000 tenants
/// opens 5,000 sockets at once, and the usual 1,024 made the kernel answer
/// with SYN cookies and handshakes time out.
const LISTEN_BACKLOG: u32 = 8192;
/// The simulator's listener on `addr` (port 0 allowed); accepted
/// connections inherit its send buffer (`send_buffer` bytes, 0: the kernel's).
pub fn bind(addr: SocketAddr, send_buffer: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds `args.listen` (port 0 allowed) and serves in a background task.
pub async fn spawn(args: SimulateArgs) -> Result<SimulatorHandle, SimulatorError> {
    validate(&args)?;
    let listener = bind(args.listen, args.send_buffer).map_err(|source| SimulatorError::Bind {
        addr: args.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(SimulatorError::Serve)?;
    let shutdown = CancellationToken::new();
    let (state, close_tx) = build_state(args, shutdown.clone())?;
    let task = tokio::spawn(run(listener, state.clone(), close_tx));
    Ok(SimulatorHandle {
        addr,
        state,
        shutdown,
        task,
    })
}

/// HTTP error answers shared by both layers.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        sim: SimulateArgs,
    }

    #[test]
    fn flags_parse_and_are_documented() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "a",
            "--token",
            "b",
            "--speed",
            "60",
            "--rate",
            "5",
            "--seed",
            "9",
            "--history-days",
            "2",
            "--agents",
            "4",
            "--queues",
            "2",
            "--close-every",
            "30s",
            "--malformed-share",
            "0.1",
            "--refuse-handshakes-for",
            "5s",
            "--graphql-429-share",
            "0.2",
            "--graphql-5xx-share",
            "0.3",
            "--firehose",
            "5000",
        ])
        .expect("parse");
        assert_eq!(cli.sim.tokens.len(), 2);
        assert_eq!(cli.sim.close_every, Some(Duration::from_secs(30)));
        assert_eq!(cli.sim.firehose, Some(5000.0));
        assert!(Cli::try_parse_from(["simulate", "--firehose", "-1"]).is_err());
        assert!(
            !format!("{cli:?}").contains("\"a\""),
            "tokens must not appear in Debug"
        );
        assert!(Cli::try_parse_from(["simulate", "--malformed-share", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["simulate", "--speed", "0"]).is_err());
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--listen",
            "--token",
            "--speed",
            "--rate",
            "--seed",
            "--history-days",
            "--agents",
            "--queues",
            "--close-every",
            "--malformed-share",
            "--refuse-handshakes-for",
            "--graphql-429-share",
            "--graphql-5xx-share",
            "--firehose",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        for env in [
            "STUDIO_SIM_LISTEN",
            "STUDIO_SIM_TOKEN",
            "STUDIO_SIM_GRAPHQL_5XX_SHARE",
            "STUDIO_SIM_CLOSE_EVERY",
            "STUDIO_SIM_FIREHOSE",
        ] {
            assert!(help.contains(env), "{env} missing from --help");
        }
    }

    #[test]
    fn schema_has_the_documented_types() {
        let sdl = graphql::Historic::new().expect("schema").sdl();
        for t in [
            "CallOverviewRecord",
            "CallOverviewConnection",
            "QueueOverviewConnection",
            "AgentOverviewRecord",
            "ProfileHistoryOverviewRecord",
            "input OverviewFilter",
            "scalar DateTime",
            "profile_history(filter: OverviewFilter, first: Int!, after: String): ProfileHistoryOverviewConnection!",
        ] {
            assert!(sdl.contains(t), "{t} missing from schema:\n{sdl}");
        }
    }
}
