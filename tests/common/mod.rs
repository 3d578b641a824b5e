//! Test harness: start the real `metricstream` binary on 127.0.0.1:0, talk raw TCP, stop it
//! by PID. Every wait here is bounded in time.
#![allow(dead_code)]

pub mod receivers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_metricstream");

/// A running server process. Stopped with SIGKILL on drop if the test did not stop it.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every stderr line so far (the log).
    pub log: Arc<Mutex<Vec<String>>>,
    /// The data directory the harness gave the server (see [`Server::spawn_in`]); removed
    /// after the server is stopped.
    pub data: Option<TempDir>,
}

impl Server {
    /// Starts the server with `args` (plus `--listen 127.0.0.1:0` unless given) and waits
    /// (at most 20 s) for its "listening on" line.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(&[], args, env)
    }

    /// Starts the binary, through `wrapper` when it is not empty (for example
    /// `["prlimit", "--nofile=64", "--"]`; the wrapper must `exec` the server so the child's
    /// PID is the server's), and waits (at most 20 s) for its "listening on" line.
    pub fn spawn(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn_in(None, wrapper, args, env)
    }

    /// [`Server::spawn`] with the process's working directory set to `cwd` when given
    /// (the test's own working directory otherwise). Unless the test chose a data
    /// directory or `--memory-only` (flag or variable), the server gets its own temporary
    /// `--data-dir`, so no test writes into the working directory.
    pub fn spawn_in(
        cwd: Option<&std::path::Path>,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = match wrapper.split_first() {
            Some((program, pre)) => {
                let mut c = Command::new(program);
                c.args(pre).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let chose = |flag: &str| {
            args.iter()
                .any(|a| *a == flag || a.strip_prefix(flag).is_some_and(|r| r.starts_with('=')))
        };
        let data = (!chose("--data-dir")
            && !chose("--memory-only")
            && !env
                .iter()
                .any(|(k, _)| *k == "METRICSTREAM_DATA_DIR" || *k == "METRICSTREAM_MEMORY_ONLY"))
        .then(|| TempDir::new("server"));
        if let Some(d) = &data {
            cmd.arg("--data-dir").arg(d.join("data"));
        }
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().expect("spawn metricstream");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on ") {
                    let rest = &line[i + "listening on ".len()..];
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {:?}", log.lock().unwrap());
            }
        };
        Server {
            child,
            addr,
            log,
            data,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Sends SIGTERM and waits up to `limit` for exit; returns the exit status code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        signal(self.pid(), libc::SIGTERM);
        self.wait(limit)
    }

    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let mut code = None;
        wait_until(limit, || match self.child.try_wait() {
            Ok(Some(status)) => {
                code = status.code();
                true
            }
            _ => false,
        });
        code
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until a log line containing `needle` appears.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log_text().contains(needle))
    }

    /// GET /stats as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let r = request(
            self.addr,
            "GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "stats: {:?}", r);
        serde_json::from_slice(&r.body).expect("stats json")
    }

    /// Number of open fds of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn rss_bytes(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/statm", self.pid())).unwrap_or_default();
        let pages: u64 = s
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether the external program `name` can be run. When it cannot and the environment
/// variable `required_by` is set (CI sets them), the test fails instead of skipping.
pub fn tool_available(name: &str, required_by: &str) -> bool {
    let present = Command::new(name).arg("--version").output().is_ok();
    if !present {
        assert!(
            std::env::var_os(required_by).is_none(),
            "{} is required ({} is set) but not installed",
            name,
            required_by
        );
        eprintln!("skipping: {} is not installed", name);
    }
    present
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({}): {:?}",
                e,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads HTTP/1.1 responses off a stream, keeping leftover bytes between calls.
pub struct Reader {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn fill_or(&mut self, quiet: bool) -> bool {
        if quiet {
            let mut chunk = [0u8; 65536];
            return match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    true
                }
            };
        }
        self.fill()
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) => panic!(
                "read failed: {} (have {:?})",
                e,
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Next response; `head_request` when it answers a HEAD (no body despite a length).
    pub fn response_to(&mut self, head_request: bool) -> Response {
        self.try_response_to(head_request).unwrap_or_else(|| {
            panic!(
                "connection closed before a full response: {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    pub fn response(&mut self) -> Response {
        self.response_to(false)
    }

    /// `None` if the connection closes first.
    pub fn try_response_to(&mut self, head_request: bool) -> Option<Response> {
        self.read_response(head_request, false)
    }

    /// The next response. A read error panics, or with `quiet` ends like EOF.
    fn read_response(&mut self, head_request: bool, quiet: bool) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap_or(0);
                let hdrs: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = hdrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                let bodiless = head_request || status == 204 || status / 100 == 1;
                let chunked = hdrs.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
                });
                if chunked && !bodiless {
                    let body = self.read_chunked(n, quiet)?;
                    return Some(Response {
                        status,
                        headers: hdrs,
                        body,
                    });
                }
                let body_len = if bodiless { 0 } else { len };
                while self.buf.len() < n + body_len {
                    if !self.fill_or(quiet) {
                        return None;
                    }
                }
                let body = self.buf[n..n + body_len].to_vec();
                self.buf.drain(..n + body_len);
                return Some(Response {
                    status,
                    headers: hdrs,
                    body,
                });
            }
            if !self.fill_or(quiet) {
                return None;
            }
        }
    }

    /// A chunked body starting at `buf[start..]`, decoded; the bytes it took (and the head
    /// before it) are dropped from the buffer. `None` if the connection closes first.
    fn read_chunked(&mut self, start: usize, quiet: bool) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        let mut pos = start;
        loop {
            // A chunk-size line (no extensions are sent by the server).
            let line_end = loop {
                if let Some(i) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                if !self.fill_or(quiet) {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
            let data = line_end + 2;
            // The data and its CRLF (for the last chunk: the empty trailer line).
            while self.buf.len() < data + size + 2 {
                if !self.fill_or(quiet) {
                    return None;
                }
            }
            assert_eq!(
                &self.buf[data + size..data + size + 2],
                b"\r\n",
                "chunk ends"
            );
            body.extend_from_slice(&self.buf[data..data + size]);
            pos = data + size + 2;
            if size == 0 {
                self.buf.drain(..pos);
                return Some(body);
            }
            if pos > 1 << 20 {
                // Keep the buffer small over a long body.
                self.buf.drain(..pos);
                pos = 0;
            }
        }
    }

    /// True if the server closed the connection (EOF or reset) within `limit`.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 1024];
        let deadline = Instant::now() + limit;
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// A gzip body, decompressed as text.
pub fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("a valid gzip body");
    text
}

