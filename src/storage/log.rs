//! The log thread: group commit of appended writes to the active segment.
//!
//! Workers call [`Log::append_source`] (after reserving room in the bounded queue, so a
//! write that will be refused is never logged): the record (the write's source and decoded
//! body, LZ4-compressed) is compressed and checksummed on the worker and parked with its batch in a pending list. The log thread takes *everything* pending at that moment,
//! stamps sequence numbers, writes the group with `writev`, and under
//! [`FsyncMode::Always`] covers it with one `fdatasync`; under [`FsyncMode::Interval`] it
//! syncs once per interval instead. Then, in LSN order, it hands each batch to
//! [`Sink::apply`] (the aggregator queue) and reports the whole group through one
//! [`Sink::complete`] call (the reactor's completion list, one wake per group). While it
//! waits on the disk, new appends pile up and form the next group: that is the group
//! commit, with no timer and no tuning knob.
//!
//! On a write or sync error the group completes with `Err` (the caller answers `503`),
//! none of its batches is applied, the segment is cut back to where the group started (a
//! half-written record must not sit in front of later ones), and the next group is tried
//! afresh: the log recovers by itself when space returns. This thread must never be
//! called from the reactor, and nothing it does may wait on the reactor.

use std::io::{self, IoSlice};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ingest::Batch;
use crate::ingest::lifecycle::DeleteJob;
use crate::log_limit::LogLimiter;

use super::file::{Fs, SegmentFile};
use super::record::{Encoded, Kind, Lsn};
use super::segment;
use super::tail::{Committed, LogTail};
use crate::ingest::write::WriteSource;
use crate::stats::Stats;

/// When the log is `fdatasync`ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// After every group, before any of it is applied or acknowledged.
    Always,
    /// Every `Duration` while there is unsynced data; writes are acknowledged once written.
    Interval(Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub fsync: FsyncMode,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncMode::Always,
            segment_bytes: crate::tuning::LOG_SEGMENT_BYTES,
        }
    }
}

/// The error a failed group completes with (shared by every append of the group).
pub type AppendError = Arc<io::Error>;

/// How one append ended.
#[derive(Debug)]
pub struct Completion<T> {
    pub ticket: T,
    /// Points of the batch (to release a queue reservation on failure).
    pub points: usize,
    /// The record's LSN once durable (or written, under `Interval`), else the error.
    pub result: Result<Lsn, AppendError>,
}

/// Where the log thread delivers results. Called only on the log thread.
pub trait Sink: Send + 'static {
    type Ticket: Send + 'static;
    /// A logged batch, in LSN order, before the group's [`Sink::complete`].
    fn apply(&mut self, lsn: Lsn, batch: Batch);
    /// A logged delete (kind 4), in LSN order with the batches. By default dropped (a sink
    /// that keeps no aggregates).
    fn apply_delete(&mut self, lsn: Lsn, job: DeleteJob) {
        let _ = (lsn, job);
    }
    /// A delete whose group failed to be written: it will not be applied. By default
    /// dropped (which answers its request with a generic reason).
    fn refuse_delete(&mut self, job: DeleteJob, error: &AppendError) {
        let _ = (job, error);
    }
    /// Every append of one group, in LSN order. Drain it; wake the reactor once.
    fn complete(&mut self, group: &mut Vec<Completion<Self::Ticket>>);
}

/// An append refused because the log is closed; the caller gets its batch (or delete)
/// back.
#[derive(Debug)]
pub struct Closed<T> {
    pub ticket: T,
    pub batch: Batch,
    /// Boxed: a selector is large, and this is the rare path.
    pub delete: Option<Box<DeleteJob>>,
}

struct Append<T> {
    ticket: T,
    record: Encoded,
    /// Empty for a delete.
    batch: Batch,
    delete: Option<DeleteJob>,
}

struct Pending<T> {
    appends: Vec<Append<T>>,
    closed: bool,
    log_waiting: bool,
}

struct Shared<T> {
    pending: Mutex<Pending<T>>,
    ready: Condvar,
}

