//! Rate limiting for warnings that a flood would otherwise repeat once per event.
//!
//! `warn`-level lines for limits being hit (fd exhaustion, `--max-connections`, a full queue)
//! go through a [`LogLimiter`]: at most one line per interval, carrying how many were
//! suppressed since the last one. Never one line per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed)` when a line may be logged now, `None` to stay quiet.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A [`LogLimiter`] several threads share (workers warning about a full queue).
pub struct SharedLogLimiter(Mutex<LogLimiter>);

impl SharedLogLimiter {
    pub fn new(every: Duration) -> Self {
        SharedLogLimiter(Mutex::new(LogLimiter::new(every)))
    }

    pub fn check(&self, now: Instant) -> Option<u64> {
        // Contended only while warnings are firing; try_lock keeps a busy worker moving.
        match self.0.try_lock() {
            Ok(mut l) => l.check(now),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_suppressed_count() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.check(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(l.check(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(l.check(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(l.check(t0 + Duration::from_secs(11)), None);
    }
}