/// The body of a chunked message (`raw` starts at its first chunk-size line and holds the
/// whole message); panics on bad framing or a missing last chunk.
pub fn decode_chunked(raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let line = raw[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk-size line");
        let text = String::from_utf8_lossy(&raw[pos..pos + line]).into_owned();
        let size = usize::from_str_radix(text.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {text:?}"));
        let data = pos + line + 2;
        assert_eq!(&raw[data + size..data + size + 2], b"\r\n", "chunk ends");
        body.extend_from_slice(&raw[data..data + size]);
        pos = data + size + 2;
        if size == 0 {
            assert_eq!(pos, raw.len(), "bytes after the last chunk");
            return body;
        }
    }
}

/// One request on a fresh connection; returns the first response.
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    request_bytes(addr, raw.as_bytes())
}

pub fn request_bytes(addr: SocketAddr, raw: &[u8]) -> Response {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = Reader::new(s);
    r.send(raw);
    let head = raw.starts_with(b"HEAD ");
    r.response_to(head)
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(
        addr,
        &format!(
            "GET {} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            path
        ),
    )
}

/// `POST path` with a Content-Length body and `Connection: close`.
pub fn post(addr: SocketAddr, path: &str, body: &[u8], extra_headers: &str) -> Response {
    let mut raw = format!(
        "POST {} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n{}\r\n",
        path,
        body.len(),
        extra_headers
    )
    .into_bytes();
    raw.extend_from_slice(body);
    request_bytes(addr, &raw)
}

/// Runs the server binary with `args` and returns (exit code, stderr) within 10 s.
pub fn run_expecting_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut status = None;
    let exited = wait_until(Duration::from_secs(10), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    match status {
        Some(status) if exited => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            (status.code(), err)
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            (None, "did not exit within 10 s".into())
        }
    }
}

// ----- Helpers added for the hardening tests (tests/hardening.rs, slowloris.rs, load.rs,
// ----- fd_limit.rs, shutdown.rs). The helpers above are unchanged.

/// Like [`Server::start_with_env`], but runs the binary through `wrapper` (see
/// [`Server::spawn`]).
pub fn start_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Server {
    Server::spawn(wrapper, args, env)
}

