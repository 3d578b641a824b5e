//! The comparison I/O models, `--io-model threadpool` and `--io-model blocking`, and what
//! they share.
//!
//! Both replace only the reactor's place in the data flow: listener -> *accept, read* ->
//! `exchange::process` (the same HTTP engine, routes and ingestion as the reactor) ->
//! *write*. Each connection is served end to end by one thread with a blocking
//! `std::net::TcpStream`: [`serve`] carries out the same connection [`Lifecycle`] as the
//! reactor (which phase deadline applies, 408 or a quiet close, lingering), mapping its
//! "arm a deadline at T" onto `SO_RCVTIMEO` for the next read and `SO_SNDTIMEO` for writes
//! in place of the reactor's timer wheel. They count the same `/stats` I/O figures as the
//! reactor (each `accept` is an accept batch of one), so benchmark numbers line up; any
//! difference between the models is the I/O architecture alone.
//!
//! [`Stop`] is the graceful shutdown they share: a signal thread ([`SignalThread`]) wakes a
//! blocked `accept` by shutting the listener's read side, cuts idle keep-alive connections
//! the same way, lets requests in progress finish with `Connection: close`, and at
//! `--shutdown-timeout` (or a second signal) shuts every remaining connection down.
//!
//! A write whose `204` waits for the write log (`Progress::AwaitDurable`) is appended by
//! the serving thread itself, which then blocks on its own [`Waiter`] until the log thread
//! answers, and goes on as the reactor does with an acknowledgement (`durable::after_ack`).
//!
//! Nothing here parses HTTP or knows a route, and no thread waits without a bound on a
//! socket: every blocking call has a timeout or is woken by [`Stop`].

pub mod blocking;
pub mod threadpool;

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use crate::app::App;
use crate::app::Local;
use crate::durable::{LOG_UNAVAILABLE, Ticket, Waiter, after_ack};
use crate::http::exchange::{self, Exchange, Progress};
use crate::http::service::Service;
use crate::log_limit::LogLimiter;
use crate::net::errors::{interrupted, io_reason, is_fd_exhaustion, timed_out};
use crate::net::lifecycle::{Actions, Buffered, Ctx, Lifecycle, Next, Refusal, Timeouts};
use crate::stats::bump;

// The reactor's tuning, shared so the models differ only in their I/O architecture.
use crate::tuning::{ACCEPT_PAUSE, DIRECT_READ, LARGE_BODY_START, LINGER, SCRATCH, TICK};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Slots hold plain data that a panicking holder cannot leave half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ----- shutdown ---------------------------------------------------------------------------

/// The connection a serving thread holds, visible to the signal thread so that shutdown can
/// wake it. The stream is shared (`Arc`), so shutting it down from another thread can never
/// hit a descriptor that was closed and reused meanwhile.
#[derive(Default)]
struct Slot {
    stream: Option<Arc<TcpStream>>,
    /// Waiting for the first byte of a request (keep-alive idle): cut at shutdown.
    idle: bool,
}

/// Graceful-shutdown state shared by the accept thread, the serving threads and the signal
/// thread.
pub struct Stop {
    stopping: AtomicBool,
    forced: AtomicBool,
    finished: AtomicBool,
    deadline: OnceLock<Instant>,
    shutdown_timeout: Duration,
    listener: Arc<TcpListener>,
    slots: Box<[Mutex<Slot>]>,
    /// Connections cut by the deadline (or a second signal) instead of finishing.
    forced_count: AtomicUsize,
}

impl Stop {
    /// `threads`: how many serving threads (one slot each).
    pub fn new(listener: Arc<TcpListener>, threads: usize, shutdown_timeout: Duration) -> Stop {
        Stop {
            stopping: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            deadline: OnceLock::new(),
            shutdown_timeout,
            listener,
            slots: (0..threads).map(|_| Mutex::new(Slot::default())).collect(),
            forced_count: AtomicUsize::new(0),
        }
    }

    /// A shutdown has begun: answer with `Connection: close`, accept nothing new.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The shutdown deadline passed (or a second signal came): drop what is left.
    pub fn forced(&self) -> bool {
        self.forced.load(Ordering::SeqCst)
    }

    pub fn forced_count(&self) -> usize {
        self.forced_count.load(Ordering::SeqCst)
    }

    /// Counts a connection dropped unserved after the forced stop (threadpool queue).
    fn count_forced(&self) {
        self.forced_count.fetch_add(1, Ordering::SeqCst);
    }

