//! `studio-relay replay`'s command line: the arguments, checked into a
//! [`ReplayRequest`]; the dry run's plan; the progress line; the summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, EncodingFormat, SinkKind};
use crate::model::DataSource;
use crate::ops::internal_events::ReplayProgressReported;
use crate::replay::plan::align_down;
use crate::replay::{self as library, Progress, ReplayRequest};
use crate::upstream::historic::OverviewFilter;

pub use crate::replay::{ReplayError, ReplaySummary};

/// Arguments of `studio-relay replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Start of the range (inclusive): RFC 3339, a day (2025-10-01), now, today, yesterday, or -7d.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_FROM", conflicts_with = "last")]
    pub from: Option<String>,
    /// End of the range (exclusive); same forms as --from. Default: now,
    /// rounded down to a whole --window, so rerunning the same relative
    /// command (`--last 1d`, a restarted Job) plans the same windows and
    /// finds them in its checkpoint.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_TO")]
    pub to: Option<String>,
    /// Replay the last period up to now instead of --from, e.g. `7d`, `12h`.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_LAST", value_parser = humantime::parse_duration)]
    pub last: Option<Duration>,
    /// Sources to replay (comma separated). profile_live has no historic layer.
    #[arg(
        long,
        env = "STUDIO_RELAY_REPLAY_SOURCES",
        value_delimiter = ',',
        default_value = "calls,queues,agents,profile_history"
    )]
    pub sources: Vec<DataSource>,
    /// Only this tenant (by its configured name). Default: every tenant.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_TENANT")]
    pub tenant: Option<String>,
    /// Window size: the range is fetched one window at a time per source.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Records per GraphQL page (`first`).
    #[arg(long, env = "STUDIO_RELAY_REPLAY_PAGE_SIZE", default_value_t = 500)]
    pub page_size: u32,
    /// Windows fetched at once.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Checkpoint file: completed windows are recorded; a rerun skips them.
    #[arg(long, env = "STUDIO_RELAY_REPLAY_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,
    /// Print the plan (windows, sources, estimated counts) and publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Publish every record of the range, even those already on the
    /// destination (by default they are skipped: see docs/operations.md).
    #[arg(long, env = "STUDIO_RELAY_REPLAY_REPUBLISH")]
    pub republish: bool,
    /// Publish to this sink instead of the configured one (`stdout` writes NDJSON).
    #[arg(long, value_enum)]
    pub sink: Option<SinkChoice>,
    /// Payload encoding instead of the configured one.
    #[arg(long, value_enum)]
    pub format: Option<FormatChoice>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SinkChoice {
    Stdout,
    Kafka,
    Nats,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatChoice {
    Json,
    Avro,
}

/// The §3.1 OverviewFilter fields besides the dates.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Stats-system agent ID.
    #[arg(long)]
    pub agent_id: Option<i64>,
    /// Agent ID shared with CAPI/PAPI.
    #[arg(long)]
    pub agent_account_id: Option<i64>,
    /// Stats-system queue ID.
    #[arg(long)]
    pub queue_id: Option<i64>,
    /// Queue ID shared with CAPI/PAPI.
    #[arg(long)]
    pub queue_account_id: Option<i64>,
    /// Stats-system IVR ID.
    #[arg(long)]
    pub ivr_id: Option<i64>,
    /// IVR ID shared with CAPI/PAPI.
    #[arg(long)]
    pub ivr_account_id: Option<i64>,
    /// Exact agent display name.
    #[arg(long)]
    pub agent_name: Option<String>,
    /// Exact queue display name.
    #[arg(long)]
    pub queue_name: Option<String>,
    /// Exact IVR display name.
    #[arg(long)]
    pub ivr_name: Option<String>,
    /// Exact call UUID.
    #[arg(long)]
    pub call_id: Option<String>,
}

