//! The ingestion pipeline: validated writes -> bounded queue -> aggregator thread -> series.
//!
//! Workers turn request bodies into [`Batch`]es (`write.rs`, after `line_protocol` parsed them) and offer them to the
//! [`Queue`], which takes a whole write or none of it. One aggregator thread applies queued
//! batches to the [`SeriesStore`] (`aggregator.rs`) under a mutex that `/metrics` and
//! `/series` take to read. On shutdown the queue is closed and drained completely before
//! the thread exits: every point acknowledged with `204` ends up in the aggregates.
//!
//! Readers (`/metrics`, `/series`) take that mutex once per step of a [`SteppedRead`] (a
//! slice of [`crate::tuning::READ_SLICE_GROUPS`] series groups) and copy out what they render, so the
//! aggregator never waits for a whole render. What a reader sees: every group that exists
//! for the whole read, exactly once; a group created or removed during the read, once or
//! not at all. Each group's fields are seen together, as of one moment, but two groups may
//! be seen at different moments (a batch applied mid-read shows in later slices only).
//! A `/metrics` or `/series` answer runs its read a few steps per job across several
//! worker jobs ([`SteppedReader`]),
//! registered with the store from its first step until it is done or dropped; a reader
//! dropped where the lock must not be waited for (the reactor, when a client went away)
//! leaves its end to the aggregator's next turn.
//!
//! With the write log (the default), a worker only [`Pipeline::reserve`]s queue room; the
//! log thread queues the batch once it is durable ([`Pipeline::push_logged`]), with its
//! LSN, and the aggregator records the LSN of the last batch it applied together with the
//! store (under the same lock), so a snapshot knows exactly which records it covers.
//!
//! The aggregator thread also owns the series lifecycle (`lifecycle.rs`): it applies a
//! `DELETE /series` in queue order (behind every write acknowledged before it) and hands
//! the count to the delete's reply (which carries it to the reactor or a waiting thread;
//! the aggregator never waits for it), and between batches it runs the `--series-ttl`
//! sweep, a bounded slice of the store per tick. If it panics, the queue is abandoned:
//! every delete queued or still coming is answered `503` rather than left waiting.

pub mod aggregator;
pub mod batch;
pub mod lifecycle;
pub mod line_protocol;
pub mod queue;
mod slots;
pub mod write;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use aggregator::GroupView;
pub use aggregator::SeriesStore;
pub use batch::Batch;
pub use queue::{Item, Queue, Queued, Refused};

use lifecycle::{DeleteJob, DeleteReply, ExpirySchedule};

use crate::log_limit::SharedLogLimiter;
use crate::stats::{QueueGauges, Stats, bump};
use crate::tuning::{APPLY_CHUNK, READ_YIELD_MAX};

/// A reader of the store a slice of groups at a time (`SeriesStore::read_slice`): it
/// copies what it needs out of each group, since the lock is released between slices.
pub trait GroupSink {
    /// One series group, seen with the store locked.
    fn group(&mut self, view: GroupView<'_>);
}

/// A reader of the store in steps ([`SteppedReader::advance`]), each taken with the store
/// locked, with the lock released (and the aggregator let in) between them.
pub trait SteppedRead {
    /// One step; returns `true` when the read is complete.
    fn step(&mut self, store: &SeriesStore) -> bool;
    /// Between two steps, without the lock (e.g. to hand output on).
    fn unlocked(&mut self) {}
}

pub struct Pipeline {
    queue: Queue,
    store: Mutex<SeriesStore>,
    /// LSN of the last logged batch applied to `store`; written with the store locked.
    applied_lsn: AtomicU64,
    /// The aggregator is waiting for the store lock: a sliced read lets it in first.
    apply_waiting: AtomicBool,
    /// Registered reads dropped while the store was locked by someone else: their
    /// [`SeriesStore::end_read`] is left to the aggregator's next turn.
    reads_ended_late: AtomicU32,
    stats: Arc<Stats>,
    aggregator: Mutex<Option<JoinHandle<()>>>,
    warn_full: SharedLogLimiter,
    /// `--series-ttl` (zero: off).
    series_ttl: Duration,
    #[cfg(debug_assertions)]
    debug_hold: DebugHold,
}

/// What the final drain did, for the shutdown summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct DrainSummary {
    pub points_aggregated: u64,
    pub series: u64,
}

impl Pipeline {
    /// Creates the pipeline and starts its aggregator thread.
    pub fn start(
        capacity: usize,
        max_series: usize,
        series_ttl: Duration,
        stats: Arc<Stats>,
    ) -> std::io::Result<Arc<Pipeline>> {
        Pipeline::start_from(SeriesStore::new(max_series), 0, capacity, series_ttl, stats)
    }

