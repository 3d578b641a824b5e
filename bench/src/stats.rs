//! Measurement containers shared by every scenario: an HDR latency
//! histogram in microseconds, tallies of HTTP statuses and of error kinds
//! (with the mapping from OS errors to kinds), and their JSON forms. Worker
//! threads each fill their own and the results are merged at the end.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Highest latency the histograms track: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

/// Latency histogram in microseconds (3 significant digits).
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let hist = match Histogram::new_with_bounds(1, MAX_US, 3) {
            Ok(h) => h,
            // The bounds are constants known to be valid.
            Err(e) => panic!("histogram bounds: {e}"),
        };
        Latency { hist }
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(us.min(MAX_US));
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Values at or above `us` microseconds.
    pub fn count_at_least(&self, us: u64) -> u64 {
        if self.hist.is_empty() {
            return 0;
        }
        self.hist.count_between(us, MAX_US)
    }

    pub fn merge(&mut self, other: &Latency) {
        // Identical bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn quantile(&self, q: f64) -> Option<u64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q))
    }

    pub fn max(&self) -> Option<u64> {
        (!self.hist.is_empty()).then(|| self.hist.max())
    }

    pub fn min(&self) -> Option<u64> {
        (!self.hist.is_empty()).then(|| self.hist.min())
    }

    pub fn mean(&self) -> Option<f64> {
        (!self.hist.is_empty()).then(|| (self.hist.mean() * 10.0).round() / 10.0)
    }

    /// `{min,p50,p90,p99,p999,max,mean,count}`; null figures when empty.
    pub fn to_json(&self) -> Value {
        json!({
            "min": self.min(),
            "p50": self.quantile(0.50),
            "p90": self.quantile(0.90),
            "p99": self.quantile(0.99),
            "p999": self.quantile(0.999),
            "max": self.max(),
            "mean": self.mean(),
            "count": self.count(),
        })
    }

    /// `p50 / p99 / p999 / max` for the table, in microseconds.
    pub fn summary(&self) -> String {
        if self.hist.is_empty() {
            return "-".to_string();
        }
        format!(
            "p50 {}  p99 {}  p999 {}  max {}  (us, n={})",
            self.hist.value_at_quantile(0.5),
            self.hist.value_at_quantile(0.99),
            self.hist.value_at_quantile(0.999),
            self.hist.max(),
            self.hist.len()
        )
    }
}

/// Kinds of failure the scenarios count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// ECONNREFUSED.
    Refused,
    /// ECONNRESET or EPIPE.
    Reset,
    /// The bench's own `--timeout` expired.
    TimedOut,
    /// The kernel gave up on the connection (ETIMEDOUT).
    KernelTimedOut,
    /// The server closed before a complete response arrived.
    ClosedEarly,
    /// The bytes received are not an HTTP/1.x response.
    BadResponse,
    /// No local port or address (EADDRNOTAVAIL).
    AddrNotAvailable,
    /// EMFILE / ENFILE.
    TooManyFiles,
    Other,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::KernelTimedOut => "kernel_timed_out",
            ErrorKind::ClosedEarly => "closed_early",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::AddrNotAvailable => "addr_not_available",
            ErrorKind::TooManyFiles => "too_many_files",
            ErrorKind::Other => "other",
        }
    }

    pub fn from_io(e: &io::Error) -> ErrorKind {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ErrorKind::Refused,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => ErrorKind::Reset,
            Some(libc::ETIMEDOUT) => ErrorKind::KernelTimedOut,
            Some(libc::EADDRNOTAVAIL) => ErrorKind::AddrNotAvailable,
            Some(libc::EMFILE) | Some(libc::ENFILE) => ErrorKind::TooManyFiles,
            _ => match e.kind() {
                io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
                io::ErrorKind::TimedOut => ErrorKind::KernelTimedOut,
                io::ErrorKind::UnexpectedEof => ErrorKind::ClosedEarly,
                _ => ErrorKind::Other,
            },
        }
    }
}

/// Counts per error kind.
#[derive(Default, Debug, Clone)]
pub struct Errors {
    counts: BTreeMap<ErrorKind, u64>,
}

impl Errors {
    pub fn add(&mut self, kind: ErrorKind) {
        *self.counts.entry(kind).or_insert(0) += 1;
    }

    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.counts {
            *self.counts.entry(*k).or_insert(0) += v;
        }
    }

    pub fn to_json(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .counts
            .iter()
            .map(|(k, v)| (k.name().to_string(), json!(v)))
            .collect();
        Value::Object(map)
    }

    pub fn summary(&self) -> String {
        if self.counts.is_empty() {
            return "none".to_string();
        }
        self.counts
            .iter()
            .map(|(k, v)| format!("{} {v}", k.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Counts per HTTP status code.
#[derive(Default, Debug, Clone)]
pub struct Statuses {
    counts: BTreeMap<u16, u64>,
}

impl Statuses {
    pub fn add(&mut self, status: u16) {
        *self.counts.entry(status).or_insert(0) += 1;
    }

    pub fn get(&self, status: u16) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    pub fn non_2xx(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn merge(&mut self, other: &Statuses) {
        for (k, v) in &other.counts {
            *self.counts.entry(*k).or_insert(0) += v;
        }
    }

    pub fn to_json(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .counts
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        Value::Object(map)
    }

    pub fn summary(&self) -> String {
        if self.counts.is_empty() {
            return "none".to_string();
        }
        self.counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rounds a rate to one decimal for JSON.
pub fn rate(count: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    ((count as f64 / secs) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_and_merge() {
        let mut a = Latency::new();
        for us in 1..=1000u64 {
            a.record(Duration::from_micros(us));
        }
        let mut b = Latency::new();
        b.record(Duration::from_secs(1));
        a.merge(&b);
        assert_eq!(a.count(), 1001);
        let p50 = a.quantile(0.5).unwrap_or(0);
        assert!((495..=505).contains(&p50), "{p50}");
        assert!(a.max().unwrap_or(0) >= 999_000);
        assert_eq!(a.count_at_least(900_000), 1);
        assert!(Latency::new().to_json()["p50"].is_null());
    }

    #[test]
    fn error_kinds_from_os_errors() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(ErrorKind::from_io(&e), ErrorKind::Refused);
        let e = io::Error::from_raw_os_error(libc::EPIPE);
        assert_eq!(ErrorKind::from_io(&e), ErrorKind::Reset);
        let mut errs = Errors::default();
        errs.add(ErrorKind::Reset);
        errs.add(ErrorKind::Reset);
        assert_eq!(errs.to_json(), json!({"reset": 2}));
    }

    #[test]
    fn status_tallies() {
        let mut s = Statuses::default();
        s.add(204);
        s.add(503);
        s.add(204);
        assert_eq!(s.non_2xx(), 1);
        assert_eq!(s.to_json(), json!({"204": 2, "503": 1}));
    }
}
