//! One forward target's reader thread: follows the write log from its persisted cursor,
//! gathers logged writes, encodes them into rounds of requests (one list per sender lane,
//! `sender.rs`), and moves the cursor once every lane has finished a round (SPEC
//! "Forwarding": after each `2xx`).
//!
//! ```text
//!  LogTail (committed end) ──▶ LogReader::next_record ──▶ rebuild the Batch (same parser as
//!  replay) ──▶ up to FORWARD_ROUND_VALUES values, or 1 s ──▶ Encoder (series by lane,
//!  grouped by series, requests of at most FORWARD_MAX_VALUES) ──▶ Lanes::submit (waits for
//!  room) ──▶ lanes send, retry, report done
//!  every lane done with a round ──▶ Cursor::store(its last LSN) ──▶ position (for pruning)
//!  behind by more than --forward-max-backlog-bytes: the oldest unsent points are dropped
//!  (queued rounds, gathered batches, then log records; counted `backlog`) and the cursor
//!  jumps past them
//! ```
//!
//! It reads only committed records, from the files (never a request buffer), holds a
//! bounded number of rounds in memory whatever the target does, and never blocks anything
//! but itself: the log thread does not wait for it, ingestion does not know it exists.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use std::collections::VecDeque;
use std::thread::JoinHandle;

use super::client::Client;
use super::cursor::Cursor;
use super::sender::{Lanes, run_lane};
use super::target::Target;
use super::{Encoder, Format};
use crate::ingest::Batch;
use crate::ingest::write::{self, IngestScratch};
use crate::log_limit::LogLimiter;
use crate::stats::ForwardStats;
use crate::storage::record::{Kind, Record};
use crate::storage::segment;
use crate::storage::{LogReader, LogTail, Lsn};
use crate::tuning::{FORWARD_MAX_VALUES, FORWARD_MAX_WAIT, FORWARD_ROUND_VALUES};

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

    pub(crate) fn requested(&self) -> bool {
        self.requested.load(Relaxed)
    }

    pub(crate) fn deadline_passed(&self) -> bool {
        self.requested()
            && self
                .deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|d| Instant::now() >= d)
    }

    /// Sleeps `d` unless a stop is requested first; `true` if it was.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.requested() {
            let _ = self.wake.wait_timeout(g, d);
        }
        self.requested()
    }
}

/// What a forwarder needs from the server.
pub struct Setup {
    /// The thread name (`forward-<n>`); lanes are named `<name>-<lane>`.
    pub name: String,
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
    pub lanes: usize,
    pub stop: Arc<Stop>,
}

/// A round handed to the lanes and not finished by all of them.
struct InFlight {
    round: u64,
    /// The last LSN it covers.
    lsn: Lsn,
    /// Log bytes it came from (for the backlog).
    bytes: u64,
}

/// One log record gathered and not yet submitted.
struct Gathered {
    /// Its write (empty if the record could not be decoded).
    batch: Batch,
    /// Bytes it takes in the log.
    bytes: u64,
    lsn: Lsn,
}

pub struct Forwarder {
    s: Setup,
    reader: LogReader,
    scratch: IngestScratch,
    encoder: Encoder,
    lanes: Arc<Lanes>,
    /// Gathered and not yet submitted, in log order; the sums below are over it.
    gathered: Vec<Gathered>,
    values: usize,
    points: u64,
    bytes: u64,
    first_at: Option<Instant>,
    next_round: u64,
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: u64,
    backlog_checked: Instant,
    warn_read: LogLimiter,
    warn_drop: LogLimiter,
}

impl Forwarder {
    pub fn new(s: Setup) -> Forwarder {
        let reader = LogReader::new(&s.wal_dir, s.start + 1);
        let every = Duration::from_secs(10);
        let lanes = Arc::new(Lanes::new(
            s.lanes,
            s.target.clone(),
            s.client.clone(),
            Arc::clone(&s.stats),
            Arc::clone(&s.stop),
        ));
        Forwarder {
            reader,
            scratch: IngestScratch::default(),
            encoder: Encoder::new(s.target.format()),
            lanes,
            gathered: Vec::new(),
            values: 0,
            points: 0,
            bytes: 0,
            first_at: None,
            next_round: 1,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            backlog_checked: Instant::now(),
            warn_read: LogLimiter::new(every),
            warn_drop: LogLimiter::new(every),
            s,
        }
    }

