//! The retry policy of one forward target: how long to wait before sending a batch again
//! after a network error, a `5xx` or a `429`.
//!
//! Exponential from [`FORWARD_BACKOFF_MIN`] doubling per consecutive failure up to
//! [`FORWARD_BACKOFF_MAX`], with "equal jitter" (a delay is drawn from the upper half of
//! the current step, so targets failing together spread out but none retries faster than
//! half the step). A receiver's `Retry-After` is honoured as a lower bound, capped at
//! [`FORWARD_RETRY_AFTER_MAX`]. A success resets the sequence. Pure: it computes delays
//! and never sleeps or reads a clock, so tests run it with a seed.

use std::time::{Duration, SystemTime};

use crate::tuning::{FORWARD_BACKOFF_MAX, FORWARD_BACKOFF_MIN, FORWARD_RETRY_AFTER_MAX};

/// Backoff state of one target.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    retry_after_max: Duration,
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// The policy of SPEC "Forwarding", jitter seeded with `seed` (a forwarder passes
    /// something that differs between targets and processes, e.g. a hash of its URL and
    /// the process id; tests pass a constant).
    pub fn new(seed: u64) -> Backoff {
        Backoff::with_limits(
            FORWARD_BACKOFF_MIN,
            FORWARD_BACKOFF_MAX,
            FORWARD_RETRY_AFTER_MAX,
            seed,
        )
    }

    pub fn with_limits(
        min: Duration,
        max: Duration,
        retry_after_max: Duration,
        seed: u64,
    ) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            retry_after_max,
            failures: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next attempt.
    /// `retry_after` is the receiver's `Retry-After`, if it sent one.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32 << self.failures.min(31))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        let jitter_nanos = self
            .rng
            .u64(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        let delay = half + Duration::from_nanos(jitter_nanos);
        match retry_after {
            Some(asked) => delay.max(asked.min(self.retry_after_max)),
            None => delay,
        }
    }

    /// Records a success: the next failure starts again from the minimum.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Parses a `Retry-After` value: delay seconds (`120`) or an HTTP date, which is turned
/// into the time left after `now` (zero when already past). `None` when unparsable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_from_100ms_to_30s_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(42);
        let mut step = 100 * MS;
        for _ in 0..20 {
            let d = b.next_delay(None);
            assert!(d >= step / 2 && d <= step, "{d:?} outside {step:?}");
            step = (step * 2).min(30_000 * MS);
        }
        assert_eq!(b.failures(), 20);
        // Far past the cap it stays there (no overflow).
        for _ in 0..100 {
            let d = b.next_delay(None);
            assert!(d >= 15_000 * MS && d <= 30_000 * MS);
        }
    }

    #[test]
    fn same_seed_same_delays_other_seed_other_delays() {
        let run = |seed| {
            let mut b = Backoff::new(seed);
            (0..8).map(|_| b.next_delay(None)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn reset_on_success() {
        let mut b = Backoff::new(1);
        for _ in 0..10 {
            b.next_delay(None);
        }
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay(None) <= 100 * MS);
    }

    #[test]
    fn retry_after_is_a_lower_bound_capped() {
        let mut b = Backoff::new(3);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        // A short Retry-After does not shorten our own backoff.
        let d = b.next_delay(Some(Duration::ZERO));
        assert!(d >= 100 * MS && d <= 200 * MS, "{d:?}");
        // An absurd one is capped.
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(86_400))),
            FORWARD_RETRY_AFTER_MAX
        );
    }

    #[test]
    fn retry_after_values() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
