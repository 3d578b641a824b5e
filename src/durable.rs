//! "204 means on disk": how a validated write travels through the write log before it is
//! acknowledged, between the threads that serve requests and the log thread.
//!
//! ```text
//!  worker: route reserves queue room, parks the Batch in Local::durable, answers a
//!          deferred 204 ──▶ exchange: Progress::AwaitDurable ──▶ worker publishes its Done,
//!          then Log::append_source(Ticket, Batch, WriteSource): the record is the write's
//!          source and decoded body (LZ4-compressed here), replayed by rebuilding the Batch
//!  log thread (DurableSink): apply(lsn, batch) ──▶ the reserved queue room (with its LSN)
//!                            complete(group)   ──▶ Ack per connection ──▶ AckList + one
//!                                                  Doorbell ring ──▶ reactor writes the 204
//!                                                  (or a 503 on a log error)
//!          or, for a thread of a comparison I/O model, Waiter::complete ──▶ that thread
//! ```
//!
//! A [`Ticket`] says where an append's result goes: the reactor's connection (token,
//! generation and what the engine decided about the connection) or a serving thread
//! blocked on its [`Waiter`]. On a log error the reservation is released and nothing of the
//! write is applied. [`after_ack`] is the one mapping from an acknowledgement to what the
//! connection does next, shared by every I/O model. A `DELETE /series` takes the same
//! road as a record of its own ([`Durable::delete`]: its serving thread waits for the
//! aggregator's answer), so it is ordered behind every acknowledged write. Nothing here
//! touches a socket or the disk, and nothing here may block the reactor: the log thread
//! only pushes to a list.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::http::exchange::{Phase, Progress};
use crate::ingest::lifecycle::{DeleteJob, DeleteReply, Selector};
use crate::ingest::write::WriteSource;
use crate::ingest::{Batch, Pipeline};
use crate::net::doorbell::Doorbell;
use crate::stats::Stats;
use crate::storage::{AppendError, Completion, Log, Lsn, Sink};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data pushed and taken whole: a panicking holder leaves it consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A write whose answer waits for the log: set by the write route on the serving thread's
/// scratch, taken by that thread once the engine reports `AwaitDurable`.
pub struct DeferredWrite {
    pub batch: Batch,
    /// What the log keeps to rebuild `batch` at replay (with the body at its arena's start).
    pub source: WriteSource,
    /// Came on `/api/v2/write`: a failure is answered in the v2 error shape.
    pub v2: bool,
}

/// What the reactor needs to finish a connection whose write is being logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnTicket {
    pub token: usize,
    pub generation: u32,
    pub v2: bool,
    /// Keep-alive decided to close after this response.
    pub close: bool,
    /// Bytes or a half-received request follow the write: look at them again (without
    /// reading) once the response is written.
    pub more: bool,
}

/// Where an append's result goes.
pub enum Ticket {
    /// A reactor connection: an [`Ack`] on the reactor's list.
    Conn(ConnTicket),
    /// A serving thread of a comparison I/O model, blocked until the result.
    Waiter(Arc<Waiter>),
}

/// A logged (or failed) write, on its way back to the reactor.
#[derive(Debug)]
pub struct Ack {
    pub conn: ConnTicket,
    pub result: Result<(), AppendError>,
}

/// What the connection does once its ack arrived and the response (the held `204`, or the
/// `503` that replaced it) is written. A failure always closes: the `503` is written by the
/// I/O layer with `Connection: close`.
pub fn after_ack(ok: bool, close: bool, more: bool) -> Progress {
    if !ok || close {
        Progress::Close { linger: false }
    } else if more {
        Progress::WriteFirst
    } else {
        Progress::NeedMore {
            phase: Phase::Idle,
            min_len: 1,
        }
    }
}

/// The message of the `503` a write the log refused gets.
pub const LOG_UNAVAILABLE: &str =
    "the write log cannot take writes right now (disk full or I/O error); retry later";

/// The reactor's second completion list: acknowledgements from the log thread. Woken with
/// the same [`Doorbell`] as worker completions (one ring per group).
pub struct AckList {
    list: Mutex<Vec<Ack>>,
    /// Acks published and not yet taken (read without the lock by the reactor).
    len: AtomicUsize,
    /// Set when the reactor starts; absent under the comparison I/O models.
    bell: OnceLock<Arc<Doorbell>>,
    stats: Arc<Stats>,
}

