//! Deferred answers: how a request whose answer waits for other threads travels, between
//! the threads that serve requests, the log thread and the aggregator, and how its answer
//! comes back. Two kinds: a validated write ("204 means on disk") and a `DELETE /series`
//! (answered once the aggregator applied it, so it covers every write acknowledged before).
//!
//! ```text
//!  worker: route reserves queue room, parks the Batch in Local::deferred, answers a
//!          deferred 204 ──▶ exchange: Progress::AwaitDurable ──▶ worker publishes its Done,
//!          then Log::append_source(Ticket, Batch, WriteSource): the record is the write's
//!          source and decoded body (LZ4-compressed here), replayed by rebuilding the Batch
//!  log thread (DurableSink): apply(lsn, batch) ──▶ the reserved queue room (with its LSN)
//!                            complete(group)   ──▶ Ack per connection ──▶ AckList + one
//!                                                  Doorbell ring ──▶ reactor writes the 204
//!                                                  (or a 503 on a log error)
//!          or, for a thread of a comparison I/O model, Waiter::complete ──▶ that thread
//!
//!  worker: DELETE /series parks its Selector in Local::deferred, answers a deferred 200
//!          ──▶ AwaitDurable ──▶ Done published, then [`start`]: a kind-4 record appended
//!          to the log (or, under --memory-only, the delete queued directly)
//!  log thread: apply_delete(lsn, job) ──▶ the queue, in LSN order behind the writes
//!  aggregator: store.delete ──▶ DeleteReply ──▶ Ack (Deleted(n)) on the same AckList
//!              + Doorbell ──▶ reactor writes 200 {"deleted":n} in place of the held reply
//! ```
//!
//! A [`Ticket`] says where an answer goes: the reactor's connection (token, generation and
//! what the engine decided about the connection: [`HeldAnswer`]) or a serving thread
//! blocked on its [`Waiter`]. On a log error the reservation is released and nothing of the
//! write is applied. A delete's answer travels with its job (its `DeleteReply` is answered
//! exactly once: applied, refused by the log, refused by a closed queue, or dropped by an
//! aggregator gone, all `503` but the first), so no connection waits for ever for one.
//! [`write_outcome`] is the one mapping from an [`Outcome`] to the bytes sent and what the
//! connection does next, shared by every I/O model. Nothing here touches a socket or the
//! disk, and nothing here may block the reactor: the log thread and the aggregator only
//! push to a list.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::app::App;
use crate::http::exchange::{self, Phase, Progress};
use crate::http::request::Version;
use crate::http::response::ResponseWriter;
use crate::http::service::{Reply, Service};
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

/// Work a request's held answer waits for: set by its route on the serving thread's
/// scratch, taken by that thread once the engine reports `AwaitDurable`, and started
/// ([`start`]) once the engine's output for it is handed back.
pub enum Deferred {
    /// A write: `204` once the log holds it.
    Write(DeferredWrite),
    /// A `DELETE /series`: `200 {"deleted":N}` once the aggregator applied it.
    Delete(DeferredDelete),
}

/// A write whose answer waits for the log.
pub struct DeferredWrite {
    pub batch: Batch,
    /// What the log keeps to rebuild `batch` at replay (with the body at its arena's start).
    pub source: WriteSource,
    /// Came on `/api/v2/write`: a failure is answered in the v2 error shape.
    pub v2: bool,
}

/// A delete whose answer waits for the aggregator.
pub struct DeferredDelete {
    pub selector: Selector,
    /// The request's HTTP version: its answer is encoded afresh, with the `Connection`
    /// header keep-alive calls for in that version.
    pub version: Version,
}

impl Deferred {
    /// The points of a write whose queue room is reserved (0 for a delete).
    pub fn reserved_points(&self) -> usize {
        match self {
            Deferred::Write(w) => w.batch.len(),
            Deferred::Delete(_) => 0,
        }
    }
}

