//! The upstream's clock: per tenant, the newest record time seen, and the
//! gaps not yet backfilled, which hold the restart checkpoint back. Gaps
//! are measured on it, not on the relay's clock, so a skewed relay clock
//! (or the simulator's accelerated one) cannot shift a backfill window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::relay::checkpoint::ClockMark;

/// Newest record time (epoch ms) seen per tenant: the upstream's "now",
/// with the relay's wall clock when it got there; and the gaps not yet
/// backfilled, which hold the restart checkpoint back.
#[derive(Debug, Default)]
pub struct UpstreamClock {
    now: Mutex<HashMap<Arc<str>, ClockMark>>,
    /// Open gaps by id: (tenant, start). Several may be open for one socket
    /// (a second drop while the first gap is still being filled).
    holds: Mutex<HashMap<u64, (Arc<str>, ClockMark)>>,
    next_hold: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UpstreamClock {
    pub fn observe(&self, tenant: &Arc<str>, at_ms: i64) {
        let mut g = lock(&self.now);
        match g.get_mut(tenant) {
            Some(e) if e.upstream_ms >= at_ms => {}
            // The wall clock is read only when the upstream clock moves on.
            Some(e) => *e = ClockMark::now(at_ms),
            None => {
                g.insert(tenant.clone(), ClockMark::now(at_ms));
            }
        }
    }

    pub fn now(&self, tenant: &str) -> Option<i64> {
        self.mark(tenant).map(|m| m.upstream_ms)
    }

    /// The upstream "now" and when the relay saw it.
    pub fn mark(&self, tenant: &str) -> Option<ClockMark> {
        lock(&self.now).get(tenant).copied()
    }

    /// A gap from `from` is open: checkpoints stay at or before it until
    /// [`UpstreamClock::release`] of the returned id.
    pub fn hold(&self, tenant: &Arc<str>, from: ClockMark) -> u64 {
        let id = self
            .next_hold
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.holds).insert(id, (tenant.clone(), from));
        id
    }

    pub fn release(&self, hold: u64) {
        lock(&self.holds).remove(&hold);
    }

    /// A tenant handed to another replica: its clock and open gaps go, so
    /// no checkpoint of it is written here any more.
    pub fn forget(&self, tenant: &str) {
        lock(&self.holds).retain(|_, (t, _)| &**t != tenant);
        lock(&self.now).remove(tenant);
    }

    /// Per tenant, the time a restart checkpoint may claim: the clock, but
    /// never past the start of a gap still being filled.
    pub fn snapshot(&self) -> Vec<(Arc<str>, ClockMark)> {
        let holds = lock(&self.holds);
        lock(&self.now)
            .iter()
            .map(|(t, now)| {
                let held = holds
                    .values()
                    .filter(|(ht, _)| ht == t)
                    .map(|(_, from)| *from)
                    .min_by_key(|m| m.upstream_ms);
                match held {
                    Some(h) if h.upstream_ms < now.upstream_ms => (t.clone(), h),
                    _ => (t.clone(), *now),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mark(upstream_ms: i64) -> ClockMark {
        ClockMark {
            upstream_ms,
            seen_at_ms: upstream_ms * 10,
        }
    }

    #[test]
    fn checkpoints_never_pass_an_open_gap() {
        let clock = UpstreamClock::default();
        let t: Arc<str> = Arc::from("acme");
        clock.observe(&t, 100);
        let up = |c: &UpstreamClock| -> Vec<(Arc<str>, i64)> {
            c.snapshot()
                .into_iter()
                .map(|(t, m)| (t, m.upstream_ms))
                .collect()
        };
        assert_eq!(up(&clock), vec![(t.clone(), 100)]);
        let first = clock.hold(&t, mark(50));
        let second = clock.hold(&t, mark(70));
        clock.observe(&t, 120);
        // A held checkpoint carries the wall time of the gap's start.
        assert_eq!(clock.snapshot(), vec![(t.clone(), mark(50))]);
        clock.release(first);
        assert_eq!(up(&clock), vec![(t.clone(), 70)]);
        clock.release(second);
        assert_eq!(up(&clock), vec![(t.clone(), 120)]);
        // Another tenant's gap holds only that tenant back.
        let other: Arc<str> = Arc::from("other");
        clock.hold(&other, mark(1));
        assert_eq!(up(&clock), vec![(t, 120)]);
    }

    #[test]
    fn the_wall_clock_mark_moves_only_with_the_upstream_clock() {
        let clock = UpstreamClock::default();
        let t: Arc<str> = Arc::from("acme");
        clock.observe(&t, 100);
        let first = clock.mark("acme").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        clock.observe(&t, 90);
        clock.observe(&t, 100);
        assert_eq!(clock.mark("acme").unwrap(), first);
        clock.observe(&t, 101);
        assert!(clock.mark("acme").unwrap().seen_at_ms > first.seen_at_ms);
    }
}
