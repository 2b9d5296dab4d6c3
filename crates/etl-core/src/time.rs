//! Wall-clock time as the pipeline records it: Unix milliseconds in an `i64`,
//! the unit of every `*_unix_ms` field (manifests, reports, latency). The one
//! place that reads the clock for them, so every service rounds and clamps the
//! same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now. A clock set before 1970 reads 0 and
/// one past the year 292 million reads `i64::MAX`, instead of panicking or
/// wrapping: a latency computed from them is then wrong, not a crash.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_clock_in_milliseconds() {
        let before = chrono::Utc::now().timestamp_millis();
        let now = now_unix_ms();
        let after = chrono::Utc::now().timestamp_millis();
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }
}