/// What the I/O layer needs to finish a held answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldAnswer {
    /// A write that came on `/api/v2/write`: a failure is answered in the v2 error shape.
    pub v2: bool,
    /// The request's HTTP version (a delete's answer is encoded afresh).
    pub version: Version,
    /// Keep-alive decided to close after this response.
    pub close: bool,
    /// Bytes or a half-received request follow the request: look at them again (without
    /// reading) once the response is written.
    pub more: bool,
}

impl HeldAnswer {
    /// The held answer of `deferred` (`None`: a handler bug, a deferred reply with no work
    /// behind it), with the engine's keep-alive decision and whether input follows.
    pub fn new(deferred: Option<&Deferred>, close: bool, more: bool) -> HeldAnswer {
        let (v2, version) = match deferred {
            Some(Deferred::Write(w)) => (w.v2, Version::Http11),
            Some(Deferred::Delete(d)) => (false, d.version),
            None => (false, Version::Http11),
        };
        HeldAnswer {
            v2,
            version,
            close,
            more,
        }
    }
}

/// What the reactor needs to finish a connection whose answer is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnTicket {
    pub token: usize,
    pub generation: u32,
    pub held: HeldAnswer,
}

/// Where an answer goes.
pub enum Ticket {
    /// A reactor connection: an [`Ack`] on the reactor's list.
    Conn(ConnTicket),
    /// A serving thread of a comparison I/O model, blocked until the result.
    Waiter(Arc<Waiter>),
    /// Nowhere: a delete's log record, whose answer travels with its job.
    Job,
}

/// How deferred work ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The write is in the log: its held `204` stands.
    Logged,
    /// The log refused the write: `503`, closing.
    Refused(AppendError),
    /// The delete was applied: `200 {"deleted":N}`.
    Deleted(u64),
    /// The delete will not be applied (log error, shutdown, aggregator gone): `503` with
    /// this message, closing.
    NotDeleted(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Logged | Outcome::Deleted(_))
    }

    fn of_append(result: Result<(), AppendError>) -> Outcome {
        result.map_or_else(Outcome::Refused, |()| Outcome::Logged)
    }

    fn of_delete(result: Result<u64, String>) -> Outcome {
        result.map_or_else(Outcome::NotDeleted, Outcome::Deleted)
    }
}