impl AckList {
    pub fn new(stats: Arc<Stats>) -> AckList {
        AckList {
            list: Mutex::new(Vec::new()),
            len: AtomicUsize::new(0),
            bell: OnceLock::new(),
            stats,
        }
    }

    /// The reactor's doorbell, rung after each group.
    pub fn attach(&self, bell: Arc<Doorbell>) {
        if self.bell.set(bell).is_err() {
            log::error!("a second reactor attached to the write log's acknowledgements");
        }
    }

    /// Publishes every ack in `acks` (leaving it empty) and rings once.
    pub fn publish(&self, acks: &mut Vec<Ack>) {
        if acks.is_empty() {
            return;
        }
        {
            let mut list = lock(&self.list);
            list.append(acks);
            self.len.store(list.len(), Ordering::SeqCst);
        }
        if let Some(bell) = self.bell.get() {
            bell.ring(&self.stats, &"the log thread");
        }
    }

    /// Acks are waiting (for the reactor's park check).
    pub fn waiting(&self) -> bool {
        self.len.load(Ordering::SeqCst) > 0
    }

    /// Moves every published ack into `into`.
    pub fn take(&self, into: &mut Vec<Ack>) {
        if !self.waiting() {
            return;
        }
        let mut list = lock(&self.list);
        self.len.store(0, Ordering::SeqCst);
        into.append(&mut list);
    }
}

/// A serving thread (threadpool and blocking models) waiting for its append.
#[derive(Default)]
pub struct Waiter {
    result: Mutex<Option<Result<(), AppendError>>>,
    done: Condvar,
}

impl Waiter {
    fn complete(&self, result: Result<(), AppendError>) {
        *lock(&self.result) = Some(result);
        self.done.notify_one();
    }

    /// Blocks until the append completes. `give_up` is asked every second (a forced
    /// shutdown): then the write counts as failed for this connection, which is closed.
    pub fn wait(&self, give_up: impl Fn() -> bool) -> Result<(), AppendError> {
        let mut r = lock(&self.result);
        loop {
            if let Some(result) = r.take() {
                return result;
            }
            if give_up() {
                return Err(Arc::new(io::Error::other(
                    "gave up waiting for the write log",
                )));
            }
            r = self
                .done
                .wait_timeout(r, Duration::from_secs(1))
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }
}

/// Delivers a result to its ticket.
fn deliver(ticket: Ticket, result: Result<(), AppendError>, acks: &mut Vec<Ack>) {
    match ticket {
        Ticket::Conn(conn) => acks.push(Ack { conn, result }),
        Ticket::Waiter(w) => w.complete(result),
    }
}

/// The log thread's end of the write path: logged batches into their reserved queue room,
/// results to their tickets.
pub struct DurableSink {
    pipeline: Arc<Pipeline>,
    acks: Arc<AckList>,
    scratch: Vec<Ack>,
}

impl DurableSink {
    pub fn new(pipeline: Arc<Pipeline>, acks: Arc<AckList>) -> DurableSink {
        DurableSink {
            pipeline,
            acks,
            scratch: Vec::new(),
        }
    }
}

impl Sink for DurableSink {
    type Ticket = Ticket;

    fn apply(&mut self, lsn: Lsn, batch: Batch) {
        self.pipeline.push_logged(batch, lsn);
    }

    fn apply_delete(&mut self, lsn: Lsn, job: DeleteJob) {
        self.pipeline.push_logged_delete(job, lsn);
    }

    fn complete(&mut self, group: &mut Vec<Completion<Ticket>>) {
        for c in group.drain(..) {
            let result = match c.result {
                Ok(_) => Ok(()),
                Err(e) => {
                    // Nothing of it was applied: its room in the queue is free again.
                    self.pipeline.unreserve(c.points);
                    Err(e)
                }
            };
            deliver(c.ticket, result, &mut self.scratch);
        }
        self.acks.publish(&mut self.scratch);
    }
}

/// The write log as the serving threads see it (held in the shared `App`).
pub struct Durable {
    log: Log<Ticket>,
    acks: Arc<AckList>,
}

impl Durable {
    pub fn new(log: Log<Ticket>, acks: Arc<AckList>) -> Durable {
        Durable { log, acks }
    }