    /// First signal: stop accepting (shutting the listener's read side wakes a blocked
    /// `accept` with `EINVAL`, and the kernel refuses new connections from then on) and cut
    /// the connections that sit idle between requests. Requests in progress go on.
    fn begin(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self.deadline.set(Instant::now() + self.shutdown_timeout);
        if let Err(e) = self.listener.shutdown_read() {
            log::warn!("could not shut the listener down: {}", e);
        }
        let (mut idle, mut busy) = (0, 0);
        for slot in self.slots.iter() {
            let slot = lock(slot);
            match &slot.stream {
                Some(s) if slot.idle => {
                    // The serving thread's blocked read returns 0 and it closes quietly.
                    let _ = s.shutdown(Shutdown::Read);
                    idle += 1;
                }
                Some(_) => busy += 1,
                None => {}
            }
        }
        log::info!(
            "shutting down: stopped accepting; closing {} idle connections, finishing {} others (timeout {:?})",
            idle,
            busy,
            self.shutdown_timeout
        );
    }

    /// Deadline or second signal: shut every connection still being served, both ways, so
    /// blocked reads and writes return at once.
    fn force(&self, why: &str) {
        if self.forced.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut n = 0;
        for slot in self.slots.iter() {
            let slot = lock(slot);
            if let Some(s) = &slot.stream {
                let _ = s.shutdown(Shutdown::Both);
                n += 1;
            }
        }
        self.forced_count.fetch_add(n, Ordering::SeqCst);
        log::warn!("{}: closing {} connections still in progress", why, n);
    }

    /// Publishes the connection `slot`'s thread is about to serve. `false` once forced:
    /// then it must not be served.
    fn attach(&self, slot: usize, stream: &Arc<TcpStream>) -> bool {
        let mut s = lock(&self.slots[slot]);
        if self.forced() {
            return false;
        }
        s.stream = Some(Arc::clone(stream));
        s.idle = false;
        true
    }

    fn detach(&self, slot: usize) {
        let mut s = lock(&self.slots[slot]);
        s.stream = None;
        s.idle = false;
    }

    /// Marks the slot's connection idle (waiting for a request) or busy. Marking it idle
    /// returns `false` if shutdown has begun. Under the slot's lock: either [`Stop::begin`]
    /// sees the slot idle and wakes it, or this sees `stopping` — never neither.
    fn set_idle(&self, slot: usize, idle: bool) -> bool {
        let mut s = lock(&self.slots[slot]);
        s.idle = idle;
        !(idle && self.stopping())
    }
}

/// `shutdown(2)` on a listening socket, which `std` does not offer.
trait ShutdownRead {
    fn shutdown_read(&self) -> io::Result<()>;
}

impl ShutdownRead for TcpListener {
    fn shutdown_read(&self) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(Shutdown::Read)
    }
}

const SIGNALS: Token = Token(0);
const WAKE: Token = Token(1);

/// A small thread that turns SIGTERM/SIGINT into [`Stop`] calls and enforces the shutdown
/// deadline. It waits in a `mio::Poll` (signals through `signal-hook-mio`, plus a waker to
/// end it), so it can wait for "a signal or the deadline, whichever is first".
pub struct SignalThread {
    stop: Arc<Stop>,
    waker: Arc<mio::Waker>,
    handle: Option<JoinHandle<()>>,
}

impl SignalThread {
    /// Installs the handlers (from here on SIGTERM/SIGINT no longer kill the process) and
    /// starts the thread.
    pub fn start(stop: Arc<Stop>) -> io::Result<SignalThread> {
        let poll = Poll::new()?;
        let mut signals =
            Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || watch(poll, signals, &stop2))?;
        Ok(SignalThread {
            stop,
            waker,
            handle: Some(handle),
        })
    }

    /// The I/O model is done: end the thread.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        self.stop.finished.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            log::error!("waking the signal thread failed: {}", e);
        }
        if handle.join().is_err() {
            log::error!("the signal thread panicked");
        }
    }
}

impl Drop for SignalThread {
    fn drop(&mut self) {
        // An I/O model that returned early with an error still stops the thread.
        self.end();
    }
}

