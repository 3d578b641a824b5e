//! The servers `compare` measures and the processes it runs: each server is started on
//! 127.0.0.1 with a port picked here (pinned to core 0 with `taskset` when there are two
//! cores or more), waited for until it accepts, metered through `/proc/PID/stat` (its own
//! and its children's CPU time), and stopped by PID — SIGTERM, then SIGKILL, then any child
//! it left behind. Scenario runs are this same program as a child process (pinned to
//! core 1), killed by PID if they overrun their bound. Nothing here listens beyond loopback.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept its first connection.
const START_WAIT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// What can be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Reactor,
    Threadpool,
    Blocking,
    Nginx,
    VictoriaMetrics,
}

impl Target {
    pub const MODELS: [Target; 3] = [Target::Reactor, Target::Threadpool, Target::Blocking];

    pub fn name(self) -> &'static str {
        match self {
            Target::Reactor => "reactor",
            Target::Threadpool => "threadpool",
            Target::Blocking => "blocking",
            Target::Nginx => "nginx",
            Target::VictoriaMetrics => "victoria-metrics",
        }
    }
}

/// Programs and settings found once at the start.
pub struct Env {
    pub server_bin: PathBuf,
    pub bench_bin: PathBuf,
    pub nginx: Option<PathBuf>,
    pub victoria: Option<PathBuf>,
    /// `taskset` exists and there are at least two cores.
    pub pin: bool,
    pub pool_threads: usize,
    /// Private scratch (nginx prefixes, VictoriaMetrics storage); removed at the end.
    pub tmp: PathBuf,
    pub logs: PathBuf,
}

