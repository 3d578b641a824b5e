//! The forward building blocks (src/forward/) against receivers on loopback: a stub HTTP
//! receiver in a thread (headers, basic auth, bodies decoded, 503/429/400 classified, https
//! with a private CA given as `--forward-ca-file` would give it) and,
//! when installed, a real VictoriaMetrics that must hold exactly the names, labels, values
//! and millisecond timestamps sent. Not the server binary: forwarding is not wired yet.
//! Every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metricstream::forward::client::{Client, Outcome, USER_AGENT};
use metricstream::forward::target::Target;
use metricstream::forward::{Format, encode, remote_write};
use metricstream::ingest::Batch;
use metricstream::ingest::line_protocol::Precision;
use metricstream::ingest::write::{IngestScratch, WriteParams, batch_for_bench};

use common::{get, tool_available, wait_until};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

fn batch_of(body: &str) -> Batch {
    let params = WriteParams {
        db: None,
        precision: Precision::Ns,
    };
    batch_for_bench(&mut IngestScratch::default(), body.as_bytes(), &params).expect("valid")
}

/// One request as the stub received it.
#[derive(Debug)]
struct Received {
    head: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver answering one connection per entry of `replies` (raw responses), in order,
/// within 20 s in all; the handle yields what it received.
fn stub(replies: Vec<String>) -> (SocketAddr, JoinHandle<Vec<Received>>) {
    stub_with(replies, |tcp| Some(Box::new(tcp)))
}

/// A connection as the stub speaks on it: plain TCP or TLS over it.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// [`stub`], with each accepted connection wrapped by `wrap` (e.g. in TLS).
fn stub_with(
    replies: Vec<String>,
    wrap: impl Fn(TcpStream) -> Option<Box<dyn Conn>> + Send + 'static,
) -> (SocketAddr, JoinHandle<Vec<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut received = Vec::new();
        for reply in replies {
            let mut stream = None;
            let accepted = wait_until(deadline.saturating_duration_since(Instant::now()), || {
                stream = listener.accept().ok().map(|(s, _)| s);
                stream.is_some()
            });
            let Some(tcp) = stream.filter(|_| accepted) else {
                break;
            };
            tcp.set_nonblocking(false).expect("blocking");
            tcp.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let Some(mut conn) = wrap(tcp) else {
                break;
            };
            let Some(request) = read_request(&mut conn) else {
                break;
            };
            let _ = conn.write_all(reply.as_bytes());
            let _ = conn.flush();
            received.push(request);
        }
        received
    });
    (addr, handle)
}

/// Reads one request with a `Content-Length` body.
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
        .and_then(|(_, v)| v.parse().ok())?;
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
    })
}

fn reply(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn client() -> Client {
    Client::new(None).expect("client")
}

#[test]
fn remote_write_headers_basic_auth_and_body() {
    let (addr, handle) = stub(vec![reply("204 No Content", "", "")]);
    let target = Target::parse(
        Format::RemoteWrite,
        &format!("http://alice:pa%3Ass@{addr}/api/v1/write"),
    )
    .expect("target");
    let batch = batch_of("cpu,host=a usage=1.5,up=true,s=\"x\" 1700000000123456789\n");
    let enc = encode(Format::RemoteWrite, &[&batch], 10_000);
    assert_eq!(enc.unsupported, 1);
    let outcome = client().send(&target, &enc.requests[0].body);
    assert_eq!(outcome, Outcome::Success { status: 204 });
    let got = handle.join().expect("stub");
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.head, "POST /api/v1/write HTTP/1.1");
    assert_eq!(r.header("Content-Type"), Some("application/x-protobuf"));
    assert_eq!(r.header("Content-Encoding"), Some("snappy"));
    assert_eq!(r.header("X-Prometheus-Remote-Write-Version"), Some("0.1.0"));
    assert_eq!(r.header("User-Agent"), Some(USER_AGENT));
    assert!(USER_AGENT.starts_with("metricstream/"));
    // base64("alice:pa:ss")
    assert_eq!(r.header("Authorization"), Some("Basic YWxpY2U6cGE6c3M="));
    let req = remote_write::decode(&r.body).expect("snappy + protobuf");
    let mut series: Vec<(String, Vec<(f64, i64)>)> = req
        .timeseries
        .iter()
        .map(|s| {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect();
            let samples = s.samples.iter().map(|x| (x.value, x.timestamp)).collect();
            (labels.join(","), samples)
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        series,
        [
            (
                "__name__=cpu_up,host=a".to_string(),
                vec![(1.0, 1_700_000_000_123)]
            ),
            (
                "__name__=cpu_usage,host=a".to_string(),
                vec![(1.5, 1_700_000_000_123)]
            ),
        ]
    );
}

#[test]
fn line_protocol_headers_and_gzip_body() {
    let (addr, handle) = stub(vec![reply("204 No Content", "", "")]);
    let target = Target::parse(
        Format::LineProtocol,
        &format!("http://{addr}/write?db=metrics&u=me&p=hunter2"),
    )
    .expect("target");
    let text = "m,t=a\\ b s=\"say \\\"hi\\\"\",n=3i 1700000000123456789\n";
    let enc = encode(Format::LineProtocol, &[&batch_of(text)], 10_000);
    assert_eq!(
        client().send(&target, &enc.requests[0].body),
        Outcome::Success { status: 204 }
    );
    let got = handle.join().expect("stub");
    let r = &got[0];
    assert_eq!(r.head, "POST /write?db=metrics&u=me&p=hunter2 HTTP/1.1");
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Authorization"), None);
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut plain)
        .expect("gzip");
    assert_eq!(plain, text);
    assert!(!target.to_string().contains("hunter2"));
}

