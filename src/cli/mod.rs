//! The command line. The only place that uses `anyhow` and decides exit codes:
//! 0 done, 1 failed, 2 bad configuration or arguments, 130 interrupted.

pub mod asyncapi;
pub mod demo;
pub mod replay;
pub mod schemas;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError};
use crate::ops::logging::{self, LogFormat};

/// Relays the Telavox Studio API (live WebSockets and historic GraphQL) to
/// Kafka topics or NATS subjects, as versioned Avro or JSON.
#[derive(Debug, Parser)]
#[command(name = "studio-relay", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (see config/studio-relay.example.toml). Every key
    /// can also be set with STUDIO_RELAY__SECTION__KEY environment variables.
    #[arg(long, global = true, env = "STUDIO_RELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: `pretty` for terminals, `json` for log pipelines.
    #[arg(long, global = true, env = "STUDIO_RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, `studio_relay=debug,info`.
    #[arg(
        long,
        global = true,
        env = "STUDIO_RELAY_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the live relay: keep every WebSocket connected and publish every event.
    Run,
    /// Backfill a historic range from GraphQL into the same topics (resumable with --checkpoint).
    Replay(Box<replay::ReplayArgs>),
    /// Run a local Studio API simulator (live WebSockets + GraphQL) for tests and staging.
    Simulate(Box<crate::simulator::SimulateArgs>),
    /// Start the simulator and the relay in one process and print normalized events.
    Demo(demo::DemoArgs),
    /// Export or check the Avro / JSON schemas.
    Schemas {
        #[command(subcommand)]
        command: schemas::SchemasCommand,
    },
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    logging::init(cli.log_format, &cli.log_level);
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ConfigError>() {
                eprintln!("studio-relay: config error: {ce}");
                return ExitCode::from(2);
            }
            eprintln!("studio-relay: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig => {
            let config = config::load(cli.config.as_deref())?;
            print!("{}", config.redacted_toml());
            eprintln!("studio-relay: configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let config = config::load(cli.config.as_deref())?;
            runtime()?.block_on(async {
                let shutdown = crate::ops::shutdown::on_signals();
                match crate::relay::run(config, shutdown).await {
                    Ok(_) => Ok(ExitCode::SUCCESS),
                    Err(e) if e.exit_code() != 1 => {
                        eprintln!("studio-relay: {e}");
                        Ok(ExitCode::from(e.exit_code()))
                    }
                    Err(e) => Err(e.into()),
                }
            })
        }
        Command::Replay(args) => {
            let config = config::load(cli.config.as_deref())?;
            runtime()?.block_on(async {
                let shutdown = crate::ops::shutdown::on_signals();
                match replay::run(*args, config, shutdown).await {
                    Ok(summary) if summary.interrupted => Ok(ExitCode::from(130)),
                    Ok(_) => Ok(ExitCode::SUCCESS),
                    Err(e) => {
                        eprintln!("studio-relay: replay failed: {e}");
                        Ok(ExitCode::from(e.exit_code()))
                    }
                }
            })
        }
        Command::Simulate(args) => runtime()?.block_on(async {
            let listener = crate::simulator::bind(args.listen, args.send_buffer)?;
            let shutdown = crate::ops::shutdown::on_signals();
            crate::simulator::serve(listener, *args, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Demo(args) => runtime()?.block_on(demo::run(args, cli.config)),
        Command::Schemas { command } => {
            schemas::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
