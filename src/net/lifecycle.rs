//! The life of one client connection as a pure state machine, shared by the reactor and
//! both comparison I/O models.
//!
//! A connection reads a request, hands it to the exchange engine (a worker job in the
//! reactor, a direct call in the blocking models), writes the answer, and then reads again,
//! closes, or half-closes and lingers. Every decision on that path lives here: which
//! deadline applies (idle, head, body, write, linger), when a timeout is answered `408`
//! and when the connection just closes, what end-of-file means, when buffers go back,
//! when `TCP_NODELAY` is set, what a shutdown does to an idle or a busy connection. The
//! I/O layer reports what happened (`on_read`, `on_complete`, `on_written`,
//! `on_write_blocked`, `on_deadline`, `on_shutdown`) and carries out the [`Actions`] the
//! transition returns, in the order documented there. The parts of a streamed body follow
//! the path of pipelined requests past the high-water mark: write, then hand the
//! connection to the engine again without reading.
//!
//! It must never touch a socket, a buffer or a clock: time comes in through [`Ctx`], byte
//! counts through the arguments, and actions go out by value (no allocation: this runs for
//! every request).

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::http::exchange::{Phase, Progress};
use crate::stats::IoCounters;

/// The deadlines a connection lives by.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Keep-alive connection with no request in progress.
    pub idle: Duration,
    /// A whole request head, counted from its first byte (never extended).
    pub header: Duration,
    /// Between two reads of a body, and per stalled write.
    pub body: Duration,
    /// How long a half-closed connection drains what its client still sends.
    pub linger: Duration,
    /// A deadline that fires while the engine has the request is looked at again this
    /// much later: the engine's answer decides what the connection waits for next.
    pub recheck: Duration,
}

/// What a transition is told about the world besides its own arguments.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub now: Instant,
    pub timeouts: &'a Timeouts,
    /// Set once a graceful shutdown began: the time it gives up on busy connections.
    pub shutdown: Option<Instant>,
}

/// What the I/O layer has buffered, for the dispatch decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffered {
    /// Bytes of input held.
    pub len: usize,
    /// The engine asked to be called again once the input holds this many bytes.
    pub min_len: usize,
}

impl Buffered {
    fn ready(self) -> bool {
        self.len > 0 && self.len >= self.min_len
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for (part of) a request; the phase says which deadline applies.
    Reading(Phase),
    /// The engine has the request (and, in the reactor, its buffers); the phase is the one
    /// the request was read in.
    InFlight(Phase),
    /// Output is being written; then the connection does what [`Then`] says.
    Writing(Then),
    /// Final response written and write side shut: draining what the client still sends,
    /// so it reads our answer instead of a reset, until EOF or the linger deadline.
    Lingering,
}

/// What follows once the output is fully written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Read the next request (or the rest of this one) in this phase.
    Read(Phase),
    /// Complete requests remain in the input: call the engine again without reading.
    Dispatch(Phase),
    /// Close: the connection is not reused.
    Close,
    /// Close, but half-close and linger first: the client may still be sending.
    Linger,
}

/// Why a connection closed (the `reason=` of the debug line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    ClientClosed,
    ClientClosedMidRequest,
    NotReused,
    ClosedAfterResponse,
    IdleTimeout,
    WriteTimeout,
    LingerTimeout,
    Shutdown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ClientClosed => "client closed",
            Reason::ClientClosedMidRequest => "client closed mid-request",
            Reason::NotReused => "response complete, connection not reused",
            Reason::ClosedAfterResponse => "closed after final response",
            Reason::IdleTimeout => "idle timeout",
            Reason::WriteTimeout => "write timeout (client not reading)",
            Reason::LingerTimeout => "linger timeout",
            Reason::Shutdown => "shutdown",
        }
    }

    /// The `timeouts_*` counter this close counts in, if any.
    pub fn timeout(self) -> Option<Timeout> {
        match self {
            Reason::IdleTimeout => Some(Timeout::Idle),
            Reason::WriteTimeout => Some(Timeout::Write),
            _ => None,
        }
    }
}

