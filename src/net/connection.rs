//! One client connection as the reactor holds it: socket, buffers, lifecycle, deadline.
//!
//! Sized for the idle case: a keep-alive connection with nothing in progress holds no
//! buffer (both `Vec`s are empty and unallocated), no request state (`Exchange` is a null
//! box), no peer address unless debug logging wants it, and a 12-byte timer link — about
//! 100 bytes in the slab. Small requests are read through the reactor's scratch buffer into
//! vectors of exactly their size, so even a connection with a request in flight holds
//! only a few hundred bytes.
//! The methods here are the non-blocking I/O steps (read until the socket is drained,
//! write until the kernel pushes back); the decisions about what to do next are
//! [`Lifecycle`]'s, and the reactor carries them out.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use crate::http::exchange::Exchange;
use crate::net::errors::{interrupted, would_block};
use crate::net::lifecycle::{Buffered, Lifecycle};
use crate::net::timer::{Timed, TimerLink};
use crate::tuning::{DIRECT_READ, LARGE_BODY_START};

/// Bits of [`Connection::io`]: what the reactor knows about the socket and the buffers it
/// chose. Where the connection is in its life is [`Lifecycle`]'s.
pub mod io_flags {
    /// The socket may have more bytes to read (edge-triggered: until a read comes up short).
    pub const READABLE: u8 = 1 << 0;
    /// epoll reported the peer's FIN (`EPOLLRDHUP`): read on until EOF, because a short
    /// read no longer proves the socket is drained — the FIN may sit behind the data and
    /// no further edge would announce it.
    pub const PEER_FIN: u8 = 1 << 1;
    /// Waiting in the reactor's deferred list for a free job slot.
    pub const DEFERRED: u8 = 1 << 2;
    /// The last request on this connection was large (a write body past the scratch
    /// buffer): read the next one straight into a large pooled buffer.
    pub const LARGE_SENDER: u8 = 1 << 3;
}

pub struct Connection {
    pub stream: TcpStream,
    /// Kept only when debug logging is on (for the close line); boxed so it costs 8 bytes.
    pub peer: Option<Box<SocketAddr>>,
    pub generation: u32,
    /// Where the connection is in its life; every decision about it is made there.
    pub life: Lifecycle,
    /// [`io_flags`] bits.
    pub io: u8,
    pub timer: TimerLink,
    /// Dispatch to a worker once `input.len() >= min_len`.
    pub min_len: u32,
    /// How much of `output` has been written (responses are far below 4 GiB).
    pub written: u32,
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
    pub fn new(
        stream: TcpStream,
        peer: Option<Box<SocketAddr>>,
        generation: u32,
        life: Lifecycle,
    ) -> Self {
        Connection {
            stream,
            peer,
            generation,
            life,
            io: 0,
            timer: TimerLink::default(),
            min_len: 1,
            written: 0,
            input: Vec::new(),
            output: Vec::new(),
            exchange: Exchange::default(),
        }
    }

    #[inline]
    pub fn has(&self, f: u8) -> bool {
        self.io & f != 0
    }

    #[inline]
    pub fn set(&mut self, f: u8) {
        self.io |= f;
    }

    #[inline]
    pub fn clear(&mut self, f: u8) {
        self.io &= !f;
    }

    pub fn has_output(&self) -> bool {
        (self.written as usize) < self.output.len()
    }

    /// What is buffered, for the lifecycle's dispatch decision.
    #[inline]
    pub fn buffered(&self) -> Buffered {
        Buffered {
            len: self.input.len(),
            min_len: self.min_len as usize,
        }
    }

    /// Reads until the socket is drained (a short read or `WouldBlock`), EOF, or `budget`
    /// bytes. Small reads land in `scratch` and are copied into a vector of exactly their
    /// size; once a large body is expected (`min_len`) or buffered, reads go straight into
    /// `input`'s spare capacity, grown toward `min_len` so the body needs one allocation.
    pub fn read_some(&mut self, scratch: &mut [u8], budget: usize) -> io::Result<ReadOutcome> {
        let mut out = ReadOutcome::default();
        loop {
            let want = (self.min_len as usize).saturating_sub(self.input.len());
            let mut spare = self.input.capacity() - self.input.len();
            if spare < DIRECT_READ && want > scratch.len() {
                // A known large body: at most 1 MiB at a time, so an announced-but-unsent
                // body costs nothing up front.
                self.input.reserve(want.min(1 << 20));
                spare = self.input.capacity() - self.input.len();
            }
            let direct = spare >= DIRECT_READ;
            let offered = if direct { spare } else { scratch.len() };
            let result = if direct {
                read_into_spare(&self.stream, &mut self.input)
            } else {
                recv(&self.stream, scratch)
            };
            match result {
                Ok(0) => {
                    out.eof = true;
                    self.clear(io_flags::READABLE);
                    return Ok(out);
                }
                Ok(n) => {
                    if !direct {
                        if n == scratch.len() {
                            // Scratch filled up: a large body is streaming in. Size the
                            // vector once so the rest is read straight into it, rather than
                            // through scratch and repeated reallocation.
                            self.input.reserve(n + LARGE_BODY_START);
                        }
                        self.input.extend_from_slice(&scratch[..n]);
                    }
                    out.bytes += n;
                    if n < offered && !self.has(io_flags::PEER_FIN) {
                        // A short read: the socket is drained. Edge-triggered epoll reports
                        // any byte that arrives from now on, so no second read is needed
                        // just to see EAGAIN.
                        self.clear(io_flags::READABLE);
                        return Ok(out);
                    }
                    if out.bytes >= budget {
                        out.budget_hit = true;
                        return Ok(out);
                    }
                }
                Err(e) if would_block(&e) => {
                    self.clear(io_flags::READABLE);
                    return Ok(out);
                }
                Err(e) if interrupted(&e) => continue,
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
                Err(e) if would_block(&e) => return Ok(out),
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes pending output until done or the kernel pushes back. Returns bytes written.
    pub fn flush(&mut self) -> io::Result<(WriteOutcome, usize)> {
        let mut total = 0;
        while self.has_output() {
            match self.stream.write(&self.output[self.written as usize..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    total += n;
                    self.written += n as u32;
                }
                Err(e) if would_block(&e) => return Ok((WriteOutcome::Blocked, total)),
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok((WriteOutcome::Done, total))
    }
}

/// `recv(2)` into an initialised slice.
fn recv(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `recv(2)` straight into the vector's spare capacity, so buffers are never zero-filled
/// before each read. Also used by the comparison I/O models on their blocking sockets.
pub fn read_into_spare<S: AsRawFd>(stream: &S, buf: &mut Vec<u8>) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The idle-connection budget is ~200 bytes of RSS; the slab entry is most of it.
    #[test]
    fn connection_stays_small() {
        let size = std::mem::size_of::<Connection>();
        let entry = std::mem::size_of::<slab::Slab<Connection>>();
        eprintln!("Connection = {} bytes, Slab header = {}", size, entry);
        // mio's `IoSource` carries a selector id in debug builds only.
        let mio_debug = if cfg!(debug_assertions) { 16 } else { 0 };
        assert!(size <= 96 + mio_debug, "Connection grew to {} bytes", size);
    }
}
