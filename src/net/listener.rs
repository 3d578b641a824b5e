//! The listening socket and the kernel facts around it.
//!
//! Owns: creating the listener with `socket2` (`SO_REUSEADDR`, IPv4 or IPv6, non-blocking,
//! `listen(2)` with the configured backlog), the `somaxconn` cap on that backlog, and reading
//! the accept-queue figures `/stats` reports (`TCP_INFO` on the
//! listener, `ListenOverflows`/`ListenDrops` from `/proc/net/netstat`). It never accepts:
//! draining the queue is the I/O model's job.

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

/// The listener's current accept-queue length. On Linux a listening socket's `TCP_INFO`
/// reports it in `tcpi_unacked` (and the backlog in `tcpi_sacked`).
#[cfg(target_os = "linux")]
pub fn accept_queue_depth(fd: std::os::fd::RawFd) -> Option<u64> {
    // SAFETY: tcp_info is a plain C struct of integers, for which all-zero bytes are valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of the sizes given; the kernel fills at
    // most `len` bytes and updates `len`. A closed or reused fd just makes the call fail.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 || info.tcpi_state != 10 {
        // 10 = TCP_LISTEN; anything else means the fd is no longer our listener.
        return None;
    }
    Some(u64::from(info.tcpi_unacked))
}

#[cfg(not(target_os = "linux"))]
pub fn accept_queue_depth(_fd: std::os::fd::RawFd) -> Option<u64> {
    None
}

/// System-wide `ListenOverflows` and `ListenDrops` from `/proc/net/netstat` (Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenCounters {
    pub overflows: u64,
    pub drops: u64,
}

pub fn listen_counters() -> Option<ListenCounters> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    parse_netstat(&text)
}

/// Parses the `TcpExt:` header/value line pair of `/proc/net/netstat`.
pub fn parse_netstat(text: &str) -> Option<ListenCounters> {
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let values = lines.next()?;
        if !header.starts_with("TcpExt:") {
            continue;
        }
        let mut out = ListenCounters::default();
        let mut found = 0;
        for (name, value) in header.split_whitespace().zip(values.split_whitespace()) {
            match name {
                "ListenOverflows" => {
                    out.overflows = value.parse().ok()?;
                    found += 1;
                }
                "ListenDrops" => {
                    out.drops = value.parse().ok()?;
                    found += 1;
                }
                _ => {}
            }
        }
        return (found == 2).then_some(out);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_pair_is_parsed() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPHPHits\n\
                    TcpExt: 0 17 19 4\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(
            parse_netstat(text),
            Some(ListenCounters {
                overflows: 17,
                drops: 19
            })
        );
        assert_eq!(parse_netstat("IpExt: A\nIpExt: 1\n"), None);
    }

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