/// The level of an `env_logger` line (`[2025-01-01T00:00:00.000Z DEBUG target] msg`).
pub fn log_level(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    rest.split_whitespace().nth(1)
}

/// User + system CPU time the process `pid` has used so far (from `/proc/PID/stat`).
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid)).unwrap_or_default();
    // The command name is in parentheses and may contain spaces: count fields after it.
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    // Fields 14 (utime) and 15 (stime) of stat(5); `after` starts at field 3.
    let total = ticks(11) + ticks(12);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(total * 1_000_000 / hz)
}

/// Raises this (test) process's soft `RLIMIT_NOFILE` to at least `want` (capped by the hard
/// limit) and returns the soft limit in force afterwards.
pub fn raise_own_nofile_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write the struct we own for the call only.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Closes `stream` with a RST instead of a FIN (`SO_LINGER` 0).
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Parses the shutdown summary line: `(points queued, points aggregated)`.
pub fn shutdown_summary_points(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().find(|l| l.contains("shutdown complete"))?;
    let num = |key: &str| -> Option<u64> {
        let i = line.find(key)? + key.len();
        let digits: String = line[i..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    Some((num("points queued=")?, num("aggregated=")?))
}

impl Reader {
    /// `GET path` on this keep-alive connection; the response.
    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", path).as_bytes());
        self.response()
    }

    /// `GET /stats` on this keep-alive connection (for servers where opening another
    /// connection is not possible or would change what is measured).
    pub fn stats(&mut self) -> serde_json::Value {
        let r = self.get("/stats");
        assert_eq!(r.status, 200, "stats: {:?}", r);
        r.json()
    }
}

/// `v[key]` as a u64 (0 when absent), for /stats counters.
pub fn counter(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// `responses_by_status[status]` of a /stats snapshot (0 when absent).
pub fn status_count(v: &serde_json::Value, status: u16) -> u64 {
    v["responses_by_status"][status.to_string()]
        .as_u64()
        .unwrap_or(0)
}

/// Waits (bounded) until the server reports `active` open connections and holds `fds`
/// descriptors; on failure returns what it saw last.
pub fn settles_to(s: &Server, active: u64, fds: usize, limit: Duration) -> Result<(), String> {
    let mut last = (0, 0);
    let ok = wait_until(limit, || {
        let a = counter(&s.stats(), "connections_active");
        // The /stats connection itself is open while /stats is answered.
        let f = s.fd_count();
        last = (a, f);
        a == active + 1 && f == fds
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "connections_active={} (want {} + the /stats one) fds={} (want {}); open: {:?}",
            last.0,
            active,
            last.1,
            fds,
            fd_targets(s.pid())
        ))
    }
}

/// p-th percentile (0..=100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// The server's descriptor count with no client connection open (baseline for
/// [`settles_to`]): waits (bounded) until no connection but the /stats probe is active, the
/// server holds no connection socket any more (the probe's own closes after our EOF, the
/// server lingers until then), and the count is the same twice in a row.
pub fn quiet_fds(s: &Server) -> usize {
    let mut prev = usize::MAX;
    let mut fds = 0;
    let ok = wait_until(Duration::from_secs(10), || {
        let active = counter(&s.stats(), "connections_active");
        let closed = wait_until(Duration::from_secs(2), || s.connection_sockets() == 0);
        fds = s.fd_count();
        let stable = active == 1 && closed && fds == prev;
        prev = fds;
        stable
    });
    assert!(ok, "server did not settle: fds={}", fds);
    fds
}

/// One row of the kernel's TCP table (`/proc/PID/net/tcp` and `tcp6`).
#[derive(Debug, Clone)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state: 0x01 established, 0x0A listen, ...
    pub state: u8,
    /// Bytes sent and not yet acknowledged by the peer.
    pub tx_queue: u64,
    /// Bytes received and not yet read by the socket's owner.
    pub rx_queue: u64,
    pub inode: u64,
}

const TCP_LISTEN: u8 = 0x0A;

