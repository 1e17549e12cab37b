//! Conditions to wait on instead of wall time: what the simulator has
//! broadcast against what the relay has received, and the relay's own log
//! lines (captured in-process as the binary writes them with
//! `--log-format json`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use studio_relay::model::DataSource;
use studio_relay::ops::Metrics;
use studio_relay::simulator::SimulatorHandle;

use crate::live::{metric_sum, wait_until};

/// Frames the simulator has broadcast so far per source: records, and the
/// malformed frames that replaced one. Every client connected at the time
/// of a broadcast gets it, in order.
pub fn frames_broadcast(sim: &SimulatorHandle) -> BTreeMap<DataSource, u64> {
    let stats = sim.stats();
    DataSource::ALL
        .into_iter()
        .map(|s| {
            let n = |m: &BTreeMap<String, u64>| m.get(s.as_str()).copied().unwrap_or(0);
            (s, n(&stats.frames_pushed) + n(&stats.records_replaced))
        })
        .collect()
}

/// Waits until the relay has received every frame of `sources` that the
/// simulator broadcast up to `upto`, given `before`, a [`frames_broadcast`]
/// reading taken before the relay connected. A socket delivers in order,
/// so once the relay counts `upto - before` frames of a source it holds
/// every frame of it broadcast up to `upto` (and perhaps a few more).
pub async fn wait_received(
    metrics: &Metrics,
    before: &BTreeMap<DataSource, u64>,
    upto: &BTreeMap<DataSource, u64>,
    sources: &[DataSource],
    timeout: Duration,
) {
    let lacking = || -> Vec<(DataSource, f64)> {
        let text = metrics.render();
        sources
            .iter()
            .filter_map(|&s| {
                let want = upto[&s].saturating_sub(before[&s]) as f64;
                let got = metric_sum(
                    &text,
                    "studio_relay_frames_received_total",
                    &format!("source=\"{s}\""),
                );
                (got < want).then_some((s, want - got))
            })
            .collect()
    };
    wait_until(
        "the relay to receive every frame broadcast so far",
        timeout,
        || lacking().is_empty(),
    )
    .await;
}

/// The relay's log lines in this test process, one JSON object each, as
/// `studio-relay --log-format json` writes them.
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    /// The process-wide capture, installed as the tracing subscriber on
    /// first use (every test of the binary shares it).
    pub fn install() -> CapturedLog {
        static LOG: OnceLock<CapturedLog> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = CapturedLog::default();
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(log.clone())
                .try_init()
                .expect("no other tracing subscriber in this test binary");
            log
        })
        .clone()
    }

    /// The lines whose message contains `needle`.
    pub fn lines(&self, needle: &str) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
            .collect()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;
    fn make_writer(&'a self) -> CapturedLog {
        self.clone()
    }
}

/// Log lines per `source` field, in the order written.
pub fn by_source(lines: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for l in lines {
        let source = l["source"].as_str().unwrap_or_default().to_string();
        out.entry(source).or_default().push(l.clone());
    }
    out
}

/// Refused connection attempts, one log line each (with `source`,
/// `retry_in_s` and `timestamp`): every refusal schedules its retry at
/// least `min_retry_s` later, and the next refusal of that source comes no
/// sooner than the retry it announced. A slow machine only spaces them
/// further; a retry loop that skips its wait fails here.
pub fn assert_retries_wait_as_announced(what: &str, lines: &[Value], min_retry_s: u64) {
    let at = |l: &Value| {
        chrono::DateTime::parse_from_rfc3339(l["timestamp"].as_str().expect("timestamp"))
            .expect("RFC 3339 timestamp")
    };
    for (source, refusals) in by_source(lines) {
        for pair in refusals.windows(2) {
            let announced = pair[0]["retry_in_s"].as_u64().expect("retry_in_s");
            assert!(
                announced >= min_retry_s,
                "{what}: {source}: a retry in {announced} s, configured at least {min_retry_s} s: {:?}",
                pair[0]
            );
            let waited = (at(&pair[1]) - at(&pair[0])).to_std().unwrap_or_default();
            assert!(
                waited >= Duration::from_secs(announced),
                "{what}: {source}: retried after {waited:?}, announced {announced} s:\n{pair:?}"
            );
        }
    }
}