impl FilterArgs {
    /// The filter these arguments describe, without dates.
    pub fn template(&self) -> OverviewFilter {
        OverviewFilter {
            agent_id: self.agent_id,
            agent_account_id: self.agent_account_id,
            queue_id: self.queue_id,
            queue_account_id: self.queue_account_id,
            ivr_id: self.ivr_id,
            ivr_account_id: self.ivr_account_id,
            agent_name: self.agent_name.clone(),
            queue_name: self.queue_name.clone(),
            ivr_name: self.ivr_name.clone(),
            call_id: self.call_id.clone(),
            ..Default::default()
        }
    }
}

/// Parses the date forms users expect: RFC 3339 (`2025-10-01T00:00:00Z`), a
/// plain day (`2025-10-01`, midnight UTC), `now`, `today`, `yesterday`, and
/// relative `-7d` / `-12h` (before `now`).
pub fn parse_instant(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    let midnight =
        |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"));
    match s {
        "now" => return Ok(now),
        "today" => return Ok(midnight(now.date_naive())),
        "yesterday" => return Ok(midnight(now.date_naive()) - ChronoDuration::days(1)),
        _ => {}
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(midnight(d));
    }
    if let Some(rel) = s.strip_prefix('-') {
        let d = humantime::parse_duration(rel).map_err(|e| format!("{raw:?}: {e}"))?;
        return Ok(now - ChronoDuration::from_std(d).map_err(|e| e.to_string())?);
    }
    Err(format!(
        "{raw:?} is not a date: use RFC 3339 (2025-10-01T00:00:00Z), a day (2025-10-01), now, today, yesterday or -7d"
    ))
}

/// Runs `studio-relay replay` as the command line does: checks the
/// arguments, prints the plan (`--dry-run`) or runs the replay with a
/// progress line, and prints the summary.
pub async fn run(
    args: ReplayArgs,
    config: Config,
    shutdown: CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let (request, config) = request(&args, config, Utc::now())?;
    if args.dry_run {
        print_plan(&request, &config).await?;
        return Ok(ReplaySummary {
            elapsed: started.elapsed(),
            ..Default::default()
        });
    }
    let progress = Arc::new(Progress::default());
    let printer = spawn_progress(progress.clone(), shutdown.clone());
    let report = library::run(request, config, shutdown, progress).await;
    printer.abort();
    let report = report?;
    print_summary(&report.summary);
    report.into_result()
}

/// The checked request, and the configuration narrowed to `--tenant`
/// with `--sink` and `--format` applied.
pub fn request(
    args: &ReplayArgs,
    mut config: Config,
    now: DateTime<Utc>,
) -> Result<(ReplayRequest, Config), ReplayError> {
    let to = match &args.to {
        Some(s) => parse_instant(s, now).map_err(ReplayError::BadArgs)?,
        None => align_down(now, args.window),
    };
    let from = match (&args.from, args.last) {
        (Some(s), _) => parse_instant(s, now).map_err(ReplayError::BadArgs)?,
        (None, Some(d)) => {
            to - ChronoDuration::from_std(d).map_err(|e| ReplayError::BadArgs(e.to_string()))?
        }
        (None, None) => return Err(ReplayError::BadArgs("give --from (or --last)".into())),
    };
    let request = ReplayRequest {
        from,
        to,
        sources: args.sources.clone(),
        window: args.window,
        page_size: args.page_size,
        concurrency: args.concurrency,
        checkpoint: args.checkpoint.clone(),
        republish: args.republish,
        filter: args.filter.template(),
    }
    .validate()?;
    if let Some(name) = &args.tenant {
        config.tenants.retain(|t| &t.name == name);
        if config.tenants.is_empty() {
            return Err(ReplayError::BadArgs(format!(
                "no tenant named {name:?} in the configuration"
            )));
        }
    }
    match args.sink {
        Some(SinkChoice::Stdout) => config.sink.kind = SinkKind::Stdout,
        Some(SinkChoice::Kafka) => config.sink.kind = SinkKind::Kafka,
        Some(SinkChoice::Nats) => config.sink.kind = SinkKind::Nats,
        None => {}
    }
    match args.format {
        Some(FormatChoice::Json) => config.encoding.format = EncodingFormat::Json,
        Some(FormatChoice::Avro) => config.encoding.format = EncodingFormat::Avro,
        None => {}
    }
    Ok((request, config))
}

