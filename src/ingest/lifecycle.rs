//! Series lifecycle: what a `DELETE /series` selects ([`Selector`], also the payload of a
//! kind-4 log record), the delete as it travels through the aggregator queue
//! ([`DeleteJob`], answered exactly once through its [`DeleteReply`]), and the pacing of the
//! `--series-ttl` expiry sweep ([`ExpirySchedule`]).
//!
//! A delete is ordered like a write: under the write log it is appended as its own record
//! (after every acknowledged write), the log thread queues it behind the writes before it,
//! and the aggregator applies it in that order and hands the count to the job's reply,
//! which carries it to wherever the request waits (nobody blocks on it here); replay
//! applies the same record at the same place. The sweep visits a bounded slice of the
//! store per tick on the aggregator thread, so a whole pass takes about
//! `min(ttl / 10, 60 s)` and no tick holds the store lock for long. Nothing here does I/O,
//! and the encoding never panics on any bytes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::names::Tag;
use crate::tuning::{EXPIRY_PASS_MAX, EXPIRY_PASS_MIN, EXPIRY_TICK};

/// Which series a delete removes: all present conditions must hold, compared byte for byte
/// with the unescaped measurement, tag and field names (as `GET /series` filters). A
/// selector with no condition selects nothing: `DELETE /series` refuses it before it gets
/// here, and [`SeriesStore::delete`](super::SeriesStore::delete) treats it as empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub measurement: Option<String>,
    pub field: Option<String>,
    /// `(key, value)` pairs the series must all carry.
    pub tags: Vec<(String, String)>,
}

impl Selector {
    /// No condition at all.
    pub fn is_empty(&self) -> bool {
        self.measurement.is_none() && self.field.is_none() && self.tags.is_empty()
    }

    /// Whether a group (one series key) passes the measurement and tag conditions.
    pub fn matches_group(&self, measurement: &[u8], tags: &[Tag<'_>]) -> bool {
        group_matches(self.measurement.as_deref(), &self.tags, measurement, tags)
    }

    /// Whether a field (unescaped name) passes the field condition.
    pub fn matches_field(&self, name: &[u8]) -> bool {
        self.field.as_ref().is_none_or(|f| *f.as_bytes() == *name)
    }

    /// The payload of a kind-4 log record: `has_measurement u8 | [len u32 | bytes] |
    /// has_field u8 | [len u32 | bytes] | n_tags u32 | n x (key_len u32 | key | value_len
    /// u32 | value)`, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for part in [&self.measurement, &self.field] {
            match part {
                Some(s) => {
                    out.push(1);
                    put(&mut out, s.as_bytes());
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&(self.tags.len() as u32).to_le_bytes());
        for (k, v) in &self.tags {
            put(&mut out, k.as_bytes());
            put(&mut out, v.as_bytes());
        }
        out
    }

    /// Reads [`Selector::encode`]'s bytes back; the error says what is wrong. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Selector, String> {
        let mut r = Reader { bytes };
        let opt = |r: &mut Reader<'_>| -> Result<Option<String>, String> {
            match r.take(1)?[0] {
                0 => Ok(None),
                1 => r.string().map(Some),
                b => Err(format!("delete record: bad presence byte {b}")),
            }
        };
        let measurement = opt(&mut r)?;
        let field = opt(&mut r)?;
        let n = r.u32()? as usize;
        // Bounded by what the bytes can hold: a damaged count reserves nothing large.
        let mut tags = Vec::with_capacity(n.min(r.bytes.len() / 8));
        for _ in 0..n {
            let k = r.string()?;
            let v = r.string()?;
            tags.push((k, v));
        }
        if !r.bytes.is_empty() {
            return Err("delete record: trailing bytes".into());
        }
        Ok(Selector {
            measurement,
            field,
            tags,
        })
    }
}