/// The TCP sockets of `pid`'s network namespace (loopback tests: the server's and ours).
pub fn tcp_table(pid: i32) -> Vec<TcpRow> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/{}/net/{}", pid, f)).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(parse_tcp_row)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...`
fn parse_tcp_row(line: &str) -> Option<TcpRow> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (tx, rx) = f.get(4)?.split_once(':')?;
    Some(TcpRow {
        local: parse_proc_addr(f.get(1)?)?,
        remote: parse_proc_addr(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        tx_queue: u64::from_str_radix(tx, 16).ok()?,
        rx_queue: u64::from_str_radix(rx, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

/// `0100007F:1F90`: the address as 32-bit words printed in host byte order, then the port.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..ip.len()).step_by(8) {
        let word = u32::from_str_radix(ip.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

impl Server {
    /// Inodes of the sockets the server process holds open.
    pub fn socket_inodes(&self) -> std::collections::HashSet<u64> {
        fd_targets(self.pid())
            .iter()
            .filter_map(|t| {
                t.split_once("->socket:[")?
                    .1
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// TCP sockets the server holds that are not listeners: its client connections.
    pub fn connection_sockets(&self) -> usize {
        let mine = self.socket_inodes();
        tcp_table(self.pid())
            .iter()
            .filter(|r| r.state != TCP_LISTEN && mine.contains(&r.inode))
            .count()
    }

    /// Whether the server has accepted `client` and read every byte sent on it so far
    /// (nothing unacknowledged on our side, nothing unread on its side): for tests that must
    /// act only once a partial request is inside the server.
    pub fn has_read_all_of(&self, client: &TcpStream) -> bool {
        let Ok(me) = client.local_addr() else {
            return false;
        };
        let mine = self.socket_inodes();
        let rows = tcp_table(self.pid());
        let sent = rows
            .iter()
            .any(|r| r.local == me && r.remote == self.addr && r.tx_queue == 0);
        let read = rows
            .iter()
            .any(|r| r.remote == me && mine.contains(&r.inode) && r.rx_queue == 0);
        sent && read
    }

    /// Waits (bounded) until [`Server::has_read_all_of`] holds.
    pub fn wait_read_all_of(&self, client: &TcpStream, limit: Duration) -> bool {
        wait_until(limit, || self.has_read_all_of(client))
    }
}

impl Reader {
    /// Like [`Reader::try_response_to`] (no HEAD), but a read error (reset, timeout) also
    /// gives `None` instead of a panic: for clients racing a server that is going away.
    pub fn try_response_quiet(&mut self) -> Option<Response> {
        self.read_response(false, true)
    }
}

/// What each of the process's descriptors points at (`/proc/PID/fd/*`), for diagnostics.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", pid)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            format!("{}->{}", e.file_name().to_string_lossy(), target)
        })
        .collect();
    v.sort();
    v
}

// ----- Helpers added for the durability tests (tests/durability.rs). The helpers above
// ----- are unchanged.

/// A fresh directory under the system temp directory, removed with everything in it on
/// drop (declare it before any [`Server`] using it, so the server is stopped first).
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "metricstream-test-{}-{}-{}",
            tag,
            std::process::id(),
            n
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn join(&self, rel: &str) -> std::path::PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Server {
    /// Sends SIGKILL and waits (at most 10 s) until the process is gone; true if it is.
    pub fn kill9(&mut self) -> bool {
        signal(self.pid(), libc::SIGKILL);
        // `wait` reports an exit code, which a killed process has none of: poll instead.
        wait_until(Duration::from_secs(10), || !self.running())
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Waits (bounded) until every point queued so far has been aggregated, so `/series`
/// shows every acknowledged write.
pub fn wait_aggregated(s: &Server) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = s.stats();
            st["points_queued"] == st["points_aggregated"]
        }),
        "aggregator did not catch up: {}",
        s.stats()
    );
}

/// The PIDs whose parent is `pid` (from `/proc/*/stat`).
pub fn child_pids(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", p)).unwrap_or_default();
            // `pid (comm) state ppid ...`; comm may hold spaces, so count after the `)`.
            let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            after.split_whitespace().nth(1).and_then(|f| f.parse().ok()) == Some(pid)
        })
        .collect()
}

/// A small seedable generator (SplitMix64) for tests that pick random moments or bytes;
/// the seed is printed so a failing run can be repeated with `METRICSTREAM_TEST_SEED`.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `METRICSTREAM_TEST_SEED` when set, else from the clock; prints the seed.
    pub fn from_env_or_clock(test: &str) -> Rng {
        let seed = std::env::var("METRICSTREAM_TEST_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
        eprintln!(
            "{}: seed {} (repeat with METRICSTREAM_TEST_SEED={})",
            test, seed, seed
        );
        Rng(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for tests (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