/// A response the I/O layer writes on its own (no request to hand to the engine), after
/// which the connection lingers and closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    HeaderTimeout,
    BodyTimeout,
    /// Accepted past `--max-connections`.
    OverLimit,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::HeaderTimeout | Refusal::BodyTimeout => 408,
            Refusal::OverLimit => 503,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::HeaderTimeout => "timed out waiting for the request head",
            Refusal::BodyTimeout => "timed out waiting for the request body",
            Refusal::OverLimit => "too many open connections",
        }
    }

    /// Whether the answer carries `Retry-After`.
    pub fn retry_after(self) -> bool {
        self == Refusal::OverLimit
    }

    pub fn timeout(self) -> Option<Timeout> {
        match self {
            Refusal::HeaderTimeout => Some(Timeout::Header),
            Refusal::BodyTimeout => Some(Timeout::Body),
            Refusal::OverLimit => None,
        }
    }
}

/// Which `timeouts_*` counter a timeout counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    Header,
    Body,
    Idle,
    Write,
}

impl Timeout {
    /// The counter itself (the I/O layer bumps it).
    pub fn counter(self, io: &IoCounters) -> &AtomicU64 {
        match self {
            Timeout::Header => &io.timeouts_header,
            Timeout::Body => &io.timeouts_body,
            Timeout::Idle => &io.timeouts_idle,
            Timeout::Write => &io.timeouts_write,
        }
    }
}

/// The one I/O step that follows the side effects of [`Actions`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Next {
    /// Wait for readiness or the deadline.
    #[default]
    Wait,
    /// Hand the input to the engine; report its answer with [`Lifecycle::on_complete`].
    Dispatch,
    /// Write the output; report with [`Lifecycle::on_written`] or
    /// [`Lifecycle::on_write_blocked`].
    Write,
    /// Look at the input again: read if the socket may hold bytes, otherwise report an
    /// empty read (what is buffered may already be a complete request).
    Read,
}

/// What the I/O layer does after a transition, in this order:
///
/// 1. `close`: close the connection with this reason (nothing else is set then);
/// 2. `set_nodelay`: set `TCP_NODELAY` (once per connection, when it is first reused);
/// 3. `watch_writable`: register (`true`) or drop (`false`) interest in writability;
/// 4. `release_buffers`: give back the input and output buffers (nothing in progress);
/// 5. `half_close`: shut the write side; from now on input is read and thrown away;
/// 6. `respond`: drop the input and the request state and make this refusal the output;
/// 7. `arm`: (re)arm the connection's one deadline at this time;
/// 8. `next`: dispatch, write, read, or wait.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    pub close: Option<Reason>,
    pub set_nodelay: bool,
    pub watch_writable: Option<bool>,
    pub release_buffers: bool,
    pub half_close: bool,
    pub respond: Option<Refusal>,
    pub arm: Option<Instant>,
    pub next: Next,
}

impl Actions {
    fn close(reason: Reason) -> Actions {
        Actions {
            close: Some(reason),
            ..Actions::default()
        }
    }
}

/// Bits of [`Lifecycle::flags`].
const EOF: u8 = 1 << 0;
const WRITE_BLOCKED: u8 = 1 << 1;
const NODELAY: u8 = 1 << 2;

/// One connection's state: three bytes, kept in every slab entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    state: State,
    flags: u8,
}

impl Lifecycle {
    /// A connection just accepted: wait for a request under the idle deadline.
    pub fn open(ctx: &Ctx) -> (Lifecycle, Actions) {
        let life = Lifecycle {
            state: State::Reading(Phase::Idle),
            flags: 0,
        };
        let actions = Actions {
            arm: Some(ctx.now + ctx.timeouts.idle),
            ..Actions::default()
        };
        (life, actions)
    }

