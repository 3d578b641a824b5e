//! One client TCP connection driven by readiness events, and the small
//! single-threaded reactor (mio `Poll` + slab of connections) that every
//! scenario runs on. A connection moves Connecting -> Sending -> Receiving
//! -> (Idle | Draining); `Conn::drive` does all the I/O it can without
//! blocking and reports one `Step` at a time, so scenario code only decides
//! what to do next (send again, drain, hold, close, reconnect).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::http::{ResponseInfo, ResponseParser};
use crate::stats::ErrorKind;

/// Size of the shared read buffer.
const READ_BUF: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Non-blocking connect in flight.
    Connecting,
    /// Writing a request.
    Sending,
    /// Request written, waiting for the response.
    Receiving,
    /// Connected with nothing to send (a held keep-alive connection).
    Idle,
    /// Response done; waiting for the server's FIN before closing.
    Draining,
}

/// What `Conn::drive` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing more can be done until the next readiness event.
    Pending,
    /// The connect completed; the duration runs from the connect() call.
    Connected(Duration),
    /// A complete response; the duration runs from the start of the request.
    Response(ResponseInfo, Duration),
    /// The peer closed an Idle or Draining connection cleanly.
    Eof,
    /// The connection failed.
    Failed(ErrorKind),
}

pub struct Conn {
    pub stream: TcpStream,
    pub phase: Phase,
    /// When connect() was called.
    pub started: Instant,
    /// When the current request was queued.
    pub req_started: Instant,
    /// When the bench gives up on this connection (`None`: never).
    pub deadline: Option<Instant>,
    /// Scenario-specific slot number.
    pub slot: usize,
    req: Rc<[u8]>,
    sent: usize,
    parser: ResponseParser,
}

impl Conn {
    /// Queues `req` and switches to Sending; call `drive` afterwards.
    pub fn send(&mut self, req: &Rc<[u8]>, head_request: bool) {
        self.req = Rc::clone(req);
        self.sent = 0;
        self.req_started = Instant::now();
        self.parser.set_head_request(head_request);
        self.phase = Phase::Sending;
    }

    /// Length of the current request in bytes.
    pub fn request_len(&self) -> usize {
        self.req.len()
    }

    /// Waits for the server to close after a `Connection: close` response.
    pub fn drain(&mut self) {
        self.phase = Phase::Draining;
    }

    /// Holds the connection open with nothing in flight.
    pub fn hold(&mut self) {
        self.phase = Phase::Idle;
    }

    /// Does all non-blocking I/O possible in the current phase. `ready_at`
    /// is when the poller reported readiness; connect latency ends there so
    /// time spent on other connections in the same batch is not counted.
    pub fn drive(&mut self, rbuf: &mut [u8], ready_at: Instant) -> Step {
        match self.phase {
            Phase::Connecting => self.check_connect(ready_at),
            Phase::Sending => self.write_request(rbuf),
            Phase::Receiving => self.read_response(rbuf),
            Phase::Idle | Phase::Draining => self.read_until_close(rbuf),
        }
    }

    fn check_connect(&mut self, ready_at: Instant) -> Step {
        match self.stream.take_error() {
            Ok(Some(e)) | Err(e) => return Step::Failed(ErrorKind::from_io(&e)),
            Ok(None) => {}
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.phase = Phase::Idle;
                Step::Connected(ready_at.saturating_duration_since(self.started))
            }
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                Step::Pending
            }
            Err(e) => Step::Failed(ErrorKind::from_io(&e)),
        }
    }

    fn write_request(&mut self, rbuf: &mut [u8]) -> Step {
        while self.sent < self.req.len() {
            match self.stream.write(&self.req[self.sent..]) {
                Ok(0) => return Step::Failed(ErrorKind::ClosedEarly),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The server may answer (e.g. 503) before reading it all.
                    return match self.read_response(rbuf) {
                        Step::Response(info, d) => Step::Response(
                            ResponseInfo {
                                keep_alive: false,
                                ..info
                            },
                            d,
                        ),
                        Step::Pending => Step::Pending,
                        other => other,
                    };
                }
                Err(e) => {
                    // An early answer may already be waiting in the buffer.
                    if let Step::Response(info, d) = self.read_response(rbuf) {
                        return Step::Response(
                            ResponseInfo {
                                keep_alive: false,
                                ..info
                            },
                            d,
                        );
                    }
                    return Step::Failed(ErrorKind::from_io(&e));
                }
            }
        }
        // The response cannot be here yet, and its arrival will raise a
        // readiness event (edge-triggered epoll reports every new arrival):
        // skip a read() that would only say EAGAIN.
        self.phase = Phase::Receiving;
        Step::Pending
    }

    fn read_response(&mut self, rbuf: &mut [u8]) -> Step {
        loop {
            match self.stream.read(rbuf) {
                Ok(0) => {
                    return match self.parser.eof() {
                        Ok(Some(info)) => self.responded(info),
                        _ => Step::Failed(ErrorKind::ClosedEarly),
                    };
                }
                Ok(n) => match self.parser.feed(&rbuf[..n]) {
                    Ok((_, None)) => {}
                    Ok((used, Some(mut info))) => {
                        if used < n {
                            // Bytes past the response we did not ask for:
                            // do not trust this connection any further.
                            info.keep_alive = false;
                        }
                        return self.responded(info);
                    }
                    Err(_) => return Step::Failed(ErrorKind::BadResponse),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) => return Step::Failed(ErrorKind::from_io(&e)),
            }
        }
    }

    fn responded(&mut self, info: ResponseInfo) -> Step {
        self.phase = Phase::Idle;
        Step::Response(info, self.req_started.elapsed())
    }

    fn read_until_close(&mut self, rbuf: &mut [u8]) -> Step {
        loop {
            match self.stream.read(rbuf) {
                Ok(0) => return Step::Eof,
                // Unsolicited bytes on an idle connection are ignored.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Pending,
                Err(e) => {
                    return match ErrorKind::from_io(&e) {
                        // A reset after the response is as good as a close.
                        ErrorKind::Reset if self.phase == Phase::Draining => Step::Eof,
                        kind => Step::Failed(kind),
                    };
                }
            }
        }
    }
}

