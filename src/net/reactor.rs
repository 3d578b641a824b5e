//! The reactor: one thread, one `mio::Poll`, the listener and every connection.
//!
//! It owns the `Poll`, the listener, the connection slab (slab key = `Token`), the timer
//! wheel and a small pool of buffers; nobody else touches them. Its job is I/O only:
//!
//! * **accept** — when the listener is readable, accept until `WouldBlock`, so the kernel's
//!   accept queue is emptied every time it is looked at (a backlog only overflows when the
//!   drain is slower than arrivals, and this drain is a tight loop of `accept4` calls);
//! * **read** — on readiness, read until the socket is drained, then hand the bytes *by
//!   value* to a worker (at most one job per connection in flight);
//! * **write** — when a worker's completion comes back (one `Waker` wake per batch), write
//!   the response until the kernel pushes back; only then register `WRITABLE` interest. A
//!   held answer waits for its ack on a second completion list, woken the same way: a
//!   write's `204` until the write log has the write (a log error replaces it with a
//!   `503`), a `DELETE /series` until the aggregator applied it (the ack carries the
//!   count, written as `200 {"deleted":N}`). The connection stays in flight meanwhile;
//!   nothing here waits for it. A streamed body (`/metrics`, `/series`) comes back a part per job:
//!   once a part is written, the connection is dispatched again, without reading, and a
//!   worker makes the next part; closing a connection drops its body's source here, which
//!   must not (and does not) wait for anything;
//! * **deadlines** — header, body, idle, write and linger timeouts from the timer wheel.
//!
//! What happens to a connection next is never decided here: each event is fed to the
//! connection's [`Lifecycle`] and the reactor carries out the [`Actions`] it returns
//! (`execute`). The reactor keeps only the I/O scheduling: edge-triggered readiness and the
//! per-turn read budget, the job-slot limit, the buffer pool, accept pauses.
//!
//! It must never block, sleep or parse: a slow step here stalls every connection. Reading
//! stops while a connection has a job out or unwritten output, which is the backpressure
//! that keeps a client that never reads from growing server memory.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::app::App;
use crate::durable::{Ack, write_outcome};
use crate::http::ResponseWriter;
use crate::http::exchange::Progress;
use crate::log_limit::LogLimiter;
use crate::net::connection::{Connection, WriteOutcome, io_flags};
use crate::net::errors::{interrupted, io_reason, is_fd_exhaustion, would_block};
use crate::net::lifecycle::{Actions, Buffered, Ctx, Lifecycle, Next, Refusal, Timeouts};
use crate::net::timer::TimerWheel;
use crate::net::worker_pool::{Done, Job, WorkerPool};
use crate::stats::{Stats, bump};
use crate::tuning::{
    ACCEPT_BUDGET, ACCEPT_PAUSE, LARGE_MAX, LARGE_MIN, LARGE_POOLED, LARGE_START, LINGER,
    MAX_IN_FLIGHT, READ_BUDGET, REJECT_SLACK, SCRATCH, TICK,
};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Keeps a few large read buffers (request bodies of 64 KiB .. 1 MiB) for reuse, so a
/// steady stream of big writes does not allocate and fault in fresh memory per request.
/// Small buffers are not pooled: they are exact-size and cheap, and pooling them would make
/// the pool's footprint grow with the number of connections.
struct BufPool {
    large: Vec<Vec<u8>>,
}

impl BufPool {
    fn give(&mut self, mut v: Vec<u8>) {
        let cap = v.capacity();
        if (LARGE_MIN..=LARGE_MAX).contains(&cap) && self.large.len() < LARGE_POOLED {
            v.clear();
            self.large.push(v);
        }
    }

    /// A pooled buffer able to hold `want` bytes, or an empty vector.
    fn take_for(&mut self, want: usize) -> Vec<u8> {
        if want >= LARGE_MIN {
            if let Some(i) = self.large.iter().position(|b| b.capacity() >= want) {
                return self.large.swap_remove(i);
            }
        }
        Vec::new()
    }
}

