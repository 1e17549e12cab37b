//! Pure planning: the split of a range into windows.

use chrono::{DateTime, Duration as ChronoDuration, Utc};

/// One window of one source for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    /// Stable text form used in checkpoints.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.from.timestamp_millis(),
            self.to.timestamp_millis()
        )
    }
}

/// `t` rounded down to a multiple of `step` since the Unix epoch (UTC), so
/// "now" means the same window boundary for every run within that window.
pub fn align_down(t: DateTime<Utc>, step: std::time::Duration) -> DateTime<Utc> {
    let step = step.as_millis() as i64;
    if step <= 0 {
        return t;
    }
    let ms = t.timestamp_millis();
    DateTime::<Utc>::from_timestamp_millis(ms - ms.rem_euclid(step)).unwrap_or(t)
}

/// Splits `[from, to)` into windows of `size`, aligned to `from`; the last
/// one is shorter when the range does not divide evenly.
pub fn split(from: DateTime<Utc>, to: DateTime<Utc>, size: std::time::Duration) -> Vec<Window> {
    let step = ChronoDuration::from_std(size).unwrap_or(ChronoDuration::hours(1));
    let step = if step <= ChronoDuration::zero() {
        ChronoDuration::hours(1)
    } else {
        step
    };
    let mut out = Vec::new();
    let mut cur = from;
    while cur < to {
        let next = (cur + step).min(to);
        out.push(Window {
            from: cur,
            to: next,
        });
        cur = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn now_aligns_down_to_a_whole_window() {
        let t = DateTime::parse_from_rfc3339("2025-10-01T13:47:12.345Z")
            .unwrap()
            .with_timezone(&Utc);
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(
            align_down(t, hour).to_rfc3339(),
            "2025-10-01T13:00:00+00:00"
        );
        let later = t + chrono::Duration::minutes(10);
        assert_eq!(align_down(t, hour), align_down(later, hour));
        assert_eq!(align_down(t, std::time::Duration::ZERO), t);
    }

    #[test]
    fn windows_cover_the_range_exactly() {
        let w = split(
            t("2025-10-01T00:00:00Z"),
            t("2025-10-01T02:30:00Z"),
            std::time::Duration::from_secs(3600),
        );
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].from, t("2025-10-01T00:00:00Z"));
        assert_eq!(w[2].to, t("2025-10-01T02:30:00Z"));
        for pair in w.windows(2) {
            assert_eq!(pair[0].to, pair[1].from);
        }
        assert!(split(
            t("2025-10-02T00:00:00Z"),
            t("2025-10-01T00:00:00Z"),
            std::time::Duration::from_secs(60)
        )
        .is_empty());
    }
}
