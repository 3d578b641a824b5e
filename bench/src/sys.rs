//! Operating-system facts the bench reads or adjusts: the RLIMIT_NOFILE
//! soft limit (raised to the hard limit at start), the kernel's
//! `ListenOverflows`/`ListenDrops` counters from `/proc/net/netstat`, a
//! server process's resident set size from `/proc/PID/status`, and CPU time
//! (user + system) of a process, of each of its threads and of the whole
//! machine from `/proc/PID/stat`, `/proc/PID/task/*/stat` and `/proc/stat`.
//! It only reads: it never signals or stops another process.

use std::collections::BTreeMap;
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

/// Length of a clock tick (the unit of `/proc` CPU times) in seconds.
pub fn tick_secs() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { 1.0 / hz as f64 } else { 0.01 }
}

/// `(comm, utime + stime in ticks)` from the text of a `/proc/.../stat` file.
/// The command name sits in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // After ")": state (field 3), ..., utime (14), stime (15).
    let mut rest = text.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

/// CPU time of process `pid`, every thread (including those that exited), in ticks.
pub fn process_cpu(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|(_, t)| t)
}

/// CPU time of each live thread of `pid` in seconds: thread id -> (comm,
/// seconds). From `schedstat` (nanoseconds on the CPU) where the kernel has
/// it: a thread's `stat` times are whole 10 ms ticks, too coarse for a thread
/// that runs a few milliseconds a second; else from `stat`.
pub fn thread_cpu(pid: u32) -> BTreeMap<u64, (String, f64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    let tick = tick_secs();
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may exit between the listing and the read: skip it.
        let Some((comm, ticks)) = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        else {
            continue;
        };
        let secs = fs::read_to_string(entry.path().join("schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(ticks as f64 * tick, |ns| ns as f64 / 1e9);
        out.insert(tid, (comm, secs));
    }
    out
}

/// The group a thread name belongs to: every run of digits replaced by `*`
/// (`worker-3` -> `worker-*`, `forward-0-2` -> `forward-*-*`).
pub fn thread_group(comm: &str) -> String {
    let mut out = String::with_capacity(comm.len());
    let mut in_digits = false;
    for ch in comm.chars() {
        if ch.is_ascii_digit() {
            if !in_digits {
                out.push('*');
            }
            in_digits = true;
        } else {
            out.push(ch);
            in_digits = false;
        }
    }
    out
}

/// `(busy, total)` ticks of all cores together from the `cpu ` line of
/// `/proc/stat` (busy = everything but idle and iowait).
pub fn machine_cpu() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat(&text)
}

fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time
    // is already inside user and nice.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
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

    #[test]
    fn stat_fields_after_the_last_paren() {
        let text =
            "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1 2 3\n";
        assert_eq!(parse_stat(text), Some(("my (odd) name".to_string(), 325)));
        assert_eq!(parse_stat("42 (x) S 1"), None);
    }

    #[test]
    fn thread_groups() {
        assert_eq!(thread_group("worker-13"), "worker-*");
        assert_eq!(thread_group("forward-0-2"), "forward-*-*");
        assert_eq!(thread_group("vmagent"), "vmagent");
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_proc_stat(text), Some((161, 1181)));
    }

    #[test]
    fn own_cpu_is_readable() {
        assert!(process_cpu(std::process::id()).is_some());
        assert!(!thread_cpu(std::process::id()).is_empty());
        assert!(machine_cpu().is_some());
    }
}
