//! One forward target's thread: follows the write log from its persisted cursor, gathers
//! logged writes into batches, sends them in log order, and moves the cursor after each
//! `2xx` (SPEC "Forwarding").
//!
//! ```text
//!  LogTail (committed end) ──▶ LogReader::next_record ──▶ rebuild the Batch (same parser as
//!  replay) ──▶ up to FORWARD_MAX_VALUES values or 1 s ──▶ encode ──▶ Client::send (blocking)
//!      2xx: next request; all done ──▶ Cursor::store(last LSN) ──▶ position (for pruning)
//!      network error / 5xx / 429: Backoff, same request again (stop and backlog checked
//!                                 every second while waiting)
//!      other 4xx: drop the request (counted `rejected`, the answer logged, rate-limited)
//!  behind by more than --forward-max-backlog-bytes: the oldest unsent points are dropped
//!  (counted `backlog`) and the cursor jumps past them
//! ```
//!
//! It reads only committed records, from the files (never a request buffer), holds at most
//! one batch in memory whatever the target does, and never blocks anything but itself: the
//! log thread does not wait for it, ingestion does not know it exists. One request is in
//! flight at a time, so a receiver sees each series' samples in log order.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::client::{Client, Outcome};
use super::cursor::Cursor;
use super::retry::Backoff;
use super::target::Target;
use super::{Format, encode};
use crate::ingest::Batch;
use crate::ingest::write::{self, IngestScratch};
use crate::log_limit::LogLimiter;
use crate::stats::ForwardStats;
use crate::storage::record::{Kind, Record};
use crate::storage::segment;
use crate::storage::{LogReader, LogTail, Lsn};
use crate::tuning::{FORWARD_MAX_VALUES, FORWARD_MAX_WAIT};

/// The shutdown request every forwarder of a server watches.
#[derive(Default)]
pub struct Stop {
    requested: AtomicBool,
    /// Past it, a forwarder stops even while it still has something to send.
    deadline: Mutex<Option<Instant>>,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    /// Asks every forwarder to send what is committed until `deadline`, then stop.
    pub fn request(&self, deadline: Instant) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(deadline);
        self.requested.store(true, Relaxed);
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_all();
    }

    fn requested(&self) -> bool {
        self.requested.load(Relaxed)
    }

    fn deadline_passed(&self) -> bool {
        self.requested()
            && self
                .deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|d| Instant::now() >= d)
    }

    /// Sleeps `d` unless a stop is requested first; `true` if it was.
    fn sleep(&self, d: Duration) -> bool {
        let g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.requested() {
            let _ = self.wake.wait_timeout(g, d);
        }
        self.requested()
    }
}

/// What a forwarder needs from the server.
pub struct Setup {
    pub target: Target,
    pub client: Client,
    pub wal_dir: std::path::PathBuf,
    pub tail: Arc<LogTail>,
    pub cursor: Cursor,
    /// The LSN the cursor held (or the log's end for a new target).
    pub start: Lsn,
    /// Published after each stored cursor: what the snapshot thread may prune up to.
    pub position: Arc<AtomicU64>,
    pub stats: Arc<ForwardStats>,
    pub max_backlog: u64,
    pub stop: Arc<Stop>,
}

/// Why delivery stopped early.
enum Interrupted {
    /// Shutdown: leave without moving the cursor.
    Stop,
    /// The gathered batches were dropped for the backlog cap (the cursor moved past them).
    Dropped,
}

pub struct Forwarder {
    s: Setup,
    reader: LogReader,
    scratch: IngestScratch,
    backoff: Backoff,
    /// Gathered and not yet delivered (or dropped).
    batches: Vec<Batch>,
    values: usize,
    points: u64,
    /// Of `points`, how many went out (or were rejected) already.
    done_points: u64,
    bytes: u64,
    last_lsn: Lsn,
    first_at: Option<Instant>,
    backlog_checked: Instant,
    warn_send: LogLimiter,
    warn_read: LogLimiter,
    warn_drop: LogLimiter,
}

