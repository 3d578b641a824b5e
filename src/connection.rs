//! One client connection as the reactor holds it: socket, buffers, state flags, deadline.
//!
//! Sized for the idle case: a keep-alive connection with nothing in progress holds no
//! buffer (both `Vec`s are empty, their memory back in the reactor's pool), no request
//! state (`Exchange` is a null box) and a 12-byte timer link — about 130 bytes in the slab.
//! The methods here are the non-blocking I/O steps (read until the socket is drained,
//! write until the kernel pushes back); the decisions about what to do next are the
//! reactor's.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use crate::exchange::{Exchange, Phase};
use crate::timer::{Timed, TimerLink};

/// Where a connection is in its life, for deadlines and shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for (part of) a request; the phase says which timeout applies.
    Reading(Phase),
    /// Final response written and write side shut: draining what the client still sends
    /// so it gets to read our answer instead of a reset, until EOF or the linger deadline.
    Lingering,
}

pub mod flags {
    /// The socket may have more bytes to read (edge-triggered: until a read comes up short).
    pub const READABLE: u16 = 1 << 0;
    /// The client shut its write side (EOF seen).
    pub const READ_CLOSED: u16 = 1 << 1;
    /// A job for this connection is with a worker (its buffers too).
    pub const IN_FLIGHT: u16 = 1 << 2;
    /// `WRITABLE` interest is registered because output is waiting for socket space.
    pub const WANT_WRITE: u16 = 1 << 3;
    /// Close (cleanly) once the output is written.
    pub const CLOSE_AFTER_WRITE: u16 = 1 << 4;
    /// Close after writing, but linger: the client may still be sending.
    pub const LINGER_AFTER_WRITE: u16 = 1 << 5;
    /// Complete requests remain in the input: dispatch again as soon as output is written.
    pub const DISPATCH_AFTER_WRITE: u16 = 1 << 6;
    /// `TCP_NODELAY` has been set (done once the connection is reused, like nginx).
    pub const NODELAY: u16 = 1 << 7;
    /// epoll reported the peer's FIN (`EPOLLRDHUP`): read on until EOF, because a short
    /// read no longer proves the socket is drained — the FIN may sit behind the data and
    /// no further edge would announce it.
    pub const PEER_FIN: u16 = 1 << 8;
}

pub struct Connection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub generation: u32,
    pub flags: u16,
    pub state: State,
    pub timer: TimerLink,
    /// Dispatch to a worker once `input.len() >= min_len`.
    pub min_len: u32,
    /// How much of `output` has been written.
    pub written: usize,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    pub exchange: Exchange,
}

impl Timed for Connection {
    fn link(&mut self) -> &mut TimerLink {
        &mut self.timer
    }
}

/// What a read pass found.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadOutcome {
    pub bytes: usize,
    pub eof: bool,
    /// The pass stopped on its byte budget with the socket possibly not drained.
    pub budget_hit: bool,
}

/// What a write pass achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Everything written.
    Done,
    /// The kernel's send buffer is full; wait for `WRITABLE`.
    Blocked,
}

impl Connection {
    pub fn new(stream: TcpStream, peer: SocketAddr, generation: u32) -> Self {
        Connection {
            stream,
            peer,
            generation,
            flags: 0,
            state: State::Reading(Phase::Idle),
            timer: TimerLink::default(),
            min_len: 1,
            written: 0,
            input: Vec::new(),
            output: Vec::new(),
            exchange: Exchange::default(),
        }
    }

    #[inline]
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    #[inline]
    pub fn set(&mut self, f: u16) {
        self.flags |= f;
    }

    #[inline]
    pub fn clear(&mut self, f: u16) {
        self.flags &= !f;
    }

    pub fn has_output(&self) -> bool {
        self.written < self.output.len()
    }

    /// Nothing in progress: no job out, no bytes buffered either way, no partial request.
    pub fn is_idle(&self) -> bool {
        !self.has(flags::IN_FLIGHT)
            && self.input.is_empty()
            && !self.has_output()
            && self.exchange.is_idle()
    }

    /// Reads until the socket is drained (a short read or `WouldBlock`), EOF, or `budget`
    /// bytes. Grows `input` toward `min_len` so a large body lands in one allocation.
    pub fn read_some(&mut self, budget: usize) -> io::Result<ReadOutcome> {
        let mut out = ReadOutcome::default();
        loop {
            let want = (self.min_len as usize).saturating_sub(self.input.len());
            if self.input.capacity() - self.input.len() < 512 {
                // At least 4 KiB, up to what the pending request still needs, at most 1 MiB
                // at a time so an announced-but-unsent body costs nothing up front.
                let grow = want.clamp(4096, 1 << 20);
                self.input.reserve(grow);
            }
            match read_into_spare(&self.stream, &mut self.input) {
                Ok(0) => {
                    out.eof = true;
                    self.clear(flags::READABLE);
                    return Ok(out);
                }
                Ok(n) => {
                    out.bytes += n;
                    let spare_after = self.input.capacity() - self.input.len();
                    if spare_after > 0 && !self.has(flags::PEER_FIN) {
                        // A short read: the socket is drained. Edge-triggered epoll reports
                        // any byte that arrives from now on, so no second read is needed
                        // just to see EAGAIN.
                        self.clear(flags::READABLE);
                        return Ok(out);
                    }
                    if out.bytes >= budget {
                        out.budget_hit = true;
                        return Ok(out);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.clear(flags::READABLE);
                    return Ok(out);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and throws away whatever the client sends (lingering close).
    pub fn discard_input(&mut self, scratch: &mut [u8]) -> io::Result<ReadOutcome> {
        let mut out = ReadOutcome::default();
        loop {
            match io::Read::read(&mut self.stream, scratch) {
                Ok(0) => {
                    out.eof = true;
                    return Ok(out);
                }
                Ok(n) => {
                    out.bytes += n;
                    if n < scratch.len() {
                        return Ok(out);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes pending output until done or the kernel pushes back. Returns bytes written.
    pub fn flush(&mut self) -> io::Result<(WriteOutcome, usize)> {
        let mut total = 0;
        while self.has_output() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    self.written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok((WriteOutcome::Blocked, total));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok((WriteOutcome::Done, total))
    }
}

/// `recv(2)` straight into the vector's spare capacity, so buffers are never zero-filled
/// before each read.
fn read_into_spare(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len();
    // SAFETY: `spare` is the vector's uninitialised tail, valid for writes of `len` bytes;
    // recv writes at most `len` bytes there and returns how many it wrote.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            spare.as_mut_ptr() as *mut libc::c_void,
            len,
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised exactly `n <= len` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}