/// The measurement and tag conditions of `/series` and `DELETE /series`, in one place.
pub fn group_matches(
    want_measurement: Option<&str>,
    want_tags: &[(String, String)],
    measurement: &[u8],
    tags: &[Tag<'_>],
) -> bool {
    if let Some(m) = want_measurement
        && *measurement != *m.as_bytes()
    {
        return false;
    }
    want_tags.iter().all(|(k, v)| {
        tags.iter()
            .any(|(tk, tv)| **tk == *k.as_bytes() && **tv == *v.as_bytes())
    })
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("delete record shorter than its lengths say".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "delete record: a name is not UTF-8".into())
    }
}

/// Why a delete that never reached the aggregator (or was dropped unapplied) was not
/// applied, when nobody said more.
pub const NOT_APPLIED: &str = "the delete was not applied (the server is shutting down or the aggregator stopped); retry later";

/// Where a delete's answer goes, exactly once: the aggregator [`complete`]s it with the
/// number of series removed, or whoever drops it unapplied (a log error, a closed queue,
/// an aggregator gone) [`fail`]s it, and dropping it unanswered fails it with
/// [`NOT_APPLIED`]. So a request waiting for it is never left waiting for ever, and this
/// module knows nothing of where the answer goes (a reactor connection, a blocked thread).
///
/// [`complete`]: DeleteReply::complete
/// [`fail`]: DeleteReply::fail
pub struct DeleteReply {
    to: Option<AnswerTo>,
}

/// Takes a delete's count, or why it was not applied.
type AnswerTo = Box<dyn FnOnce(Result<u64, String>) + Send>;

impl DeleteReply {
    pub fn new(to: impl FnOnce(Result<u64, String>) + Send + 'static) -> DeleteReply {
        DeleteReply {
            to: Some(Box::new(to)),
        }
    }

    /// The aggregator applied the delete.
    pub fn complete(mut self, deleted: u64) {
        if let Some(to) = self.to.take() {
            to(Ok(deleted));
        }
    }

    /// The delete will not be applied, for this reason.
    pub fn fail(mut self, why: String) {
        if let Some(to) = self.to.take() {
            to(Err(why));
        }
    }
}

impl Drop for DeleteReply {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            to(Err(NOT_APPLIED.into()));
        }
    }
}

impl std::fmt::Debug for DeleteReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.to.is_some() {
            "DeleteReply(waiting)"
        } else {
            "DeleteReply(answered)"
        })
    }
}

/// A delete on its way to the aggregator, in order with the writes around it.
#[derive(Debug)]
pub struct DeleteJob {
    pub selector: Selector,
    /// Where the answer goes; absent at replay.
    pub reply: Option<DeleteReply>,
}

impl DeleteJob {
    /// The delete will not be applied: its request is answered with `why`.
    pub fn fail(self, why: String) {
        if let Some(reply) = self.reply {
            reply.fail(why);
        }
    }
}

/// Seconds since the Unix epoch, as the store keeps last-write times (`u32`: until 2106).
pub fn unix_s(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32)
}

/// [`unix_s`] of a receive time in nanoseconds (what `WriteSource::now_ns` holds).
pub fn unix_s_of_ns(ns: i64) -> u32 {
    (ns.max(0) / 1_000_000_000).min(i64::from(u32::MAX)) as u32
}

/// The pace of the expiry sweep: a tick every [`EXPIRY_TICK`], each visiting a slice of
/// the store's buckets so that a whole pass takes about `ttl / 10` (at least
/// [`EXPIRY_PASS_MIN`], at most [`EXPIRY_PASS_MAX`]). A series is therefore gone at most
/// about a tenth of the TTL (or a minute) after it expired.
#[derive(Debug, Clone)]
pub struct ExpirySchedule {
    pub ttl_s: u32,
    pass: Duration,
    /// Next bucket to visit.
    pub cursor: usize,
    pub next_tick: Instant,
}

