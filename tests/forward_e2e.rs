//! Forwarding end to end (SPEC "Forwarding", issue 12): the real `metricstream` binary with
//! `--remote-write-url` / `--influx-write-url`, and receivers the tests start themselves
//! (tests/common/receivers.rs): VictoriaMetrics over remote_write and `/write`, Prometheus
//! with its remote-write receiver, InfluxDB 1.x, a target down then up, a `kill -9` while
//! it is down, and a stub receiver for 503 / 429 / 400, basic auth, the backlog cap and the
//! per-batch debug line. A missing receiver skips its test with a message unless its
//! `METRICSTREAM_REQUIRE_*` variable is set. Every wait polls with a deadline; nothing here
//! asserts speed (the one timing check is a lower bound: `Retry-After` was waited for).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use metricstream::forward::target::Target;
use metricstream::forward::{Format, remote_write};
use serde_json::{Value, json};

use common::receivers::{
    Exported, Influx, Prometheus, Received, Stub, Victoria, free_addr, labels, private_pki, reply,
    tls_stub,
};
use common::{Rng, Server, TempDir, get, post, run_expecting_exit};

/// How often the tests look at a receiver or at `/stats`.
const POLL: Duration = Duration::from_millis(50);
/// How long a delivery may take before a test gives up (the forwarder's backoff reaches a
/// few seconds while a target is down; the machine may be busy).
const DELIVERY: Duration = Duration::from_secs(40);

