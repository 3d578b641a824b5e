//! The forward building blocks (src/forward/) against receivers on loopback: a stub HTTP
//! receiver in a thread (headers, basic auth, bodies decoded, 503/429/400 classified, https
//! with a private CA given as `--forward-ca-file` would give it) and,
//! when installed, a real VictoriaMetrics that must hold exactly the names, labels, values
//! and millisecond timestamps sent. The library's blocks only, not the server binary:
//! tests/forward_e2e.rs runs the wired forwarder against real receivers. Every wait is
//! bounded.

mod common;

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metricstream::forward::client::{Client, Outcome, USER_AGENT};
use metricstream::forward::target::Target;
use metricstream::forward::{Format, encode, remote_write};
use metricstream::ingest::Batch;
use metricstream::ingest::line_protocol::Precision;
use metricstream::ingest::write::{IngestScratch, WriteParams, batch_for_bench};

use common::receivers::{Stub, Victoria, free_addr, labels, private_pki, reply, tls_stub};
use common::wait_until;

fn batch_of(body: &str) -> Batch {
    let params = WriteParams {
        db: None,
        precision: Precision::Ns,
    };
    batch_for_bench(&mut IngestScratch::default(), body.as_bytes(), &params).expect("valid")
}

/// A stub answering `replies` in order (one connection each), `500` after them.
fn stub(replies: Vec<String>) -> Stub {
    Stub::scripted(replies)
}

fn client() -> Client {
    Client::new(None).expect("client")
}

#[test]
fn remote_write_headers_basic_auth_and_body() {
    let stub = stub(vec![reply("204 No Content", "", "")]);
    let target = Target::parse(
        Format::RemoteWrite,
        &format!("http://alice:pa%3Ass@{}/api/v1/write", stub.addr),
    )
    .expect("target");
    let batch = batch_of("cpu,host=a usage=1.5,up=true,s=\"x\" 1700000000123456789\n");
    let enc = encode(Format::RemoteWrite, &[&batch], 10_000);
    assert_eq!(enc.unsupported, 1);
    let outcome = client().send(&target, &enc.requests[0].body);
    assert_eq!(outcome, Outcome::Success { status: 204 });
    let got = stub.stop();
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
    let stub = stub(vec![reply("204 No Content", "", "")]);
    let target = Target::parse(
        Format::LineProtocol,
        &format!("http://{}/write?db=metrics&u=me&p=hunter2", stub.addr),
    )
    .expect("target");
    let text = "m,t=a\\ b s=\"say \\\"hi\\\"\",n=3i 1700000000123456789\n";
    let enc = encode(Format::LineProtocol, &[&batch_of(text)], 10_000);
    assert_eq!(
        client().send(&target, &enc.requests[0].body),
        Outcome::Success { status: 204 }
    );
    let got = stub.stop();
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
    let stub = stub(vec![
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
    let target =
        Target::parse(Format::RemoteWrite, &format!("http://{}/w", stub.addr)).expect("target");
    let c = client();
    let body = b"not even snappy";
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(c.send(&target, body));
    }
    assert_eq!(stub.stop().len(), 6);
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
    let addr = free_addr();
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

#[test]
fn victoria_metrics_receives_exact_series() {
    if !Victoria::available() {
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
    let stub = tls_stub(config.clone(), vec![reply("204 No Content", "", "")]);
    let target = Target::parse(
        Format::RemoteWrite,
        &format!("https://u:pw@{}/w", stub.addr),
    )
    .expect("target");
    match client().send(&target, &body.requests[0].body) {
        Outcome::Retry {
            status: 0, error, ..
        } => assert!(error.to_lowercase().contains("certificate"), "{error}"),
        other => panic!("untrusted certificate: {other:?}"),
    }
    assert!(stub.stop().is_empty());

    // With --forward-ca-file: delivered, basic auth inside TLS.
    let stub = tls_stub(config, vec![reply("204 No Content", "", "")]);
    let target = Target::parse(
        Format::RemoteWrite,
        &format!("https://u:pw@{}/w", stub.addr),
    )
    .expect("target");
    let trusting = Client::new(Some(&ca_file)).expect("client with CA file");
    assert_eq!(
        trusting.send(&target, &body.requests[0].body),
        Outcome::Success { status: 204 }
    );
    let got = stub.stop();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("Authorization"), Some("Basic dTpwdw=="));
    let req = remote_write::decode(&got[0].body).expect("decodes");
    assert_eq!(req.timeseries[0].samples[0].timestamp, 1);
}
