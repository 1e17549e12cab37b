//! What is on the destinations already, read back from the broker before a
//! replay's first window: the messages published since the range's start
//! (broker time). No message about a record reaches the broker before the
//! record happened, so this covers live, backfill and earlier replays of
//! the range, up to a capacity of messages read within [`SCAN_TIMEOUT`].

use std::time::{Duration, Instant};

use crate::ops::internal_events::ReplayDestinationsScanned;
use crate::ops::Metrics;
use crate::publish::recent_ids::RecentIds;
use crate::sink::Sink;

/// How long reading what is on the destinations may take.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Broker time read before the range's start: the broker's clock (or the
/// publisher's) may be a little off the upstream's.
pub const SCAN_CLOCK_SLACK: Duration = Duration::from_secs(600);

/// The ids found on the destinations, and those a run took itself.
pub struct OnBroker {
    /// Event ids found.
    pub event_ids: RecentIds,
    /// Match keys found.
    pub match_keys: RecentIds,
    /// Event ids this run took (windows overlap where a record spans
    /// their boundary).
    pub claimed: RecentIds,
}

impl OnBroker {
    /// Nothing known yet; each memory holds up to `capacity` ids.
    pub fn new(capacity: usize) -> OnBroker {
        OnBroker {
            event_ids: RecentIds::new(capacity),
            match_keys: RecentIds::new(capacity),
            claimed: RecentIds::new(capacity),
        }
    }

    /// Reads the ids on `destinations` since `from_ms` (less the clock
    /// slack), up to `capacity`. A failure or a cut-short read is logged
    /// and counted, never fatal: what was read is used.
    pub async fn read(
        sink: &dyn Sink,
        destinations: &[String],
        from_ms: i64,
        capacity: usize,
        metrics: &Metrics,
    ) -> OnBroker {
        let known = OnBroker::new(capacity);
        let since_ms = from_ms - SCAN_CLOCK_SLACK.as_millis() as i64;
        let started = Instant::now();
        let scan = sink
            .recent_event_ids(destinations, since_ms, capacity, SCAN_TIMEOUT)
            .await;
        let (found, complete, error) = match &scan {
            Ok(scan) => {
                for id in &scan.ids {
                    known.event_ids.insert(id);
                }
                for key in &scan.match_keys {
                    known.match_keys.insert(key);
                }
                (
                    scan.ids.len(),
                    scan.complete && scan.ids.len() < capacity,
                    None,
                )
            }
            Err(e) => (0, false, Some(e.to_string())),
        };
        ReplayDestinationsScanned {
            sink: sink.name(),
            since_ms,
            found,
            complete,
            error: error.as_deref(),
            elapsed: started.elapsed(),
        }
        .emit(metrics);
        known
    }
}