/// Handle to the log thread. Dropping it closes the log: pending appends are written,
/// the log is synced, and the thread is joined.
pub struct Log<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    /// The committed end, for the log's readers.
    tail: Arc<LogTail>,
    /// Taken by the first [`Log::close`]; a mutex so the log can be closed through a
    /// shared reference (the server holds it in its shared context).
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<P>(m: &Mutex<P>) -> MutexGuard<'_, P> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Send + 'static> Log<T> {
    /// Starts the log thread appending to `wal_dir`, first record numbered `next_lsn`.
    pub(crate) fn start<S, F>(
        wal_dir: PathBuf,
        next_lsn: Lsn,
        opts: LogOptions,
        fs: F,
        sink: S,
        stats: Arc<Stats>,
    ) -> io::Result<Log<T>>
    where
        S: Sink<Ticket = T>,
        F: Fs,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                appends: Vec::new(),
                closed: false,
                log_waiting: false,
            }),
            ready: Condvar::new(),
        });
        let mut writer = Writer {
            fs,
            wal_dir,
            seg: None,
            seg_first: next_lsn,
            seg_len: 0,
            cut_back_to: None,
            next_lsn,
            tail: Arc::new(LogTail::default()),
            dirty: false,
            last_sync: Instant::now(),
            opts,
            stats,
            warn: LogLimiter::new(Duration::from_secs(10)),
        };
        // The first segment is created now, not at the first write: a directory the log
        // cannot write in is a start-up error rather than a refused first write, the first
        // write does not pay for a file creation and a directory sync, and the server's
        // descriptors stay the same from start-up on.
        writer.rotate()?;
        let tail = Arc::new(LogTail::new(Committed {
            lsn: next_lsn.saturating_sub(1),
            segment: writer.seg_first,
            end: 0,
        }));
        writer.tail = Arc::clone(&tail);
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || run(&s, writer, sink))?;
        Ok(Log {
            shared,
            tail,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The committed end of the log, for readers that follow it (forwarders).
    pub fn tail(&self) -> &Arc<LogTail> {
        &self.tail
    }

    /// Encodes `batch` on the calling thread and queues it for the next group (a kind-1
    /// record: the batch itself).
    pub fn append(&self, ticket: T, batch: Batch) -> Result<(), Closed<T>> {
        let record = Encoded::write(&batch);
        self.append_encoded(ticket, record, batch)
    }

    /// Queues `batch` as what it was built from (a kind-3 record: `source` and the decoded
    /// body, which is the first `source.body_len` bytes of the batch's arena, as one LZ4
    /// block). The body is compressed and checksummed here, on the calling thread, so the
    /// log thread writes about a third of the bytes. A body that does not shrink is logged
    /// as kind 2 instead ([`Log::append_body`]). Replay decompresses and rebuilds the batch
    /// (`ingest::write::rebuild_lz4`).
    pub fn append_source(
        &self,
        ticket: T,
        batch: Batch,
        source: &WriteSource,
    ) -> Result<(), Closed<T>> {
        let Some(body) = batch.arena.get(..source.body_len) else {
            // Not a batch built from that body: log the batch itself, which is always right.
            return self.append(ticket, batch);
        };
        let record = Encoded::with_lz4_body(
            Kind::WriteBodyLz4,
            source.head_len(),
            |b| source.encode_head(b),
            body,
        );
        if record.len() >= super::record::HEADER + source.head_len() + body.len() {
            return self.append_body(ticket, batch, source);
        }
        self.append_encoded(ticket, record, batch)
    }

    /// Queues `batch` as what it was built from, uncompressed (a kind-2 record: `source`
    /// and the decoded body). The body is checksummed here, on the calling thread, and
    /// written by the log thread straight from the batch, never copied. Replay rebuilds the
    /// batch from it (`ingest::write::rebuild`).
    pub fn append_body(
        &self,
        ticket: T,
        batch: Batch,
        source: &WriteSource,
    ) -> Result<(), Closed<T>> {
        let record = match batch.arena.get(..source.body_len) {
            Some(body) => Encoded::with_tail(
                Kind::WriteBody,
                source.head_len(),
                |b| source.encode_head(b),
                body,
            ),
            // Not a batch built from that body: log the batch itself, which is always right.
            None => Encoded::write(&batch),
        };
        self.append_encoded(ticket, record, batch)
    }

    /// Queues an already encoded record (its payload must rebuild `batch`; a tail is
    /// written from the start of `batch.arena`).
    pub fn append_encoded(
        &self,
        ticket: T,
        record: Encoded,
        batch: Batch,
    ) -> Result<(), Closed<T>> {
        self.push(Append {
            ticket,
            record,
            batch,
            delete: None,
        })
    }

    /// Queues a `DELETE /series` as a kind-4 record (the encoded selector), numbered after
    /// every append queued before it; once written it goes to [`Sink::apply_delete`] in
    /// LSN order with the batches around it.
    pub fn append_delete(&self, ticket: T, job: DeleteJob) -> Result<(), Closed<T>> {
        let record = Encoded::new(Kind::Delete, &job.selector.encode());
        self.push(Append {
            ticket,
            record,
            batch: Batch::default(),
            delete: Some(job),
        })
    }

    fn push(&self, append: Append<T>) -> Result<(), Closed<T>> {
        let wake = {
            let mut p = lock(&self.shared.pending);
            if p.closed {
                return Err(Closed {
                    ticket: append.ticket,
                    batch: append.batch,
                    delete: append.delete.map(Box::new),
                });
            }
            p.appends.push(append);
            std::mem::take(&mut p.log_waiting)
        };
        // Only a sleeping log thread needs the futex wake; a busy one picks this up next.
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Stops taking appends, writes and syncs what is pending, and joins the thread.
    /// Idempotent.
    pub fn close(&self) {
        lock(&self.shared.pending).closed = true;
        self.shared.ready.notify_one();
        let thread = lock(&self.thread).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            log::error!("the log thread panicked");
        }
        self.tail.close();
    }
}

impl<T: Send + 'static> Drop for Log<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The log thread's own state: the active segment and the sequence numbers.
struct Writer<F: Fs> {
    fs: F,
    wal_dir: PathBuf,
    seg: Option<Box<dyn SegmentFile>>,
    /// First LSN (the name) of the active segment.
    seg_first: Lsn,
    seg_len: u64,
    /// A failed group whose bytes could not be cut off yet: retried before the next write.
    cut_back_to: Option<u64>,
    next_lsn: Lsn,
    dirty: bool,
    last_sync: Instant,
    opts: LogOptions,
    stats: Arc<Stats>,
    warn: LogLimiter,
    tail: Arc<LogTail>,
}

fn run<T, S, F>(shared: &Shared<T>, mut w: Writer<F>, mut sink: S)
where
    T: Send + 'static,
    S: Sink<Ticket = T>,
    F: Fs,
{
    let mut group: Vec<Append<T>> = Vec::new();
    let mut done: Vec<Completion<T>> = Vec::new();
    loop {
        let closed = {
            let mut p = lock(&shared.pending);
            while p.appends.is_empty() && !p.closed {
                p.log_waiting = true;
                match (w.opts.fsync, w.dirty) {
                    (FsyncMode::Interval(every), true) => {
                        let due = (w.last_sync + every).saturating_duration_since(Instant::now());
                        if due.is_zero() {
                            break;
                        }
                        p = shared
                            .ready
                            .wait_timeout(p, due)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    _ => p = shared.ready.wait(p).unwrap_or_else(|e| e.into_inner()),
                }
            }
            p.log_waiting = false;
            std::mem::swap(&mut p.appends, &mut group);
            p.closed
        };
        if !group.is_empty() {
            commit(&mut w, &mut group, &mut done, &mut sink);
        }
        if let FsyncMode::Interval(every) = w.opts.fsync
            && w.dirty
            && (closed || w.last_sync.elapsed() >= every)
        {
            w.sync_logged();
        }
        if closed && group.is_empty() && lock(&shared.pending).appends.is_empty() {
            return;
        }
    }
}

/// Writes one group and delivers its results.
fn commit<T, S, F>(
    w: &mut Writer<F>,
    group: &mut Vec<Append<T>>,
    done: &mut Vec<Completion<T>>,
    sink: &mut S,
) where
    S: Sink<Ticket = T>,
    F: Fs,
{
    let first = w.next_lsn;
    match w.write_group(group) {
        Ok(()) => {
            for (i, a) in group.drain(..).enumerate() {
                let lsn = first + i as u64;
                let points = a.batch.len();
                match a.delete {
                    Some(job) => sink.apply_delete(lsn, job),
                    None => sink.apply(lsn, a.batch),
                }
                done.push(Completion {
                    ticket: a.ticket,
                    points,
                    result: Ok(lsn),
                });
            }
        }
        Err(e) => {
            if let Some(suppressed) = w.warn.check(Instant::now()) {
                log::warn!(
                    "write log in {} cannot take writes ({e}): refusing them with 503 ({suppressed} similar warnings suppressed)",
                    w.wal_dir.display()
                );
            }
            let e = Arc::new(e);
            for a in group.drain(..) {
                if let Some(job) = a.delete {
                    sink.refuse_delete(job, &e);
                }
                done.push(Completion {
                    ticket: a.ticket,
                    points: a.batch.len(),
                    result: Err(Arc::clone(&e)),
                });
            }
        }
    }
    sink.complete(done);
    done.clear();
}

impl<F: Fs> Writer<F> {
    fn write_group<T>(&mut self, group: &mut [Append<T>]) -> io::Result<()> {
        if let (Some(len), Some(seg)) = (self.cut_back_to, self.seg.as_mut()) {
            seg.truncate(len)?;
            self.seg_len = len;
            self.cut_back_to = None;
        }
        if self.seg.is_none() || self.seg_len >= self.opts.segment_bytes {
            self.rotate()?;
        }
        let start = self.seg_len;
        let mut total = 0u64;
        for (i, a) in group.iter_mut().enumerate() {
            a.record.seal(self.next_lsn + i as u64);
            total += a.record.len() as u64;
        }
        // Each record from its own buffers (a tail from its batch's arena): the log thread
        // copies nothing before the kernel does.
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(group.len() * 2);
        for a in group.iter() {
            slices.push(IoSlice::new(a.record.bytes()));
            let tail = a.record.tail_len();
            if tail > 0 {
                let Some(body) = a.batch.arena.get(..tail) else {
                    return Err(io::Error::other("a log record's tail is not in its batch"));
                };
                slices.push(IoSlice::new(body));
            }
        }
        let Some(seg) = self.seg.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        let mut written = seg.write_all_vectored(&mut slices);
        if written.is_ok() && self.opts.fsync == FsyncMode::Always {
            written = seg.sync_data();
            self.stats.storage.log_fsyncs.fetch_add(1, Relaxed);
            self.last_sync = Instant::now();
        }
        if let Err(e) = written {
            // Cut the group off so no half record sits before the next group's records.
            // If even that fails, it is retried before the next write; until it works no
            // record is written after the damage.
            if seg.truncate(start).is_err() {
                self.cut_back_to = Some(start);
            }
            return Err(e);
        }
        self.seg_len += total;
        self.next_lsn += group.len() as u64;
        self.dirty = self.opts.fsync != FsyncMode::Always;
        self.stats.storage.log_bytes.fetch_add(total, Relaxed);
        // In the log for good (synced when the mode says so): readers may have it.
        self.tail.publish(Committed {
            lsn: self.next_lsn - 1,
            segment: self.seg_first,
            end: self.seg_len,
        });
        Ok(())
    }

    /// Starts a new segment named after the next LSN. The previous one is synced first,
    /// so a later segment never survives a power loss that an earlier one's tail did not.
    fn rotate(&mut self) -> io::Result<()> {
        if self.dirty {
            self.sync_logged();
        }
        let path = self.wal_dir.join(segment::name(self.next_lsn));
        let seg = self.fs.create(&path)?;
        self.fs.sync_dir(&self.wal_dir)?;
        self.seg = Some(seg);
        self.seg_first = self.next_lsn;
        self.seg_len = 0;
        self.cut_back_to = None;
        self.stats.storage.log_segments.store(
            segment::list(&self.wal_dir).map_or(0, |l| l.len() as u64),
            Relaxed,
        );
        Ok(())
    }

    /// The interval sync. An error is logged (acknowledged writes may be at risk) and the
    /// sync retried at the next tick.
    fn sync_logged(&mut self) {
        let Some(seg) = self.seg.as_mut() else {
            return;
        };
        self.stats.storage.log_fsyncs.fetch_add(1, Relaxed);
        self.last_sync = Instant::now();
        match seg.sync_data() {
            Ok(()) => self.dirty = false,
            Err(e) => {
                if let Some(suppressed) = self.warn.check(Instant::now()) {
                    log::error!(
                        "fdatasync of the write log in {} failed ({e}): writes acknowledged in the last interval may not survive a power loss ({suppressed} similar suppressed)",
                        self.wal_dir.display()
                    );
                }
            }
        }
    }
}