    /// Starts from aggregates recovered at start-up, which include the log up to
    /// `applied_lsn`.
    pub fn start_from(
        store: SeriesStore,
        applied_lsn: u64,
        capacity: usize,
        series_ttl: Duration,
        stats: Arc<Stats>,
    ) -> std::io::Result<Arc<Pipeline>> {
        let pl = &stats.pipeline;
        pl.series.store(store.series_count() as u64, Relaxed);
        pl.label_collisions.store(store.label_collisions(), Relaxed);
        let pipeline = Arc::new(Pipeline {
            queue: Queue::new(capacity),
            store: Mutex::new(store),
            applied_lsn: AtomicU64::new(applied_lsn),
            apply_waiting: AtomicBool::new(false),
            reads_ended_late: AtomicU32::new(0),
            stats,
            aggregator: Mutex::new(None),
            warn_full: SharedLogLimiter::new(std::time::Duration::from_secs(10)),
            series_ttl,
            #[cfg(debug_assertions)]
            debug_hold: DebugHold::default(),
        });
        let p = Arc::clone(&pipeline);
        let handle = std::thread::Builder::new()
            .name("aggregator".into())
            .spawn(move || p.aggregate_until_closed())?;
        *lock(&pipeline.aggregator) = Some(handle);
        Ok(pipeline)
    }

    /// Offers a write's points; all of them are queued or none.
    pub fn offer(&self, batch: Batch) -> Result<(), Refused> {
        let n = batch.len() as u64;
        match self.queue.try_push(batch) {
            Ok(()) => {
                bump(&self.stats.pipeline.points_queued, n);
                Ok(())
            }
            Err((why, _batch)) => Err(self.refused(why)),
        }
    }

    /// Reserves queue room for a write of `points` points before it is logged: all of it
    /// or none (then the write is answered `503` and never logged).
    pub fn reserve(&self, points: usize) -> Result<(), Refused> {
        self.queue.reserve(points).map_err(|why| self.refused(why))
    }

    /// A logged batch, in LSN order, into the room [`Pipeline::reserve`] took for it.
    pub fn push_logged(&self, batch: Batch, lsn: u64) {
        bump(&self.stats.pipeline.points_queued, batch.len() as u64);
        self.queue.push_reserved(batch, lsn);
    }

    /// A logged delete, in LSN order (from the log thread, like [`Pipeline::push_logged`]).
    pub fn push_logged_delete(&self, job: DeleteJob, lsn: u64) {
        self.queue.push_logged_delete(job, lsn);
    }

    /// `DELETE /series` without the log (`--memory-only`): queued behind every write
    /// acknowledged so far and applied by the aggregator, which answers `job`'s reply with
    /// the number of series removed. Returns at once; once the pipeline is shutting down
    /// the reply is answered with why not.
    pub fn delete(&self, job: DeleteJob) {
        if let Err((_, job)) = self.queue.try_push_delete(job) {
            job.fail("the server is shutting down; retry later".into());
        }
    }

    /// Debug builds only: the aggregator stops before its next batch for `hold` (zero:
    /// goes on at once), so a test can keep writes unapplied and deletes unanswered.
    #[cfg(debug_assertions)]
    pub fn debug_hold_aggregator(&self, hold: Duration) {
        self.debug_hold.set(hold);
    }

    /// Gives back the room of a reserved write whose append failed.
    pub fn unreserve(&self, points: usize) {
        self.queue.unreserve(points);
    }

    /// Counts and (rate-limited) reports a refusal.
    fn refused(&self, why: Refused) -> Refused {
        if why == Refused::Full {
            bump(&self.stats.pipeline.writes_refused_queue_full, 1);
            if let Some(suppressed) = self.warn_full.check(std::time::Instant::now()) {
                log::warn!(
                    "ingestion queue full ({} of {} points): refusing writes with 503 ({} similar warnings suppressed)",
                    self.queue.depth(),
                    self.queue.capacity(),
                    suppressed
                );
            }
        }
        why
    }

    /// Runs `f` on the aggregates and the LSN of the last log record they include, with
    /// the store locked (for a snapshot: both describe the same moment).
    pub fn with_applied<R>(&self, f: impl FnOnce(&SeriesStore, u64) -> R) -> R {
        let store = lock(&self.store);
        f(&store, self.applied_lsn.load(Relaxed))
    }