    /// Runs until shutdown: starts the lanes, feeds them, and stops them.
    pub fn run(mut self) {
        let seed = u64::from(std::process::id())
            ^ self
                .s
                .target
                .redacted()
                .bytes()
                .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for i in 0..self.lanes.count() {
            let lanes = Arc::clone(&self.lanes);
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", self.s.name))
                .spawn(move || run_lane(&lanes, i, seed.wrapping_add(i as u64)));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    log::error!(
                        "forward {}: cannot start a sender thread ({e}); not forwarding",
                        self.s.target.redacted()
                    );
                    self.lanes.finish();
                    return;
                }
            }
        }
        while self.gather() {
            if !self.gathered.is_empty() {
                self.submit();
            }
            self.advance_completed();
        }
        // Shutdown: what is in flight may still land before the deadline.
        while !self.in_flight.is_empty() && !self.s.stop.deadline_passed() {
            self.lanes
                .wait_progress(self.lanes.completed(), Duration::from_millis(50));
            self.advance_completed();
        }
        self.lanes.finish();
        for t in threads {
            if t.join().is_err() {
                log::error!(
                    "forward {}: a sender thread panicked",
                    self.s.target.redacted()
                );
            }
        }
        self.advance_completed();
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

    /// A round is full at [`FORWARD_ROUND_VALUES`] values, or at half the backlog cap in
    /// log bytes: a round must fit under the cap, or a small cap would drop whole rounds,
    /// newest points included, even with the target keeping up.
    fn round_full(&self) -> bool {
        self.values >= FORWARD_ROUND_VALUES || self.bytes >= (self.s.max_backlog / 2).max(1)
    }

    /// Reads committed records until a round is full, a second has passed since the first
    /// of it, or the reader has caught up while no round is in flight (a round is only
    /// held back to fill while the lanes are busy). `false` to stop (shutdown, nothing more
    /// to send).
    fn gather(&mut self) -> bool {
        loop {
            if self.s.stop.deadline_passed() {
                return false;
            }
            self.advance_completed();
            let committed = self.s.tail.committed();
            let before = self.reader.next_lsn();
            self.read_upto(committed);
            self.check_backlog(false);
            if self.round_full() {
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
                return !self.gathered.is_empty();
            }
            if !caught_up && self.reader.next_lsn() > before {
                continue; // more is committed than one pass read
            }
            if caught_up && !self.gathered.is_empty() && self.in_flight.is_empty() {
                // Nothing more to read and every lane idle: waiting for a fuller round
                // would only delay these points (the last of a burst, or a trickle).
                return true;
            }
            // Wake at least every 100 ms while rounds are in flight, to move the cursor.
            let mut wait = match waited {
                Some(w) => FORWARD_MAX_WAIT.saturating_sub(w),
                None => Duration::from_secs(1),
            };
            if !self.in_flight.is_empty() {
                wait = wait.min(Duration::from_millis(100));
            }
            if closed {
                self.s.stop.sleep(wait);
            } else {
                self.s.tail.wait_past(committed.lsn, wait);
            }
        }
    }

    /// Reads records up to `committed` into the gathered batches, up to a full round.
    fn read_upto(&mut self, committed: crate::storage::Committed) {
        while !self.round_full() {
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
            let (lsn, bytes) = (rec.lsn, rec.size as u64);
            let batch = match decode(&mut self.scratch, &rec) {
                Ok(batch) => batch,
                Err(why) => {
                    if let Some(n) = self.warn_read.check(Instant::now()) {
                        log::error!(
                            "forward {}: log record {lsn} cannot be decoded ({why}); not sent ({n} similar suppressed)",
                            self.s.target.redacted()
                        );
                    }
                    Batch::default()
                }
            };
            self.values += batch.fields.len();
            self.points += batch.len() as u64;
            self.bytes += bytes;
            self.gathered.push(Gathered { batch, bytes, lsn });
            self.first_at.get_or_insert_with(Instant::now);
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

    /// Encodes the gathered batches and hands them to the lanes, once they have room.
    fn submit(&mut self) {
        let refs: Vec<&Batch> = self
            .gathered
            .iter()
            .filter(|g| !g.batch.is_empty())
            .map(|g| &g.batch)
            .collect();
        let sharded = self
            .encoder
            .encode(&refs, FORWARD_MAX_VALUES, self.lanes.count());
        drop(refs);
        self.s
            .stats
            .dropped_unsupported
            .fetch_add(sharded.unsupported, Relaxed);
        while !self.lanes.has_room() {
            if self.s.stop.deadline_passed() {
                return;
            }
            self.lanes
                .wait_progress(self.lanes.completed(), Duration::from_secs(1));
            self.advance_completed();
            if self.check_backlog(false) {
                return; // the gathered batches were dropped with the oldest
            }
        }
        let Some(lsn) = self.gathered.last().map(|g| g.lsn) else {
            return;
        };
        let round = self.next_round;
        self.next_round += 1;
        self.lanes.submit(round, sharded.requests);
        self.in_flight.push_back(InFlight {
            round,
            lsn,
            bytes: self.bytes,
        });
        self.in_flight_bytes += self.bytes;
        self.clear_gathered();
    }

    /// Stores the cursor at the last round every lane has finished.
    fn advance_completed(&mut self) {
        let done = self.lanes.completed();
        let mut lsn = None;
        while let Some(f) = self.in_flight.front()
            && f.round <= done
        {
            lsn = Some(f.lsn);
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(f.bytes);
            self.in_flight.pop_front();
        }
        if let Some(lsn) = lsn {
            self.store(lsn);
        }
    }

    /// Updates `backlog_bytes` (at most once a second unless `now`) and, past the cap,
    /// drops the oldest unsent points. `true` if it dropped.
    fn check_backlog(&mut self, now: bool) -> bool {
        if !now && self.backlog_checked.elapsed() < Duration::from_secs(1) {
            return false;
        }
        self.backlog_checked = Instant::now();
        let Ok(segments) = segment::list(&self.s.wal_dir) else {
            return false;
        };
        let backlog = self.reader.bytes_behind(&segments) + self.bytes + self.in_flight_bytes;
        self.s.stats.backlog_bytes.store(backlog, Relaxed);
        if backlog <= self.s.max_backlog {
            return false;
        }
        self.drop_oldest(backlog - self.s.max_backlog);
        true
    }

    /// Drops the oldest unsent points until `excess` log bytes are gone: rounds in flight
    /// from the oldest (the lanes drop them and count their points), then gathered records
    /// from the oldest, then records not read yet. The cursor moves past what was dropped
    /// once the rounds before it are through.
    fn drop_oldest(&mut self, excess: u64) {
        let mut gone = 0u64;
        let mut dropped = 0u64;
        let mut through = None;
        for f in &mut self.in_flight {
            if gone >= excess {
                break;
            }
            if f.bytes > 0 {
                gone += f.bytes;
                f.bytes = 0;
                through = Some(f.round);
            }
        }
        if let Some(round) = through {
            self.lanes.drop_through(round);
            self.in_flight_bytes = self.in_flight.iter().map(|f| f.bytes).sum();
        }
        let mut cut = 0;
        let mut last = None;
        while gone < excess && cut < self.gathered.len() {
            let g = &self.gathered[cut];
            gone += g.bytes;
            dropped += g.batch.len() as u64;
            last = Some(g.lsn);
            cut += 1;
        }
        self.gathered.drain(..cut);
        self.values = self.gathered.iter().map(|g| g.batch.fields.len()).sum();
        self.points = self.gathered.iter().map(|g| g.batch.len() as u64).sum();
        self.bytes = self.gathered.iter().map(|g| g.bytes).sum();
        if self.gathered.is_empty() {
            self.first_at = None;
            let committed = self.s.tail.committed();
            while gone < excess {
                let (lsn, size, points) = match self.reader.next_record(committed) {
                    Ok(Some(rec)) => {
                        let points = decode(&mut self.scratch, &rec).map_or(0, |b| b.len() as u64);
                        (rec.lsn, rec.size as u64, points)
                    }
                    _ => break,
                };
                last = Some(lsn);
                gone += size;
                dropped += points;
            }
            let _ = self.reader.take_skipped();
        }
        self.s.stats.dropped_backlog.fetch_add(dropped, Relaxed);
        if let Some(n) = self.warn_drop.check(Instant::now()) {
            log::warn!(
                "forward {}: more than --forward-max-backlog-bytes ({}) behind; dropping the oldest unsent points ({gone} log bytes; {n} similar suppressed)",
                self.s.target.redacted(),
                self.s.max_backlog
            );
        }
        if let Some(lsn) = last {
            // Stored once every round before it is through the lanes (at once if none).
            self.in_flight.push_back(InFlight {
                round: self.next_round - 1,
                lsn,
                bytes: 0,
            });
            self.advance_completed();
        }
        if let Ok(segments) = segment::list(&self.s.wal_dir) {
            let backlog = self.reader.bytes_behind(&segments) + self.bytes + self.in_flight_bytes;
            self.s.stats.backlog_bytes.store(backlog, Relaxed);
        }
    }

    fn clear_gathered(&mut self) {
        self.gathered.clear();
        self.values = 0;
        self.points = 0;
        self.bytes = 0;
        self.first_at = None;
    }

    /// Everything up to `lsn` is delivered (or dropped): persist it.
    fn store(&mut self, lsn: Lsn) {
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
    }
}

/// A logged write as its batch (the same decoding as replay).
fn decode(scratch: &mut IngestScratch, rec: &Record<'_>) -> Result<Batch, String> {
    match Kind::from_byte(rec.kind) {
        Some(Kind::Write) => Batch::decode(rec.payload).map_err(|e| e.to_string()),
        Some(Kind::WriteBody) => write::rebuild(scratch, rec.payload),
        Some(Kind::WriteBodyLz4) => write::rebuild_lz4(scratch, rec.payload),
        // A `DELETE /series` concerns this server's aggregates only: nothing to send.
        // A DELETE /series is not forwarded: neither format can carry one, and the store
        // keeps its own history (docs/forwarding.md).
        Some(Kind::Delete) => Ok(Batch::default()),
        None => Err(format!("kind {} unknown to this version", rec.kind)),
    }
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