/// `name` in `$PATH` (plus the sbin directories, where nginx lives).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A free loopback port (bound and released; the window for a collision is tiny).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A command run under `taskset -c CORE` when pinning.
fn pinned(env: &Env, core: u32, program: &Path) -> Command {
    if env.pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A server process started by [`start`]. Killed (with its children) if dropped unstopped.
pub struct Running {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub target: Target,
    /// Scratch of this server only (nginx prefix, VictoriaMetrics storage).
    scratch: Option<PathBuf>,
    stopped: bool,
}

/// Starts `target` listening on a fresh loopback port with `backlog` (where the server has
/// such a setting), logging to `log`, and waits until it accepts connections.
pub fn start(env: &Env, target: Target, backlog: u32, log: &Path) -> Result<Running, String> {
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log_file = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut scratch = None;
    let mut cmd = match target {
        Target::Reactor | Target::Threadpool | Target::Blocking => {
            let mut c = pinned(env, 0, &env.server_bin);
            c.arg("--listen")
                .arg(addr.to_string())
                .arg("--backlog")
                .arg(backlog.to_string())
                .arg("--io-model")
                .arg(target.name())
                .arg("--shutdown-timeout")
                .arg("5")
                .env("RUST_LOG", "warn");
            if target == Target::Threadpool {
                c.arg("--workers").arg(env.pool_threads.to_string());
            }
            c
        }
        Target::Nginx => {
            let nginx = env.nginx.as_deref().ok_or("nginx is not installed")?;
            let prefix = env.tmp.join(format!("nginx-{port}"));
            fs::create_dir_all(prefix.join("logs"))
                .map_err(|e| format!("{}: {e}", prefix.display()))?;
            let conf = prefix.join("nginx.conf");
            fs::write(&conf, nginx_conf(&prefix, addr, backlog))
                .map_err(|e| format!("{}: {e}", conf.display()))?;
            let mut c = pinned(env, 0, nginx);
            c.arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(prefix.join("logs/error.log"));
            scratch = Some(prefix);
            c
        }
        Target::VictoriaMetrics => {
            let vm = env
                .victoria
                .as_deref()
                .ok_or("victoria-metrics is not installed")?;
            let data = env.tmp.join(format!("victoria-{port}"));
            let mut c = pinned(env, 0, vm);
            c.arg(format!("-httpListenAddr={addr}"))
                .arg(format!("-storageDataPath={}", data.display()))
                .arg("-loggerLevel=ERROR");
            scratch = Some(data);
            c
        }
    };
    let err_file = log_file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(err_file))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", target.name()))?;
    let mut running = Running {
        pid: child.id(),
        child,
        addr,
        target,
        scratch,
        stopped: false,
    };
    let deadline = Instant::now() + START_WAIT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            running.stopped = true;
            return Err(format!(
                "{} exited at start ({status}); see {}",
                target.name(),
                log.display()
            ));
        }
        if Instant::now() >= deadline {
            running.stop();
            return Err(format!(
                "{} did not accept connections within {:?}; see {}",
                target.name(),
                START_WAIT,
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// nginx as the reference event-driven server: one worker, `return 204`, no access log,
/// everything under a private prefix.
fn nginx_conf(prefix: &Path, addr: SocketAddr, backlog: u32) -> String {
    let p = prefix.display();
    format!(
        "worker_processes 1;\n\
         daemon off;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/logs/error.log warn;\n\
         worker_rlimit_nofile 20000;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {p}/client_body;\n\
         \x20   proxy_temp_path {p}/proxy;\n\
         \x20   fastcgi_temp_path {p}/fastcgi;\n\
         \x20   uwsgi_temp_path {p}/uwsgi;\n\
         \x20   scgi_temp_path {p}/scgi;\n\
         \x20   server {{\n\
         \x20       listen {addr} backlog={backlog};\n\
         \x20       location / {{ return 204; }}\n\
         \x20   }}\n\
         }}\n"
    )
}

impl Running {
    /// CPU time (user + system) of the server and every process below it, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        let ticks: u64 = descendants(self.pid)
            .into_iter()
            .chain([self.pid])
            .filter_map(|pid| proc_stat(pid).map(|s| s.utime + s.stime))
            .sum();
        ticks as f64 / clock_ticks_per_sec()
    }

    /// SIGTERM, wait, SIGKILL if needed; then SIGKILL any child it left behind.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let children = descendants(self.pid);
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_WAIT;
        let exited = loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => break false,
            }
        };
        if !exited {
            eprintln!(
                "compare: {} (pid {}) did not exit within {:?} of SIGTERM; killing it",
                self.target.name(),
                self.pid,
                STOP_WAIT
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A child the server did not take down with it (an nginx worker whose master was
        // killed): these PIDs were recorded while the server ran, moments ago.
        for pid in children {
            if proc_stat(pid).is_some() {
                signal(pid, libc::SIGKILL);
            }
        }
        if let Some(dir) = self.scratch.take() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) on a process this program started (or its child); no memory involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
}

/// Fields of `/proc/PID/stat` after the parenthesised command name (which may hold spaces).
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

/// Every process below `root` (nginx's worker under its master).
fn descendants(root: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?.ppid)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(pid, _)| pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Runs this program with `args` (a scenario with `--json`), pinned to core 1, and returns
/// its JSON report. Killed by PID if it is still running after `bound`.
pub fn run_bench(
    env: &Env,
    args: &[String],
    bound: Duration,
    log: &Path,
) -> Result<serde_json::Value, String> {
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = pinned(env, 1, &env.bench_bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .map_err(|e| format!("cannot run the bench: {e}"))?;
    // The report is one short JSON line, far below a pipe's buffer: read it after exit.
    let deadline = Instant::now() + bound;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("bench run exceeded {bound:?} and was killed"));
            }
            Err(e) => return Err(format!("waiting for the bench: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!("bench exited with {status}; see {}", log.display()));
    }
    serde_json::from_str(out.trim()).map_err(|e| format!("bench output is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_spaces_in_the_name() {
        let text =
            "1234 (nginx: worker) S 1200 1234 1234 0 -1 4194624 100 0 0 0 37 12 0 0 20 0 1 0";
        let s = parse_stat(text).expect("parsed");
        assert_eq!((s.ppid, s.utime, s.stime), (1200, 37, 12));
    }

    #[test]
    fn own_process_is_metered() {
        let s = proc_stat(std::process::id()).expect("own stat");
        assert!(s.ppid > 0);
    }
}
