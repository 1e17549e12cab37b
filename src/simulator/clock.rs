//! The simulated clock: `sim_now = epoch + real_elapsed x speed`.

use std::time::{Duration, Instant};

/// Simulated wall clock in epoch milliseconds (UTC).
#[derive(Clone, Debug)]
pub struct SimClock {
    started: Instant,
    epoch_ms: i64,
    speed: f64,
}

impl SimClock {
    /// A clock that reads `epoch_ms` now and runs `speed` times faster than real time.
    pub fn new(epoch_ms: i64, speed: f64) -> Self {
        SimClock {
            started: Instant::now(),
            epoch_ms,
            speed: if speed > 0.0 { speed } else { 1.0 },
        }
    }

    /// The real wall clock now, in epoch milliseconds.
    pub fn wall_now_ms() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    pub fn epoch_ms(&self) -> i64 {
        self.epoch_ms
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Simulated time now.
    pub fn now_ms(&self) -> i64 {
        self.epoch_ms + (self.started.elapsed().as_secs_f64() * 1000.0 * self.speed) as i64
    }

    /// Real time left until the simulated clock reads `sim_ms` (zero if past).
    pub fn real_until(&self, sim_ms: i64) -> Duration {
        let delta = sim_ms - self.now_ms();
        if delta <= 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(delta as f64 / 1000.0 / self.speed)
        }
    }

    /// Real time elapsed since start.
    pub fn real_elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