    /// The whole store locked (tests, and readers that need one instant).
    pub fn store(&self) -> MutexGuard<'_, SeriesStore> {
        lock(&self.store)
    }

    /// Ends the registrations of reads dropped while the store was locked elsewhere.
    fn end_late_reads(&self, store: &mut SeriesStore) {
        let n = self.reads_ended_late.swap(0, Relaxed);
        for _ in 0..n {
            store.end_read();
        }
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Closes the queue, lets the aggregator apply everything already admitted, and waits
    /// for it. Idempotent.
    pub fn drain_and_stop(&self) -> DrainSummary {
        self.queue.close();
        let handle = lock(&self.aggregator).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                log::error!("the aggregator thread panicked");
            }
        }
        DrainSummary {
            points_aggregated: self.stats.pipeline.points_aggregated.load(Relaxed),
            series: self.stats.pipeline.series.load(Relaxed),
        }
    }

    fn aggregate_until_closed(&self) {
        // A panic below drops the batches in hand (answering their deletes) and this guard
        // abandons the queue, so no delete waits for an aggregator that is gone.
        let _abandon = AbandonOnPanic(&self.queue);
        let mut batches: Vec<Queued> = Vec::with_capacity(APPLY_CHUNK);
        let mut expiry = ExpirySchedule::new(self.series_ttl, Instant::now());
        while self.queue.pop_into_until(
            &mut batches,
            APPLY_CHUNK,
            expiry.as_ref().map(|e| e.next_tick),
        ) {
            if let Some(e) = &mut expiry
                && e.due(Instant::now())
            {
                self.expire_step(e);
            }
            if batches.is_empty() {
                continue;
            }
            #[cfg(debug_assertions)]
            self.debug_hold.wait();
            let mut applied = 0usize;
            let mut dropped = 0u64;
            let mut deleted = 0u64;
            // Answered once the counters say so too (no allocation without a delete).
            let mut replies: Vec<(DeleteReply, u64)> = Vec::new();
            let (series, collisions) = {
                self.apply_waiting.store(true, Relaxed);
                let mut store = lock(&self.store);
                self.apply_waiting.store(false, Relaxed);
                // Before anything leaves the store: what it kept for gone readers may go.
                self.end_late_reads(&mut store);
                let mut last_lsn = 0;
                for (item, lsn) in &mut batches {
                    match item {
                        Item::Write(b) => {
                            let outcome = store.apply(b);
                            applied += b.len();
                            dropped += outcome.points_dropped_series_limit;
                        }
                        Item::Delete(job) => {
                            let n = store.delete(&job.selector);
                            deleted += n;
                            if let Some(reply) = job.reply.take() {
                                replies.push((reply, n));
                            }
                        }
                    }
                    last_lsn = last_lsn.max(*lsn);
                }
                if last_lsn > 0 {
                    // Under the store lock: a snapshot sees the store and its LSN together.
                    self.applied_lsn.store(last_lsn, Relaxed);
                }
                (store.series_count() as u64, store.label_collisions())
            };
            let pl = &self.stats.pipeline;
            pl.series.store(series, Relaxed);
            pl.label_collisions.store(collisions, Relaxed);
            bump(&pl.points_dropped_series_limit, dropped);
            bump(&pl.series_deleted, deleted);
            // Counted before the queue room is released, so a reader that sees the room
            // free also sees the points counted.
            bump(&pl.points_aggregated, applied as u64);
            self.queue.release(applied);
            for (reply, n) in replies {
                reply.complete(n);
            }
            // Batches own their arenas; dropping them here frees the memory on this thread.
            batches.clear();
        }
    }

    /// One tick of the `--series-ttl` sweep: a slice of the store, under its lock.
    fn expire_step(&self, e: &mut ExpirySchedule) {
        let now_s = lifecycle::unix_s(SystemTime::now());
        let (expired, series) = {
            let mut store = lock(&self.store);
            self.end_late_reads(&mut store);
            let visit = e.slice(store.slots());
            let n = store.expire_step(now_s, e.ttl_s, &mut e.cursor, visit);
            (n, store.series_count() as u64)
        };
        if expired > 0 {
            let pl = &self.stats.pipeline;
            pl.series.store(series, Relaxed);
            bump(&pl.series_expired, expired);
        }
    }
}

/// A [`SteppedRead`] run a few steps at a time, across as many calls as it takes (a
/// streamed `/metrics` answer or a `/series` read: one call per part, each on whichever worker has the job),
/// registered with the store ([`SeriesStore::begin_read`]) from its creation until
/// [`SteppedReader::finish`] or its drop. It holds the pipeline by `Arc`: the read
/// outlives the job of the request that started it.
pub struct SteppedReader {
    pipeline: Arc<Pipeline>,
    registered: bool,
    done: bool,
}

impl SteppedReader {
    /// Registers a read with the store.
    pub fn new(pipeline: Arc<Pipeline>) -> SteppedReader {
        lock(&pipeline.store).begin_read();
        SteppedReader {
            pipeline,
            registered: true,
            done: false,
        }
    }

