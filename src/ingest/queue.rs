//! The bounded queue between ingestion (workers) and aggregation (one thread).
//!
//! Capacity is counted in points, and admission is all or nothing: a write whose points do
//! not all fit is refused whole (the route answers `503` + `Retry-After`), so a client
//! never has half a write taken. Points count against the capacity until the aggregator
//! has *applied* them, not merely dequeued them, so the capacity bounds everything between
//! a `204` and the aggregates.
//!
//! With the write log, admission happens in two steps: a worker [`Queue::reserve`]s room
//! before the write is logged (a write that would be refused is never logged), and the log
//! thread [`Queue::push_reserved`]s the batch into that room once it is durable, with its
//! log sequence number; a failed append [`Queue::unreserve`]s it. Each queued batch
//! carries its LSN (0 when there is no log), so the aggregator knows which log records
//! the aggregates cover. A `DELETE /series` travels the same queue as an [`Item::Delete`]
//! (zero points), so it is applied after every write queued before it.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::batch::Batch;
use super::lifecycle::DeleteJob;

pub struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

/// What the aggregator applies, in queue order.
#[derive(Debug)]
pub enum Item {
    Write(Batch),
    Delete(DeleteJob),
}

impl Item {
    /// Points it holds against the capacity.
    pub fn points(&self) -> usize {
        match self {
            Item::Write(b) => b.len(),
            Item::Delete(_) => 0,
        }
    }
}

/// A queued item and the log record it came from (0: not logged).
pub type Queued = (Item, u64);

struct Inner {
    batches: VecDeque<Queued>,
    /// Points admitted and not yet applied (queued plus being applied).
    points: usize,
    closed: bool,
    /// The consumer is gone: nothing queued will ever be applied.
    abandoned: bool,
    consumer_waiting: bool,
}