pub struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Connection>,
    pool: WorkerPool,
    app: Arc<App>,
    timers: TimerWheel,
    timeouts: Timeouts,
    outbox: Vec<Job>,
    done: Vec<Done>,
    acks: Vec<Ack>,
    /// Connections that stopped reading on their budget: (key, generation).
    ready: Vec<(usize, u32)>,
    /// The accept drain stopped on its budget: resume next turn.
    accept_pending: bool,
    expired: Vec<usize>,
    buffers: BufPool,
    /// Jobs out with the workers.
    in_flight: usize,
    /// Readable connections waiting for a job slot: (key, generation).
    deferred: std::collections::VecDeque<(usize, u32)>,
    next_generation: u32,
    accept_paused_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    signals: Signals,
    writer: ResponseWriter,
    scratch: Vec<u8>,
    warn_fd: LogLimiter,
    warn_limit: LogLimiter,
}

fn stats(app: &App) -> &Stats {
    &app.stats
}

impl Reactor {
    /// Wires the listener, the worker pool's waker and the signal source into one `Poll`.
    pub fn new(listener: std::net::TcpListener, app: Arc<App>) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let mut signals =
            Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let pool = WorkerPool::start(app.config.workers, Arc::clone(&app), waker)?;
        let now = Instant::now();
        Ok(Reactor {
            poll,
            listener: Some(listener),
            conns: Slab::with_capacity(app.config.max_connections.min(1 << 16)),
            pool,
            timers: TimerWheel::new(TICK, now),
            timeouts: Timeouts {
                idle: app.config.idle_timeout,
                header: app.config.header_timeout,
                body: app.config.body_timeout,
                linger: LINGER,
                recheck: TICK,
            },
            outbox: Vec::with_capacity(256),
            done: Vec::with_capacity(256),
            acks: Vec::new(),
            ready: Vec::new(),
            accept_pending: false,
            expired: Vec::new(),
            buffers: BufPool { large: Vec::new() },
            in_flight: 0,
            deferred: std::collections::VecDeque::new(),
            next_generation: 0,
            accept_paused_until: None,
            shutdown_deadline: None,
            signals,
            writer: ResponseWriter::new(0),
            scratch: vec![0; SCRATCH],
            warn_fd: LogLimiter::new(Duration::from_secs(10)),
            warn_limit: LogLimiter::new(Duration::from_secs(10)),
            app,
        })
    }

    /// Runs until a graceful shutdown completes (or its deadline passes), then stops the
    /// worker pool. Returns the number of connections force-closed at the deadline.
    pub fn run(mut self) -> io::Result<usize> {
        let mut events = Events::with_capacity(1024);
        let mut forced = 0;
        loop {
            let mut timeout = self.poll_timeout(Instant::now());
            let parked = timeout != Some(Duration::ZERO) && self.pool.park();
            if !parked {
                timeout = Some(Duration::ZERO);
            }
            let polled = self.poll.poll(&mut events, timeout);
            if parked {
                self.pool.unpark();
            }
            if let Err(e) = polled {
                if interrupted(&e) {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            if !events.is_empty() {
                log::trace!("poll returned {} events", events.iter().count());
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {}
                    SIGNALS => self.on_signal(now),
                    Token(key) => self.on_conn_event(key, ev, now),
                }
            }
            self.drain_completions(now);
            self.resume_deferred(now);
            self.serve_ready(now);
            if self.accept_pending {
                self.accept_all(now);
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept_all(now);
            }
            self.expire_timers(now);
            self.pool.submit(&mut self.outbox);
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() {
                    break;
                }
                if now >= deadline {
                    forced = self.conns.len();
                    log::warn!(
                        "shutdown timeout: closing {} connections still in progress",
                        forced
                    );
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.close(key, "shutdown timeout", now);
                    }
                    break;
                }
            }
        }
        // Completions still in flight carry no acknowledged data that isn't already queued
        // or logged (a 204 leaves only after the log took the write, or, under
        // --memory-only, after the queue did), so dropping them loses nothing a client was
        // told.
        self.pool.shutdown();
        Ok(forced)
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || self.accept_pending || !self.outbox.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.timers.next_deadline();
        for t in [self.accept_paused_until, self.shutdown_deadline]
            .into_iter()
            .flatten()
        {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    // ----- accept ---------------------------------------------------------------------

    fn accept_all(&mut self, now: Instant) {
        self.accept_pending = false;
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        let Some(listener) = self.listener.take() else {
            return;
        };
        let mut batch = 0usize;
        loop {
            if batch >= ACCEPT_BUDGET {
                self.accept_pending = true;
                break;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    batch += 1;
                    self.admit(stream, peer, now);
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) if is_fd_exhaustion(&e) => {
                    bump(&stats(&self.app).io.accept_errors, 1);
                    // The pending connections stay queued in the kernel; try again shortly
                    // (or as soon as a connection closes) instead of spinning on EMFILE.
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    if let Some(suppressed) = self.warn_fd.check(now) {
                        log::warn!(
                            "accept failed: {} ({} open connections); pausing accepts for {:?} ({} similar warnings suppressed)",
                            e,
                            self.conns.len(),
                            ACCEPT_PAUSE,
                            suppressed
                        );
                    }
                    break;
                }
                Err(e) => {
                    // ECONNABORTED and friends: that one connection is gone; go on.
                    bump(&stats(&self.app).io.accept_errors, 1);
                    log::debug!("accept failed: {}", e);
                }
            }
        }
        self.listener = Some(listener);
        if batch > 0 {
            stats(&self.app).note_accept_batch(batch as u64);
            log::trace!("accepted {} connections in one drain", batch);
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let st = stats(&self.app);
        bump(&st.io.connections_accepted, 1);
        let over_limit = self.conns.len() >= self.app.config.max_connections;
        if over_limit {
            bump(&st.io.connections_rejected_over_limit, 1);
            if let Some(suppressed) = self.warn_limit.check(now) {
                log::warn!(
                    "--max-connections {} reached: answering new connections 503 ({} similar warnings suppressed)",
                    self.app.config.max_connections,
                    suppressed
                );
            }
            if self.conns.len() >= self.app.config.max_connections + REJECT_SLACK {
                // No room even to linger: try the 503 once and close.
                let mut stream = stream;
                let mut out = Vec::with_capacity(512);
                self.encode_refusal(Refusal::OverLimit, &mut out);
                let _ = io::Write::write(&mut stream, &out);
                log::debug!("closed peer={} reason=over connection limit", peer);
                return;
            }
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let (life, actions) = if over_limit {
            Lifecycle::open_over_limit()
        } else {
            Lifecycle::open(&self.ctx(now))
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let peer_box = log::log_enabled!(log::Level::Debug).then(|| Box::new(peer));
        let mut conn = Connection::new(stream, peer_box, generation, life);
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut conn.stream, Token(key), Interest::READABLE)
        {
            log::debug!("closed peer={} reason=register failed: {}", peer, e);
            return;
        }
        entry.insert(conn);
        st.io.connections_active.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        log::debug!("accepted token={} peer={}", key, peer);
        self.execute(key, actions, now);
    }

    /// An error response the reactor itself sends (408, 503): encoding only, no parsing.
    fn encode_refusal(&mut self, refusal: Refusal, out: &mut Vec<u8>) {
        self.writer.set_time(SystemTime::now());
        crate::http::exchange::write_io_error(
            &self.app,
            &mut self.writer,
            refusal.status(),
            refusal.message(),
            refusal.retry_after(),
            out,
        );
    }

    /// What every lifecycle transition is told besides its own arguments.
    fn ctx(&self, now: Instant) -> Ctx<'_> {
        Ctx {
            now,
            timeouts: &self.timeouts,
            shutdown: self.shutdown_deadline,
        }
    }

    /// Feeds one event to connection `key`'s lifecycle and carries out the answer.
    #[inline]
    fn feed(
        &mut self,
        key: usize,
        now: Instant,
        transition: impl FnOnce(&mut Lifecycle, Buffered, &Ctx) -> Actions,
    ) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let ctx = Ctx {
            now,
            timeouts: &self.timeouts,
            shutdown: self.shutdown_deadline,
        };
        let input = c.buffered();
        let actions = transition(&mut c.life, input, &ctx);
        self.execute(key, actions, now);
    }

    // ----- carrying out the lifecycle's decisions -----------------------------------------

    /// Carries out what the connection's lifecycle decided, in the order [`Actions`]
    /// documents. The reactor makes no decision of its own about a connection's life.
    fn execute(&mut self, key: usize, a: Actions, now: Instant) {
        if let Some(reason) = a.close {
            if let Some(t) = reason.timeout() {
                bump(t.counter(&stats(&self.app).io), 1);
            }
            self.close(key, reason.as_str(), now);
            return;
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if a.set_nodelay {
            let _ = c.stream.set_nodelay(true);
        }
        if let Some(watch) = a.watch_writable {
            // WRITABLE interest only while output waits: a writable socket is the normal
            // case, and each spurious wake would cost a loop turn.
            let interest = if watch {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(key), interest)
            {
                self.close(key, &format!("reregister failed: {}", e), now);
                return;
            }
        }
        if a.release_buffers {
            if c.input.capacity() >= LARGE_MIN {
                c.set(io_flags::LARGE_SENDER);
            } else {
                c.clear(io_flags::LARGE_SENDER);
            }
            let input = std::mem::take(&mut c.input);
            c.output = Vec::new();
            self.buffers.give(input);
        }
        if a.half_close {
            let _ = c.stream.shutdown(Shutdown::Write);
            // Bytes may already wait unread; no new edge would announce them.
            c.set(io_flags::READABLE);
        }
        if let Some(refusal) = a.respond {
            if let Some(t) = refusal.timeout() {
                bump(t.counter(&stats(&self.app).io), 1);
                log::debug!("token={} {}", key, refusal.message());
            }
            let mut out = Vec::with_capacity(512);
            self.encode_refusal(refusal, &mut out);
            let c = &mut self.conns[key];
            c.input.clear();
            c.exchange = Default::default();
            c.output = out;
            c.written = 0;
        }
        if let Some(deadline) = a.arm {
            self.timers.arm(&mut self.conns, key, deadline);
        }
        match a.next {
            Next::Wait => {}
            Next::Dispatch => self.dispatch(key),
            Next::Write => self.write_conn(key, now),
            Next::Read => self.continue_reading(key, now),
        }
    }

    // ----- readiness ------------------------------------------------------------------

    fn on_conn_event(&mut self, key: usize, ev: &mio::event::Event, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        log::trace!(
            "token={} readable={} writable={} read_closed={} error={}",
            key,
            ev.is_readable(),
            ev.is_writable(),
            ev.is_read_closed(),
            ev.is_error()
        );
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            c.set(io_flags::READABLE);
        }
        if ev.is_read_closed() || ev.is_error() {
            c.set(io_flags::PEER_FIN);
        }
        if ev.is_writable() && c.life.is_write_blocked() {
            self.write_conn(key, now);
        }
        self.read_conn(key, now);
    }

    /// Reads connections that waited for a job slot, oldest first, while slots are free.
    fn resume_deferred(&mut self, now: Instant) {
        while self.in_flight < MAX_IN_FLIGHT {
            let Some((key, generation)) = self.deferred.pop_front() else {
                break;
            };
            if let Some(c) = self
                .conns
                .get_mut(key)
                .filter(|c| c.generation == generation)
            {
                c.clear(io_flags::DEFERRED);
                self.read_conn(key, now);
            }
        }
    }

    fn serve_ready(&mut self, now: Instant) {
        if self.ready.is_empty() {
            return;
        }
        let ready = std::mem::take(&mut self.ready);
        for &(key, generation) in &ready {
            if self
                .conns
                .get(key)
                .is_some_and(|c| c.generation == generation)
            {
                self.read_conn(key, now);
            }
        }
    }

    /// The lifecycle wants the input looked at again: read if the socket may hold bytes,
    /// otherwise report an empty read (what is buffered may be a complete request).
    fn continue_reading(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.has(io_flags::READABLE) {
            self.read_conn(key, now);
        } else {
            self.feed(key, now, |life, input, ctx| {
                life.on_read(0, false, input, ctx)
            });
        }
    }

    fn read_conn(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !c.has(io_flags::READABLE) {
            return;
        }
        if c.life.is_lingering() {
            match c.discard_input(&mut self.scratch) {
                Ok(r) => {
                    bump(&stats(&self.app).io.bytes_read, r.bytes as u64);
                    c.clear(io_flags::READABLE);
                    self.feed(key, now, |life, _, ctx| {
                        life.on_read(r.bytes, r.eof, Buffered::default(), ctx)
                    });
                }
                Err(e) => self.close(key, &format!("error while lingering: {}", e), now),
            }
            return;
        }
        if !c.life.wants_request() {
            // Busy: the bytes wait in the kernel (backpressure); READABLE stays set.
            return;
        }
        if self.in_flight >= MAX_IN_FLIGHT {
            // The workers have enough to do: leave the bytes in the kernel for now.
            if !c.has(io_flags::DEFERRED) {
                c.set(io_flags::DEFERRED);
                self.deferred.push_back((key, c.generation));
            }
            return;
        }
        if c.input.capacity() == 0 {
            if c.min_len as usize >= LARGE_MIN {
                c.input = self.buffers.take_for(c.min_len as usize);
            } else if c.has(io_flags::LARGE_SENDER) {
                // Writers that sent one large body send the next: skip the scratch copy.
                c.input = self.buffers.take_for(LARGE_MIN);
                if c.input.capacity() == 0 {
                    c.input = Vec::with_capacity(LARGE_START);
                }
            }
        }
        let r = match c.read_some(&mut self.scratch, READ_BUDGET) {
            Ok(r) => r,
            Err(e) => {
                self.close(key, &io_reason(&e), now);
                return;
            }
        };
        bump(&stats(&self.app).io.bytes_read, r.bytes as u64);
        if r.bytes > 0 {
            log::trace!("token={} read {} bytes", key, r.bytes);
        }
        if r.budget_hit {
            self.ready.push((key, c.generation));
        }
        self.feed(key, now, |life, input, ctx| {
            life.on_read(r.bytes, r.eof, input, ctx)
        });
    }

    fn dispatch(&mut self, key: usize) {
        let closing = self.shutdown_deadline.is_some();
        let c = &mut self.conns[key];
        self.in_flight += 1;
        // The worker sizes the output to the response; nothing is allocated for it here.
        let output = std::mem::take(&mut c.output);
        c.written = 0;
        self.outbox.push(Job {
            token: key,
            generation: c.generation,
            input: std::mem::take(&mut c.input),
            output,
            exchange: std::mem::take(&mut c.exchange),
            closing,
        });
    }

    // ----- completions ----------------------------------------------------------------

    /// Takes log acknowledgements, then worker completions (see
    /// [`WorkerPool::take_completions`]), and handles them the other way round: a job's
    /// completion is always handled before the ack of the write it deferred.
    fn drain_completions(&mut self, now: Instant) {
        self.pool.take_completions(&mut self.acks, &mut self.done);
        if !self.done.is_empty() {
            let mut done = std::mem::take(&mut self.done);
            log::trace!("{} completions", done.len());
            for d in done.drain(..) {
                self.complete(d, now);
            }
            self.done = done;
        }
        if !self.acks.is_empty() {
            let mut acks = std::mem::take(&mut self.acks);
            log::trace!("{} log acknowledgements", acks.len());
            for a in acks.drain(..) {
                self.on_ack(a, now);
            }
            self.acks = acks;
        }
    }

    /// A connection's held answer is ready (the log took or refused its write, the
    /// aggregator applied its delete or it failed): send the held `204`, or the answer
    /// that replaces it, and let the lifecycle go on.
    fn on_ack(&mut self, ack: Ack, now: Instant) {
        let t = ack.conn;
        let key = t.token;
        let Some(c) = self
            .conns
            .get_mut(key)
            .filter(|c| c.generation == t.generation && c.life.is_in_flight())
        else {
            // The connection closed meanwhile (a forced shutdown); its slot may be reused.
            return;
        };
        let progress = write_outcome(
            &self.app,
            &mut self.writer,
            t.held,
            &ack.outcome,
            &mut c.output,
            &format_args!("token={key}"),
        );
        c.written = 0;
        if let Progress::NeedMore { min_len, .. } = progress {
            // What the engine asked for before this request (its body, say) no longer
            // applies: the next request may be a single byte away.
            c.min_len = u32::try_from(min_len).unwrap_or(u32::MAX);
        }
        self.feed(key, now, |life, _, ctx| life.on_complete(progress, ctx));
    }

    fn complete(&mut self, d: Done, now: Instant) {
        self.in_flight -= 1;
        let key = d.token;
        let Some(c) = self
            .conns
            .get_mut(key)
            .filter(|c| c.generation == d.generation && c.life.is_in_flight())
        else {
            // The connection closed while its job was out (its slot may be reused).
            self.buffers.give(d.input);
            return;
        };
        c.input = d.input;
        c.output = d.output;
        c.written = 0;
        c.exchange = d.exchange;
        if let Progress::NeedMore { min_len, .. } = d.progress {
            c.min_len = u32::try_from(min_len).unwrap_or(u32::MAX);
        }
        self.feed(key, now, |life, _, ctx| life.on_complete(d.progress, ctx));
    }

    // ----- writing --------------------------------------------------------------------

    /// Writes pending output until done or the kernel pushes back, and tells the lifecycle.
    fn write_conn(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let outcome = match c.flush() {
            Ok((outcome, n)) => {
                if n > 0 {
                    bump(&stats(&self.app).io.bytes_written, n as u64);
                    log::trace!("token={} wrote {} bytes", key, n);
                }
                outcome
            }
            Err(e) => {
                self.close(key, &io_reason(&e), now);
                return;
            }
        };
        self.feed(key, now, |life, input, ctx| match outcome {
            WriteOutcome::Blocked => life.on_write_blocked(ctx),
            WriteOutcome::Done => life.on_written(input, ctx),
        });
    }

    fn close(&mut self, key: usize, reason: &str, now: Instant) {
        if !self.conns.contains(key) {
            return;
        }
        self.timers.disarm(&mut self.conns, key);
        let mut c = self.conns.remove(key);
        // Deregister before the fd closes (on drop) and before the slot can be reused.
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.buffers.give(std::mem::take(&mut c.input));
        stats(&self.app).io.connections_active.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        match &c.peer {
            Some(peer) => log::debug!("closed token={} peer={} reason={}", key, peer, reason),
            None => log::debug!("closed token={} reason={}", key, reason),
        }
        drop(c);
        if self.accept_paused_until.is_some() {
            // A descriptor just came free: no need to wait out the pause.
            self.accept_paused_until = Some(now);
        }
    }

    // ----- deadlines ------------------------------------------------------------------

    fn expire_timers(&mut self, now: Instant) {
        if self.timers.is_empty() {
            return;
        }
        let mut expired = std::mem::take(&mut self.expired);
        self.timers.expire(&mut self.conns, now, &mut expired);
        for &key in &expired {
            self.feed(key, now, |life, _, ctx| life.on_deadline(ctx));
        }
        expired.clear();
        self.expired = expired;
    }

    // ----- shutdown -------------------------------------------------------------------

    fn on_signal(&mut self, now: Instant) {
        let mut got = false;
        for sig in self.signals.pending() {
            log::info!("received signal {}", sig);
            got = true;
        }
        if !got {
            return;
        }
        if self.shutdown_deadline.is_some() {
            log::warn!("second signal: closing every connection now");
            self.shutdown_deadline = Some(now);
            return;
        }
        self.shutdown_deadline = Some(now + self.app.config.shutdown_timeout);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
            // Dropping the listener closes it: new connections are refused from here on.
        }
        self.accept_pending = false;
        let closing: Vec<(usize, Actions)> = self
            .conns
            .iter_mut()
            .map(|(k, c)| (k, c.life.on_shutdown()))
            .filter(|(_, a)| a.close.is_some())
            .collect();
        log::info!(
            "shutting down: stopped accepting; closing {} idle connections, finishing {} others (timeout {:?})",
            closing.len(),
            self.conns.len() - closing.len(),
            self.app.config.shutdown_timeout
        );
        for (key, a) in closing {
            self.execute(key, a, now);
        }
    }
}