impl Forwarder {
    pub fn new(s: Setup) -> Forwarder {
        let seed = u64::from(std::process::id())
            ^ s.target
                .redacted()
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        let reader = LogReader::new(&s.wal_dir, s.start + 1);
        let every = Duration::from_secs(10);
        Forwarder {
            reader,
            scratch: IngestScratch::default(),
            backoff: Backoff::new(seed),
            batches: Vec::new(),
            values: 0,
            points: 0,
            done_points: 0,
            bytes: 0,
            last_lsn: s.start,
            first_at: None,
            backlog_checked: Instant::now(),
            warn_send: LogLimiter::new(every),
            warn_read: LogLimiter::new(every),
            warn_drop: LogLimiter::new(every),
            s,
        }
    }

    /// Runs until shutdown.
    pub fn run(mut self) {
        while self.gather() {
            if self.batches.is_empty() {
                continue;
            }
            match self.deliver() {
                Ok(()) => self.advance(self.last_lsn),
                Err(Interrupted::Dropped) => {}
                Err(Interrupted::Stop) => break,
            }
        }
        if let Err(e) = self.s.cursor.sync() {
            log::warn!(
                "forward {}: cannot sync {}: {e}",
                self.s.target.redacted(),
                self.s.cursor.path().display()
            );
        }
        log::debug!(
            "forward {}: stopped at LSN {}",
            self.s.target.redacted(),
            self.s.cursor.lsn()
        );
    }

    /// Reads committed records until a batch is full or a second has passed since the
    /// first of it. `false` to stop (shutdown, nothing more to send).
    fn gather(&mut self) -> bool {
        loop {
            if self.s.stop.deadline_passed() {
                return false;
            }
            let committed = self.s.tail.committed();
            let before = self.reader.next_lsn();
            self.read_upto(committed);
            self.check_backlog(false);
            if self.values >= FORWARD_MAX_VALUES {
                return true;
            }
            let waited = self.first_at.map(|t| t.elapsed());
            if waited.is_some_and(|w| w >= FORWARD_MAX_WAIT) {
                return true;
            }
            let caught_up = self.reader.next_lsn() > committed.lsn;
            let closed = self.s.tail.is_closed();
            if self.s.stop.requested() && caught_up && closed {
                // Shutdown and nothing more will be logged: send what is gathered, leave.
                return !self.batches.is_empty();
            }
            if !caught_up && self.reader.next_lsn() > before {
                continue; // more is committed than one pass read
            }
            let wait = match waited {
                Some(w) => FORWARD_MAX_WAIT.saturating_sub(w),
                None => Duration::from_secs(1),
            };
            if closed {
                self.s.stop.sleep(wait);
            } else {
                self.s.tail.wait_past(committed.lsn, wait);
            }
        }
    }

    /// Reads records up to `committed` into the gathered batches, up to a full batch.
    fn read_upto(&mut self, committed: crate::storage::Committed) {
        while self.values < FORWARD_MAX_VALUES {
            let rec = match self.reader.next_record(committed) {
                Ok(Some(rec)) => rec,
                Ok(None) => break,
                Err(e) => {
                    if let Some(n) = self.warn_read.check(Instant::now()) {
                        log::error!(
                            "forward {}: cannot read the write log: {e}; retrying ({n} similar suppressed)",
                            self.s.target.redacted()
                        );
                    }
                    self.s.stop.sleep(Duration::from_secs(1));
                    break;
                }
            };
            let (lsn, size) = (rec.lsn, rec.size as u64);
            match decode(&mut self.scratch, &rec) {
                Ok(batch) => {
                    self.values += batch.fields.len();
                    self.points += batch.len() as u64;
                    if !batch.is_empty() {
                        self.batches.push(batch);
                    }
                }
                Err(why) => {
                    if let Some(n) = self.warn_read.check(Instant::now()) {
                        log::error!(
                            "forward {}: log record {lsn} cannot be decoded ({why}); not sent ({n} similar suppressed)",
                            self.s.target.redacted()
                        );
                    }
                }
            }
            self.first_at.get_or_insert_with(Instant::now);
            self.last_lsn = lsn;
            self.bytes += size;
        }
        for skipped in self.reader.take_skipped() {
            if let Some(n) = self.warn_read.check(Instant::now()) {
                log::error!(
                    "forward {}: skipped in the write log: {} (LSNs {}..{}); not sent ({n} similar suppressed)",
                    self.s.target.redacted(),
                    skipped.what,
                    skipped.lsns.start,
                    skipped.lsns.end
                );
            }
        }
    }

