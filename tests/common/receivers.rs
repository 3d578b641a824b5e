//! Receivers for the forwarding tests: real stores (VictoriaMetrics, Prometheus 2.x with its
//! remote-write receiver, InfluxDB 1.x), each started on a free loopback port in its own
//! temporary directory, waited for with a deadline and killed by PID on drop (also when the
//! test panics); and a stub HTTP receiver in a thread that records every request and answers
//! from a script. Nothing here listens beyond 127.0.0.1 or waits without a bound.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Response, TempDir, tool_available, wait_until};

/// A loopback address nobody listens on, for a receiver started later (or never): a port
/// below the kernel's ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), so no
/// outgoing connection (the forwarders make many) and no bind to port 0 takes it meanwhile;
/// picked at random per process and checked free by binding it once.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (first, span) = if low > 12_000 {
        (10_000u64, u64::from(low) - 10_000)
    } else {
        (u64::from(low), 1000)
    };
    let seed = u64::from(std::process::id()) << 20
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mix =
            (seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let port = first + (mix >> 33) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port below the ephemeral range after 200 tries");
}

/// `GET path`; `None` when nothing answers (yet). See [`http10`].
pub fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    http10(addr, "GET", path, b"", "")
}

/// One HTTP/1.0 request, the response read to EOF: the receivers answer 1.0 without
/// chunked encoding (which the harness's reader does not decode; InfluxDB and
/// VictoriaMetrics stream larger answers chunked to 1.1 clients). `None` when the
/// connection fails or the answer is not HTTP.
pub fn http10(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &str,
) -> Option<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut raw = format!(
        "{method} {path} HTTP/1.0\r\nHost: r\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    s.write_all(&raw).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut parsed);
    let httparse::Status::Complete(n) = resp.parse(&answer).ok()? else {
        return None;
    };
    Some(Response {
        status: resp.code?,
        headers: resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: answer[n..].to_vec(),
    })
}

/// `path?k=v&...` with the values percent-encoded.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{path}?{q}")
}

/// A receiver process, killed by its PID (`Child::kill`) on drop; its output goes to a file
/// in its temporary directory, shown when it does not come up.
struct Proc {
    name: &'static str,
    child: Child,
    dir: TempDir,
}