    pub fn acks(&self) -> &Arc<AckList> {
        &self.acks
    }

    /// The log's committed end, for the forwarders.
    pub fn tail(&self) -> &Arc<crate::storage::LogTail> {
        self.log.tail()
    }

    /// Appends a write whose queue room is reserved; its result goes to `ticket`. If the
    /// log is already closed (a shutdown), the write fails like a log error.
    pub fn append(&self, pipeline: &Pipeline, ticket: Ticket, write: DeferredWrite) {
        if let Err(closed) = self.log.append_source(ticket, write.batch, &write.source) {
            pipeline.unreserve(closed.batch.len());
            let err = Arc::new(io::Error::other("the write log is closed"));
            let mut acks = Vec::new();
            deliver(closed.ticket, Err(err), &mut acks);
            self.acks.publish(&mut acks);
        }
    }

    /// `DELETE /series` through the log: appended as a kind-4 record behind every write
    /// acknowledged so far, queued by the log thread in LSN order, applied by the
    /// aggregator. Blocks the calling (serving) thread until then, at most until
    /// `deadline`; returns the number of series removed, or why there is no answer (the
    /// request is then answered `503`; a delete that was logged is still applied, now or
    /// at the next start).
    pub fn delete(&self, selector: Selector, deadline: Instant) -> Result<u64, String> {
        let reply = Arc::new(DeleteReply::default());
        let waiter = Arc::new(Waiter::default());
        let job = DeleteJob {
            selector,
            reply: Some(Arc::clone(&reply)),
        };
        if self
            .log
            .append_delete(Ticket::Waiter(Arc::clone(&waiter)), job)
            .is_err()
        {
            return Err("the write log is closed (shutting down)".into());
        }
        waiter
            .wait(|| Instant::now() >= deadline)
            .map_err(|e| format!("the write log cannot take the delete: {e}"))?;
        reply
            .wait(deadline)
            .ok_or_else(|| "the delete was logged but not applied in time".into())
    }

    /// Writes and syncs what is pending, delivers its results, and stops the log thread.
    pub fn close(&self) {
        self.log.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_maps_to_what_the_connection_does_next() {
        let idle = Progress::NeedMore {
            phase: Phase::Idle,
            min_len: 1,
        };
        let close = Progress::Close { linger: false };
        // ok, close, more
        assert_eq!(after_ack(true, false, false), idle);
        assert_eq!(after_ack(true, false, true), Progress::WriteFirst);
        assert_eq!(after_ack(true, true, false), close);
        assert_eq!(after_ack(true, true, true), close);
        // A failed write is answered 503 with Connection: close, whatever followed it.
        for (c, m) in [(false, false), (false, true), (true, false), (true, true)] {
            assert_eq!(after_ack(false, c, m), close);
        }
    }

    #[test]
    fn acks_are_taken_in_publication_order_and_counted_waiting() {
        let list = AckList::new(Arc::new(Stats::default()));
        assert!(!list.waiting());
        let conn = |token| ConnTicket {
            token,
            generation: 1,
            v2: false,
            close: false,
            more: false,
        };
        let mut acks = vec![
            Ack {
                conn: conn(1),
                result: Ok(()),
            },
            Ack {
                conn: conn(2),
                result: Err(Arc::new(io::Error::other("full"))),
            },
        ];
        // No doorbell attached (no reactor): publishing still works.
        list.publish(&mut acks);
        assert!(acks.is_empty() && list.waiting());
        let mut out = Vec::new();
        list.take(&mut out);
        assert!(!list.waiting());
        assert_eq!(out.iter().map(|a| a.conn.token).collect::<Vec<_>>(), [1, 2]);
        assert!(out[0].result.is_ok() && out[1].result.is_err());
    }

    #[test]
    fn a_waiter_gets_its_result_or_gives_up() {
        let w = Arc::new(Waiter::default());
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || w2.wait(|| false).is_ok());
        w.complete(Ok(()));
        assert!(t.join().expect("waiter thread"));
        assert!(w.wait(|| true).is_err());
    }
}