    /// Sends the gathered batches, request after request, each until it is not to be
    /// retried.
    fn deliver(&mut self) -> Result<(), Interrupted> {
        let format = self.s.target.format();
        let refs: Vec<&Batch> = self.batches.iter().collect();
        let encoded = encode(format, &refs, FORWARD_MAX_VALUES);
        drop(refs);
        self.s
            .stats
            .dropped_unsupported
            .fetch_add(encoded.unsupported, Relaxed);
        for req in &encoded.requests {
            loop {
                if self.s.stop.deadline_passed() {
                    return Err(Interrupted::Stop);
                }
                let started = Instant::now();
                let outcome = self.s.client.send(&self.s.target, &req.body);
                let took = started.elapsed();
                let status = match &outcome {
                    Outcome::Success { status }
                    | Outcome::Reject { status, .. }
                    | Outcome::Retry { status, .. } => *status,
                };
                log::debug!(
                    "forward {}: {} points, {} values, {} bytes -> {} in {:.1} ms",
                    self.s.target.redacted(),
                    req.points,
                    req.values,
                    req.body.len(),
                    if status == 0 {
                        "network error".to_string()
                    } else {
                        status.to_string()
                    },
                    took.as_secs_f64() * 1e3
                );
                match outcome {
                    Outcome::Success { .. } => {
                        let st = &self.s.stats;
                        st.points_sent.fetch_add(req.points as u64, Relaxed);
                        st.last_success_unix.store(unix_now(), Relaxed);
                        if self.backoff.failures() > 0 {
                            log::info!(
                                "forward {}: delivering again after {} failed attempts",
                                self.s.target.redacted(),
                                self.backoff.failures()
                            );
                        }
                        self.backoff.reset();
                        self.done_points += req.points as u64;
                        break;
                    }
                    Outcome::Reject { status, body } => {
                        let st = &self.s.stats;
                        st.dropped_rejected.fetch_add(req.points as u64, Relaxed);
                        st.set_last_error(Some(format!("{status}: {body}")));
                        if let Some(n) = self.warn_send.check(Instant::now()) {
                            log::warn!(
                                "forward {}: {} points refused with {status} ({}); dropped ({n} similar suppressed)",
                                self.s.target.redacted(),
                                req.points,
                                body.trim()
                            );
                        }
                        self.done_points += req.points as u64;
                        break;
                    }
                    Outcome::Retry {
                        status,
                        error,
                        retry_after,
                    } => {
                        let st = &self.s.stats;
                        st.retries.fetch_add(1, Relaxed);
                        let text = if status == 0 {
                            error
                        } else {
                            format!("{status}: {error}")
                        };
                        let delay = self.backoff.next_delay(retry_after);
                        if let Some(n) = self.warn_send.check(Instant::now()) {
                            log::warn!(
                                "forward {}: {text}; retrying in {:.1} s ({} attempts failed, {n} similar suppressed)",
                                self.s.target.redacted(),
                                delay.as_secs_f64(),
                                self.backoff.failures()
                            );
                        }
                        st.set_last_error(Some(text));
                        self.wait_for_retry(delay)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits `delay` before a retry, looking at the backlog every second.
    fn wait_for_retry(&mut self, delay: Duration) -> Result<(), Interrupted> {
        let until = Instant::now() + delay;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            if self.s.stop.sleep(left.min(Duration::from_secs(1))) {
                return Err(Interrupted::Stop);
            }
            if self.check_backlog(true) {
                return Err(Interrupted::Dropped);
            }
        }
    }

    /// Updates `backlog_bytes` (at most once a second unless `now`) and, past the cap,
    /// drops the oldest unsent points. `true` if the gathered batches were dropped.
    fn check_backlog(&mut self, now: bool) -> bool {
        if !now && self.backlog_checked.elapsed() < Duration::from_secs(1) {
            return false;
        }
        self.backlog_checked = Instant::now();
        let segments = match segment::list(&self.s.wal_dir) {
            Ok(s) => s,
            Err(_) => return false,
        };
        let backlog = self.reader.bytes_behind(&segments) + self.bytes;
        self.s.stats.backlog_bytes.store(backlog, Relaxed);
        if backlog <= self.s.max_backlog {
            return false;
        }
        self.drop_oldest(backlog - self.s.max_backlog);
        true
    }

    /// Drops the gathered batches and then whole records until `excess` bytes are gone;
    /// the cursor moves past them.
    fn drop_oldest(&mut self, excess: u64) {
        let mut dropped = self.points.saturating_sub(self.done_points);
        let mut gone = self.bytes;
        self.clear_gathered();
        let committed = self.s.tail.committed();
        while gone < excess {
            let (lsn, size, points) = match self.reader.next_record(committed) {
                Ok(Some(rec)) => {
                    let points = decode(&mut self.scratch, &rec).map_or(0, |b| b.len() as u64);
                    (rec.lsn, rec.size as u64, points)
                }
                _ => break,
            };
            self.last_lsn = lsn;
            gone += size;
            dropped += points;
        }
        let _ = self.reader.take_skipped();
        self.s.stats.dropped_backlog.fetch_add(dropped, Relaxed);
        if let Some(n) = self.warn_drop.check(Instant::now()) {
            log::warn!(
                "forward {}: more than --forward-max-backlog-bytes ({}) behind; dropped the oldest {dropped} unsent points ({gone} log bytes; {n} similar suppressed)",
                self.s.target.redacted(),
                self.s.max_backlog
            );
        }
        self.advance(self.last_lsn);
    }

    fn clear_gathered(&mut self) {
        self.batches.clear();
        self.values = 0;
        self.points = 0;
        self.done_points = 0;
        self.bytes = 0;
        self.first_at = None;
    }

    /// Everything up to `lsn` is delivered (or dropped): persist it.
    fn advance(&mut self, lsn: Lsn) {
        self.clear_gathered();
        match self.s.cursor.store(lsn) {
            // Only a stored position may let the log be pruned under it.
            Ok(()) => self.s.position.store(lsn, Relaxed),
            Err(e) => {
                if let Some(n) = self.warn_read.check(Instant::now()) {
                    log::error!(
                        "forward {}: cannot store the position in {}: {e}; a restart resends from the last stored one ({n} similar suppressed)",
                        self.s.target.redacted(),
                        self.s.cursor.path().display()
                    );
                }
            }
        }
        if let Ok(segments) = segment::list(&self.s.wal_dir) {
            let behind = self.reader.bytes_behind(&segments);
            self.s.stats.backlog_bytes.store(behind, Relaxed);
        }
    }
}

/// A logged write as its batch (the same decoding as replay).
fn decode(scratch: &mut IngestScratch, rec: &Record<'_>) -> Result<Batch, String> {
    match Kind::from_byte(rec.kind) {
        Some(Kind::Write) => Batch::decode(rec.payload).map_err(|e| e.to_string()),
        Some(Kind::WriteBody) => write::rebuild(scratch, rec.payload),
        Some(Kind::WriteBodyLz4) => write::rebuild_lz4(scratch, rec.payload),
        None => Err(format!("kind {} unknown to this version", rec.kind)),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The directory of the cursors: `DIR/forward`.
pub fn cursor_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("forward")
}

/// `remote_write` or `line_protocol`, as `/stats` names a format.
pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::RemoteWrite => "remote_write",
        Format::LineProtocol => "line_protocol",
    }
}
