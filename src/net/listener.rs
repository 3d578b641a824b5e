//! The listening socket.
//!
//! Owns creating the listener with `socket2` (`SO_REUSEADDR`, IPv4 or IPv6, non-blocking,
//! `listen(2)` with the configured backlog) and the `somaxconn` cap on that backlog. It
//! never accepts: draining the queue is the I/O model's job. The accept-queue figures
//! `/stats` reports are read in `sys.rs`.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// A bound, listening, non-blocking socket plus what the kernel made of its backlog.
pub struct BoundListener {
    pub listener: std::net::TcpListener,
    pub local_addr: SocketAddr,
    pub backlog_configured: u32,
    /// `min(configured, somaxconn)` on Linux: the queue length the kernel really allows.
    pub backlog_effective: u32,
}

/// Binds `addr` and listens with `backlog`. Blocking mode is left to the caller's I/O model
/// (`nonblocking = true` for the reactor).
pub fn bind(addr: SocketAddr, backlog: u32, nonblocking: bool) -> io::Result<BoundListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(nonblocking)?;
    socket.bind(&addr.into())?;
    let backlog_i32 = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog_i32)?;
    let listener: std::net::TcpListener = socket.into();
    let local_addr = listener.local_addr()?;
    let backlog_effective = match somaxconn() {
        Some(max) if max < backlog => max,
        _ => backlog,
    };
    Ok(BoundListener {
        listener,
        local_addr,
        backlog_configured: backlog,
        backlog_effective,
    })
}

/// `/proc/sys/net/core/somaxconn`, where the kernel silently caps every backlog.
pub fn somaxconn() -> Option<u32> {
    let s = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_v4_with_backlog_and_reports_effective_value() {
        let b = bind("127.0.0.1:0".parse().unwrap(), 70000, true).unwrap();
        assert_ne!(b.local_addr.port(), 0);
        assert!(b.backlog_effective <= 70000);
        if let Some(max) = somaxconn() {
            assert_eq!(b.backlog_effective, max.min(70000));
        }
    }
}