#[test]
fn answers_are_classified() {
    let long = "x".repeat(2000);
    let (addr, handle) = stub(vec![
        reply("503 Service Unavailable", "Retry-After: 7\r\n", "busy"),
        reply(
            "429 Too Many Requests",
            "Retry-After: Fri, 01 Jan 2100 00:00:00 GMT\r\n",
            "",
        ),
        reply("500 Internal Server Error", "", "oops"),
        reply("400 Bad Request", "", &format!("bad line\n{long}")),
        reply("401 Unauthorized", "", "who"),
        reply("200 OK", "", "{}"),
    ]);
    let target = Target::parse(Format::RemoteWrite, &format!("http://{addr}/w")).expect("target");
    let c = client();
    let body = b"not even snappy";
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(c.send(&target, body));
    }
    assert_eq!(handle.join().expect("stub").len(), 6);
    assert_eq!(
        outcomes[0],
        Outcome::Retry {
            status: 503,
            error: "HTTP 503: busy".to_string(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
    match &outcomes[1] {
        Outcome::Retry {
            status: 429,
            retry_after: Some(d),
            ..
        } => assert!(*d > Duration::from_secs(365 * 86_400), "{d:?}"),
        other => panic!("429: {other:?}"),
    }
    assert!(matches!(
        &outcomes[2],
        Outcome::Retry { status: 500, retry_after: None, error } if error.contains("oops")
    ));
    match &outcomes[3] {
        Outcome::Reject { status: 400, body } => {
            assert!(body.starts_with("bad line x"), "{body}");
            assert!(body.ends_with('…'));
            assert!(body.len() < 600);
        }
        other => panic!("400: {other:?}"),
    }
    assert_eq!(
        outcomes[4],
        Outcome::Reject {
            status: 401,
            body: "who".to_string()
        }
    );
    assert_eq!(outcomes[5], Outcome::Success { status: 200 });
}

#[test]
fn network_error_is_retried_without_leaking_the_url() {
    // A port nobody listens on: bound, then released.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let target = Target::parse(
        Format::LineProtocol,
        &format!("http://u:hunter2@{addr}/write?p=hunter3"),
    )
    .expect("target");
    match client().send(&target, b"") {
        Outcome::Retry {
            status: 0, error, ..
        } => {
            assert!(!error.contains("hunter"), "{error}");
            assert!(!error.is_empty());
        }
        other => panic!("refused connection: {other:?}"),
    }
}

/// One exported series: labels sorted, values, timestamps (ms).
type Exported = (Vec<(String, String)>, Vec<f64>, Vec<i64>);

/// A VictoriaMetrics single-node process on a free loopback port, killed on drop.
struct Victoria {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Victoria {
    fn start() -> Victoria {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", dir.path().display()))
            .arg(format!("-httpListenAddr={addr}"))
            .arg("-loggerLevel=ERROR")
            .arg("-search.disableCache")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn victoria-metrics");
        let vm = Victoria {
            child,
            addr,
            _dir: dir,
        };
        assert!(
            wait_until(Duration::from_secs(30), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    && get(addr, "/health").status == 200
            }),
            "victoria-metrics did not come up on {addr}"
        );
        vm
    }

    /// `/api/v1/export` lines for `selector`, sorted by labels.
    fn export(&self, selector: &str) -> Vec<Exported> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("match[]", selector)
            .finish();
        let r = get(self.addr, &format!("/api/v1/export?{query}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let mut out: Vec<_> = r
            .text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("export JSON");
                let mut labels: Vec<(String, String)> = v["metric"]
                    .as_object()
                    .expect("metric")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                labels.sort();
                let values = v["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(|x| x.as_f64().expect("number"))
                    .collect();
                let ts = v["timestamps"]
                    .as_array()
                    .expect("timestamps")
                    .iter()
                    .map(|x| x.as_i64().expect("ms"))
                    .collect();
                (labels, values, ts)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        // Child::kill signals this child's own PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn victoria_metrics_receives_exact_series() {
    if !tool_available("victoria-metrics", "METRICSTREAM_REQUIRE_VICTORIAMETRICS") {
        return;
    }
    let vm = Victoria::start();
    // Recent timestamps (inside the default retention) with sub-millisecond parts.
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    let t1 = now_ns - 120_000_000_000 + 456_789;
    let t2 = t1 + 1_000_000_000;
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    let c = client();

    // remote_write: names and labels sanitised as /metrics does, strings not sent.
    let rw = batch_of(&format!(
        "fwd.rw,host.name=a,Zone=eu used-pct=1.5,n=7i,up=true,u=9u,s=\"x\" {t1}\n\
         fwd.rw,host.name=a,Zone=eu used-pct=2.5 {t2}\n"
    ));
    let enc = encode(Format::RemoteWrite, &[&rw], 10_000);
    let target = Target::parse(
        Format::RemoteWrite,
        &format!("http://{}/api/v1/write", vm.addr),
    )
    .expect("target");
    assert_eq!(
        c.send(&target, &enc.requests[0].body),
        Outcome::Success { status: 204 }
    );

    // Line protocol: VictoriaMetrics names series <measurement>_<field>.
    let lp = batch_of(&format!(
        "fwdlp,host=b v=0.25,i=-3i {t1}\nfwdlp,host=b v=0.5 {t2}\n"
    ));
    let enc = encode(Format::LineProtocol, &[&lp], 10_000);
    let target =
        Target::parse(Format::LineProtocol, &format!("http://{}/write", vm.addr)).expect("target");
    assert_eq!(
        c.send(&target, &enc.requests[0].body),
        Outcome::Success { status: 204 }
    );

    let mut expected = vec![
        (
            labels(&[("__name__", "fwd_rw_n"), ("host_name", "a"), ("Zone", "eu")]),
            vec![7.0],
            vec![ms(t1)],
        ),
        (
            labels(&[("__name__", "fwd_rw_u"), ("host_name", "a"), ("Zone", "eu")]),
            vec![9.0],
            vec![ms(t1)],
        ),
        (
            labels(&[
                ("__name__", "fwd_rw_up"),
                ("host_name", "a"),
                ("Zone", "eu"),
            ]),
            vec![1.0],
            vec![ms(t1)],
        ),
        (
            labels(&[
                ("__name__", "fwd_rw_used_pct"),
                ("host_name", "a"),
                ("Zone", "eu"),
            ]),
            vec![1.5, 2.5],
            vec![ms(t1), ms(t2)],
        ),
        (
            labels(&[("__name__", "fwdlp_i"), ("host", "b")]),
            vec![-3.0],
            vec![ms(t1)],
        ),
        (
            labels(&[("__name__", "fwdlp_v"), ("host", "b")]),
            vec![0.25, 0.5],
            vec![ms(t1), ms(t2)],
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let selector = r#"{__name__=~"fwd_rw_.*|fwdlp_.*"}"#;
    let mut last = Vec::new();
    let arrived = wait_until(Duration::from_secs(30), || {
        last = vm.export(selector);
        last == expected
    });
    assert!(arrived, "export {last:?}\nexpected {expected:?}");
}

/// A private CA, a server certificate for 127.0.0.1 signed by it, and the CA's PEM.
fn private_pki() -> (Arc<rustls::ServerConfig>, String) {
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
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    (Arc::new(config), ca.pem())
}

fn tls_stub(
    config: Arc<rustls::ServerConfig>,
    replies: Vec<String>,
) -> (SocketAddr, JoinHandle<Vec<Received>>) {
    stub_with(replies, move |tcp| {
        let conn = rustls::ServerConnection::new(config.clone()).ok()?;
        Some(Box::new(rustls::StreamOwned::new(conn, tcp)))
    })
}

#[test]
fn https_trusts_the_forward_ca_file_and_only_then() {
    let (config, ca_pem) = private_pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write CA");
    let body = encode(
        Format::RemoteWrite,
        &[&batch_of("tls v=1 1000000\n")],
        10_000,
    );

    // Built-in roots only: the private CA is unknown, a retry (the operator fixes it).
    let (addr, handle) = tls_stub(config.clone(), vec![reply("204 No Content", "", "")]);
    let target =
        Target::parse(Format::RemoteWrite, &format!("https://u:pw@{addr}/w")).expect("target");
    match client().send(&target, &body.requests[0].body) {
        Outcome::Retry {
            status: 0, error, ..
        } => assert!(error.to_lowercase().contains("certificate"), "{error}"),
        other => panic!("untrusted certificate: {other:?}"),
    }
    assert!(handle.join().expect("stub").is_empty());

    // With --forward-ca-file: delivered, basic auth inside TLS.
    let (addr, handle) = tls_stub(config, vec![reply("204 No Content", "", "")]);
    let target =
        Target::parse(Format::RemoteWrite, &format!("https://u:pw@{addr}/w")).expect("target");
    let trusting = Client::new(Some(&ca_file)).expect("client with CA file");
    assert_eq!(
        trusting.send(&target, &body.requests[0].body),
        Outcome::Success { status: 204 }
    );
    let got = handle.join().expect("stub");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("Authorization"), Some("Basic dTpwdw=="));
    let req = remote_write::decode(&got[0].body).expect("decodes");
    assert_eq!(req.timeseries[0].samples[0].timestamp, 1);
}