    /// A connection accepted past `--max-connections`: answer 503, then linger and close.
    pub fn open_over_limit() -> (Lifecycle, Actions) {
        let life = Lifecycle {
            state: State::Writing(Then::Linger),
            flags: 0,
        };
        let actions = Actions {
            respond: Some(Refusal::OverLimit),
            next: Next::Write,
            ..Actions::default()
        };
        (life, actions)
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Request bytes are wanted: the I/O layer reads into the input (in the other states
    /// it leaves the bytes in the kernel, which is the backpressure on a busy connection).
    pub fn wants_request(&self) -> bool {
        matches!(self.state, State::Reading(_))
    }

    /// Lingering: whatever arrives is read and thrown away.
    pub fn is_lingering(&self) -> bool {
        self.state == State::Lingering
    }

    pub fn is_in_flight(&self) -> bool {
        matches!(self.state, State::InFlight(_))
    }

    /// Output is waiting for the socket to become writable.
    pub fn is_write_blocked(&self) -> bool {
        self.flags & WRITE_BLOCKED != 0
    }

    /// Between requests with nothing in progress (what a shutdown closes at once).
    pub fn is_idle(&self) -> bool {
        self.state == State::Reading(Phase::Idle)
    }

    /// A read pass ended: `bytes` read (possibly 0), `eof` if the client shut its side.
    pub fn on_read(&mut self, bytes: usize, eof: bool, input: Buffered, ctx: &Ctx) -> Actions {
        let phase = match self.state {
            State::Reading(phase) => phase,
            State::Lingering if eof => return Actions::close(Reason::ClosedAfterResponse),
            // Lingering bytes are discarded; a busy connection is not read.
            _ => return Actions::default(),
        };
        if eof {
            self.flags |= EOF;
        }
        let mut actions = Actions::default();
        if bytes > 0 {
            match phase {
                Phase::Idle => {
                    // First byte of a request head: the header deadline starts now and is
                    // not extended by later bytes (that is what stops a slowloris).
                    self.state = State::Reading(Phase::Head);
                    actions.arm = Some(ctx.now + ctx.timeouts.header);
                }
                // The body deadline is the time between reads.
                Phase::Body => actions.arm = Some(ctx.now + ctx.timeouts.body),
                Phase::Head => {}
            }
        }
        self.settle(input, actions)
    }

    /// In `Reading`: dispatch a complete request, close on end-of-file, or, with nothing
    /// in progress, give the buffers back so an idle connection holds none.
    fn settle(&mut self, input: Buffered, mut actions: Actions) -> Actions {
        let State::Reading(phase) = self.state else {
            return actions;
        };
        if input.ready() {
            self.state = State::InFlight(phase);
            actions.next = Next::Dispatch;
        } else if self.flags & EOF != 0 {
            let idle = phase == Phase::Idle && input.len == 0;
            return Actions::close(if idle {
                Reason::ClientClosed
            } else {
                Reason::ClientClosedMidRequest
            });
        } else if phase == Phase::Idle && input.len == 0 {
            actions.release_buffers = true;
        }
        actions
    }

    /// The engine answered; its output is to be written. `AwaitDurable` changes nothing:
    /// the connection stays in flight (not read, deadlines only rechecked) until the write
    /// log's answer is reported as a second `on_complete` (see `durable::after_ack`).
    pub fn on_complete(&mut self, progress: Progress, ctx: &Ctx) -> Actions {
        let State::InFlight(previous) = self.state else {
            return Actions::default();
        };
        if let Progress::AwaitDurable { .. } = progress {
            return Actions::default();
        }
        let mut actions = Actions {
            next: Next::Write,
            ..Actions::default()
        };
        let then = match progress {
            Progress::NeedMore { phase, .. } => {
                let t = ctx.timeouts;
                match phase {
                    Phase::Idle => {
                        if self.flags & NODELAY == 0 {
                            // The connection is being reused: from now on small responses
                            // must not wait for Nagle (what nginx does on keep-alive).
                            self.flags |= NODELAY;
                            actions.set_nodelay = true;
                        }
                        actions.arm = Some(ctx.now + t.idle);
                    }
                    // Still the same head or body: its deadline runs on.
                    Phase::Head if previous == Phase::Head => {}
                    // Part of the next head came with the last request: its clock starts.
                    Phase::Head => actions.arm = Some(ctx.now + t.header),
                    Phase::Body if previous == Phase::Body => {}
                    Phase::Body => actions.arm = Some(ctx.now + t.body),
                }
                if phase == Phase::Idle && ctx.shutdown.is_some() {
                    Then::Close
                } else {
                    Then::Read(phase)
                }
            }
            // The next part of a streamed body is produced like the next pipelined
            // request is answered: once this output is written, by the engine again.
            Progress::WriteFirst | Progress::Streaming => Then::Dispatch(previous),
            Progress::Close { linger: true } => Then::Linger,
            Progress::Close { linger: false } | Progress::AwaitDurable { .. } => Then::Close,
        };
        self.state = State::Writing(then);
        actions
    }

    /// The socket took part of the output and pushed back.
    pub fn on_write_blocked(&mut self, ctx: &Ctx) -> Actions {
        let mut actions = Actions::default();
        if self.flags & WRITE_BLOCKED == 0 {
            self.flags |= WRITE_BLOCKED;
            actions.watch_writable = Some(true);
        }
        // A client that stops reading gets the body timeout per stall.
        actions.arm = Some(ctx.now + ctx.timeouts.body);
        actions
    }

    /// All output is written.
    pub fn on_written(&mut self, input: Buffered, ctx: &Ctx) -> Actions {
        let State::Writing(then) = self.state else {
            return Actions::default();
        };
        let mut actions = Actions::default();
        if self.flags & WRITE_BLOCKED != 0 {
            self.flags &= !WRITE_BLOCKED;
            actions.watch_writable = Some(false);
            // The write deadline is over; the next state's own deadline applies again.
            if let Then::Read(phase) | Then::Dispatch(phase) = then {
                actions.arm = Some(ctx.now + phase_timeout(ctx.timeouts, phase));
            }
        }
        match then {
            Then::Close => Actions::close(Reason::NotReused),
            Then::Linger if self.flags & EOF != 0 => Actions::close(Reason::NotReused),
            Then::Linger => {
                self.state = State::Lingering;
                let mut deadline = ctx.now + ctx.timeouts.linger;
                if let Some(d) = ctx.shutdown {
                    deadline = deadline.min(d);
                }
                actions.half_close = true;
                actions.release_buffers = true;
                actions.arm = Some(deadline);
                // Bytes may already be waiting; no new readiness edge would announce them.
                actions.next = Next::Read;
                actions
            }
            Then::Dispatch(phase) => {
                self.state = State::InFlight(phase);
                actions.next = Next::Dispatch;
                actions
            }
            Then::Read(phase) => {
                self.state = State::Reading(phase);
                if ctx.shutdown.is_some() && phase == Phase::Idle && input.len == 0 {
                    return Actions::close(Reason::Shutdown);
                }
                if self.flags & EOF != 0 {
                    // Nothing more will arrive: serve what is buffered, or close.
                    return self.settle(input, actions);
                }
                actions.next = Next::Read;
                actions
            }
        }
    }

    /// The armed deadline passed.
    pub fn on_deadline(&mut self, ctx: &Ctx) -> Actions {
        let refusal = match self.state {
            // The engine is about to answer; judge the connection when it has.
            State::InFlight(_) => {
                return Actions {
                    arm: Some(ctx.now + ctx.timeouts.recheck),
                    ..Actions::default()
                };
            }
            State::Writing(_) => return Actions::close(Reason::WriteTimeout),
            State::Lingering => return Actions::close(Reason::LingerTimeout),
            State::Reading(Phase::Idle) => return Actions::close(Reason::IdleTimeout),
            State::Reading(Phase::Head) => Refusal::HeaderTimeout,
            State::Reading(Phase::Body) => Refusal::BodyTimeout,
        };
        // A request in progress is told why it failed; then the connection lingers, since
        // the client may still be sending.
        self.state = State::Writing(Then::Linger);
        Actions {
            respond: Some(refusal),
            next: Next::Write,
            ..Actions::default()
        }
    }

    /// A graceful shutdown began: an idle connection closes now; one with a request in
    /// progress finishes it (the engine answers with `Connection: close`).
    pub fn on_shutdown(&mut self) -> Actions {
        if self.is_idle() {
            Actions::close(Reason::Shutdown)
        } else {
            Actions::default()
        }
    }
}

fn phase_timeout(t: &Timeouts, phase: Phase) -> Duration {
    match phase {
        Phase::Idle => t.idle,
        Phase::Head => t.header,
        Phase::Body => t.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        idle: Duration::from_secs(75),
        header: Duration::from_secs(10),
        body: Duration::from_secs(30),
        linger: Duration::from_secs(2),
        recheck: Duration::from_millis(50),
    };

    fn ctx(now: Instant) -> Ctx<'static> {
        Ctx {
            now,
            timeouts: &T,
            shutdown: None,
        }
    }

    fn buf(len: usize, min_len: usize) -> Buffered {
        Buffered { len, min_len }
    }

    fn need(phase: Phase, min_len: usize) -> Progress {
        Progress::NeedMore { phase, min_len }
    }

    fn close(reason: Reason) -> Actions {
        Actions::close(reason)
    }

    /// A fresh connection that read a complete request and handed it to the engine.
    fn dispatched(now: Instant, len: usize) -> Lifecycle {
        let (mut l, _) = Lifecycle::open(&ctx(now));
        let a = l.on_read(len, false, buf(len, 1), &ctx(now));
        assert_eq!(a.next, Next::Dispatch);
        l
    }

    #[test]
    fn a_write_awaiting_the_log_stays_in_flight_until_its_ack() {
        let now = Instant::now();
        let mut l = dispatched(now, 100);
        // The engine held a 204 for the log: nothing to do yet, nothing read.
        let a = l.on_complete(Progress::AwaitDurable { close: false }, &ctx(now));
        assert_eq!(a, Actions::default());
        assert!(l.is_in_flight() && !l.wants_request());
        // Deadlines meanwhile are only rechecked.
        let a = l.on_deadline(&ctx(now + T.idle));
        assert_eq!(a.arm, Some(now + T.idle + T.recheck));
        assert!(l.is_in_flight());
        // The ack: write the 204, then wait for the next request under the idle deadline.
        let p = crate::durable::after_ack(true, false, false);
        let a = l.on_complete(p, &ctx(now));
        assert_eq!(a.next, Next::Write);
        assert_eq!(a.arm, Some(now + T.idle));
        assert_eq!(l.on_written(buf(0, 1), &ctx(now)).next, Next::Read);
        // A failed write closes after its 503.
        let mut l = dispatched(now, 100);
        let _ = l.on_complete(Progress::AwaitDurable { close: false }, &ctx(now));
        let a = l.on_complete(crate::durable::after_ack(false, false, true), &ctx(now));
        assert_eq!(a.next, Next::Write);
        assert_eq!(l.on_written(buf(0, 1), &ctx(now)), close(Reason::NotReused));
    }

    #[test]
    fn open_arms_the_idle_deadline_and_waits() {
        let now = Instant::now();
        let (l, a) = Lifecycle::open(&ctx(now));
        assert_eq!(l.state(), State::Reading(Phase::Idle));
        assert_eq!(a.arm, Some(now + T.idle));
        assert_eq!(a.next, Next::Wait);
        assert!(l.wants_request() && l.is_idle());
    }

    #[test]
    fn first_byte_starts_the_header_deadline_once() {
        let now = Instant::now();
        let (mut l, _) = Lifecycle::open(&ctx(now));
        let a = l.on_read(5, false, buf(5, 1), &ctx(now));
        // Five bytes are "ready" for the engine with min_len 1: dispatched, header armed.
        assert_eq!(a.arm, Some(now + T.header));
        assert_eq!(a.next, Next::Dispatch);
        assert_eq!(l.state(), State::InFlight(Phase::Head));
        // The engine wants more of the same head: no new deadline.
        let a = l.on_complete(need(Phase::Head, 6), &ctx(now + Duration::from_secs(3)));
        assert_eq!(a.arm, None);
        assert_eq!(a.next, Next::Write);
        let a = l.on_written(buf(5, 6), &ctx(now + Duration::from_secs(3)));
        assert_eq!(a.next, Next::Read);
        assert_eq!(l.state(), State::Reading(Phase::Head));
        // Later head bytes do not extend it either.
        let a = l.on_read(0, false, buf(5, 6), &ctx(now + Duration::from_secs(4)));
        assert_eq!(a, Actions::default());
        let a = l.on_read(0, false, buf(5, 6), &ctx(now));
        assert_eq!(a.arm, None);
    }

    #[test]
    fn keep_alive_reuse_sets_nodelay_once_and_releases_buffers_when_idle() {
        let now = Instant::now();
        let mut l = dispatched(now, 18);
        let a = l.on_complete(need(Phase::Idle, 1), &ctx(now));
        assert!(a.set_nodelay);
        assert_eq!(a.arm, Some(now + T.idle));
        assert_eq!(a.next, Next::Write);
        assert_eq!(l.state(), State::Writing(Then::Read(Phase::Idle)));
        let a = l.on_written(buf(0, 1), &ctx(now));
        assert_eq!(a.next, Next::Read);
        // Nothing more to read: idle, the buffers go back.
        let a = l.on_read(0, false, buf(0, 1), &ctx(now));
        assert!(a.release_buffers);
        assert!(l.is_idle());
        // The second request: same path, no second TCP_NODELAY.
        let _ = l.on_read(18, false, buf(18, 1), &ctx(now));
        let a = l.on_complete(need(Phase::Idle, 1), &ctx(now));
        assert!(!a.set_nodelay);
    }

    #[test]
    fn body_deadline_is_rearmed_by_every_read() {
        let now = Instant::now();
        let mut l = dispatched(now, 100);
        let a = l.on_complete(need(Phase::Body, 1000), &ctx(now));
        assert_eq!(a.arm, Some(now + T.body));
        let _ = l.on_written(buf(100, 1000), &ctx(now));
        let later = now + Duration::from_secs(20);
        let a = l.on_read(200, false, buf(300, 1000), &ctx(later));
        assert_eq!(a.arm, Some(later + T.body));
        assert_eq!(a.next, Next::Wait);
        // The body completes: dispatched; a body still short keeps its deadline.
        let a = l.on_read(700, false, buf(1000, 1000), &ctx(later));
        assert_eq!(a.next, Next::Dispatch);
        let a = l.on_complete(need(Phase::Body, 2000), &ctx(later));
        assert_eq!(a.arm, None);
    }

    #[test]
    fn pipelining_with_write_first_dispatches_again_after_writing() {
        let now = Instant::now();
        let mut l = dispatched(now, 4000);
        let a = l.on_complete(Progress::WriteFirst, &ctx(now));
        assert_eq!(a.next, Next::Write);
        assert_eq!(a.arm, None);
        assert_eq!(l.state(), State::Writing(Then::Dispatch(Phase::Head)));
        let a = l.on_written(buf(2000, 1), &ctx(now));
        assert_eq!(a.next, Next::Dispatch);
        assert_eq!(l.state(), State::InFlight(Phase::Head));
        // The rest fits: back to idle.
        let a = l.on_complete(need(Phase::Idle, 1), &ctx(now));
        assert_eq!(a.next, Next::Write);
    }

    #[test]
    fn a_streamed_body_is_written_a_part_at_a_time_and_a_shutdown_lets_it_finish() {
        let now = Instant::now();
        let mut l = dispatched(now, 30);
        for _ in 0..3 {
            let a = l.on_complete(Progress::Streaming, &ctx(now));
            assert_eq!(a.next, Next::Write);
            assert_eq!(a.arm, None);
            assert!(!l.wants_request());
            // Written: the engine makes the next part, nothing is read meanwhile.
            assert_eq!(l.on_written(buf(0, 1), &ctx(now)).next, Next::Dispatch);
            assert!(l.is_in_flight());
            // A shutdown does not cut it short.
            assert_eq!(l.on_shutdown(), Actions::default());
        }
        // A client that stops reading: the write deadline, then a quiet close.
        let _ = l.on_complete(Progress::Streaming, &ctx(now));
        let a = l.on_write_blocked(&ctx(now));
        assert_eq!(a.arm, Some(now + T.body));
        assert_eq!(
            l.on_deadline(&ctx(now + T.body)),
            close(Reason::WriteTimeout)
        );
    }

    #[test]
    fn a_blocked_write_watches_writability_and_restores_the_phase_deadline() {
        let now = Instant::now();
        let mut l = dispatched(now, 10);
        let _ = l.on_complete(need(Phase::Idle, 1), &ctx(now));
        let a = l.on_write_blocked(&ctx(now));
        assert_eq!(a.watch_writable, Some(true));
        assert_eq!(a.arm, Some(now + T.body));
        assert!(l.is_write_blocked());
        // A second stall re-arms but does not re-register.
        let t1 = now + Duration::from_secs(1);
        let a = l.on_write_blocked(&ctx(t1));
        assert_eq!(a.watch_writable, None);
        assert_eq!(a.arm, Some(t1 + T.body));
        let t2 = now + Duration::from_secs(2);
        let a = l.on_written(buf(0, 1), &ctx(t2));
        assert_eq!(a.watch_writable, Some(false));
        assert_eq!(a.arm, Some(t2 + T.idle));
        assert!(!l.is_write_blocked());
    }

    #[test]
    fn write_timeout_closes_quietly() {
        let now = Instant::now();
        let mut l = dispatched(now, 10);
        let _ = l.on_complete(need(Phase::Idle, 1), &ctx(now));
        let _ = l.on_write_blocked(&ctx(now));
        let a = l.on_deadline(&ctx(now + T.body));
        assert_eq!(a, close(Reason::WriteTimeout));
        assert_eq!(Reason::WriteTimeout.timeout(), Some(Timeout::Write));
    }

    #[test]
    fn idle_timeout_closes_without_a_response() {
        let now = Instant::now();
        let (mut l, _) = Lifecycle::open(&ctx(now));
        let a = l.on_deadline(&ctx(now + T.idle));
        assert_eq!(a, close(Reason::IdleTimeout));
        assert_eq!(a.respond, None);
    }

    #[test]
    fn header_and_body_timeouts_answer_408_then_linger() {
        let now = Instant::now();
        for (phase, refusal) in [
            (Phase::Head, Refusal::HeaderTimeout),
            (Phase::Body, Refusal::BodyTimeout),
        ] {
            let mut l = dispatched(now, 10);
            let _ = l.on_complete(need(phase, 100), &ctx(now));
            let _ = l.on_written(buf(10, 100), &ctx(now));
            let a = l.on_deadline(&ctx(now + T.header));
            assert_eq!(a.respond, Some(refusal));
            assert_eq!(refusal.status(), 408);
            assert_eq!(a.next, Next::Write);
            assert_eq!(l.state(), State::Writing(Then::Linger));
            let later = now + T.header;
            let a = l.on_written(buf(0, 100), &ctx(later));
            assert!(a.half_close && a.release_buffers);
            assert_eq!(a.arm, Some(later + T.linger));
            assert_eq!(a.next, Next::Read);
            assert!(l.is_lingering());
        }
    }

    #[test]
    fn lingering_ends_at_eof_or_its_deadline() {
        let now = Instant::now();
        let mut l = dispatched(now, 10);
        let _ = l.on_complete(Progress::Close { linger: true }, &ctx(now));
        let _ = l.on_written(buf(0, 1), &ctx(now));
        assert!(l.is_lingering());
        assert!(!l.wants_request());
        assert_eq!(
            l.on_read(500, false, buf(0, 1), &ctx(now)),
            Actions::default()
        );
        assert_eq!(
            l.on_read(0, true, buf(0, 1), &ctx(now)),
            close(Reason::ClosedAfterResponse)
        );
        assert_eq!(
            l.on_deadline(&ctx(now + T.linger)),
            close(Reason::LingerTimeout)
        );
    }

    #[test]
    fn linger_after_over_limit_refusal() {
        let now = Instant::now();
        let (mut l, a) = Lifecycle::open_over_limit();
        assert_eq!(a.respond, Some(Refusal::OverLimit));
        assert!(Refusal::OverLimit.retry_after());
        assert_eq!(a.next, Next::Write);
        let a = l.on_written(buf(0, 1), &ctx(now));
        assert!(a.half_close);
        assert!(l.is_lingering());
    }

    #[test]
    fn linger_is_cut_short_by_the_shutdown_deadline() {
        let now = Instant::now();
        let mut l = dispatched(now, 10);
        let _ = l.on_complete(Progress::Close { linger: true }, &ctx(now));
        let soon = now + Duration::from_millis(300);
        let c = Ctx {
            shutdown: Some(soon),
            ..ctx(now)
        };
        assert_eq!(l.on_written(buf(0, 1), &c).arm, Some(soon));
    }

    #[test]
    fn close_without_linger_and_linger_after_eof_close_at_once() {
        let now = Instant::now();
        let mut l = dispatched(now, 10);
        let _ = l.on_complete(Progress::Close { linger: false }, &ctx(now));
        assert_eq!(l.on_written(buf(0, 1), &ctx(now)), close(Reason::NotReused));
        // The client already shut its side: nothing to drain.
        let (mut l, _) = Lifecycle::open(&ctx(now));
        let _ = l.on_read(10, true, buf(10, 1), &ctx(now));
        let _ = l.on_complete(Progress::Close { linger: true }, &ctx(now));
        assert_eq!(l.on_written(buf(0, 1), &ctx(now)), close(Reason::NotReused));
    }

    #[test]
    fn eof_when_idle_or_mid_request() {
        let now = Instant::now();
        let (mut l, _) = Lifecycle::open(&ctx(now));
        assert_eq!(
            l.on_read(0, true, buf(0, 1), &ctx(now)),
            close(Reason::ClientClosed)
        );
        let (mut l, _) = Lifecycle::open(&ctx(now));
        let _ = l.on_read(10, false, buf(10, 1), &ctx(now));
        let _ = l.on_complete(need(Phase::Head, 11), &ctx(now));
        let _ = l.on_written(buf(10, 11), &ctx(now));
        assert_eq!(
            l.on_read(0, true, buf(10, 11), &ctx(now)),
            close(Reason::ClientClosedMidRequest)
        );
    }

    #[test]
    fn eof_with_a_complete_request_serves_it_then_closes() {
        let now = Instant::now();
        let (mut l, _) = Lifecycle::open(&ctx(now));
        // Request and FIN in one read: answered first.
        let a = l.on_read(18, true, buf(18, 1), &ctx(now));
        assert_eq!(a.next, Next::Dispatch);
        let _ = l.on_complete(need(Phase::Idle, 1), &ctx(now));
        // Written: EOF was seen, so no read — the connection closes.
        assert_eq!(
            l.on_written(buf(0, 1), &ctx(now)),
            close(Reason::ClientClosed)
        );
        // A pipelined second request behind the FIN is still dispatched.
        let (mut l, _) = Lifecycle::open(&ctx(now));
        let _ = l.on_read(36, true, buf(36, 1), &ctx(now));
        let _ = l.on_complete(Progress::WriteFirst, &ctx(now));
        assert_eq!(l.on_written(buf(18, 1), &ctx(now)).next, Next::Dispatch);
    }

    #[test]
    fn shutdown_closes_idle_connections_and_lets_busy_ones_finish() {
        let now = Instant::now();
        let (mut idle, _) = Lifecycle::open(&ctx(now));
        assert_eq!(idle.on_shutdown(), close(Reason::Shutdown));
        let mut busy = dispatched(now, 10);
        assert_eq!(busy.on_shutdown(), Actions::default());
        let mut lingering = dispatched(now, 10);
        let _ = lingering.on_complete(Progress::Close { linger: true }, &ctx(now));
        let _ = lingering.on_written(buf(0, 1), &ctx(now));
        assert_eq!(lingering.on_shutdown(), Actions::default());
        // The busy one's answer comes back keep-alive: it closes once written.
        let c = Ctx {
            shutdown: Some(now + Duration::from_secs(30)),
            ..ctx(now)
        };
        let _ = busy.on_complete(need(Phase::Idle, 1), &c);
        assert_eq!(busy.state(), State::Writing(Then::Close));
        assert_eq!(busy.on_written(buf(0, 1), &c), close(Reason::NotReused));
        // One waiting for the rest of a head when the shutdown began is idle once answered.
        let mut partial = dispatched(now, 10);
        let _ = partial.on_complete(need(Phase::Head, 20), &ctx(now));
        assert_eq!(partial.on_written(buf(10, 20), &c).next, Next::Read);
    }

    #[test]
    fn a_deadline_while_in_flight_is_looked_at_again_after_the_answer() {
        let now = Instant::now();
        let mut l = dispatched(now, 10);
        let late = now + T.header;
        let a = l.on_deadline(&ctx(late));
        assert_eq!(a.arm, Some(late + T.recheck));
        assert_eq!(a.close, None);
        assert!(l.is_in_flight());
        // The head is still incomplete: the recheck finds it overdue and answers 408.
        let _ = l.on_complete(need(Phase::Head, 11), &ctx(late));
        let _ = l.on_written(buf(10, 11), &ctx(late));
        let a = l.on_deadline(&ctx(late + T.recheck));
        assert_eq!(a.respond, Some(Refusal::HeaderTimeout));
    }

    #[test]
    fn stale_events_change_nothing() {
        let now = Instant::now();
        let (mut l, _) = Lifecycle::open(&ctx(now));
        let before = l;
        assert_eq!(
            l.on_complete(need(Phase::Idle, 1), &ctx(now)),
            Actions::default()
        );
        assert_eq!(l.on_written(buf(0, 1), &ctx(now)), Actions::default());
        assert_eq!(l, before);
        let mut busy = dispatched(now, 10);
        assert_eq!(
            busy.on_read(10, false, buf(10, 1), &ctx(now)),
            Actions::default()
        );
    }

    #[test]
    fn lifecycle_stays_small() {
        assert!(std::mem::size_of::<Lifecycle>() <= 3);
    }
}
