//! The reactor's doorbell: how threads that hand results back (workers with their
//! completions, the log thread with its acknowledgements) wake a reactor that may be
//! blocked in `epoll_wait`, at most once per batch and only when needed.
//!
//! Waking costs a syscall and usually a context switch. The reactor raises `parked` before
//! a poll that may block and re-checks its completion lists after (see [`Doorbell::park`]);
//! a thread that published results rings only if `parked` is up and no wake is pending
//! yet. Both sides use sequentially consistent operations, so either the reactor sees the
//! new results or the publisher sees it parked (never neither). This must never block.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::stats::{Stats, bump};

pub struct Doorbell {
    /// The reactor may be blocked in `epoll_wait`.
    parked: AtomicBool,
    /// A wake was sent and the reactor has not taken the results since.
    wake_pending: AtomicBool,
    waker: Arc<mio::Waker>,
}

impl Doorbell {
    pub fn new(waker: Arc<mio::Waker>) -> Doorbell {
        Doorbell {
            parked: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            waker,
        }
    }

    /// Results were published: wake the reactor if it may be blocked and nobody did yet.
    /// `who` names the publisher in the trace line.
    pub fn ring(&self, stats: &Stats, who: &dyn std::fmt::Display) {
        if self.parked.load(Ordering::SeqCst) && !self.wake_pending.swap(true, Ordering::SeqCst) {
            bump(&stats.requests.waker_wakes, 1);
            if let Err(e) = self.waker.wake() {
                log::error!("waking the reactor failed: {}", e);
            }
            log::trace!("{} woke the reactor", who);
        }
    }

    /// The reactor is about to take the results: a later publish must ring again.
    pub fn taken(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
    }

    /// Called by the reactor before a poll that may block, with a check of its lists.
    /// Returns `false` if results are already waiting (then poll without blocking).
    pub fn park(&self, waiting: impl FnOnce() -> bool) -> bool {
        self.parked.store(true, Ordering::SeqCst);
        if waiting() {
            self.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Called by the reactor when its poll returned.
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }
}
