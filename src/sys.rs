//! Process-wide resources and kernel facts: what the server tunes at start-up (the
//! descriptor limit `RLIMIT_NOFILE` and table, transparent huge pages) and what `/stats`
//! reads from the kernel (resident memory, the listener's accept-queue length from
//! `TCP_INFO`, `ListenOverflows`/`ListenDrops` from `/proc/net/netstat`).
//!
//! Plain system calls, no state; called from `main.rs` and `server.rs` before any thread
//! that serves connections starts.

use std::io;

/// Soft and hard `RLIMIT_NOFILE` before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy)]
pub struct NofileLimits {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every connection is a descriptor, and
/// the default soft limit (often 1024) is far below `--max-connections`.
pub fn raise_nofile_limit() -> io::Result<NofileLimits> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit struct we own; the pointer is valid for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let soft_before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(NofileLimits {
        soft_before,
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Grows this process's descriptor table to hold `n` descriptors now, while it is still
/// single-threaded. The kernel grows the table by doubling as descriptors are handed out,
/// and in a multi-threaded process each growth waits for an RCU grace period
/// (`expand_fdtable` -> `synchronize_rcu`), which stalls the `accept4` that triggered it for
/// milliseconds — long enough for a burst to overflow a small accept queue. Duplicating a
/// descriptor onto slot `n - 1` and closing it leaves the table at full size for good.
pub fn reserve_fd_table(n: usize) {
    let Ok(limit) = raise_nofile_limit() else {
        return;
    };
    let target = (n as u64).min(limit.soft.saturating_sub(1));
    if target < 64 {
        return;
    }
    let target = target as libc::c_int;
    // SAFETY: dup2 of our own stdin (fd 0 or any open fd; on failure nothing happens) onto a
    // descriptor number nothing uses yet (far above any we have opened), closed right after.
    unsafe {
        if libc::fcntl(target, libc::F_GETFD) == -1 && libc::dup2(2, target) == target {
            libc::close(target);
        }
    }
}

/// Opts this process out of transparent huge pages. mimalloc asks for huge pages on its
/// arenas (`MADV_HUGEPAGE`), which makes resident memory grow in 2 MiB steps: a few hundred
/// KiB of real use costs 2 MiB of RAM, and memory per idle connection becomes a matter of
/// which huge page happened to be touched. Small pages keep the footprint what it is.
#[cfg(target_os = "linux")]
pub fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        // Old kernels lack the option; nothing depends on it.
        log::debug!("PR_SET_THP_DISABLE: {}", io::Error::last_os_error());
    }
}

#[cfg(not(target_os = "linux"))]
pub fn disable_transparent_huge_pages() {}

/// How a thread hands the memory it freed back to the OS once it is idle (see
/// [`release_idle_memory`]); set by the binary for its allocator.
static IDLE_RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what [`release_idle_memory`] calls (once; later calls are ignored).
pub fn set_idle_release(release: fn()) {
    let _ = IDLE_RELEASE.set(release);
}

/// Called by a thread that has been idle a while (a worker after
/// `tuning::IDLE_RELEASE_AFTER` without a job): an allocator that keeps freed pages per
/// thread (mimalloc) only returns them when their thread allocates or collects, so pages
/// a burst of writes freed on a worker stay resident while it sleeps. Does nothing unless
/// the binary set a release function.
pub fn release_idle_memory() {
    if let Some(release) = IDLE_RELEASE.get() {
        release();
    }
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
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

    static RELEASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_release() {
        RELEASES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn other_release() {
        RELEASES.fetch_add(100, std::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn the_idle_release_set_first_is_the_one_called() {
        set_idle_release(count_release);
        set_idle_release(other_release);
        let before = RELEASES.load(std::sync::atomic::Ordering::SeqCst);
        release_idle_memory();
        // Idle workers of other tests may call it too, but never the second function.
        let after = RELEASES.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            after > before && (after - before) < 100,
            "{before} -> {after}"
        );
    }
}