fn watch(mut poll: Poll, mut signals: Signals, stop: &Stop) {
    let mut events = Events::with_capacity(8);
    loop {
        let timeout = match stop.deadline.get() {
            Some(d) if !stop.forced() => Some(d.saturating_duration_since(Instant::now())),
            _ => None,
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if interrupted(&e) {
                continue;
            }
            log::error!("signal thread: poll failed: {}; forcing shutdown", e);
            stop.begin();
            stop.force("signal thread failed");
            return;
        }
        for sig in signals.pending() {
            log::info!("received signal {}", sig);
            if stop.stopping() {
                stop.force("second signal");
            } else {
                stop.begin();
            }
        }
        if stop.finished.load(Ordering::SeqCst) {
            return;
        }
        if stop
            .deadline
            .get()
            .is_some_and(|&d| Instant::now() >= d && !stop.forced())
        {
            stop.force("shutdown timeout");
        }
    }
}

// ----- accept -----------------------------------------------------------------------------

pub enum Accepted {
    Conn(TcpStream, SocketAddr),
    /// Nothing this time (interrupted, a connection aborted, out of descriptors): call again.
    Retry,
    /// Shutdown began: the listener is closed.
    Stopped,
}

/// One blocking `accept`, counted as an accept batch of one.
pub fn accept(
    listener: &TcpListener,
    app: &App,
    stop: &Stop,
    warn_fd: &mut LogLimiter,
) -> Accepted {
    if stop.stopping() {
        return Accepted::Stopped;
    }
    let io = &app.stats.io;
    match listener.accept() {
        Ok((stream, peer)) => {
            bump(&io.connections_accepted, 1);
            app.stats.note_accept_batch(1);
            log::debug!("accepted peer={}", peer);
            Accepted::Conn(stream, peer)
        }
        // Shutting the listener down is how a blocked accept is woken.
        Err(_) if stop.stopping() => Accepted::Stopped,
        Err(e) if interrupted(&e) => Accepted::Retry,
        Err(e) if is_fd_exhaustion(&e) => {
            bump(&io.accept_errors, 1);
            if let Some(suppressed) = warn_fd.check(Instant::now()) {
                log::warn!(
                    "accept failed: {} ({} open connections); pausing accepts for {:?} ({} similar warnings suppressed)",
                    e,
                    io.connections_active.load(Ordering::Relaxed),
                    ACCEPT_PAUSE,
                    suppressed
                );
            }
            // The pending connections stay queued in the kernel; spinning on EMFILE would
            // only burn the core the serving threads need to free descriptors.
            std::thread::sleep(ACCEPT_PAUSE);
            Accepted::Retry
        }
        Err(e) => {
            // ECONNABORTED and friends: that one connection is gone.
            bump(&io.accept_errors, 1);
            log::debug!("accept failed: {}", e);
            Accepted::Retry
        }
    }
}

// ----- serving one connection -------------------------------------------------------------

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

    /// After the engine: a write answered with a deferred `204` is appended to the log, and
    /// this thread waits for the log's answer, then counts the `204` or replaces it with a
    /// `503`. Returns what the connection does next.
    fn await_durable(&mut self, progress: Progress, t: &mut ServeThread) -> Progress {
        let deferred = t.local.durable.take();
        let Progress::AwaitDurable { close } = progress else {
            // Only a panic after the handler leaves a write here: it was not answered 204.
            if let Some(d) = deferred {
                self.app.pipeline.unreserve(d.batch.len());
            }
            return progress;
        };
        let more = !self.input.is_empty() || !self.ex.is_idle();
        let (v2, result) = match (&self.app.durable, deferred) {
            (Some(durable), Some(d)) => {
                let ticket = Ticket::Waiter(Arc::clone(&t.waiter));
                let v2 = d.v2;
                durable.append(&self.app.pipeline, ticket, d);
                let result = t.waiter.wait(|| self.stop.forced());
                if result.is_err() && self.stop.forced() {
                    // Its answer may still come: the next append gets a waiter of its own.
                    t.waiter = Arc::new(Waiter::default());
                }
                (v2, result.map_err(|e| e.to_string()))
            }
            _ => {
                log::error!("thread={}: a deferred answer without a write", t.slot);
                (false, Err("no write".to_string()))
            }
        };
        match &result {
            Ok(()) => Service::count_response(self.app, 204),
            Err(e) => {
                log::debug!("thread={} write refused by the log: {}", t.slot, e);
                self.output.clear();
                t.local.set_time(SystemTime::now());
                let path = if v2 { "/api/v2/write" } else { "/write" };
                let shape = self.app.path_error_shape(Some(path));
                exchange::write_io_error_shaped(
                    self.app,
                    shape,
                    &mut t.local.writer,
                    503,
                    LOG_UNAVAILABLE,
                    true,
                    &mut self.output,
                );
            }
        }
        after_ack(result.is_ok(), close, more)
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