/// Why a batch was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not enough room right now.
    Full,
    /// The pipeline is shutting down.
    Closed,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            inner: Mutex::new(Inner {
                batches: VecDeque::new(),
                points: 0,
                closed: false,
                abandoned: false,
                consumer_waiting: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Admits the whole batch or none of it.
    pub fn try_push(&self, batch: Batch) -> Result<(), (Refused, Batch)> {
        let n = batch.len();
        let wake = {
            let mut q = lock(&self.inner);
            if q.closed {
                return Err((Refused::Closed, batch));
            }
            if q.points + n > self.capacity {
                return Err((Refused::Full, batch));
            }
            q.points += n;
            q.batches.push_back((Item::Write(batch), 0));
            std::mem::take(&mut q.consumer_waiting)
        };
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Reserves room for `points` points, all or nothing, for a batch that will be
    /// [`Queue::push_reserved`] (or [`Queue::unreserve`]d) later.
    pub fn reserve(&self, points: usize) -> Result<(), Refused> {
        let mut q = lock(&self.inner);
        if q.closed {
            return Err(Refused::Closed);
        }
        if q.points + points > self.capacity {
            return Err(Refused::Full);
        }
        q.points += points;
        Ok(())
    }

    /// Queues a batch whose room was reserved, with its log sequence number. Never
    /// refused: the room is there, and a logged batch must reach the aggregates (the
    /// server closes the queue only after the log).
    pub fn push_reserved(&self, batch: Batch, lsn: u64) {
        self.push_item(Item::Write(batch), lsn);
    }

    /// Queues a logged delete (never refused, like [`Queue::push_reserved`]).
    pub fn push_logged_delete(&self, job: DeleteJob, lsn: u64) {
        self.push_item(Item::Delete(job), lsn);
    }

    /// Queues a delete that is not logged (`--memory-only`), behind every write queued
    /// before it; refused (and handed back) only once the queue is closed.
    pub fn try_push_delete(&self, job: DeleteJob) -> Result<(), (Refused, DeleteJob)> {
        let wake = {
            let mut q = lock(&self.inner);
            if q.closed {
                return Err((Refused::Closed, job));
            }
            q.batches.push_back((Item::Delete(job), 0));
            std::mem::take(&mut q.consumer_waiting)
        };
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    fn push_item(&self, item: Item, lsn: u64) {
        let wake = {
            let mut q = lock(&self.inner);
            if q.abandoned {
                // Nobody will apply it: dropped (after the lock), which answers a delete.
                drop(q);
                drop(item);
                return;
            }
            q.batches.push_back((item, lsn));
            std::mem::take(&mut q.consumer_waiting)
        };
        if wake {
            self.ready.notify_one();
        }
    }

    /// Gives back room reserved for a batch that will not come (its append failed).
    pub fn unreserve(&self, points: usize) {
        self.release(points);
    }

    /// Moves up to `max` batches into `out`, waiting while the queue is empty. Returns
    /// `false` once the queue is closed and empty (the consumer should stop).
    pub fn pop_into(&self, out: &mut Vec<Queued>, max: usize) -> bool {
        self.pop_into_until(out, max, None)
    }

    /// [`Queue::pop_into`] that waits no later than `deadline` (when given): then it
    /// returns `true` with nothing moved, so the consumer can do timed work.
    pub fn pop_into_until(
        &self,
        out: &mut Vec<Queued>,
        max: usize,
        deadline: Option<Instant>,
    ) -> bool {
        let mut q = lock(&self.inner);
        loop {
            if !q.batches.is_empty() {
                let n = q.batches.len().min(max.max(1));
                out.extend(q.batches.drain(..n));
                return true;
            }
            if q.closed {
                return false;
            }
            q.consumer_waiting = true;
            match deadline {
                None => q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        q.consumer_waiting = false;
                        return true;
                    }
                    q = self
                        .ready
                        .wait_timeout(q, left)
                        .map_or_else(|p| p.into_inner().0, |(g, _)| g);
                }
            }
        }
    }

    /// The consumer finished applying `points` points: their room is free again.
    pub fn release(&self, points: usize) {
        let mut q = lock(&self.inner);
        q.points = q.points.saturating_sub(points);
    }

    /// Points admitted and not yet applied.
    pub fn depth(&self) -> usize {
        lock(&self.inner).points
    }

    /// Refuses new batches from now on; the consumer drains what is queued, then stops.
    pub fn close(&self) {
        lock(&self.inner).closed = true;
        self.ready.notify_all();
    }

    /// The consumer is gone (it panicked): refuses everything from now on and drops what
    /// is queued or arrives later, so a delete waiting in here is answered (its reply
    /// fails when dropped) instead of waiting for ever.
    pub fn abandon(&self) {
        let dropped = {
            let mut q = lock(&self.inner);
            q.closed = true;
            q.abandoned = true;
            std::mem::take(&mut q.batches)
        };
        // Outside the lock: a dropped delete publishes its answer.
        drop(dropped);
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::batch::PointRec;

    fn batch(points: usize) -> Batch {
        let mut b = Batch::default();
        for _ in 0..points {
            b.points.push(PointRec {
                key: Default::default(),
                timestamp_ns: 0,
                fields_start: 0,
                fields_len: 0,
            });
        }
        b
    }

    #[test]
    fn admission_is_all_or_nothing() {
        let q = Queue::new(10);
        assert!(q.try_push(batch(6)).is_ok());
        let (why, back) = q.try_push(batch(5)).unwrap_err();
        assert_eq!(why, Refused::Full);
        assert_eq!(back.len(), 5);
        assert_eq!(q.depth(), 6);
        assert!(q.try_push(batch(4)).is_ok());
        assert_eq!(q.depth(), 10);
        // Room comes back only once points are applied, not when dequeued.
        let mut out = Vec::new();
        assert!(q.pop_into(&mut out, 10));
        assert_eq!(out.len(), 2);
        assert!(q.try_push(batch(1)).is_err());
        q.release(6);
        assert!(q.try_push(batch(6)).is_ok());
    }

    #[test]
    fn a_batch_larger_than_capacity_never_fits() {
        let q = Queue::new(3);
        assert_eq!(q.try_push(batch(4)).unwrap_err().0, Refused::Full);
    }

    #[test]
    fn close_drains_then_stops() {
        let q = Queue::new(100);
        q.try_push(batch(1)).unwrap();
        q.close();
        assert_eq!(q.try_push(batch(1)).unwrap_err().0, Refused::Closed);
        let mut out = Vec::new();
        assert!(q.pop_into(&mut out, 10));
        assert_eq!(out.len(), 1);
        assert!(!q.pop_into(&mut out, 10));
    }

    #[test]
    fn reservations_count_against_capacity_until_released() {
        let q = Queue::new(10);
        q.reserve(6).unwrap();
        // The room is taken before the batch arrives: a write that does not fit next to
        // it is refused whole, and so is a plain push.
        assert_eq!(q.reserve(5), Err(Refused::Full));
        assert_eq!(q.try_push(batch(5)).unwrap_err().0, Refused::Full);
        assert_eq!(q.depth(), 6);
        q.push_reserved(batch(6), 7);
        assert_eq!(q.depth(), 6, "pushing into reserved room takes no more");
        let mut out = Vec::new();
        assert!(q.pop_into(&mut out, 10));
        assert_eq!((out[0].0.points(), out[0].1), (6, 7));
        q.release(6);
        assert_eq!(q.depth(), 0);
        // A failed append gives its room back.
        q.reserve(10).unwrap();
        assert_eq!(q.reserve(1), Err(Refused::Full));
        q.unreserve(10);
        assert!(q.reserve(1).is_ok());
    }

    #[test]
    fn a_closed_queue_reserves_nothing_but_takes_what_was_reserved() {
        let q = Queue::new(10);
        q.reserve(2).unwrap();
        q.close();
        assert_eq!(q.reserve(1), Err(Refused::Closed));
        q.push_reserved(batch(2), 1);
        let mut out = Vec::new();
        assert!(q.pop_into(&mut out, 10));
        assert_eq!(out.len(), 1);
        assert!(!q.pop_into(&mut out, 10));
    }

    #[test]
    fn a_delete_is_ordered_behind_earlier_writes_and_takes_no_room() {
        let q = Queue::new(2);
        q.try_push(batch(2)).unwrap();
        let job = || DeleteJob {
            selector: Default::default(),
            reply: None,
        };
        q.try_push_delete(job()).unwrap();
        q.push_logged_delete(job(), 9);
        assert_eq!(q.depth(), 2);
        let mut out = Vec::new();
        assert!(q.pop_into(&mut out, 10));
        assert!(matches!(out[0].0, Item::Write(_)));
        assert!(matches!(out[1].0, Item::Delete(_)));
        assert_eq!(out[2].1, 9);
        q.close();
        assert!(matches!(
            q.try_push_delete(job()),
            Err((Refused::Closed, _))
        ));
    }

    #[test]
    fn an_abandoned_queue_drops_what_it_holds_and_what_comes_later() {
        use crate::ingest::lifecycle::DeleteReply;
        use std::sync::{Arc, Mutex};
        let answers = Arc::new(Mutex::new(Vec::new()));
        let job = || {
            let answers = Arc::clone(&answers);
            DeleteJob {
                selector: Default::default(),
                reply: Some(DeleteReply::new(move |r| {
                    answers.lock().expect("test lock").push(r.is_err())
                })),
            }
        };
        let q = Queue::new(2);
        q.try_push_delete(job()).unwrap();
        q.abandon();
        q.push_logged_delete(job(), 3);
        assert!(matches!(
            q.try_push_delete(job()),
            Err((Refused::Closed, _))
        ));
        // Two failed by being dropped; the refused one is handed back (dropped here).
        assert_eq!(*answers.lock().expect("test lock"), [true, true, true]);
        let mut out = Vec::new();
        assert!(!q.pop_into(&mut out, 10));
    }

    #[test]
    fn a_timed_pop_returns_empty_at_its_deadline() {
        let q = Queue::new(2);
        let mut out = Vec::new();
        let deadline = Instant::now() + std::time::Duration::from_millis(20);
        assert!(q.pop_into_until(&mut out, 10, Some(deadline)));
        assert!(out.is_empty() && Instant::now() >= deadline);
        q.close();
        assert!(!q.pop_into_until(&mut out, 10, Some(deadline)));
    }

    #[test]
    fn consumer_wakes_on_push() {
        let q = std::sync::Arc::new(Queue::new(100));
        let q2 = std::sync::Arc::clone(&q);
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            q2.pop_into(&mut out, 10);
            out.len()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        q.try_push(batch(2)).unwrap();
        assert_eq!(t.join().unwrap(), 1);
    }
}