impl Proc {
    /// Starts `cmd` (output to `DIR/output.log`) and waits up to 30 s until `GET ready` on
    /// `addr` answers `want`.
    fn start(
        name: &'static str,
        mut cmd: Command,
        dir: TempDir,
        addr: SocketAddr,
        ready: &str,
        want: u16,
    ) -> Proc {
        let out = std::fs::File::create(dir.join("output.log")).expect("receiver log");
        let err = out.try_clone().expect("receiver log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut p = Proc { name, child, dir };
        let mut exited = None;
        let up = wait_until(Duration::from_secs(30), || {
            exited = p.child.try_wait().ok().flatten();
            exited.is_some() || try_get(addr, ready).is_some_and(|r| r.status == want)
        });
        assert!(
            up && exited.is_none(),
            "{name} did not come up on {addr} ({}): {}",
            exited.map_or("still starting".to_string(), |s| s.to_string()),
            p.output()
        );
        p
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("output.log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            let out = self.output();
            let tail: Vec<&str> = out.lines().rev().take(20).collect();
            eprintln!("--- {} output (last lines, newest first):", self.name);
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

// ----- VictoriaMetrics

/// One exported series: labels sorted (`__name__` among them), values, timestamps (ms).
pub type Exported = (Vec<(String, String)>, Vec<f64>, Vec<i64>);

/// Expected labels, as owned pairs sorted by name (what the receivers' readers return).
pub fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

/// A series' labels from a JSON `metric` object (VictoriaMetrics export, Prometheus query),
/// sorted by name.
fn sorted_labels(metric: &serde_json::Value) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = metric
        .as_object()
        .expect("metric")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    labels.sort();
    labels
}

/// A VictoriaMetrics single-node process.
pub struct Victoria {
    pub addr: SocketAddr,
    _proc: Proc,
}

impl Victoria {
    /// Whether `victoria-metrics` can run (else the test skips, or fails under
    /// `METRICSTREAM_REQUIRE_VICTORIAMETRICS`).
    pub fn available() -> bool {
        tool_available("victoria-metrics", "METRICSTREAM_REQUIRE_VICTORIAMETRICS")
    }

    pub fn start() -> Victoria {
        Self::start_on(free_addr())
    }

    /// On `addr` (a port reserved with [`free_addr`] for a target that was down).
    pub fn start_on(addr: SocketAddr) -> Victoria {
        let dir = TempDir::new("victoria");
        let mut cmd = Command::new("victoria-metrics");
        cmd.arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg(format!("-httpListenAddr={addr}"))
            .arg("-loggerLevel=ERROR")
            // Fresh answers on every poll: no result cache, no hiding of the last 30 s.
            .arg("-search.disableCache")
            .arg("-search.latencyOffset=0s");
        let proc = Proc::start("victoria-metrics", cmd, dir, addr, "/health", 200);
        Victoria { addr, _proc: proc }
    }

    /// `/api/v1/export` lines for `selector`, sorted by labels; samples in time order.
    /// Flushes VictoriaMetrics' in-memory buffers first (`/internal/force_flush`): without
    /// it a new series shows up in searches only after several seconds.
    pub fn export(&self, selector: &str) -> Vec<Exported> {
        let _ = try_get(self.addr, "/internal/force_flush");
        let path = with_query("/api/v1/export", &[("match[]", selector)]);
        let Some(r) = try_get(self.addr, &path) else {
            return Vec::new();
        };
        assert_eq!(r.status, 200, "{}", r.text());
        let mut out: Vec<Exported> = r
            .text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("export JSON");
                let labels = sorted_labels(&v["metric"]);
                let values: Vec<f64> = v["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(|x| x.as_f64().expect("number"))
                    .collect();
                let ts: Vec<i64> = v["timestamps"]
                    .as_array()
                    .expect("timestamps")
                    .iter()
                    .map(|x| x.as_i64().expect("ms"))
                    .collect();
                let mut samples: Vec<(i64, f64)> = ts.into_iter().zip(values).collect();
                samples.sort_by_key(|s| s.0);
                let (ts, values) = samples.into_iter().unzip();
                (labels, values, ts)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

// ----- Prometheus

/// A Prometheus 2.x server with `--web.enable-remote-write-receiver` and nothing to scrape.
pub struct Prometheus {
    pub addr: SocketAddr,
    _proc: Proc,
}

/// One series of a range-vector answer: labels sorted, samples as (ms, value).
pub type PromSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

impl Prometheus {
    /// Whether `prometheus` can run (else the test skips, or fails under
    /// `METRICSTREAM_REQUIRE_PROMETHEUS`).
    pub fn available() -> bool {
        tool_available("prometheus", "METRICSTREAM_REQUIRE_PROMETHEUS")
    }

    pub fn start() -> Prometheus {
        let dir = TempDir::new("prometheus");
        let addr = free_addr();
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("prometheus.yml");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn");
        let proc = Proc::start("prometheus", cmd, dir, addr, "/-/ready", 200);
        Prometheus { addr, _proc: proc }
    }

    /// `/api/v1/query` of a range selector (`name{...}[5m]`) at `time_ms`: each series' raw
    /// samples, sorted by labels.
    pub fn range_samples(&self, selector: &str, time_ms: i64) -> Vec<PromSeries> {
        let time = format!(
            "{}.{:03}",
            time_ms.div_euclid(1000),
            time_ms.rem_euclid(1000)
        );
        let path = with_query("/api/v1/query", &[("query", selector), ("time", &time)]);
        let Some(r) = try_get(self.addr, &path) else {
            return Vec::new();
        };
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let mut out: Vec<PromSeries> = v["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|s| {
                let labels = sorted_labels(&s["metric"]);
                let samples = s["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(|p| {
                        // [seconds as a JSON number with ms decimals, "value"]
                        let secs = p[0].as_f64().expect("time");
                        let value: f64 = p[1].as_str().expect("value").parse().expect("float");
                        ((secs * 1000.0).round() as i64, value)
                    })
                    .collect();
                (labels, samples)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

// ----- InfluxDB 1.x

/// An InfluxDB 1.x `influxd` with its own configuration file: every directory in its
/// temporary directory, both listeners on loopback, no usage reporting, no `_internal`
/// store. Works the same for root and any other user (nothing under /var or /etc is used).
pub struct Influx {
    pub addr: SocketAddr,
    _proc: Proc,
}

impl Influx {
    /// Whether `influxd` can run (else the test skips, or fails under
    /// `METRICSTREAM_REQUIRE_INFLUXDB`).
    pub fn available() -> bool {
        // `influxd version` prints and exits; `--version` would be a usage error.
        let present = Command::new("influxd")
            .arg("version")
            .stdin(Stdio::null())
            .output()
            .is_ok();
        present || tool_available("influxd", "METRICSTREAM_REQUIRE_INFLUXDB")
    }

    pub fn start() -> Influx {
        let dir = TempDir::new("influxdb");
        let addr = free_addr();
        let rpc = free_addr();
        let config = dir.join("influxdb.conf");
        let d = |name: &str| dir.join(name).display().to_string();
        std::fs::write(
            &config,
            format!(
                "reporting-disabled = true\n\
                 bind-address = \"{rpc}\"\n\
                 [meta]\n  dir = \"{}\"\n\
                 [data]\n  dir = \"{}\"\n  wal-dir = \"{}\"\n  query-log-enabled = false\n\
                 [monitor]\n  store-enabled = false\n\
                 [http]\n  bind-address = \"{addr}\"\n  log-enabled = false\n\
                 [logging]\n  level = \"warn\"\n",
                d("meta"),
                d("data"),
                d("wal")
            ),
        )
        .expect("influxdb.conf");
        let mut cmd = Command::new("influxd");
        cmd.arg("run").arg("-config").arg(&config);
        // INFLUXDB_* variables override the file; the test's file is the whole configuration.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("INFLUXDB_") {
                cmd.env_remove(k);
            }
        }
        let proc = Proc::start("influxd", cmd, dir, addr, "/ping", 204);
        Influx { addr, _proc: proc }
    }

    /// Runs `q` (a statement such as `CREATE DATABASE x`) and returns the JSON answer.
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let path = with_query("/query", &[("db", db), ("q", q), ("epoch", "ns")]);
        let body = path.split_once('?').map_or("", |(_, b)| b);
        let r = http10(
            self.addr,
            "POST",
            "/query",
            body.as_bytes(),
            "Content-Type: application/x-www-form-urlencoded\r\n",
        )
        .expect("InfluxDB answers /query");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

// ----- Stub receiver

/// One request as the stub received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request line, e.g. `POST /api/v1/write HTTP/1.1`.
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its last byte arrived.
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection as the stub speaks on it: plain TCP or TLS over it.
pub trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// How the stub answers the n-th request (0-based): a raw HTTP response.
pub type Answer = Box<dyn FnMut(usize, &Received) -> String + Send>;

/// An HTTP receiver in a thread: one request per connection, recorded before it is
/// answered (so once a client has its answer, [`Stub::received`] shows the request).
pub struct Stub {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stub {
    /// On a free port, answering with `answer`.
    pub fn start(answer: impl FnMut(usize, &Received) -> String + Send + 'static) -> Stub {
        Self::start_on(free_addr(), answer)
    }

    /// On `addr` (a port reserved with [`free_addr`]).
    pub fn start_on(
        addr: SocketAddr,
        answer: impl FnMut(usize, &Received) -> String + Send + 'static,
    ) -> Stub {
        let listener = TcpListener::bind(addr).expect("bind stub");
        Self::start_with(listener, |tcp| Some(Box::new(tcp)), Box::new(answer))
    }

    /// The answers of `replies` in order, then `500` to anything after them.
    pub fn scripted(replies: Vec<String>) -> Stub {
        Self::start(move |n, _| {
            replies
                .get(n)
                .cloned()
                .unwrap_or_else(|| reply("500 Internal Server Error", "", "script ended"))
        })
    }

    /// On `listener`, each accepted connection wrapped by `wrap` (e.g. in TLS; `None`
    /// drops it).
    pub fn start_with(
        listener: TcpListener,
        wrap: impl Fn(TcpStream) -> Option<Box<dyn Conn>> + Send + 'static,
        mut answer: Answer,
    ) -> Stub {
        let addr = listener.local_addr().expect("stub addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, stopping) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let tcp = match listener.accept() {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let _ = tcp.set_nonblocking(false);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(mut conn) = wrap(tcp) else {
                    continue;
                };
                let Some(request) = read_request(&mut conn) else {
                    continue;
                };
                let n = {
                    let mut all = rec.lock().unwrap_or_else(|p| p.into_inner());
                    all.push(request.clone());
                    all.len() - 1
                };
                let response = answer(n, &request);
                let _ = conn.write_all(response.as_bytes());
                let _ = conn.flush();
            }
        });
        Stub {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (at most `limit`) until at least `n` requests arrived.
    pub fn wait_for(&self, n: usize, limit: Duration) -> bool {
        wait_until(limit, || self.count() >= n)
    }

    pub fn count(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Stops listening (the port refuses connections from then on) and returns what arrived.
    pub fn stop(mut self) -> Vec<Received> {
        self.shutdown();
        self.received()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reads one request with a `Content-Length` body (or none).
fn read_request(stream: &mut dyn Conn) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.parse().ok())?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        head: request_line,
        headers,
        body,
        at: Instant::now(),
    })
}

/// A raw response that closes the connection.
pub fn reply(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

// ----- TLS (https targets and --forward-ca-file)

/// A private CA, a server certificate for 127.0.0.1 signed by it, and the CA's PEM.
pub fn private_pki() -> (Arc<rustls::ServerConfig>, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &ca, &ca_key)
        .expect("server cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(
            vec![server.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )),
        )
        .expect("server config");
    (Arc::new(config), ca.pem())
}

/// A [`Stub`] speaking TLS with `config` (see [`private_pki`]), answering `replies` in
/// order, then `500`.
pub fn tls_stub(config: Arc<rustls::ServerConfig>, replies: Vec<String>) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut replies = replies.into_iter();
    Stub::start_with(
        listener,
        move |tcp| {
            let conn = rustls::ServerConnection::new(config.clone()).ok()?;
            Some(Box::new(rustls::StreamOwned::new(conn, tcp)))
        },
        Box::new(move |_, _| {
            replies
                .next()
                .unwrap_or_else(|| reply("500 Internal Server Error", "", ""))
        }),
    )
}
