//! A message on its way to the broker and what the publisher needs to
//! account for it: where it comes from ([`Origin`], the `origin` metric
//! label), when a live event passed each hand-over ([`StageTimes`]), and
//! the batch it belongs to ([`BatchTracker`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::model::{self, DataSource};
use crate::sink::OutboundMessage;

/// Where a message comes from: a record of one of the upstream's layers
/// ([`model::Origin`]), a dead letter, or a control event (gap marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Live,
    Backfill,
    Replay,
    DeadLetter,
    Control,
}

impl Origin {
    /// The `origin` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Live => "live",
            Origin::Backfill => "backfill",
            Origin::Replay => "replay",
            Origin::DeadLetter => "deadletter",
            Origin::Control => "control",
        }
    }
}

impl From<model::Origin> for Origin {
    fn from(o: model::Origin) -> Self {
        match o {
            model::Origin::Live => Origin::Live,
            model::Origin::Backfill => Origin::Backfill,
            model::Origin::Replay => Origin::Replay,
        }
    }
}

/// Compares with the label, as the `origin` metric and its readers spell it.
impl PartialEq<&str> for Origin {
    fn eq(&self, label: &&str) -> bool {
        self.as_str() == *label
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message plus what the publisher needs to account for it.
pub struct Outgoing {
    pub message: OutboundMessage,
    pub tenant: Arc<str>,
    pub source: DataSource,
    /// Where it comes from (the `origin` metric label).
    pub origin: Origin,
    /// When a live frame passed each hand-over, for the latency histograms.
    pub stages: Option<StageTimes>,
    /// Notified when this message is settled (acknowledged or dead-lettered).
    pub tracker: Option<Arc<BatchTracker>>,
}

impl Outgoing {
    /// `message` of `tenant`'s `source`, from `origin`, not tracked.
    pub fn new(
        message: OutboundMessage,
        tenant: Arc<str>,
        source: DataSource,
        origin: Origin,
    ) -> Outgoing {
        Outgoing {
            message,
            tenant,
            source,
            origin,
            stages: None,
            tracker: None,
        }
    }

    /// A record's message, from the layer `origin`.
    pub fn record(
        message: OutboundMessage,
        tenant: Arc<str>,
        source: DataSource,
        origin: model::Origin,
    ) -> Outgoing {
        Outgoing::new(message, tenant, source, origin.into())
    }

    /// A dead letter (the `dead_letter` module builds them).
    pub fn dead_letter(message: OutboundMessage, tenant: Arc<str>, source: DataSource) -> Outgoing {
        Outgoing::new(message, tenant, source, Origin::DeadLetter)
    }

    /// A control event (a gap marker).
    pub fn control(message: OutboundMessage, tenant: Arc<str>, source: DataSource) -> Outgoing {
        Outgoing::new(message, tenant, source, Origin::Control)
    }

    /// With the hand-over times of a live frame read at `received`.
    pub fn with_stages(mut self, received: Instant) -> Outgoing {
        self.stages = Some(StageTimes::new(received));
        self
    }

    /// Counted in `tracker` until settled (the caller has added it there).
    pub fn tracked(mut self, tracker: Arc<BatchTracker>) -> Outgoing {
        self.tracker = Some(tracker);
        self
    }

    pub fn is_dead_letter(&self) -> bool {
        self.origin == Origin::DeadLetter
    }
}

/// When a live event passed each hand-over on its way to the broker: the
/// end-to-end histogram says how slow an event was, these say where it
/// waited (`studio_relay_stage_latency_seconds`, one stage per gap).
///
/// Kept small because it travels by value through both queues: the read
/// instant, then each later hand-over in whole microseconds after it
/// (saturating after 71 minutes; the last stage takes up the rest, so the
/// stages always add up to the end-to-end time).
#[derive(Debug, Clone, Copy)]
pub struct StageTimes {
    received: Instant,
    after_us: [u32; 4],
}

/// The hand-overs after the socket's read, in the order an event passes them.
#[derive(Debug, Clone, Copy)]
pub enum HandOver {
    /// The processor took it off the frame queue.
    Dequeued,
    /// Normalized and encoded, and back in arrival order.
    Prepared,
    /// The publisher took it off its queue.
    Taken,
    /// The sink accepted it; from here its ack is awaited.
    Sent,
}

impl StageTimes {
    /// A frame read at `received`.
    pub fn new(received: Instant) -> Self {
        StageTimes {
            received,
            after_us: [0; 4],
        }
    }

    /// Records that the event passed `hand_over` at `at`.
    pub fn mark(&mut self, hand_over: HandOver, at: Instant) {
        let us = at.saturating_duration_since(self.received).as_micros();
        self.after_us[hand_over as usize] = u32::try_from(us).unwrap_or(u32::MAX);
    }

    /// The time spent in each of [`LATENCY_STAGES`](crate::ops::LATENCY_STAGES)
    /// by an event acknowledged at `acked`.
    pub fn gaps(&self, acked: Instant) -> [Duration; 5] {
        let [a, b, c, d] = self.after_us;
        let us = |from: u32, to: u32| Duration::from_micros(u64::from(to.saturating_sub(from)));
        let total = acked.saturating_duration_since(self.received);
        [
            us(0, a),
            us(a, b),
            us(b, c),
            us(c, d),
            total.saturating_sub(Duration::from_micros(u64::from(d))),
        ]
    }
}

/// Counts a batch of messages until each is settled (replay uses one per window).
#[derive(Default)]
pub struct BatchTracker {
    pending: AtomicI64,
    rejected: AtomicU64,
    notify: Notify,
}

impl BatchTracker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Call before submitting `n` messages.
    pub fn add(&self, n: usize) {
        self.pending.fetch_add(n as i64, Ordering::SeqCst);
    }

    pub(crate) fn settle(&self, rejected: bool) {
        if rejected {
            self.rejected.fetch_add(1, Ordering::SeqCst);
        }
        if self.pending.fetch_sub(1, Ordering::SeqCst) <= 1 {
            self.notify.notify_waiters();
        }
    }

    /// Waits until every added message is settled; returns how many were rejected.
    pub async fn wait(&self) -> u64 {
        loop {
            let notified = self.notify.notified();
            if self.pending.load(Ordering::SeqCst) <= 0 {
                return self.rejected.load(Ordering::SeqCst);
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_split_the_end_to_end_time_and_add_up_to_it() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut s = StageTimes::new(t0);
        s.mark(HandOver::Dequeued, at(10));
        s.mark(HandOver::Prepared, at(35));
        s.mark(HandOver::Taken, at(40));
        s.mark(HandOver::Sent, at(47));
        let gaps = s.gaps(at(1_047));
        assert_eq!(
            gaps.map(|d| d.as_micros()),
            [10, 25, 5, 7, 1_000],
            "frame_queue, prepare, publish_queue, send, ack"
        );
        assert_eq!(gaps.iter().sum::<Duration>(), Duration::from_micros(1_047));
    }

    #[test]
    fn a_stage_past_71_minutes_saturates_and_the_ack_stage_keeps_the_sum() {
        let t0 = Instant::now();
        let two_hours = Duration::from_secs(7_200);
        let mut s = StageTimes::new(t0);
        s.mark(HandOver::Dequeued, t0);
        s.mark(HandOver::Prepared, t0);
        // Spooled through a two-hour broker outage.
        s.mark(HandOver::Taken, t0 + two_hours);
        s.mark(HandOver::Sent, t0 + two_hours);
        let acked = t0 + two_hours + Duration::from_millis(1);
        let gaps = s.gaps(acked);
        assert_eq!(gaps.iter().sum::<Duration>(), acked - t0);
        assert_eq!(gaps[2].as_micros(), u128::from(u32::MAX));
    }
}
