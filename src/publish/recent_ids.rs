//! A bounded memory of 128-bit ids accepted for publishing (retryable
//! failures are retried until acknowledged). The relay keeps two: the event
//! ids of live records, so a push Telavox repeats exactly (same content,
//! same event id) is published once; and the match keys of everything
//! published live or by gap backfill, so a historic record whose live
//! version (or an earlier backfill) already went out is not published
//! again. A live record is never held back for matching a historic one.
//! Kafka has no broker-side dedup, so without this every reconnect would
//! feed consumers duplicates.
//!
//! The memories start empty in a new process, yet a restart's resume
//! backfill covers time already published; so before it runs, both are
//! seeded from the broker itself ([`seed_from_broker`]).

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use crate::ops::internal_events::{RecentIdsSeedFailed, RecentIdsSeeded};
use crate::ops::Metrics;
use crate::sink::Sink;

/// Insertion-ordered set of at most `capacity` ids; the oldest is forgotten
/// first. Ids are the 128-bit event ids (32 hex chars), stored as `u128`.
pub struct RecentIds {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    set: HashSet<u128, BuildHasherDefault<IdHasher>>,
    order: VecDeque<u128>,
}

/// Event ids are SHA-256 output, uniformly spread already: their low 64
/// bits are a good hash as they are. (SipHash over every id, twice per
/// event, was a visible cost in the relay's profile.) Hash-flooding is no
/// concern: an id is a digest of the record, not text an attacker picks.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed here (`write_u128` below); this
        // fallback keeps the trait's contract for anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

impl std::fmt::Debug for RecentIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentIds")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

/// Ids that are not 32 hex digits (dead letters) are never remembered.
fn key(id: &str) -> Option<u128> {
    // A table-driven hex decode: `u128::from_str_radix` checks each digit
    // for overflow and was a visible share of the per-event cost.
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(id, &mut bytes).ok()?;
    Some(u128::from_be_bytes(bytes))
}

impl RecentIds {
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Remembers `id`; false when it was already known (a duplicate).
    /// Ids that are not event ids are never remembered and always new.
    pub fn insert(&self, id: &str) -> bool {
        let (Some(k), true) = (key(id), self.capacity > 0) else {
            return true;
        };
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !g.set.insert(k) {
            return false;
        }
        g.order.push_back(k);
        while g.order.len() > self.capacity {
            if let Some(old) = g.order.pop_front() {
                g.set.remove(&old);
            }
        }
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        key(id).is_some_and(|k| {
            self.inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set
                .contains(&k)
        })
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every id remembered, as bytes (oldest first).
    pub fn ids(&self) -> Vec<[u8; 16]> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.order.iter().map(|k| k.to_be_bytes()).collect()
    }

    /// How many ids it remembers at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Remembers the event ids (in `live_ids`) and match keys (in
/// `match_keys`) of the messages already on the broker in `destinations`
/// since `since_ms` (broker time), at most [`RecentIds::capacity`] of
/// `match_keys` (the newest), reading for at most `timeout`. A failure is
/// logged and counted, never fatal: the backfill then may publish
/// duplicates, but loses nothing.
pub async fn seed_from_broker(
    live_ids: &RecentIds,
    recent: &RecentIds,
    sink: &dyn Sink,
    destinations: &[String],
    since_ms: i64,
    timeout: Duration,
    metrics: &Metrics,
) {
    if recent.capacity() == 0 || destinations.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    match sink
        .recent_event_ids(destinations, since_ms, recent.capacity(), timeout)
        .await
    {
        Ok(scan) => {
            for id in &scan.ids {
                live_ids.insert(id);
            }
            for key in &scan.match_keys {
                recent.insert(key);
            }
            RecentIdsSeeded {
                sink: sink.name(),
                ids: scan.ids.len(),
                since_ms,
                elapsed: started.elapsed(),
            }
            .emit(metrics);
            if !scan.complete {
                RecentIdsSeedFailed {
                    sink: sink.name(),
                    error: &format!(
                        "not read to the end within {timeout:?}; the ids read so far are used"
                    ),
                }
                .emit(metrics);
            }
        }
        Err(e) => RecentIdsSeedFailed {
            sink: sink.name(),
            error: &e.to_string(),
        }
        .emit(metrics),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> String {
        format!("{n:032x}")
    }

    #[test]
    fn remembers_up_to_capacity_and_forgets_the_oldest_first() {
        let r = RecentIds::new(3);
        for n in 0..5 {
            r.insert(&id(n));
        }
        assert_eq!(r.len(), 3);
        assert!(!r.contains(&id(0)) && !r.contains(&id(1)));
        assert!(r.contains(&id(2)) && r.contains(&id(4)));
        // Re-inserting a known id does not refresh or duplicate it.
        assert!(!r.insert(&id(2)));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn dead_letter_ids_and_zero_capacity_are_ignored() {
        let r = RecentIds::new(10);
        r.insert("dl-0123456789abcdef0123456789abcdef");
        assert!(r.is_empty());
        let off = RecentIds::new(0);
        off.insert(&id(1));
        assert!(!off.contains(&id(1)));
    }
}
