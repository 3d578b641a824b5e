//! Operating-system facts the bench reads or adjusts: the RLIMIT_NOFILE
//! soft limit (raised to the hard limit at start), the kernel's
//! `ListenOverflows`/`ListenDrops` counters from `/proc/net/netstat`, and a
//! server process's resident set size from `/proc/PID/status`.

use std::fs;

/// File descriptors kept aside for stdio, the poller, threads and slack.
pub const FD_SLACK: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit
/// now in force.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the valid `want` struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

/// `(ListenOverflows, ListenDrops)` from `/proc/net/netstat`, if readable.
pub fn listen_counters() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    parse_netstat(&text)
}

/// Parses the `TcpExt:` header/value line pair.
pub fn parse_netstat(text: &str) -> Option<(u64, u64)> {
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names: Vec<&str> = tcp_ext.next()?.split_whitespace().skip(1).collect();
    let values: Vec<&str> = tcp_ext.next()?.split_whitespace().skip(1).collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("ListenOverflows")?, get("ListenDrops")?))
}

/// Resident set size of `pid` in KiB (VmRSS, else smaps_rollup Rss).
pub fn rss_kib(pid: u32) -> Option<u64> {
    if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/status")) {
        if let Some(v) = field_kib(&text, "VmRSS:") {
            return Some(v);
        }
    }
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    field_kib(&text, "Rss:")
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_pair_is_parsed() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops TW\nTcpExt: 1 17 19 4\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_netstat(text), Some((17, 19)));
        assert_eq!(parse_netstat("IpExt: a\nIpExt: 1\n"), None);
    }

    #[test]
    fn status_rss_is_parsed() {
        let text = "Name:\tnginx\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(field_kib(text, "VmRSS:"), Some(5120));
    }
}
