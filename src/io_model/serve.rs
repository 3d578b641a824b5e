//! One connection served end to end on one thread with a blocking socket: read, run the
//! HTTP engine, write, and carry out the connection [`Lifecycle`]'s actions, mapping its
//! deadlines onto `SO_RCVTIMEO`/`SO_SNDTIMEO`. A held answer (a write waiting for the log,
//! a `DELETE /series` waiting for the aggregator) blocks this thread on its own
//! [`Waiter`]. A streamed body is made and written on this thread, a part at a time (the
//! lifecycle's dispatch, write, dispatch, …). Shared by both comparison models.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crate::app::App;
use crate::app::Local;
use crate::durable::{self, Deferred, HeldAnswer, Outcome, Ticket, Waiter, write_outcome};
use crate::http::exchange::{self, Exchange, Progress};
use crate::net::errors::{interrupted, io_reason, timed_out};
use crate::net::lifecycle::{Actions, Buffered, Ctx, Lifecycle, Next, Refusal, Timeouts};
use crate::stats::bump;

// The reactor's tuning, shared so the models differ only in their I/O architecture.
use crate::tuning::{DIRECT_READ, LARGE_BODY_START, LINGER, SCRATCH, TICK};

use super::stop::Stop;

/// What a serving thread keeps across the connections it serves: the engine's scratch and
/// the connection buffers, reused from one connection to the next.
pub struct ServeThread {
    pub local: Local,
    /// The lifecycle's deadlines, from the configuration.
    timeouts: Timeouts,
    scratch: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// This thread's slot in [`Stop`].
    slot: usize,
    /// Where the write log answers this thread's appends.
    waiter: Arc<Waiter>,
}

impl ServeThread {
    /// `slot` is this thread's index among the serving threads; its `Request-Id`s are
    /// numbered as instance `slot + 1` (0 is the accept thread's).
    pub fn new(slot: usize, app: &App) -> ServeThread {
        let cfg = &app.config;
        ServeThread {
            local: Local::new(u32::try_from(slot + 1).unwrap_or(u32::MAX)),
            timeouts: Timeouts {
                idle: cfg.idle_timeout,
                header: cfg.header_timeout,
                body: cfg.body_timeout,
                linger: LINGER,
                // Nothing is in flight while a serving thread waits: never used.
                recheck: TICK,
            },
            scratch: vec![0; SCRATCH],
            input: Vec::new(),
            output: Vec::new(),
            slot,
            waiter: Arc::new(Waiter::default()),
        }
    }
}

/// Serves `stream` until it closes, then closes it. The caller counted it in
/// `connections_active`; this takes it out again.
pub fn serve(app: &App, stop: &Stop, t: &mut ServeThread, stream: TcpStream, peer: SocketAddr) {
    let stream = Arc::new(stream);
    let reason = if stop.attach(t.slot, &stream) {
        let cfg = &app.config;
        let (life, actions) = Lifecycle::open(&Ctx {
            now: Instant::now(),
            timeouts: &t.timeouts,
            shutdown: stop.deadline.get().copied(),
        });
        let mut conn = Conn {
            app,
            stop,
            stream: &stream,
            input: std::mem::take(&mut t.input),
            output: std::mem::take(&mut t.output),
            ex: Exchange::default(),
            life,
            min_len: 1,
            deadline: None,
            read_timeout: None,
        };
        let reason = match stream.set_write_timeout(Some(cfg.body_timeout)) {
            // A client that stops reading gets `--body-timeout` per stalled write.
            Ok(()) => conn.run(actions, t),
            Err(e) => {
                log::debug!("set_write_timeout failed: {}", e);
                Cow::Borrowed("socket option failed")
            }
        };
        stop.detach(t.slot);
        t.input = keep_buffer(conn.input);
        t.output = keep_buffer(conn.output);
        reason
    } else {
        stop.count_forced();
        Cow::Borrowed("shutdown timeout")
    };
    app.stats
        .io
        .connections_active
        .fetch_sub(1, Ordering::Relaxed);
    log::debug!("closed thread={} peer={} reason={}", t.slot, peer, reason);
}

/// Most buffer capacity a thread keeps between connections: one large write must not pin
/// megabytes for the thread's lifetime.
const KEEP_CAPACITY: usize = 1 << 20;

fn keep_buffer(mut v: Vec<u8>) -> Vec<u8> {
    if v.capacity() > KEEP_CAPACITY {
        return Vec::new();
    }
    v.clear();
    v
}

/// Why a connection closed, for the debug line.
type CloseReason = Cow<'static, str>;

/// One connection being served: its buffers, the engine's state, its lifecycle and the
/// deadline the lifecycle armed.
struct Conn<'a> {
    app: &'a App,
    stop: &'a Stop,
    stream: &'a TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    ex: Exchange,
    life: Lifecycle,
    /// Call the engine again once the input holds this many bytes.
    min_len: usize,
    /// The lifecycle's one deadline; a blocking read waits for it through `SO_RCVTIMEO`.
    deadline: Option<Instant>,
    /// The `SO_RCVTIMEO` in force, so it is only set when it changes (not per request).
    read_timeout: Option<Duration>,
}

