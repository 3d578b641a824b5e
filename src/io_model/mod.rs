//! The comparison I/O models, `--io-model threadpool` and `--io-model blocking`, and what
//! they share.
//!
//! Both replace only the reactor's place in the data flow: listener -> *accept, read* ->
//! `exchange::process` (the same HTTP engine, routes and ingestion as the reactor) ->
//! *write*. Each connection is served end to end by one thread with a blocking
//! `std::net::TcpStream`: [`serve`] reads into a `Vec`, calls the engine, writes the answer
//! fully, and follows the engine's [`Progress`] (read more under the phase's timeout, write
//! first, or close with an optional linger), with `SO_RCVTIMEO`/`SO_SNDTIMEO` standing in
//! for the reactor's timer wheel. They count the same `/stats` I/O figures as the reactor
//! (each `accept` is an accept batch of one), so benchmark numbers line up; any difference
//! between the models is the I/O architecture alone.
//!
//! [`Stop`] is the graceful shutdown they share: a signal thread ([`SignalThread`]) wakes a
//! blocked `accept` by shutting the listener's read side, cuts idle keep-alive connections
//! the same way, lets requests in progress finish with `Connection: close`, and at
//! `--shutdown-timeout` (or a second signal) shuts every remaining connection down.
//!
//! Nothing here parses HTTP or knows a route, and no thread waits without a bound on a
//! socket: every blocking call has a timeout or is woken by [`Stop`].

pub mod blocking;
pub mod threadpool;

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
use crate::http::exchange::{self, Exchange, Phase, Progress};
use crate::log_limit::LogLimiter;
use crate::stats::bump;