/// Deferred work done (or failed), on its way back to the reactor.
#[derive(Debug)]
pub struct Ack {
    pub conn: ConnTicket,
    pub outcome: Outcome,
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

/// Replaces the held answer in `out` with what `outcome` calls for (a held `204` that
/// stands is left as it is), counts it, and returns what the connection does next. `who`
/// names the connection in the debug line of a failure; `writer`'s time is set here.
pub fn write_outcome(
    app: &App,
    writer: &mut ResponseWriter,
    held: HeldAnswer,
    outcome: &Outcome,
    out: &mut Vec<u8>,
    who: &dyn std::fmt::Display,
) -> Progress {
    let (path, message) = match outcome {
        Outcome::Logged => {
            Service::count_response(app, 204);
            return after_ack(true, held.close, held.more);
        }
        Outcome::Deleted(n) => {
            use std::io::Write;
            let mut body = Vec::with_capacity(24);
            let _ = write!(body, "{{\"deleted\":{n}}}");
            out.clear();
            writer.set_time(std::time::SystemTime::now());
            let reply = Reply::with_body(200, crate::routes::JSON);
            exchange::write_completed(app, writer, &reply, &body, held.close, held.version, out);
            return after_ack(true, held.close, held.more);
        }
        Outcome::Refused(e) => {
            log::debug!("{who} write refused by the log: {e}");
            let path = if held.v2 { "/api/v2/write" } else { "/write" };
            (path, LOG_UNAVAILABLE)
        }
        Outcome::NotDeleted(why) => {
            log::debug!("{who} delete not applied: {why}");
            ("/series", why.as_str())
        }
    };
    out.clear();
    writer.set_time(std::time::SystemTime::now());
    let shape = app.path_error_shape(Some(path));
    exchange::write_io_error_shaped(app, shape, writer, 503, message, true, out);
    after_ack(false, held.close, held.more)
}

/// Starts the deferred work of a request whose held answer was handed to the I/O layer:
/// a write is appended to the log; a delete is appended to the log, or under
/// `--memory-only` queued directly. Its outcome goes to `to`. `None` (a deferred reply
/// with no work behind it) would be a handler bug: it is answered as a failed write rather
/// than left waiting.
pub fn start(app: &App, deferred: Option<Deferred>, to: Ticket) {
    match (deferred, &app.durable) {
        (Some(Deferred::Write(write)), Some(durable)) => durable.append(&app.pipeline, to, write),
        (Some(Deferred::Delete(d)), durable) => {
            let job = DeleteJob {
                selector: d.selector,
                reply: Some(delete_reply(to, &app.acks)),
            };
            match durable {
                Some(durable) => durable.delete(job),
                None => app.pipeline.delete(job),
            }
        }
        (Some(Deferred::Write(write)), None) => {
            log::error!("a write deferred without the write log");
            app.pipeline.unreserve(write.batch.len());
            refuse(to, &app.acks);
        }
        (None, _) => {
            log::error!("a deferred answer without work behind it");
            refuse(to, &app.acks);
        }
    }
}

/// Answers `to` as a failed write.
fn refuse(to: Ticket, acks: &AckList) {
    let err = Arc::new(io::Error::other(LOG_UNAVAILABLE));
    let mut out = Vec::new();
    deliver(to, Outcome::Refused(err), &mut out);
    acks.publish(&mut out);
}

/// Where the aggregator's answer to a delete goes: the reactor's list or a waiting thread.
fn delete_reply(to: Ticket, acks: &Arc<AckList>) -> DeleteReply {
    let acks = Arc::clone(acks);
    DeleteReply::new(move |result| {
        let mut out = Vec::with_capacity(1);
        deliver(to, Outcome::of_delete(result), &mut out);
        acks.publish(&mut out);
    })
}

/// The message of the `503` a write the log refused gets.
pub const LOG_UNAVAILABLE: &str =
    "the write log cannot take writes right now (disk full or I/O error); retry later";

/// The reactor's second completion list: deferred answers, from the log thread (writes,
/// one ring per group) and the aggregator (deletes). Woken with the same [`Doorbell`] as
/// worker completions. Always there (held by the app), also under `--memory-only`.
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

/// A serving thread (threadpool and blocking models) waiting for its deferred work.
#[derive(Default)]
pub struct Waiter {
    result: Mutex<Option<Outcome>>,
    done: Condvar,
}

impl Waiter {
    fn complete(&self, outcome: Outcome) {
        *lock(&self.result) = Some(outcome);
        self.done.notify_one();
    }

    /// Blocks until the work completes. `give_up` is asked every second (a forced
    /// shutdown): then `None`, and the connection is answered as failed and closed.
    pub fn wait(&self, give_up: impl Fn() -> bool) -> Option<Outcome> {
        let mut r = lock(&self.result);
        loop {
            if let Some(outcome) = r.take() {
                return Some(outcome);
            }
            if give_up() {
                return None;
            }
            r = self
                .done
                .wait_timeout(r, Duration::from_secs(1))
                .map_or_else(|p| p.into_inner().0, |(g, _)| g);
        }
    }
}

/// Delivers an outcome to its ticket (a connection's goes on `acks`, to be published).
fn deliver(ticket: Ticket, outcome: Outcome, acks: &mut Vec<Ack>) {
    match ticket {
        Ticket::Conn(conn) => acks.push(Ack { conn, outcome }),
        Ticket::Waiter(w) => w.complete(outcome),
        Ticket::Job => {}
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

    fn refuse_delete(&mut self, job: DeleteJob, error: &AppendError) {
        job.fail(format!(
            "the write log cannot take the delete ({error}); retry later"
        ));
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
            deliver(c.ticket, Outcome::of_append(result), &mut self.scratch);
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
            deliver(closed.ticket, Outcome::Refused(err), &mut acks);
            self.acks.publish(&mut acks);
        }
    }

    /// `DELETE /series` through the log: appended as a kind-4 record behind every write
    /// acknowledged so far, queued by the log thread in LSN order, applied by the
    /// aggregator, which answers `job`'s reply. Returns at once. A log error or a log
    /// already closed (a shutdown) answers the reply with why; a delete that was logged is
    /// applied, now or at the next start.
    pub fn delete(&self, job: DeleteJob) {
        if let Err(closed) = self.log.append_delete(Ticket::Job, job) {
            if let Some(job) = closed.delete {
                job.fail("the write log is closed (shutting down); retry later".into());
            }
        }
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
            held: HeldAnswer::new(None, false, false),
        };
        let mut acks = vec![
            Ack {
                conn: conn(1),
                outcome: Outcome::Logged,
            },
            Ack {
                conn: conn(2),
                outcome: Outcome::Refused(Arc::new(io::Error::other("full"))),
            },
        ];
        // No doorbell attached (no reactor): publishing still works.
        list.publish(&mut acks);
        assert!(acks.is_empty() && list.waiting());
        let mut out = Vec::new();
        list.take(&mut out);
        assert!(!list.waiting());
        assert_eq!(out.iter().map(|a| a.conn.token).collect::<Vec<_>>(), [1, 2]);
        assert!(out[0].outcome.is_ok() && !out[1].outcome.is_ok());
    }