async fn print_plan(request: &ReplayRequest, config: &Config) -> Result<(), ReplayError> {
    let windows = request.windows().len();
    println!("replay plan (dry run, nothing is published)");
    println!("  range:   {} .. {}", request.from, request.to);
    println!(
        "  windows: {windows} per source ({:?} each), page size {}, concurrency {}",
        request.window, request.page_size, request.concurrency
    );
    let note = if request.filter.is_unfiltered() {
        ""
    } else {
        " (upper bound: totalCount ignores non-date filters)"
    };
    for estimate in library::estimate(request, config).await? {
        let records = estimate
            .records
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unknown".into());
        println!(
            "  {:<16} tenant {:<12} ~{records} records{note}",
            estimate.source.as_str(),
            estimate.tenant
        )
    }
    Ok(())
}

/// Prints how far the replay is: on a terminal a line redrawn twice a
/// second, else a log line every ten seconds.
fn spawn_progress(progress: Arc<Progress>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let started = Instant::now();
        let period = if tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let Some(total) = progress.windows_planned() else {
                continue;
            };
            let d = progress.windows_done();
            let records = progress.records();
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let rate = records as f64 / secs;
            let eta = if d > 0 && d < total {
                Some(secs * (total - d) as f64 / d as f64)
            } else {
                None
            };
            let eta = eta
                .map(|s| humantime::format_duration(Duration::from_secs(s as u64)).to_string())
                .unwrap_or_else(|| "-".into());
            if tty {
                eprint!(
                    "\rreplay: windows {d}/{total}  records {records}  {rate:.0}/s  eta {eta}   "
                );
            } else {
                ReplayProgressReported {
                    windows_done: d,
                    windows_total: total,
                    records,
                    rate: rate as u64,
                    eta: &eta,
                }
                .emit();
            }
        }
    })
}

fn print_summary(s: &ReplaySummary) {
    let secs = s.elapsed.as_secs_f64().max(0.001);
    eprintln!();
    eprintln!(
        "replay summary{}:",
        if s.interrupted {
            " (interrupted; checkpoint written)"
        } else {
            ""
        }
    );
    eprintln!(
        "  {:<16} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10}",
        "source", "records", "present", "pages", "retries", "windows", "records/s"
    );
    for (source, x) in &s.per_source {
        eprintln!(
            "  {:<16} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10.0}",
            source.as_str(),
            x.records,
            x.already_on_broker,
            x.pages,
            x.retries,
            x.windows,
            x.records as f64 / secs
        );
    }
    eprintln!(
        "  total {} records in {:.1}s ({:.0}/s); {} already on the destination, not published again; {} window(s) skipped from checkpoint; {} dead letter(s)",
        s.records(), secs, s.records() as f64 / secs, s.already_on_broker(), s.windows_skipped,
        s.per_source.values().map(|x| x.dead_lettered).sum::<u64>() + s.dead_letters_acknowledged
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn dates_in_every_supported_form() {
        let now = t("2025-10-11T15:30:00Z");
        assert_eq!(
            parse_instant("2025-10-01T00:00:00Z", now).unwrap(),
            t("2025-10-01T00:00:00Z")
        );
        assert_eq!(
            parse_instant("2025-10-01", now).unwrap(),
            t("2025-10-01T00:00:00Z")
        );
        assert_eq!(
            parse_instant("yesterday", now).unwrap(),
            t("2025-10-10T00:00:00Z")
        );
        assert_eq!(
            parse_instant("today", now).unwrap(),
            t("2025-10-11T00:00:00Z")
        );
        assert_eq!(
            parse_instant("-7d", now).unwrap(),
            t("2025-10-04T15:30:00Z")
        );
        assert!(parse_instant("last tuesday", now).is_err());
    }
}
