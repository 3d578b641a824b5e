//! The bounded queue between ingestion (workers) and aggregation (one thread).
//!
//! Capacity is counted in points, and admission is all or nothing: a write whose points do
//! not all fit is refused whole (the route answers `503` + `Retry-After`), so a client
//! never has half a write taken. Points count against the capacity until the aggregator
//! has *applied* them, not merely dequeued them, so the capacity bounds everything between
//! a `204` and the aggregates.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::batch::Batch;

pub struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

struct Inner {
    batches: VecDeque<Batch>,
    /// Points admitted and not yet applied (queued plus being applied).
    points: usize,
    closed: bool,
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
            q.batches.push_back(batch);
            std::mem::take(&mut q.consumer_waiting)
        };
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Moves up to `max` batches into `out`, waiting while the queue is empty. Returns
    /// `false` once the queue is closed and empty (the consumer should stop).
    pub fn pop_into(&self, out: &mut Vec<Batch>, max: usize) -> bool {
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
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
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
