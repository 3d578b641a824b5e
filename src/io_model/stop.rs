//! Graceful shutdown shared by the comparison I/O models: [`Stop`] (who is serving what)
//! and the [`SignalThread`] that turns SIGTERM/SIGINT into shutting sockets down, so no
//! thread of these models waits on a socket past a shutdown. Never parses or serves.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use crate::net::errors::interrupted;

// The reactor's tuning, shared so the models differ only in their I/O architecture.

use super::lock;

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
    pub(super) deadline: OnceLock<Instant>,
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
    pub(super) fn count_forced(&self) {
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
    pub(super) fn attach(&self, slot: usize, stream: &Arc<TcpStream>) -> bool {
        let mut s = lock(&self.slots[slot]);
        if self.forced() {
            return false;
        }
        s.stream = Some(Arc::clone(stream));
        s.idle = false;
        true
    }

    pub(super) fn detach(&self, slot: usize) {
        let mut s = lock(&self.slots[slot]);
        s.stream = None;
        s.idle = false;
    }

    /// Marks the slot's connection idle (waiting for a request) or busy. Marking it idle
    /// returns `false` if shutdown has begun. Under the slot's lock: either [`Stop::begin`]
    /// sees the slot idle and wakes it, or this sees `stopping` — never neither.
    pub(super) fn set_idle(&self, slot: usize, idle: bool) -> bool {
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