impl Conn<'_> {
    fn ctx<'t>(&self, t: &'t ServeThread) -> Ctx<'t> {
        Ctx {
            now: Instant::now(),
            timeouts: &t.timeouts,
            shutdown: self.stop.deadline.get().copied(),
        }
    }

    fn buffered(&self) -> Buffered {
        Buffered {
            len: self.input.len(),
            min_len: self.min_len,
        }
    }

    /// Carries out the lifecycle's actions and feeds it the next event, until it closes
    /// the connection. Returns why.
    fn run(&mut self, mut actions: Actions, t: &mut ServeThread) -> CloseReason {
        loop {
            actions = match self.execute(actions, t) {
                Ok(next) => next,
                Err(reason) => return reason,
            };
        }
    }

    /// One round: the side effects of `a` in the order [`Actions`] documents, then its
    /// next step, whose outcome is fed to the lifecycle. `Err` is the close.
    fn execute(&mut self, a: Actions, t: &mut ServeThread) -> Result<Actions, CloseReason> {
        if let Some(reason) = a.close {
            if let Some(timeout) = reason.timeout() {
                bump(timeout.counter(&self.app.stats.io), 1);
            }
            return Err(Cow::Borrowed(reason.as_str()));
        }
        if a.set_nodelay {
            let _ = self.stream.set_nodelay(true);
        }
        // `watch_writable` needs nothing: a blocking write waits in the kernel, under
        // `SO_SNDTIMEO`. `release_buffers` neither: the thread reuses its buffers.
        if a.half_close {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if let Some(refusal) = a.respond {
            self.refuse(refusal, t);
        }
        if let Some(deadline) = a.arm {
            self.deadline = Some(deadline);
        }
        match a.next {
            Next::Dispatch => {
                t.local.set_time(SystemTime::now());
                let progress = exchange::process_catching(
                    self.app,
                    &mut t.local,
                    &mut self.ex,
                    &mut self.input,
                    &mut self.output,
                    self.stop.stopping(),
                    format_args!("serving thread {}", t.slot),
                );
                let progress = self.await_durable(progress, t);
                if let Progress::NeedMore { min_len, .. } = progress {
                    self.min_len = min_len;
                }
                Ok(self.life.on_complete(progress, &self.ctx(t)))
            }
            Next::Write => match self.flush() {
                Ok(()) => Ok(self.life.on_written(self.buffered(), &self.ctx(t))),
                // `SO_SNDTIMEO` expired: the write deadline passed.
                Err(e) if timed_out(&e) => Ok(self.life.on_deadline(&self.ctx(t))),
                Err(e) => Err(io_reason(&e)),
            },
            // Blocking reads: whether or not bytes may be waiting, a read is how to find out.
            Next::Read | Next::Wait => self.read_event(t),
        }
    }

    /// After the engine: a held answer's work is started (a write appended to the log, a
    /// delete to the log or the queue) and this thread waits for its outcome (these models
    /// block a thread per connection anyway), then counts the held `204` or writes the
    /// answer that replaces it. Returns what the connection does next.
    fn await_durable(&mut self, progress: Progress, t: &mut ServeThread) -> Progress {
        let deferred = t.local.deferred.take();
        let Progress::AwaitDurable { close } = progress else {
            // Only a panic after the handler leaves work here: it was not answered.
            if let Some(d) = deferred {
                self.app.pipeline.unreserve(d.reserved_points());
            }
            return progress;
        };
        let more = !self.input.is_empty() || !self.ex.is_idle();
        let held = HeldAnswer::new(deferred.as_ref(), close, more);
        let is_delete = matches!(deferred, Some(Deferred::Delete(_)));
        durable::start(self.app, deferred, Ticket::Waiter(Arc::clone(&t.waiter)));
        let outcome = t.waiter.wait(|| self.stop.forced()).unwrap_or_else(|| {
            // Its answer may still come: the next request gets a waiter of its own.
            t.waiter = Arc::new(Waiter::default());
            let why = "gave up waiting at a forced shutdown";
            if is_delete {
                Outcome::NotDeleted(why.into())
            } else {
                Outcome::Refused(Arc::new(io::Error::other(why)))
            }
        });
        write_outcome(
            self.app,
            &mut t.local.writer,
            held,
            &outcome,
            &mut self.output,
            &format_args!("thread={}", t.slot),
        )
    }

    /// Answers a request that timed out (or a refused connection) without the engine.
    fn refuse(&mut self, refusal: Refusal, t: &mut ServeThread) {
        if let Some(timeout) = refusal.timeout() {
            bump(timeout.counter(&self.app.stats.io), 1);
            log::debug!("thread={} {}", t.slot, refusal.message());
        }
        self.input.clear();
        self.ex = Exchange::default();
        t.local.set_time(SystemTime::now());
        exchange::write_io_error(
            self.app,
            &mut t.local.writer,
            refusal.status(),
            refusal.message(),
            refusal.retry_after(),
            &mut self.output,
        );
    }

    /// One blocking read until the lifecycle's deadline, reported to the lifecycle: bytes,
    /// end-of-file, the deadline, or (when idle) the shutdown.
    fn read_event(&mut self, t: &mut ServeThread) -> Result<Actions, CloseReason> {
        let idle = self.life.is_idle();
        if idle && !self.stop.set_idle(t.slot, true) {
            return Ok(self.read_while_stopping(t));
        }
        let now = Instant::now();
        let deadline = *self.deadline.get_or_insert(now);
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            self.stop.set_idle(t.slot, false);
            return Ok(self.life.on_deadline(&self.ctx(t)));
        }
        if let Err(e) = self.set_read_timeout(left) {
            self.stop.set_idle(t.slot, false);
            log::debug!("set_read_timeout failed: {}", e);
            return Err(Cow::Borrowed("socket option failed"));
        }
        let lingering = self.life.is_lingering();
        let r = if lingering {
            (&*self.stream).read(&mut t.scratch)
        } else {
            self.read_once(t)
        };
        if idle {
            self.stop.set_idle(t.slot, false);
        }
        match r {
            // Shutting the read side down is how shutdown wakes an idle connection.
            Ok(0) if idle && self.stop.stopping() => Ok(self.life.on_shutdown()),
            Ok(n) => {
                if lingering {
                    bump(&self.app.stats.io.bytes_read, n as u64);
                }
                Ok(self.life.on_read(n, n == 0, self.buffered(), &self.ctx(t)))
            }
            // `SO_RCVTIMEO` is rounded up (see `set_read_timeout`): a wake before the
            // deadline just waits again.
            Err(e) if timed_out(&e) && Instant::now() < deadline => Ok(Actions::default()),
            Err(e) if timed_out(&e) => Ok(self.life.on_deadline(&self.ctx(t))),
            Err(e) if interrupted(&e) => Ok(Actions::default()),
            Err(_) if lingering => Err(Cow::Borrowed("error while lingering")),
            Err(e) => {
                log::debug!("thread={} read failed: {}", t.slot, e);
                Err(io_reason(&e))
            }
        }
    }

    /// Reads once into the input, with the reactor's buffer policy: small reads through the
    /// scratch buffer; once a large body is expected (`min_len`) or streaming in, straight
    /// into the vector's spare capacity, grown at most 1 MiB at a time.
    fn read_once(&mut self, t: &mut ServeThread) -> io::Result<usize> {
        let want = self.min_len.saturating_sub(self.input.len());
        let mut spare = self.input.capacity() - self.input.len();
        if spare < DIRECT_READ && want > SCRATCH {
            self.input.reserve(want.min(1 << 20));
            spare = self.input.capacity() - self.input.len();
        }
        let n = if spare >= DIRECT_READ {
            crate::net::connection::read_into_spare(self.stream, &mut self.input)?
        } else {
            let n = (&*self.stream).read(&mut t.scratch)?;
            if n == t.scratch.len() {
                // A large body before its length is known: size the vector once.
                self.input.reserve(n + LARGE_BODY_START);
            }
            self.input.extend_from_slice(&t.scratch[..n]);
            n
        };
        bump(&self.app.stats.io.bytes_read, n as u64);
        Ok(n)
    }

    /// Idle while shutting down: a request that already arrived (a connection taken from
    /// the queue late) is still answered; otherwise the connection closes without waiting.
    fn read_while_stopping(&mut self, t: &mut ServeThread) -> Actions {
        let r = match self.stream.set_nonblocking(true) {
            Ok(()) => self.read_once(t),
            Err(e) => Err(e),
        };
        if self.stream.set_nonblocking(false).is_err() {
            return self.life.on_shutdown();
        }
        match r {
            Ok(n) if n > 0 => self.life.on_read(n, false, self.buffered(), &self.ctx(t)),
            _ => self.life.on_shutdown(),
        }
    }

    fn set_read_timeout(&mut self, left: Duration) -> io::Result<()> {
        // Kept while it ends within one timer tick after the deadline (the reactor's timer
        // resolution too), so a steady keep-alive client costs no `setsockopt` per request.
        // SO_RCVTIMEO has microsecond resolution and treats zero as "forever".
        if self
            .read_timeout
            .is_some_and(|cur| cur >= left && cur <= left + TICK)
        {
            return Ok(());
        }
        let ticks = left.as_nanos().div_ceil(TICK.as_nanos()).max(1);
        let timeout = TICK * u32::try_from(ticks).unwrap_or(u32::MAX);
        self.stream.set_read_timeout(Some(timeout))?;
        self.read_timeout = Some(timeout);
        Ok(())
    }

    /// Writes all output; the write timeout (`SO_SNDTIMEO`) applies per stalled write.
    fn flush(&mut self) -> io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == self.output.len() {
                break Ok(());
            }
            match (&*self.stream).write(&self.output[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    bump(&self.app.stats.io.bytes_written, n as u64);
                }
                Err(e) if interrupted(&e) => {}
                Err(e) => break Err(e),
            }
        };
        self.output.clear();
        result
    }
}