    /// Runs steps of `read`, each with the store locked, until it is complete (`true`) or
    /// `until(read)` holds after a step (`false`: call again for more). Between two steps
    /// the lock is released, `read.unlocked()` runs, and a waiting aggregator goes first.
    pub fn advance<R: SteppedRead>(&mut self, read: &mut R, until: impl Fn(&R) -> bool) -> bool {
        if self.done {
            return true;
        }
        let p = &*self.pipeline;
        let mut first = true;
        loop {
            if !first {
                // std's mutex is not fair: re-locked at once, it would go to this thread
                // again and again while the aggregator sleeps on it. Let a waiting one in.
                let deadline = Instant::now() + READ_YIELD_MAX;
                while p.apply_waiting.load(Relaxed) && Instant::now() < deadline {
                    std::thread::yield_now();
                }
            }
            first = false;
            let done = read.step(&lock(&p.store));
            read.unlocked();
            if done {
                self.done = true;
                return true;
            }
            if until(read) {
                return false;
            }
        }
    }

    /// Ends the registration, waiting for the lock (a worker may).
    pub fn finish(mut self) {
        self.registered = false;
        lock(&self.pipeline.store).end_read();
    }
}

impl Drop for SteppedReader {
    /// A read abandoned (a client gone, a panicking step, a shutdown), possibly on the
    /// reactor, which must not wait for the lock: ended now if the lock is free, otherwise
    /// by the aggregator before it next changes the store.
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        let p = &*self.pipeline;
        match p.store.try_lock() {
            Ok(mut store) => store.end_read(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().end_read(),
            Err(TryLockError::WouldBlock) => {
                p.reads_ended_late.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Debug builds only (what the integration tests run): an aggregator held back until a
/// deadline or a release ([`Pipeline::debug_hold_aggregator`]).
#[cfg(debug_assertions)]
#[derive(Default)]
struct DebugHold {
    until: Mutex<Option<Instant>>,
    changed: std::sync::Condvar,
}

#[cfg(debug_assertions)]
impl DebugHold {
    fn set(&self, hold: Duration) {
        *lock(&self.until) = (!hold.is_zero()).then(|| Instant::now() + hold);
        self.changed.notify_all();
    }

    /// Returns once no hold is in force.
    fn wait(&self) {
        let mut until = lock(&self.until);
        while let Some(t) = *until {
            let left = t.saturating_duration_since(Instant::now());
            if left.is_zero() {
                *until = None;
                break;
            }
            until = self
                .changed
                .wait_timeout(until, left)
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }
}

/// Abandons the queue when the aggregator thread unwinds (see [`Queue::abandon`]).
struct AbandonOnPanic<'a>(&'a Queue);

impl Drop for AbandonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!("the aggregator thread panicked: refusing writes and deletes from now on");
            self.0.abandon();
        }
    }
}

/// `/metrics` reads the queue's size through this, so `stats` needs no import of `ingest`.
impl QueueGauges for Pipeline {
    fn queue_points(&self) -> usize {
        self.queue_depth()
    }
    fn queue_capacity_points(&self) -> usize {
        self.queue_capacity()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read of `total` steps that looks at nothing.
    struct Steps {
        taken: usize,
        total: usize,
    }

    impl SteppedRead for Steps {
        fn step(&mut self, _: &SeriesStore) -> bool {
            self.taken += 1;
            self.taken >= self.total
        }
    }

    #[test]
    fn a_stepped_reader_goes_on_across_calls_and_is_ended_however_it_goes() {
        let p = Pipeline::start(1000, 1000, Duration::ZERO, Arc::new(Stats::default()))
            .expect("pipeline");
        let mut reader = SteppedReader::new(Arc::clone(&p));
        let mut read = Steps { taken: 0, total: 5 };
        assert!(!reader.advance(&mut read, |r| r.taken % 2 == 0));
        assert_eq!(read.taken, 2);
        assert!(!reader.advance(&mut read, |r| r.taken % 2 == 0));
        assert!(reader.advance(&mut read, |_| false));
        assert_eq!(read.taken, 5);
        // Complete stays complete.
        assert!(reader.advance(&mut read, |_| false));
        assert_eq!(read.taken, 5);
        // Dropped with the lock free: ended at once.
        drop(reader);
        assert_eq!(p.reads_ended_late.load(Relaxed), 0);
        // Dropped while the store is locked elsewhere (the reactor must not wait): left to
        // the aggregator, which ends it on its next turn.
        let abandoned = SteppedReader::new(Arc::clone(&p));
        let held = p.store();
        drop(abandoned);
        assert_eq!(p.reads_ended_late.load(Relaxed), 1);
        drop(held);
        p.offer(Batch::default()).expect("an empty batch queued");
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.reads_ended_late.load(Relaxed) != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(p.reads_ended_late.load(Relaxed), 0);
        p.drain_and_stop();
    }
}