    #[test]
    fn a_waiter_gets_its_result_or_gives_up() {
        let w = Arc::new(Waiter::default());
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || w2.wait(|| false));
        w.complete(Outcome::Deleted(2));
        assert!(matches!(
            t.join().expect("waiter thread"),
            Some(Outcome::Deleted(2))
        ));
        assert!(w.wait(|| true).is_none());
    }

    fn standalone() -> App {
        App::standalone(crate::Config {
            queue_capacity: 100,
            max_series: 100,
            ..crate::Config::default()
        })
        .expect("standalone app")
    }

    fn delete_of(measurement: &str) -> Option<Deferred> {
        Some(Deferred::Delete(DeferredDelete {
            selector: Selector {
                measurement: Some(measurement.into()),
                ..Selector::default()
            },
            version: Version::Http11,
        }))
    }

    #[test]
    fn a_delete_under_memory_only_is_answered_by_the_aggregator_or_refused_once_closed() {
        let app = standalone();
        let w = Arc::new(Waiter::default());
        start(&app, delete_of("m"), Ticket::Waiter(Arc::clone(&w)));
        let got = w.wait(|| false);
        assert!(matches!(got, Some(Outcome::Deleted(0))), "{got:?}");
        app.pipeline.drain_and_stop();
        start(&app, delete_of("m"), Ticket::Waiter(Arc::clone(&w)));
        let got = w.wait(|| false);
        assert!(matches!(got, Some(Outcome::NotDeleted(_))), "{got:?}");
    }

    #[test]
    fn a_delete_answer_replaces_the_held_reply_and_keeps_or_closes_the_connection() {
        let app = standalone();
        let mut writer = ResponseWriter::new(1);
        let held = |version, close, more| HeldAnswer {
            v2: false,
            version,
            close,
            more,
        };
        let text = |out: &[u8]| String::from_utf8_lossy(out).into_owned();
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        let h = held(Version::Http10, false, true);
        let p = write_outcome(&app, &mut writer, h, &Outcome::Deleted(7), &mut out, &"t");
        assert_eq!(p, Progress::WriteFirst);
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
        assert!(t.contains("Connection: keep-alive\r\n"), "{t}");
        assert!(t.contains("Content-Type: application/json"), "{t}");
        assert!(t.ends_with("\r\n\r\n{\"deleted\":7}"), "{t}");
        assert_eq!(t.matches("HTTP/1.1").count(), 1, "{t}");

        let h = held(Version::Http11, false, false);
        let why = Outcome::NotDeleted("the write log is closed".into());
        let p = write_outcome(&app, &mut writer, h, &why, &mut out, &"t");
        assert_eq!(p, Progress::Close { linger: false });
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 503 "), "{t}");
        assert!(t.contains("Retry-After: 1\r\n"), "{t}");
        assert!(t.contains("Connection: close\r\n"), "{t}");
        assert!(
            t.ends_with("{\"error\":\"the write log is closed\"}"),
            "{t}"
        );
    }
}
