//! The committed end of the write log: the highest LSN whose record is in the log for good
//! (synced under `--fsync always`, written under `interval`), published by the log thread
//! after each successful group and watched by the log's readers (the forwarders).
//!
//! A reader never reads past [`LogTail::committed`], in LSN nor in bytes: records above it
//! may belong to a group whose write or sync failed, which is cut off, and whose LSNs (and
//! bytes) go to the next group; so the committed end names the segment and the byte offset
//! in it too, and a reader never even buffers bytes beyond it.
//! The log thread only stores a number and, when a reader sleeps, notifies it; it never
//! waits for a reader. Nothing here touches a file.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::record::Lsn;

/// Where the committed part of the log ends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The highest LSN a reader may hand out.
    pub lsn: Lsn,
    /// The segment (by its first LSN) the log thread writes now, and the offset in it up to
    /// which its bytes are committed. Older segments are complete.
    pub segment: Lsn,
    pub end: u64,
}

/// The committed end and a way to sleep until it moves.
#[derive(Debug, Default)]
pub struct LogTail {
    /// Mirror of `state.lsn`, read without the lock.
    lsn: AtomicU64,
    state: Mutex<Committed>,
    closed: AtomicBool,
    /// Readers inside [`LogTail::wait_past`]: the log thread takes the lock and notifies
    /// only when there is one.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    moved: Condvar,
}

impl LogTail {
    /// A tail whose records up to `committed.lsn` are in the log (0: none).
    pub fn new(committed: Committed) -> LogTail {
        LogTail {
            lsn: AtomicU64::new(committed.lsn),
            state: Mutex::new(committed),
            ..LogTail::default()
        }
    }

    fn state(&self) -> MutexGuard<'_, Committed> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a reader must stop.
    pub fn committed(&self) -> Committed {
        *self.state()
    }

    /// The highest LSN a reader may hand out (no lock).
    pub fn committed_lsn(&self) -> Lsn {
        self.lsn.load(SeqCst)
    }

    /// No record will be added any more (the log is closed).
    pub fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    /// Called by the log thread once the records up to `c.lsn` are written (and synced
    /// when the mode says so). The end only moves forward.
    pub fn publish(&self, c: Committed) {
        {
            let mut s = self.state();
            if c.lsn <= s.lsn {
                return;
            }
            *s = c;
            self.lsn.store(c.lsn, SeqCst);
        }
        self.wake();
    }

    /// The log is closed: wakes every reader.
    pub fn close(&self) {
        self.closed.store(true, SeqCst);
        self.wake();
    }

    fn wake(&self) {
        // A reader registers as a sleeper before it checks `committed` under the lock, so
        // either it sees the new value or it is waiting when this notifies.
        if self.sleepers.load(SeqCst) > 0 {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.moved.notify_all();
        }
    }

    /// Sleeps until the committed LSN is above `seen`, the log closes, or `timeout`
    /// passes; returns the committed LSN.
    pub fn wait_past(&self, seen: Lsn, timeout: Duration) -> Lsn {
        self.sleepers.fetch_add(1, SeqCst);
        {
            let g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            if self.committed_lsn() <= seen && !self.is_closed() && !timeout.is_zero() {
                let _ = self.moved.wait_timeout(g, timeout);
            }
        }
        self.sleepers.fetch_sub(1, SeqCst);
        self.committed_lsn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    fn at(lsn: Lsn) -> Committed {
        Committed {
            lsn,
            segment: 1,
            end: lsn * 10,
        }
    }

    #[test]
    fn publish_only_moves_forward() {
        let t = LogTail::new(at(5));
        t.publish(at(3));
        assert_eq!(t.committed(), at(5));
        t.publish(at(9));
        assert_eq!((t.committed(), t.committed_lsn()), (at(9), 9));
    }

    #[test]
    fn a_sleeping_reader_wakes_on_publish_and_on_close() {
        let t = Arc::new(LogTail::new(at(0)));
        let t2 = Arc::clone(&t);
        let started = Instant::now();
        let reader = std::thread::spawn(move || t2.wait_past(0, Duration::from_secs(20)));
        // Publishing before the reader sleeps must not be missed either.
        t.publish(at(1));
        assert_eq!(reader.join().expect("reader"), 1);
        let t3 = Arc::clone(&t);
        let reader = std::thread::spawn(move || t3.wait_past(1, Duration::from_secs(20)));
        t.close();
        assert_eq!(reader.join().expect("reader"), 1);
        assert!(started.elapsed() < Duration::from_secs(20));
        // Already past: no wait at all.
        assert_eq!(t.wait_past(0, Duration::from_secs(20)), 1);
    }
}