impl ExpirySchedule {
    /// `None` when expiry is off (`--series-ttl 0`).
    pub fn new(ttl: Duration, now: Instant) -> Option<ExpirySchedule> {
        let ttl_s = ttl.as_secs().min(u64::from(u32::MAX)) as u32;
        (ttl_s > 0).then(|| ExpirySchedule {
            ttl_s,
            pass: (ttl / 10).clamp(EXPIRY_PASS_MIN, EXPIRY_PASS_MAX),
            cursor: 0,
            next_tick: now,
        })
    }

    /// Buckets a tick visits in a table of `buckets` buckets.
    pub fn slice(&self, buckets: usize) -> usize {
        let ticks = (self.pass.as_nanos() / EXPIRY_TICK.as_nanos()).max(1) as usize;
        buckets.div_ceil(ticks).max(1)
    }

    /// Whether a tick is due at `now`; if so the next one is scheduled.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next_tick {
            return false;
        }
        self.next_tick = now + EXPIRY_TICK;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_round_trips_and_damage_is_an_error() {
        let s = Selector {
            measurement: Some("cpu".into()),
            field: None,
            tags: vec![("host".into(), "a b".into()), ("dc".into(), "é".into())],
        };
        let bytes = s.encode();
        assert_eq!(Selector::decode(&bytes), Ok(s));
        for cut in 0..bytes.len() {
            assert!(Selector::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Selector::decode(&longer).is_err());
        assert!(Selector::decode(&[2]).is_err());
        let empty = Selector::default();
        assert!(empty.is_empty());
        assert_eq!(Selector::decode(&empty.encode()), Ok(empty));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = Selector::decode(&bytes);
        }
    }

    #[test]
    fn a_pass_takes_a_tenth_of_the_ttl_within_bounds() {
        let now = Instant::now();
        assert!(ExpirySchedule::new(Duration::ZERO, now).is_none());
        let ticks = |ttl: u64| {
            let s = ExpirySchedule::new(Duration::from_secs(ttl), now).expect("on");
            1_000_000usize.div_ceil(s.slice(1_000_000))
        };
        let per_s = (Duration::from_secs(1).as_nanos() / EXPIRY_TICK.as_nanos()) as usize;
        assert_eq!(ticks(3600), 60 * per_s, "an hour's TTL: a pass a minute");
        assert_eq!(ticks(100), 10 * per_s);
        assert_eq!(ticks(1), 1, "short TTLs: the whole table per tick");
        let s = ExpirySchedule::new(Duration::from_secs(5), now).expect("on");
        assert_eq!(s.slice(0), 1);
    }

    #[test]
    fn ticks_are_spaced() {
        let now = Instant::now();
        let mut s = ExpirySchedule::new(Duration::from_secs(60), now).expect("on");
        assert!(s.due(now));
        assert!(!s.due(now));
        assert!(s.due(now + EXPIRY_TICK));
    }

    #[test]
    fn a_reply_is_answered_exactly_once_also_when_dropped() {
        use std::sync::{Arc, Mutex};
        let got = Arc::new(Mutex::new(Vec::new()));
        let reply = || {
            let got = Arc::clone(&got);
            DeleteReply::new(move |r| got.lock().expect("test lock").push(r))
        };
        reply().complete(3);
        reply().fail("log error".into());
        drop(reply());
        let job = DeleteJob {
            selector: Selector::default(),
            reply: Some(reply()),
        };
        job.fail("closed".into());
        let got = got.lock().expect("test lock").clone();
        assert_eq!(
            got,
            [
                Ok(3),
                Err("log error".into()),
                Err(NOT_APPLIED.into()),
                Err("closed".into())
            ]
        );
    }

    #[test]
    fn receive_times_in_seconds() {
        assert_eq!(unix_s_of_ns(1_700_000_000_999_999_999), 1_700_000_000);
        assert_eq!(unix_s_of_ns(-5), 0);
        assert_eq!(unix_s(UNIX_EPOCH + Duration::from_secs(42)), 42);
    }
}