/// Probes every [`POLL`] until `ok` holds or `limit` passes; the last value either way.
fn eventually<T>(
    limit: Duration,
    mut probe: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> (bool, T) {
    let deadline = Instant::now() + limit;
    loop {
        let v = probe();
        if ok(&v) {
            return (true, v);
        }
        if Instant::now() >= deadline {
            return (false, v);
        }
        std::thread::sleep(POLL);
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// Milliseconds as remote_write and VictoriaMetrics keep them (floor).
fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

/// POST /write, which must be acknowledged.
fn write(s: &Server, body: &str) {
    let r = post(s.addr, "/write", body.as_bytes(), "");
    assert_eq!(r.status, 204, "write refused: {}", r.text());
}

/// `/stats` `forward[i]`.
fn target_stats(s: &Server, i: usize) -> Value {
    s.stats()["forward"][i].clone()
}

/// A counter of a `forward` entry by path (`points_sent`, `points_dropped.backlog`).
fn n(entry: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(entry, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} missing in {entry}"))
}

/// Waits until `forward[0]` satisfies `ok`; panics with the last entry otherwise.
fn wait_stats(s: &Server, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let (done, last) = eventually(DELIVERY, || target_stats(s, 0), ok);
    assert!(done, "{what}: forward[0] is {last}\nlog:\n{}", s.log_text());
    last
}

/// A server forwarding with `flags` (pairs of flag and URL, plus any other flags).
fn server(flags: &[&str]) -> Server {
    Server::start(flags)
}

/// Waits until VictoriaMetrics exports exactly `expected` for `selector`.
fn wait_export(vm: &Victoria, s: &Server, selector: &str, mut expected: Vec<Exported>) {
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let (arrived, last) = eventually(DELIVERY, || vm.export(selector), |got| *got == expected);
    assert!(
        arrived,
        "VictoriaMetrics has {last:?}\nexpected {expected:?}\nforward: {}\nlog:\n{}",
        s.stats()["forward"],
        s.log_text()
    );
}

/// The points of the format tests: every field type, tags that need sanitising (a dot, a
/// leading digit, a reserved `__` prefix), explicit timestamps with sub-millisecond parts.
fn typed_points(m: &str, t1: i64, t2: i64) -> String {
    format!(
        "{m},host.name=a,Zone=eu,__x=y,1k=v used-pct=1.5,n=-7i,u=9u,up=true,s=\"x y\" {t1}\n\
         {m},host.name=a,Zone=eu,__x=y,1k=v used-pct=2.5,up=false {t2}\n\
         9lives v=3 {t2}\n"
    )
}

// ===== 1-2. VictoriaMetrics

#[test]
fn victoria_metrics_receives_remote_write_with_metrics_names() {
    if !Victoria::available() {
        return;
    }
    let vm = Victoria::start();
    let url = format!("http://{}/api/v1/write", vm.addr);
    let s = server(&["--remote-write-url", &url]);
    let t1 = now_ns() - 60_000_000_000 + 456_789;
    let t2 = t1 + 1_000_000_007;
    write(&s, &typed_points("fwd.rw", t1, t2));

    // Names and labels exactly as /metrics gives them; the string field is not sent.
    let tags = [
        ("host_name", "a"),
        ("Zone", "eu"),
        ("tag__x", "y"),
        ("_1k", "v"),
    ];
    let series = |name: &str, values: Vec<f64>, ts: Vec<i64>| -> Exported {
        let mut l = vec![("__name__", name)];
        l.extend_from_slice(&tags);
        (labels(&l), values, ts)
    };
    let expected = vec![
        series("fwd_rw_n", vec![-7.0], vec![ms(t1)]),
        series("fwd_rw_u", vec![9.0], vec![ms(t1)]),
        series("fwd_rw_up", vec![1.0, 0.0], vec![ms(t1), ms(t2)]),
        series("fwd_rw_used_pct", vec![1.5, 2.5], vec![ms(t1), ms(t2)]),
        (
            labels(&[("__name__", "_9lives_v")]),
            vec![3.0],
            vec![ms(t2)],
        ),
    ];
    wait_export(
        &vm,
        &s,
        r#"{__name__=~"fwd_rw_.*|_9lives_v"}"#,
        expected.clone(),
    );

    // The same names and labels as the server's own exposition.
    let metrics = get(s.addr, "/metrics").text();
    for (l, _, _) in &expected {
        let name = &l.iter().find(|(k, _)| k == "__name__").expect("name").1;
        let shown = metrics
            .lines()
            .find(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"));
        for (k, v) in l.iter().filter(|(k, _)| k != "__name__") {
            assert!(shown.contains(&format!("{k}=\"{v}\"")), "{shown} lacks {k}");
        }
    }

    let st = wait_stats(&s, "3 points sent", |f| n(f, "points_sent") == 3);
    assert_eq!(st["url"], url);
    assert_eq!(st["format"], "remote_write");
    assert_eq!(
        st["points_dropped"],
        json!({"rejected": 0, "backlog": 0, "unsupported": 1})
    );
    assert_eq!(st["retries"], 0);
    assert_eq!(st["last_error"], Value::Null);
    assert!(n(&st, "last_success_unix") > 0, "{st}");
    let families = metrics_of(&s, "metricstream_forward_");
    let sample = |family: &str, extra: &str| {
        families.iter().any(|l| {
            l.starts_with(&format!("{family}{{"))
                && l.contains(&format!("url=\"{url}\""))
                && l.contains(extra)
        })
    };
    assert!(
        sample("metricstream_forward_points_sent_total", "} 3"),
        "{families:?}"
    );
    assert!(
        sample(
            "metricstream_forward_points_dropped_total",
            "reason=\"unsupported\"} 1"
        ),
        "{families:?}"
    );
    for family in [
        "metricstream_forward_backlog_bytes",
        "metricstream_forward_retries_total",
        "metricstream_forward_last_success_unix_seconds",
    ] {
        assert!(sample(family, "} "), "{family} missing: {families:?}");
    }
}

/// `/metrics` lines starting with `prefix`.
fn metrics_of(s: &Server, prefix: &str) -> Vec<String> {
    get(s.addr, "/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn victoria_metrics_receives_line_protocol() {
    if !Victoria::available() {
        return;
    }
    let vm = Victoria::start();
    let url = format!("http://{}/write", vm.addr);
    let s = server(&["--influx-write-url", &url]);
    let t1 = now_ns() - 60_000_000_000 + 456_789;
    let t2 = t1 + 1_000_000_007;
    write(&s, &typed_points("fwd.lp", t1, t2));

    // VictoriaMetrics names line protocol series <measurement>_<field> and keeps names and
    // tag keys as they are; it stores a string field as the value 0 (so its arrival shows).
    let tags = [
        ("host.name", "a"),
        ("Zone", "eu"),
        ("__x", "y"),
        ("1k", "v"),
    ];
    let series = |name: &str, values: Vec<f64>, ts: Vec<i64>| -> Exported {
        let mut l = vec![("__name__", name)];
        l.extend_from_slice(&tags);
        (labels(&l), values, ts)
    };
    let expected = vec![
        series("fwd.lp_n", vec![-7.0], vec![ms(t1)]),
        series("fwd.lp_u", vec![9.0], vec![ms(t1)]),
        series("fwd.lp_up", vec![1.0, 0.0], vec![ms(t1), ms(t2)]),
        series("fwd.lp_used-pct", vec![1.5, 2.5], vec![ms(t1), ms(t2)]),
        series("fwd.lp_s", vec![0.0], vec![ms(t1)]),
        (labels(&[("__name__", "9lives_v")]), vec![3.0], vec![ms(t2)]),
    ];
    wait_export(&vm, &s, r#"{__name__=~"fwd[.]lp_.*|9lives_v"}"#, expected);
    let st = wait_stats(&s, "3 points sent", |f| n(f, "points_sent") == 3);
    assert_eq!(st["format"], "line_protocol");
    assert_eq!(
        st["points_dropped"],
        json!({"rejected": 0, "backlog": 0, "unsupported": 0})
    );
}

// ===== 3. Prometheus

#[test]
fn prometheus_remote_write_receiver_gets_the_samples() {
    if !Prometheus::available() {
        return;
    }
    let prom = Prometheus::start();
    let url = format!("http://{}/api/v1/write", prom.addr);
    let s = server(&["--remote-write-url", &url]);
    // Near now: Prometheus refuses samples far behind its head.
    let t1 = now_ns() - 10_000_000_000 + 456_789;
    let t2 = t1 + 1_000_000_007;
    write(
        &s,
        &format!(
            "fwd_prom,host.name=a,1k=v v=1.5,n=-7i,up=true,s=\"x\" {t1}\n\
             fwd_prom,host.name=a,1k=v v=2.5,up=false {t2}\n"
        ),
    );
    let l = |name: &str| labels(&[("__name__", name), ("host_name", "a"), ("_1k", "v")]);
    let expected = vec![
        (l("fwd_prom_n"), vec![(ms(t1), -7.0)]),
        (l("fwd_prom_up"), vec![(ms(t1), 1.0), (ms(t2), 0.0)]),
        (l("fwd_prom_v"), vec![(ms(t1), 1.5), (ms(t2), 2.5)]),
    ];
    let at = ms(t2) + 1000;
    let (arrived, last) = eventually(
        DELIVERY,
        || prom.range_samples(r#"{__name__=~"fwd_prom_.*"}[5m]"#, at),
        |got| *got == expected,
    );
    assert!(
        arrived,
        "Prometheus has {last:?}\nexpected {expected:?}\nforward: {}",
        s.stats()["forward"]
    );
    let st = wait_stats(&s, "2 points sent", |f| n(f, "points_sent") == 2);
    assert_eq!(n(&st, "points_dropped.unsupported"), 1);
}

// ===== 4. InfluxDB 1.x

#[test]
fn influxdb_receives_exact_points() {
    if !Influx::available() {
        return;
    }
    let influx = Influx::start();
    let created = influx.query("", "CREATE DATABASE x");
    assert_eq!(created["results"][0]["error"], Value::Null, "{created}");
    let url = format!("http://{}/write?db=x", influx.addr);
    let s = server(&["--influx-write-url", &url]);
    // Exact nanoseconds, far from now: InfluxDB keeps them as given.
    let t1: i64 = 1_700_000_000_123_456_789;
    let t2 = t1 + 1;
    write(
        &s,
        &format!(
            "m,host=a,region=eu\\ west v=1.5,n=-3i,u=9u,b=true,s=\"say \\\"hi\\\"\" {t1}\n\
             m,host=b big=18446744073709551615u,v=2.5 {t2}\n"
        ),
    );
    // Unsigned values go as integers when they fit in i64, else as floats.
    let expected = json!([{
        "name": "m",
        "columns": ["time", "b", "big", "host", "n", "region", "s", "u", "v"],
        "values": [
            [t1, true, null, "a", -3, "eu west", "say \"hi\"", 9, 1.5],
            [t2, null, 18446744073709551615.0, "b", null, null, null, null, 2.5],
        ],
    }]);
    let (arrived, last) = eventually(
        DELIVERY,
        || influx.query("x", "SELECT * FROM m")["results"][0]["series"].clone(),
        |got| *got == expected,
    );
    assert!(
        arrived,
        "InfluxDB has {last}\nexpected {expected}\nforward: {}",
        s.stats()["forward"]
    );
    let st = wait_stats(&s, "2 points sent", |f| n(f, "points_sent") == 2);
    assert_eq!(n(&st, "points_dropped.unsupported"), 0);
}

// ===== 5-6. A target down, then up

/// `count` points of one series `fwd_<name>_v`, values 0.., timestamps `base` + i ms,
/// in writes of 10 lines.
fn numbered_writes(name: &str, base: i64, count: usize) -> Vec<String> {
    let lines: Vec<String> = (0..count)
        .map(|i| format!("fwd_{name} v={i} {}", base + i as i64 * 1_000_000))
        .collect();
    lines.chunks(10).map(|c| c.join("\n")).collect()
}

/// What VictoriaMetrics must hold after [`numbered_writes`]: every point exactly once.
fn numbered_export(name: &str, base: i64, count: usize) -> Vec<Exported> {
    vec![(
        labels(&[("__name__", &format!("fwd_{name}_v"))]),
        (0..count).map(|i| i as f64).collect(),
        (0..count).map(|i| ms(base) + i as i64).collect(),
    )]
}

/// Waits until the target shows it is failing: retries counted, an error shown.
fn wait_failing(s: &Server) {
    let st = wait_stats(s, "retries and last_error", |f| {
        n(f, "retries") >= 1 && f["last_error"].is_string()
    });
    assert_eq!(n(&st, "points_sent"), 0, "{st}");
    assert_eq!(n(&st, "last_success_unix"), 0, "{st}");
}

#[test]
fn target_down_then_up_receives_everything() {
    if !Victoria::available() {
        return;
    }
    const N: usize = 60;
    let addr = free_addr();
    let url = format!("http://{addr}/api/v1/write");
    let s = server(&["--remote-write-url", &url]);
    let base = now_ns() - 60_000_000_000;
    for body in numbered_writes("down", base, N) {
        write(&s, &body);
    }
    wait_failing(&s);

    let vm = Victoria::start_on(addr);
    wait_export(&vm, &s, "fwd_down_v", numbered_export("down", base, N));
    let st = wait_stats(&s, "all sent", |f| n(f, "points_sent") == N as u64);
    assert!(n(&st, "last_success_unix") > 0, "{st}");
    assert_eq!(n(&st, "points_dropped.backlog"), 0, "{st}");
    // Still exactly N once the forwarder is idle: nothing was sent twice.
    assert_eq!(vm.export("fwd_down_v"), numbered_export("down", base, N));
}

#[test]
fn kill_9_while_the_target_is_down_loses_nothing() {
    if !Victoria::available() {
        return;
    }
    const N: usize = 50;
    let data = TempDir::new("fwd-kill");
    let dir = data.join("data").display().to_string();
    let addr = free_addr();
    let url = format!("http://{addr}/api/v1/write");
    let args = [
        "--data-dir",
        dir.as_str(),
        "--remote-write-url",
        url.as_str(),
    ];
    let mut first = server(&args);
    let base = now_ns() - 60_000_000_000;
    for body in numbered_writes("kill", base, N) {
        write(&first, &body);
    }
    wait_failing(&first);
    assert!(first.kill9(), "metricstream survived kill -9");
    drop(first);

    let second = server(&args);
    let vm = Victoria::start_on(addr);
    wait_export(&vm, &second, "fwd_kill_v", numbered_export("kill", base, N));
    wait_stats(&second, "all sent after the restart", |f| {
        n(f, "points_sent") == N as u64
    });
}

// ===== 7. Receiver answers (stub)

/// Every sample of remote_write requests: (name, value).
fn samples(requests: &[Received]) -> Vec<(String, f64)> {
    requests
        .iter()
        .flat_map(|r| {
            let req = remote_write::decode(&r.body).expect("snappy + protobuf");
            req.timeseries
                .into_iter()
                .flat_map(|ts| {
                    let name = ts
                        .labels
                        .iter()
                        .find(|l| l.name == "__name__")
                        .map(|l| l.value.clone())
                        .unwrap_or_default();
                    ts.samples.into_iter().map(move |s| (name.clone(), s.value))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn rw_url(stub: &Stub) -> String {
    format!("http://{}/api/v1/write", stub.addr)
}

#[test]
fn a_503_is_retried_and_the_batch_delivered_once_more() {
    let stub = Stub::start(|i, _| match i {
        0 => reply("503 Service Unavailable", "", "busy"),
        _ => reply("204 No Content", "", ""),
    });
    let s = server(&["--remote-write-url", &rw_url(&stub)]);
    write(&s, "r503 a=1,b=2 1000000000\nr503 a=3 2000000000\n");
    let st = wait_stats(&s, "delivered after a 503", |f| n(f, "points_sent") == 2);
    assert_eq!(n(&st, "retries"), 1, "{st}");
    assert!(
        st["last_error"].as_str().is_some_and(|e| e.contains("503")),
        "{st}"
    );
    let got = stub.stop();
    assert_eq!(got.len(), 2, "the refused batch sent again, once");
    assert_eq!(got[0].body, got[1].body, "the same batch resent");
    assert_eq!(
        samples(&got[1..]),
        [
            ("r503_a".to_string(), 1.0),
            ("r503_a".to_string(), 3.0),
            ("r503_b".to_string(), 2.0)
        ]
    );
}

#[test]
fn a_429_waits_for_retry_after() {
    let stub = Stub::start(|i, _| match i {
        0 => reply("429 Too Many Requests", "Retry-After: 1\r\n", "slow down"),
        _ => reply("204 No Content", "", ""),
    });
    let s = server(&["--remote-write-url", &rw_url(&stub)]);
    write(&s, "r429 v=1 1000000000\n");
    let st = wait_stats(&s, "delivered after a 429", |f| n(f, "points_sent") == 1);
    assert_eq!(n(&st, "retries"), 1, "{st}");
    let got = stub.stop();
    assert_eq!(got.len(), 2);
    // A lower bound only (Retry-After: 1 s), with room for clock granularity.
    let gap = got[1].at.duration_since(got[0].at);
    assert!(gap >= Duration::from_millis(950), "resent after {gap:?}");
}

#[test]
fn a_400_drops_the_batch_and_the_next_is_sent() {
    let stub = Stub::start(|i, _| match i {
        0 => reply("400 Bad Request", "", "bad sample: out of bounds"),
        _ => reply("204 No Content", "", ""),
    });
    let s = server(&["--remote-write-url", &rw_url(&stub)]);
    write(&s, "r400 first=1 1000000000\nr400 first=2 2000000000\n");
    let st = wait_stats(&s, "the refused batch counted", |f| {
        n(f, "points_dropped.rejected") == 2
    });
    assert_eq!(n(&st, "retries"), 0, "{st}");
    assert!(
        st["last_error"].as_str().is_some_and(|e| e.contains("400")),
        "{st}"
    );
    assert!(
        s.wait_for_log("bad sample: out of bounds", DELIVERY),
        "the receiver's answer is not in the log:\n{}",
        s.log_text()
    );
    write(&s, "r400 second=3 3000000000\n");
    let st = wait_stats(&s, "the next batch sent", |f| n(f, "points_sent") == 1);
    assert_eq!(n(&st, "points_dropped.rejected"), 2, "{st}");
    let got = stub.stop();
    assert_eq!(got.len(), 2, "the refused batch is not sent again");
    assert_eq!(samples(&got[1..]), [("r400_second".to_string(), 3.0)]);
}

#[test]
fn basic_auth_from_userinfo_and_the_password_never_shown() {
    const SECRET: &str = "s3cr3t-pw";
    let rw = Stub::start(|i, _| match i {
        0 => reply("503 Service Unavailable", "", "busy"),
        _ => reply("204 No Content", "", ""),
    });
    let lp = Stub::start(|i, _| match i {
        0 => reply("500 Internal Server Error", "", "oops"),
        _ => reply("204 No Content", "", ""),
    });
    let rw_url = format!("http://alice:{SECRET}@{}/api/v1/write", rw.addr);
    let lp_url = format!("http://{}/write?db=x&u=bob&p={SECRET}", lp.addr);
    // A third target that never answers: its errors are logged too.
    let down_url = format!("http://carol:{SECRET}@{}/api/v1/write", free_addr());
    let s = Server::start_with_env(
        &[
            "--remote-write-url",
            &rw_url,
            "--influx-write-url",
            &lp_url,
            "--remote-write-url",
            &down_url,
        ],
        &[("RUST_LOG", "debug")],
    );
    write(&s, "auth v=1 1000000000\n");
    let redacted = |format, url: &str| {
        Target::parse(format, url)
            .expect("target")
            .redacted()
            .to_string()
    };
    let shown = [
        redacted(Format::RemoteWrite, &rw_url),
        redacted(Format::LineProtocol, &lp_url),
        redacted(Format::RemoteWrite, &down_url),
    ];
    let entry = |all: &Value, url: &str| -> Value {
        all.as_array()
            .and_then(|a| a.iter().find(|t| t["url"] == url))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (ok, last) = eventually(
        DELIVERY,
        || s.stats()["forward"].clone(),
        |all| {
            let (rw, lp, down) = (
                entry(all, &shown[0]),
                entry(all, &shown[1]),
                entry(all, &shown[2]),
            );
            rw["points_sent"] == 1 && lp["points_sent"] == 1 && down["retries"].as_u64() >= Some(1)
        },
    );
    assert!(
        ok,
        "forward: {last} (want {shown:?})\nlog:\n{}",
        s.log_text()
    );

    let want = base64::engine::general_purpose::STANDARD.encode(format!("alice:{SECRET}"));
    let got = rw.stop();
    assert!(got.len() >= 2, "{got:?}");
    for r in &got {
        assert_eq!(
            r.header("Authorization"),
            Some(format!("Basic {want}").as_str())
        );
    }
    // v1 credentials stay in the query, where InfluxDB reads them.
    let got = lp.stop();
    assert!(
        got[0].head.contains(&format!("p={SECRET}")),
        "{}",
        got[0].head
    );
    assert_eq!(got[0].header("Authorization"), None);
    let stats = get(s.addr, "/stats").text();
    let metrics = get(s.addr, "/metrics").text();
    let log = s.log_text();
    for (what, text) in [("/stats", &stats), ("/metrics", &metrics), ("stderr", &log)] {
        assert!(!text.contains(SECRET), "{what} shows the password:\n{text}");
    }
    assert!(log.contains("***@"), "no redacted URL in the log:\n{log}");
}

const CAP: u64 = 65_536;
const CAP_WRITES: usize = 60;
const CAP_LINES: usize = 250;
const CAP_POINTS: u64 = (CAP_WRITES * CAP_LINES) as u64;

/// A server with `--forward-max-backlog-bytes` [`CAP`] forwarding to `addr`, given
/// [`CAP_WRITES`] writes (each acknowledged) of [`CAP_LINES`] points that do not compress,
/// so the log grows well past the cap: measurement `cap_w<write>`.
fn write_past_the_cap(addr: std::net::SocketAddr) -> Server {
    let s = server(&[
        "--forward-max-backlog-bytes",
        &CAP.to_string(),
        "--remote-write-url",
        &format!("http://{addr}/api/v1/write"),
    ]);
    let mut rng = Rng::new(12);
    for w in 0..CAP_WRITES {
        let body: Vec<String> = (0..CAP_LINES)
            .map(|i| {
                format!(
                    "cap_w{w} v={}.{} {}",
                    rng.next_u64() % 1_000_000,
                    rng.next_u64() % 1_000_000_000,
                    1_000_000_000 + i as i64
                )
            })
            .collect();
        write(&s, &body.join("\n"));
    }
    s
}

/// With a receiver answering `2xx` at `stub`: waits until every point is sent or dropped;
/// the final `forward[0]` and, per write, how many of its points arrived.
fn settle_past_the_cap(s: &Server, stub: Stub) -> (Value, Vec<usize>) {
    let st = wait_stats(s, "every point sent or dropped", |f| {
        n(f, "points_sent") + n(f, "points_dropped.backlog") == CAP_POINTS
    });
    let got = samples(&stub.stop());
    assert_eq!(got.len() as u64, n(&st, "points_sent"), "{st}");
    let per_write = (0..CAP_WRITES)
        .map(|w| {
            got.iter()
                .filter(|(m, _)| m == &format!("cap_w{w}_v"))
                .count()
        })
        .collect();
    (st, per_write)
}

#[test]
fn backlog_cap_drops_counted_points_and_ingestion_goes_on() {
    let addr = free_addr();
    let s = write_past_the_cap(addr);
    let st = wait_stats(&s, "points dropped, backlog near the cap", |f| {
        n(f, "points_dropped.backlog") > 0 && n(f, "backlog_bytes") <= CAP + CAP / 2
    });
    assert_eq!(n(&st, "points_sent"), 0, "{st}");
    assert!(
        s.wait_for_log("--forward-max-backlog-bytes", DELIVERY),
        "no warning about the cap:\n{}",
        s.log_text()
    );
    let stub = Stub::start_on(addr, |_, _| reply("204 No Content", "", ""));
    let (st, per_write) = settle_past_the_cap(&s, stub);
    eprintln!("target up again: {st}; points arrived per write: {per_write:?}");
    assert_eq!(per_write[0], 0, "the oldest write was not dropped");
}

/// SPEC: past the cap "the oldest unsent points are dropped". Since the sender lanes
/// (rounds of up to 160,000 values), a round whose log bytes pass the cap is dropped whole,
/// newest points included: here every one of the 15,000 points, without one request.
#[test]

fn backlog_cap_keeps_the_newest_points() {
    let addr = free_addr();
    let s = write_past_the_cap(addr);
    wait_stats(&s, "points dropped", |f| n(f, "points_dropped.backlog") > 0);
    let stub = Stub::start_on(addr, |_, _| reply("204 No Content", "", ""));
    let (st, per_write) = settle_past_the_cap(&s, stub);
    assert_eq!(
        per_write[CAP_WRITES - 1],
        CAP_LINES,
        "the newest write did not arrive whole: {st}"
    );
}

/// The same drop with a receiver that is up and answering all along: a burst of writes
/// larger than the cap (in log bytes) within one round is dropped entirely, so a small cap
/// loses points a healthy target would have taken.
#[test]

fn a_healthy_target_with_a_small_cap_receives_the_newest_points() {
    let stub = Stub::start(|_, _| reply("204 No Content", "", ""));
    let s = write_past_the_cap(stub.addr);
    let (st, per_write) = settle_past_the_cap(&s, stub);
    assert_eq!(
        per_write[CAP_WRITES - 1],
        CAP_LINES,
        "the newest write did not arrive whole: {st}"
    );
}

// ===== Cursor, batches, shutdown, https

fn ok_stub() -> Stub {
    Stub::start(|_, _| reply("204 No Content", "", ""))
}

#[test]
fn a_new_target_starts_at_the_end_of_the_log_then_resumes_from_its_cursor() {
    let data = TempDir::new("fwd-cursor");
    let dir = data.join("data").display().to_string();
    let stub = ok_stub();
    let url = rw_url(&stub);
    let plain = ["--data-dir", dir.as_str()];
    let forwarding = [
        "--data-dir",
        dir.as_str(),
        "--remote-write-url",
        url.as_str(),
    ];

    // Logged before the target existed: never sent to it.
    let mut s = server(&plain);
    write(&s, "cur before=1 1000000000\n");
    assert_eq!(s.terminate(Duration::from_secs(20)), Some(0));
    drop(s);

    let mut s = server(&forwarding);
    write(&s, "cur first=2 2000000000\n");
    wait_stats(&s, "sent", |f| n(f, "points_sent") == 1);
    assert_eq!(s.terminate(Duration::from_secs(20)), Some(0));
    drop(s);
    let cursors: Vec<_> = std::fs::read_dir(data.join("data/forward"))
        .expect("DIR/forward")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cursor"))
        .collect();
    assert_eq!(cursors.len(), 1, "{cursors:?}");

    // Restarted: from its cursor, nothing acknowledged sent twice.
    let s = server(&forwarding);
    write(&s, "cur second=3 3000000000\n");
    wait_stats(&s, "sent after the restart", |f| n(f, "points_sent") == 1);
    assert_eq!(
        samples(&stub.stop()),
        [
            ("cur_first".to_string(), 2.0),
            ("cur_second".to_string(), 3.0)
        ]
    );
}

#[test]
fn requests_hold_at_most_10000_values_in_log_order() {
    const POINTS: usize = 12_500;
    let stub = ok_stub();
    let s = server(&["--remote-write-url", &rw_url(&stub)]);
    let lines: Vec<String> = (0..POINTS)
        .map(|i| format!("big a={i},b={i} {}", 1_000_000_000 + i as i64 * 1_000_000))
        .collect();
    for chunk in lines.chunks(5000) {
        write(&s, &chunk.join("\n"));
    }
    wait_stats(&s, "all sent", |f| n(f, "points_sent") == POINTS as u64);
    // A point counts as sent with its first value; its other values may be in a later
    // request of the same lane (series are grouped), so wait for every sample too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while samples(&stub.received()).len() < 2 * POINTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = stub.stop();
    let per_request: Vec<usize> = got
        .iter()
        .map(|r| samples(std::slice::from_ref(r)).len())
        .collect();
    assert!(per_request.iter().all(|&v| v <= 10_000), "{per_request:?}");
    assert_eq!(per_request.iter().sum::<usize>(), 2 * POINTS);
    // Each series' samples arrive in log order, across requests too.
    let all = samples(&got);
    for name in ["big_a", "big_b"] {
        let values: Vec<f64> = all
            .iter()
            .filter(|(m, _)| m == name)
            .map(|(_, v)| *v)
            .collect();
        let expected: Vec<f64> = (0..POINTS).map(|i| i as f64).collect();
        assert!(
            values == expected,
            "{name}: {} values, not 0..{POINTS} in order",
            values.len()
        );
    }
}

#[test]
fn shutdown_with_targets_down_or_hanging_exits_and_loses_nothing() {
    let data = TempDir::new("fwd-stop");
    let dir = data.join("data").display().to_string();
    let down = free_addr();
    // Accepts connections (the kernel does) and never answers a request.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hanging_url = format!(
        "http://{}/api/v1/write",
        hanging.local_addr().expect("addr")
    );
    let down_url = format!("http://{down}/api/v1/write");
    let mut s = server(&[
        "--data-dir",
        &dir,
        "--remote-write-url",
        &down_url,
        "--remote-write-url",
        &hanging_url,
    ]);
    write(&s, "stop v=1 1000000000\nstop v=2 2000000000\n");
    wait_failing(&s);
    // Bounded by the forwarders' grace, not by the hanging request's timeout.
    assert_eq!(
        s.terminate(Duration::from_secs(25)),
        Some(0),
        "{}",
        s.log_text()
    );
    drop(s);
    drop(hanging);

    // Both targets up: each still gets both points.
    let stub = Stub::start_on(down, |_, _| reply("204 No Content", "", ""));
    let s = server(&["--data-dir", &dir, "--remote-write-url", &down_url]);
    wait_stats(&s, "sent after the restart", |f| n(f, "points_sent") == 2);
    assert_eq!(
        samples(&stub.stop()),
        [("stop_v".to_string(), 1.0), ("stop_v".to_string(), 2.0)]
    );
}

#[test]
fn https_target_trusted_through_forward_ca_file() {
    let (config, ca_pem) = private_pki();
    let tmp = TempDir::new("fwd-ca");
    let ca_file = tmp.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("CA file");
    let stub = tls_stub(config, vec![reply("204 No Content", "", "")]);
    let url = format!("https://u:pw@{}/api/v1/write", stub.addr);
    let s = server(&[
        "--remote-write-url",
        &url,
        "--forward-ca-file",
        &ca_file.display().to_string(),
    ]);
    write(&s, "tls v=1 1000000000\n");
    wait_stats(&s, "sent over https", |f| n(f, "points_sent") == 1);
    let got = stub.stop();
    assert_eq!(got[0].header("Authorization"), Some("Basic dTpwdw=="));
    assert_eq!(samples(&got), [("tls_v".to_string(), 1.0)]);
}

// ===== 8. Configuration

#[test]
fn memory_only_with_a_forward_url_from_the_environment_is_a_config_error() {
    let (code, err) = run_expecting_exit(
        &["--listen", "127.0.0.1:0", "--memory-only"],
        &[(
            "METRICSTREAM_INFLUX_WRITE_URL",
            "http://u:hunter2@127.0.0.1:9/write",
        )],
    );
    assert_eq!(code, Some(2), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("memory-only"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Starts the server with `--forward-ca-file` naming a file that does not exist.
fn start_with_missing_ca_file() -> (Option<i32>, String) {
    let tmp = TempDir::new("fwd-noca");
    run_expecting_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &tmp.join("data").display().to_string(),
            "--remote-write-url",
            "https://127.0.0.1:9/api/v1/write",
            "--forward-ca-file",
            &tmp.join("missing.pem").display().to_string(),
        ],
        &[],
    )
}

#[test]
fn an_unreadable_forward_ca_file_is_a_config_error() {
    let (code, err) = start_with_missing_ca_file();
    assert_eq!(code, Some(2), "stderr: {err}");
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("--forward-ca-file") && last.contains("missing.pem"),
        "{err}"
    );
}

/// SPEC "Configuration": an invalid value stops start-up with one line on stderr. Today
/// the CA file is read only once the data directory is open and the listener bound, after
/// the "listening on" line (which tells a supervisor or a test harness the server is up).
#[test]

fn an_unreadable_forward_ca_file_fails_before_anything_starts() {
    let (code, err) = start_with_missing_ca_file();
    assert_eq!(code, Some(2), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Line protocol is forwarded with nanosecond timestamps (docs/forwarding.md: "the target
/// URL must use the default precision"), but a URL asking for another precision is
/// accepted today, and the receiver then reads every timestamp 10^9 (or 10^6, 10^3) times
/// too large: the points land at the wrong time or are refused. Refusing it at start-up is
/// one answer (dropping or rewriting the parameter another).
#[test]

fn an_influx_url_with_another_precision_is_refused() {
    let tmp = TempDir::new("fwd-precision");
    let (code, err) = run_expecting_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &tmp.join("data").display().to_string(),
            "--influx-write-url",
            "http://127.0.0.1:9/write?db=x&precision=s",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "stderr: {err}");
}

// ===== 9. The per-batch debug line

#[test]
fn debug_log_has_a_line_per_batch() {
    let stub = Stub::start(|i, _| match i {
        0 => reply("503 Service Unavailable", "", ""),
        _ => reply("204 No Content", "", ""),
    });
    let url = format!("http://u:pw@{}/api/v1/write", stub.addr);
    let shown = Target::parse(Format::RemoteWrite, &url)
        .expect("target")
        .redacted()
        .to_string();
    let s = Server::start_with_env(&["--remote-write-url", &url], &[("RUST_LOG", "debug")]);
    write(&s, "dbg a=1,b=2 1000000000\ndbg a=3 2000000000\n");
    wait_stats(&s, "sent", |f| n(f, "points_sent") == 2);
    let log = s.log_text();
    let batch_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("forward {shown}:")) && l.contains(" points"))
        .collect();
    let has = |status: &str| {
        batch_lines.iter().any(|l| {
            l.contains("2 points")
                && l.contains("3 values")
                && l.contains(" bytes")
                && l.contains(&format!("-> {status} in "))
                && l.ends_with(" ms")
        })
    };
    assert!(has("503") && has("204"), "{batch_lines:#?}\nlog:\n{log}");
    assert!(!log.contains("u:pw@"), "{log}");
}