// The reactor's tuning, shared so the models differ only in their I/O architecture.
use crate::tuning::{ACCEPT_PAUSE, DIRECT_READ, LARGE_BODY_START, LINGER, SCRATCH};

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
            if e.kind() == io::ErrorKind::Interrupted {
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
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Accepted::Retry,
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

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

// ----- serving one connection -------------------------------------------------------------

/// What a serving thread keeps across the connections it serves: the engine's scratch and
/// the connection buffers, reused from one connection to the next.
pub struct ServeThread {
    pub local: Local,
    scratch: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// This thread's slot in [`Stop`].
    slot: usize,
}

impl ServeThread {
    /// `slot` is this thread's index among the serving threads; its `Request-Id`s are
    /// numbered as instance `slot + 1` (0 is the accept thread's).
    pub fn new(slot: usize) -> ServeThread {
        ServeThread {
            local: Local::new(u32::try_from(slot + 1).unwrap_or(u32::MAX)),
            scratch: vec![0; SCRATCH],
            input: Vec::new(),
            output: Vec::new(),
            slot,
        }
    }
}

/// Serves `stream` until it closes, then closes it. The caller counted it in
/// `connections_active`; this takes it out again.
pub fn serve(app: &App, stop: &Stop, t: &mut ServeThread, stream: TcpStream, peer: SocketAddr) {
    let stream = Arc::new(stream);
    let reason = if stop.attach(t.slot, &stream) {
        let mut conn = Conn {
            app,
            stop,
            stream: &stream,
            input: std::mem::take(&mut t.input),
            output: std::mem::take(&mut t.output),
            ex: Exchange::default(),
            phase: Phase::Idle,
            min_len: 1,
            head_deadline: None,
            read_timeout: None,
            nodelay: false,
        };
        let reason = conn.run(t);
        stop.detach(t.slot);
        t.input = keep_buffer(conn.input);
        t.output = keep_buffer(conn.output);
        reason
    } else {
        stop.count_forced();
        "shutdown timeout"
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

/// One connection being served: its buffers, the engine's state, and which wait applies.
struct Conn<'a> {
    app: &'a App,
    stop: &'a Stop,
    stream: &'a TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    ex: Exchange,
    /// What the engine is waiting for; picks the read timeout.
    phase: Phase,
    /// Call the engine again once the input holds this many bytes.
    min_len: usize,
    /// `--header-timeout` counted from the first byte of the head, never extended.
    head_deadline: Option<Instant>,
    /// The `SO_RCVTIMEO` in force, so it is only set when it changes (not per request).
    read_timeout: Option<Duration>,
    nodelay: bool,
}

impl Conn<'_> {
    /// Returns why the connection closed.
    fn run(&mut self, t: &mut ServeThread) -> &'static str {
        // A client that stops reading gets `--body-timeout` per stalled write.
        if let Err(e) = self
            .stream
            .set_write_timeout(Some(self.app.config.body_timeout))
        {
            log::debug!("set_write_timeout failed: {}", e);
            return "socket option failed";
        }
        loop {
            while self.input.is_empty() || self.input.len() < self.min_len {
                if let Err(reason) = self.read_more(t) {
                    return reason;
                }
            }
            loop {
                t.local.set_time(SystemTime::now());
                let progress = exchange::process(
                    self.app,
                    &mut t.local,
                    &mut self.ex,
                    &mut self.input,
                    &mut self.output,
                    self.stop.stopping(),
                );
                if let Err(reason) = self.flush() {
                    return reason;
                }
                match progress {
                    Progress::NeedMore { phase, min_len } => {
                        self.enter(phase);
                        self.min_len = min_len;
                        break;
                    }
                    Progress::WriteFirst => continue,
                    Progress::Close { linger: false } => {
                        return "response complete, connection not reused";
                    }
                    Progress::Close { linger: true } => return self.linger(t),
                }
            }
        }
    }

    /// The engine is waiting for `phase`: set the deadline it implies.
    fn enter(&mut self, phase: Phase) {
        match phase {
            Phase::Idle => {
                self.head_deadline = None;
                if !self.nodelay {
                    // Reused connection: small responses must not wait for Nagle from
                    // here on (what nginx and the reactor do on keep-alive).
                    let _ = self.stream.set_nodelay(true);
                    self.nodelay = true;
                }
            }
            // Part of the next head came with the last request: its clock starts now.
            Phase::Head if self.phase != Phase::Head => {
                self.head_deadline = Some(Instant::now() + self.app.config.header_timeout);
            }
            Phase::Head | Phase::Body => {}
        }
        self.phase = phase;
    }

    /// One read under the current phase's timeout. `Err` carries the close reason (after
    /// answering a head or body timeout with 408).
    fn read_more(&mut self, t: &mut ServeThread) -> Result<(), &'static str> {
        let cfg = &self.app.config;
        let idle = self.phase == Phase::Idle;
        if idle && !self.stop.set_idle(t.slot, true) {
            return self.read_while_stopping(t);
        }
        let timeout = match self.phase {
            // One read per idle wait (any byte moves on to Head), so the full timeout.
            Phase::Idle => cfg.idle_timeout,
            Phase::Head => {
                let deadline = *self
                    .head_deadline
                    .get_or_insert_with(|| Instant::now() + cfg.header_timeout);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(self.timed_out(t, Phase::Head));
                }
                left
            }
            // Time between body bytes: a fresh wait per read.
            Phase::Body => cfg.body_timeout,
        };
        if let Err(e) = self.set_read_timeout(timeout) {
            log::debug!("set_read_timeout failed: {}", e);
            return Err("socket option failed");
        }
        let r = self.read_once(t);
        if idle {
            self.stop.set_idle(t.slot, false);
        }
        match r {
            Ok(0) => Err(if self.stop.stopping() && idle {
                "shutdown"
            } else if idle {
                "client closed"
            } else {
                "client closed mid-request"
            }),
            Ok(_) => {
                if idle {
                    // First byte of a request head: the header deadline starts now and is
                    // not extended by later bytes (that is what stops a slowloris).
                    self.phase = Phase::Head;
                    self.head_deadline = Some(Instant::now() + cfg.header_timeout);
                }
                Ok(())
            }
            Err(e) if is_timeout(&e) => Err(self.timed_out(t, self.phase)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
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
    fn read_while_stopping(&mut self, t: &mut ServeThread) -> Result<(), &'static str> {
        if self.stream.set_nonblocking(true).is_err() {
            return Err("shutdown");
        }
        let r = self.read_once(t);
        if self.stream.set_nonblocking(false).is_err() {
            return Err("shutdown");
        }
        match r {
            Ok(n) if n > 0 => {
                self.phase = Phase::Head;
                self.head_deadline = Some(Instant::now() + self.app.config.header_timeout);
                Ok(())
            }
            _ => Err("shutdown"),
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        // SO_RCVTIMEO has microsecond resolution and treats zero as "forever".
        let timeout = timeout.max(Duration::from_millis(1));
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// A read deadline expired: idle closes quietly; a head or body in progress gets 408.
    fn timed_out(&mut self, t: &mut ServeThread, phase: Phase) -> &'static str {
        let io = &self.app.stats.io;
        let message = match phase {
            Phase::Idle => {
                bump(&io.timeouts_idle, 1);
                return "idle timeout";
            }
            Phase::Head => {
                bump(&io.timeouts_header, 1);
                "timed out waiting for the request head"
            }
            Phase::Body => {
                bump(&io.timeouts_body, 1);
                "timed out waiting for the request body"
            }
        };
        log::debug!("thread={} {}", t.slot, message);
        self.input.clear();
        self.ex = Exchange::default();
        t.local.set_time(SystemTime::now());
        exchange::write_io_error(
            self.app,
            &mut t.local.writer,
            408,
            message,
            false,
            &mut self.output,
        );
        if let Err(reason) = self.flush() {
            return reason;
        }
        self.linger(t)
    }

    /// Writes all output, counting progress; the write timeout applies per stalled write.
    fn flush(&mut self) -> Result<(), &'static str> {
        let mut written = 0;
        let result = loop {
            if written == self.output.len() {
                break Ok(());
            }
            match (&*self.stream).write(&self.output[written..]) {
                Ok(0) => break Err("connection closed while writing"),
                Ok(n) => {
                    written += n;
                    bump(&self.app.stats.io.bytes_written, n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    bump(&self.app.stats.io.timeouts_write, 1);
                    break Err("write timeout (client not reading)");
                }
                Err(e) => break Err(io_reason(&e)),
            }
        };
        self.output.clear();
        result
    }

    /// Half-closes and drains what the client still sends, until EOF or [`LINGER`], so it
    /// reads our final response instead of a reset caused by unread bytes.
    fn linger(&mut self, t: &mut ServeThread) -> &'static str {
        let _ = self.stream.shutdown(Shutdown::Write);
        let mut deadline = Instant::now() + LINGER;
        if let Some(&d) = self.stop.deadline.get() {
            deadline = deadline.min(d);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.set_read_timeout(left).is_err() {
                return "linger timeout";
            }
            match (&*self.stream).read(&mut t.scratch) {
                Ok(0) => return "closed after final response",
                Ok(n) => bump(&self.app.stats.io.bytes_read, n as u64),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return "linger timeout",
                Err(_) => return "error while lingering",
            }
        }
    }
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` expiry shows up as `EAGAIN`.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A short reason for the close log line; resets are routine, not errors.
fn io_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset by peer",
        io::ErrorKind::BrokenPipe => "broken pipe",
        _ => "I/O error",
    }
}