/// Decides what happens to a connection after each `Step`.
pub trait Handler {
    /// Returns true to keep driving this connection now (it has a new
    /// request or phase), false when it was closed or should wait.
    fn on_step(&mut self, r: &mut Reactor, key: usize, step: Step) -> bool;
}

/// A mio poller with its connections.
pub struct Reactor {
    poll: Poll,
    events: Events,
    tokens: Vec<usize>,
    /// When the last poll returned.
    polled_at: Instant,
    pub conns: Slab<Conn>,
    rbuf: Vec<u8>,
    addr: SocketAddr,
}

impl Reactor {
    pub fn new(addr: SocketAddr, capacity: usize) -> io::Result<Reactor> {
        Ok(Reactor {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            tokens: Vec::with_capacity(1024),
            polled_at: Instant::now(),
            conns: Slab::with_capacity(capacity),
            rbuf: vec![0; READ_BUF],
            addr,
        })
    }

    /// Starts a non-blocking connect; the connect latency clock starts just
    /// before the connect() system call.
    pub fn open(&mut self, slot: usize, timeout: Option<Duration>) -> Result<usize, ErrorKind> {
        let started = Instant::now();
        let mut stream = TcpStream::connect(self.addr).map_err(|e| ErrorKind::from_io(&e))?;
        // Requests and bodies go out whole; never wait on Nagle.
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| ErrorKind::from_io(&e))?;
        entry.insert(Conn {
            stream,
            phase: Phase::Connecting,
            started,
            req_started: started,
            deadline: timeout.map(|t| started + t),
            slot,
            req: Rc::from(&[][..]),
            sent: 0,
            parser: ResponseParser::new(),
        });
        Ok(key)
    }

    /// Closes and forgets a connection.
    pub fn close(&mut self, key: usize) -> Option<Conn> {
        let mut conn = self.conns.try_remove(key)?;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        Some(conn)
    }

    /// Waits up to `timeout` for readiness and drives every ready connection.
    pub fn turn<H: Handler>(&mut self, h: &mut H, timeout: Option<Duration>) -> io::Result<()> {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.polled_at = Instant::now();
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        tokens.extend(self.events.iter().map(|ev| ev.token().0));
        for &key in &tokens {
            self.pump(h, key);
        }
        self.tokens = tokens;
        Ok(())
    }

    /// Drives one connection until it has to wait for the network.
    pub fn pump<H: Handler>(&mut self, h: &mut H, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            // A connect that completed after the poll returned still ends now.
            let ready_at = self.polled_at.max(conn.started);
            let step = conn.drive(&mut self.rbuf, ready_at);
            if step == Step::Pending || !h.on_step(self, key, step) {
                return;
            }
        }
    }

    /// Keys of connections whose deadline has passed.
    pub fn expired(&self, now: Instant) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k)
            .collect()
    }
}

/// Runs `work(thread_index, connections_for_it)` on `threads` threads,
/// splitting `connections` as evenly as possible, and collects the results
/// in thread order. One thread runs on the calling thread itself.
pub fn run_split<R, F>(threads: usize, connections: usize, work: F) -> io::Result<Vec<R>>
where
    R: Send,
    F: Fn(usize, usize) -> io::Result<R> + Sync,
{
    let share = |i: usize| connections / threads + usize::from(i < connections % threads);
    if threads <= 1 {
        return Ok(vec![work(0, connections)?]);
    }
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (1..threads)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("bench-{i}"))
                    .spawn_scoped(scope, move || work(i, share(i)))
            })
            .collect::<io::Result<_>>()?;
        let mut out = vec![work(0, share(0))?];
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r?),
                Err(_) => return Err(io::Error::other("worker thread panicked")),
            }
        }
        Ok(out)
    })
}
