//! `studio-relay demo`: the simulator and the relay in one process, on loopback.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::config::{self, EncodingFormat, SinkKind};

/// Token the demo's simulator accepts (it never leaves the process).
const DEMO_TOKEN: &str = "demo-token";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// New simulated calls per second.
    #[arg(long, env = "STUDIO_RELAY_DEMO_RATE", default_value_t = 2.0)]
    pub rate: f64,
    /// Simulated clock speed (60 = a minute per second), so calls end quickly.
    #[arg(long, env = "STUDIO_RELAY_DEMO_SPEED", default_value_t = 30.0)]
    pub speed: f64,
    /// Stop after this long (e.g. `30s`); runs until Ctrl-C when absent.
    #[arg(long, env = "STUDIO_RELAY_DEMO_DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Where to publish (default: the config's sink, or stdout without a config).
    #[arg(long, env = "STUDIO_RELAY_DEMO_SINK", value_enum)]
    pub sink: Option<DemoSink>,
    /// Payload encoding (default: the config's, or JSON).
    #[arg(long, env = "STUDIO_RELAY_DEMO_FORMAT", value_enum)]
    pub format: Option<DemoFormat>,
    /// Seed of the simulator, for a reproducible demo.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DemoSink {
    Stdout,
    Kafka,
    Nats,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DemoFormat {
    Json,
    Avro,
}

#[derive(Parser)]
struct SimulatorOnly {
    #[command(flatten)]
    args: crate::simulator::SimulateArgs,
}

pub async fn run(args: DemoArgs, config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let shutdown = crate::ops::shutdown::on_signals();
    let sim_args = SimulatorOnly::try_parse_from([
        "simulate".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--token".into(),
        DEMO_TOKEN.into(),
        "--rate".into(),
        args.rate.to_string(),
        "--speed".into(),
        args.speed.to_string(),
        "--seed".into(),
        args.seed.to_string(),
    ])?
    .args;
    let simulator = crate::simulator::spawn(sim_args).await?;

    let text = match &config_path {
        Some(p) => std::fs::read_to_string(p)?,
        None => String::new(),
    };
    let origin = config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<demo>".into());
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("STUDIO_RELAY__TENANTS__0__NAME".into(), "demo".into()));
    env.push(("STUDIO_RELAY__TENANTS__0__TOKEN".into(), DEMO_TOKEN.into()));
    env.push((
        "STUDIO_RELAY__UPSTREAM__LIVE_URL".into(),
        simulator.live_url(),
    ));
    env.push((
        "STUDIO_RELAY__UPSTREAM__GRAPHQL_URL".into(),
        simulator.graphql_url(),
    ));
    let mut config = config::load_from_str(&text, &origin, env, |p| std::fs::read_to_string(p))?;
    config.tenants.truncate(1);
    if config_path.is_none() {
        config.ops.listen = String::new();
        config.upstream.backoff_min = Duration::from_millis(200);
    }
    match args.sink {
        Some(DemoSink::Stdout) => config.sink.kind = SinkKind::Stdout,
        Some(DemoSink::Kafka) => config.sink.kind = SinkKind::Kafka,
        Some(DemoSink::Nats) => config.sink.kind = SinkKind::Nats,
        None => {}
    }
    match args.format {
        Some(DemoFormat::Json) => config.encoding.format = EncodingFormat::Json,
        Some(DemoFormat::Avro) => config.encoding.format = EncodingFormat::Avro,
        None => {}
    }
    eprintln!(
        "studio-relay demo: simulator at {} (GraphQL {}), publishing to {:?} as {:?}; Ctrl-C to stop",
        simulator.live_url(),
        simulator.graphql_url(),
        config.sink.kind,
        config.encoding.format
    );
    let relay_shutdown = shutdown.child_token();
    let relay = crate::relay::start(config, relay_shutdown.clone()).await?;
    if let Some(d) = args.duration {
        tokio::select! {
            _ = tokio::time::sleep(d) => relay_shutdown.cancel(),
            _ = shutdown.cancelled() => {}
        }
    }
    let summary = relay.wait().await?;
    simulator.shutdown().await;
    eprintln!(
        "studio-relay demo: published {} events ({} dead letters)",
        summary.published, summary.dead_lettered
    );
    Ok(ExitCode::SUCCESS)
}
