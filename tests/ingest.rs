//! Ingestion through the real server: /write and /api/v2/write, all-or-nothing writes,
//! gzip, the bounded queue, /series, /metrics (checked by promtool and scraped by a real
//! Prometheus), /query, and the InfluxDB Python client libraries.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn series(s: &Server, query: &str) -> Value {
    let r = get(s.addr, &format!("/series?{}", query));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits (bounded) until every queued point has been aggregated.
fn settle(s: &Server) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            let st = s.stats();
            st["points_queued"] == st["points_aggregated"]
        }),
        "aggregator did not catch up"
    );
}

fn find<'a>(v: &'a Value, field: &str, tags: &[(&str, &str)]) -> Option<&'a Value> {
    v["series"]
        .as_array()?
        .iter()
        .find(|s| s["field"] == field && tags.iter().all(|(k, val)| s["tags"][*k] == *val))
}

#[test]
fn write_then_series_shows_exact_aggregates() {
    let s = Server::start(&[]);
    let body = "cpu,host=a,region=eu usage=1.5,up=3i,ok=true,note=\"first\" 1000\n\
                cpu,region=eu,host=a usage=-2.5,up=7i,ok=false,note=\"second\" 3000\n\
                cpu,host=a,region=eu usage=4,up=5i,ok=true 2000\n\
                # a comment\n\
                \n\
                cpu,host=b,region=eu usage=10 4000\n";
    let r = post(s.addr, "/write", body.as_bytes(), "");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    settle(&s);
    let v = series(&s, "measurement=cpu");
    assert_eq!(v["truncated"], false);
    let usage = find(&v, "usage", &[("host", "a")]).expect("usage series");
    assert_eq!(usage["measurement"], "cpu");
    assert_eq!(
        usage["tags"],
        serde_json::json!({"host": "a", "region": "eu"})
    );
    assert_eq!(usage["count"], 3);
    assert_eq!(usage["sum"], 3.0);
    assert_eq!(usage["min"], -2.5);
    assert_eq!(usage["max"], 4.0);
    // "last" is the value with the latest timestamp, not the last line.
    assert_eq!(usage["last"], -2.5);
    assert_eq!(usage["last_timestamp_ns"], 3000);
    let up = find(&v, "up", &[("host", "a")]).unwrap();
    assert_eq!(
        (
            up["count"].as_u64(),
            up["sum"].as_f64(),
            up["last"].as_i64()
        ),
        (Some(3), Some(15.0), Some(7))
    );
    let ok = find(&v, "ok", &[("host", "a")]).unwrap();
    assert_eq!(
        (ok["sum"].as_f64(), ok["min"].as_f64(), ok["max"].as_f64()),
        (Some(2.0), Some(0.0), Some(1.0))
    );
    assert_eq!(ok["last"], false);
    let note = find(&v, "note", &[("host", "a")]).unwrap();
    assert_eq!(note["count"], 2);
    assert_eq!(note["last"], "second");
    assert!(note["sum"].is_null() && note["min"].is_null() && note["max"].is_null());
    let b = find(&v, "usage", &[("host", "b")]).unwrap();
    assert_eq!(b["count"], 1);
    let st = s.stats();
    assert_eq!(st["points_accepted"], 4);
    assert_eq!(st["points_queued"], 4);
    assert_eq!(st["points_aggregated"], 4);
    assert_eq!(st["series"], 5);
}

#[test]
fn missing_timestamp_gets_receive_time_and_precision_scales() {
    let s = Server::start(&[]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert_eq!(post(s.addr, "/write", b"m v=1", "").status, 204);
    assert_eq!(
        post(s.addr, "/write?precision=s", b"p v=1 1700000000", "").status,
        204
    );
    assert_eq!(
        post(s.addr, "/write?precision=ms", b"q v=1 1700000000000", "").status,
        204
    );
    assert_eq!(
        post(s.addr, "/write?precision=h", b"h v=1 2", "").status,
        204
    );
    assert_eq!(
        post(s.addr, "/api/v2/write?precision=us", b"u v=1 5", "").status,
        204
    );
    settle(&s);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let ts = |m: &str| {
        series(&s, &format!("measurement={}", m))["series"][0]["last_timestamp_ns"]
            .as_i64()
            .unwrap()
    };
    let m = ts("m");
    assert!(
        m >= before && m <= after,
        "{} not in [{}, {}]",
        m,
        before,
        after
    );
    assert_eq!(ts("p"), 1_700_000_000_000_000_000);
    assert_eq!(ts("q"), 1_700_000_000_000_000_000);
    assert_eq!(ts("h"), 7_200_000_000_000);
    assert_eq!(ts("u"), 5_000);
    // Unknown precisions are refused, v2 accepts fewer words.
    assert_eq!(
        post(s.addr, "/write?precision=fortnight", b"x v=1", "").status,
        400
    );
    assert_eq!(
        post(s.addr, "/api/v2/write?precision=h", b"x v=1", "").status,
        400
    );
    // A timestamp that overflows after scaling.
    let r = post(s.addr, "/write?precision=s", b"x v=1 9223372036854775", "");
    assert_eq!(r.status, 400);
}

#[test]
fn db_and_bucket_become_a_tag() {
    let s = Server::start(&[]);
    assert_eq!(
        post(
            s.addr,
            "/write?db=telegraf",
            b"cpu,host=a v=1\ncpu,db=own v=2",
            ""
        )
        .status,
        204
    );
    assert_eq!(
        post(
            s.addr,
            "/api/v2/write?org=o&bucket=b1",
            b"cpu,host=a v=3",
            ""
        )
        .status,
        204
    );
    settle(&s);
    let v = series(&s, "measurement=cpu&tag=host:a");
    let dbs: Vec<&str> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["tags"]["db"].as_str().unwrap())
        .collect();
    assert_eq!(dbs.len(), 2, "{}", v);
    assert!(dbs.contains(&"telegraf") && dbs.contains(&"b1"));
    assert_eq!(series(&s, "tag=db:own")["series"][0]["last"], 2.0);
}

#[test]
fn one_bad_line_leaves_nothing_behind() {
    let s = Server::start(&[]);
    let body = "good,t=1 v=1 1\n\
                good,t=2 v=2 2\n\
                good,t=3 v=3 3\n\
                good,t=4 v=4i,v2=\"unterminated 4\n\
                good,t=5 v=5 5\n\
                good,t=6 v=6 6\n";
    let r = post(s.addr, "/write?db=x", body.as_bytes(), "");
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["line"], 4, "{}", j);
    assert!(
        j["error"].as_str().unwrap().contains("unable to parse"),
        "{}",
        j
    );
    assert!(
        r.header("X-Influxdb-Error")
            .unwrap()
            .contains("unable to parse")
    );
    let good = "good,t=1 v=1 1\ngood,t=2 v=2 2\ngood,t=3 v=3 3\ngood,t=4 v=4 4\ngood,t=5 v=5 5\ngood,t=6 v=6 6";
    for line in 1..=6 {
        let bad = good
            .lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == line { "good,t=x v=" } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        let r = post(s.addr, "/write", bad.as_bytes(), "");
        assert_eq!(
            (r.status, r.json()["line"].as_u64()),
            (400, Some(line as u64))
        );
    }
    // The v2 shape.
    let r = post(s.addr, "/api/v2/write?bucket=b", b"m v=1\nm v=tru", "");
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["code"], "invalid");
    assert_eq!(j["line"], 2);
    assert!(j["message"].is_string());
    settle(&s);
    assert_eq!(series(&s, "")["series"].as_array().unwrap().len(), 0);
    let st = s.stats();
    assert_eq!(st["points_queued"], 0);
    assert_eq!(st["series"], 0);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn gzip_bodies_limits_and_empty_gzip() {
    let s = Server::start(&["--max-body-bytes", "100000"]);
    let body: String = (0..500)
        .map(|i| format!("gz,host=h{} v={}i {}\n", i % 7, i, i))
        .collect();
    let r = post(
        s.addr,
        "/write",
        &gzip(body.as_bytes()),
        "Content-Encoding: gzip\r\n",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    // Chunked and gzipped at once.
    let z = gzip(b"gz,host=chunked v=1i 1\n");
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
    for part in z.chunks(7) {
        c.send(format!("{:x}\r\n", part.len()).as_bytes());
        c.send(part);
        c.send(b"\r\n");
    }
    c.send(b"0\r\n\r\n");
    assert_eq!(c.response().status, 204);
    // Clients send the gzip header on empty bodies: not an error.
    assert_eq!(
        post(s.addr, "/write", b"", "Content-Encoding: gzip\r\n").status,
        204
    );
    // Small on the wire, too large decompressed: 413, nothing queued.
    let bomb = gzip(&vec![b'#'; 200_000]);
    assert!(bomb.len() < 100_000);
    let r = post(s.addr, "/write", &bomb, "Content-Encoding: gzip\r\n");
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("too large"));
    // Corrupt gzip is a 400.
    assert_eq!(
        post(
            s.addr,
            "/write",
            b"\x1f\x8bnot really",
            "Content-Encoding: gzip\r\n"
        )
        .status,
        400
    );
    // Unknown encodings are 415.
    assert_eq!(
        post(s.addr, "/write", b"m v=1", "Content-Encoding: br\r\n").status,
        415
    );
    settle(&s);
    assert_eq!(s.stats()["points_aggregated"], 501);
    let v = series(&s, "measurement=gz&tag=host:h0");
    assert_eq!(v["series"][0]["count"], 72);
}

#[test]
fn queue_full_is_503_and_nothing_half_taken() {
    let s = Server::start(&["--queue-capacity", "10"]);
    let body: String = (0..11).map(|i| format!("q,i={} v=1 {}\n", i, i)).collect();
    let r = post(s.addr, "/write", body.as_bytes(), "");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(r.json()["error"].as_str().unwrap().contains("queue"));
    let r = post(s.addr, "/api/v2/write", body.as_bytes(), "");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (503, Some("unavailable"))
    );
    let ten: String = (0..10).map(|i| format!("q,i={} v=1 {}\n", i, i)).collect();
    assert_eq!(post(s.addr, "/write", ten.as_bytes(), "").status, 204);
    settle(&s);
    let st = s.stats();
    assert_eq!(st["points_queued"], 10);
    assert_eq!(st["points_aggregated"], 10);
    assert_eq!(st["writes_refused_queue_full"], 2);
    assert_eq!(
        series(&s, "measurement=q")["series"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn max_series_drops_and_counts() {
    let s = Server::start(&["--max-series", "3"]);
    assert_eq!(
        post(
            s.addr,
            "/write",
            b"m,k=1 a=1,b=1\nm,k=2 a=1,b=1\nm,k=1 a=2",
            ""
        )
        .status,
        204
    );
    settle(&s);
    let st = s.stats();
    assert_eq!(st["series"], 3);
    assert_eq!(st["points_dropped_series_limit"], 1);
    let v = series(&s, "tag=k:1&field=a");
    assert_eq!(v["series"][0]["count"], 2, "existing series keep updating");
}

#[test]
fn series_filters_and_limit() {
    let s = Server::start(&[]);
    let body: String = (0..30)
        .map(|i| {
            format!(
                "f{},host=h{},dc=d{} a={},b={} {}\n",
                i % 2,
                i % 5,
                i % 3,
                i,
                i,
                i
            )
        })
        .collect();
    assert_eq!(post(s.addr, "/write", body.as_bytes(), "").status, 204);
    settle(&s);
    let all = series(&s, "");
    assert_eq!(all["series"].as_array().unwrap().len(), 60);
    let f0a = series(&s, "measurement=f0&field=a");
    assert!(
        f0a["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["measurement"] == "f0" && x["field"] == "a")
    );
    let tagged = series(&s, "tag=host:h1&tag=dc:d1");
    for x in tagged["series"].as_array().unwrap() {
        assert_eq!(
            (x["tags"]["host"].as_str(), x["tags"]["dc"].as_str()),
            (Some("h1"), Some("d1"))
        );
    }
    let lim = series(&s, "limit=7");
    assert_eq!(lim["series"].as_array().unwrap().len(), 7);
    assert_eq!(lim["truncated"], true);
    assert_eq!(get(s.addr, "/series?limit=abc").status, 400);
    // Default limit is 1000.
    let body: String = (0..1200).map(|i| format!("many,i={} v=1\n", i)).collect();
    assert_eq!(post(s.addr, "/write", body.as_bytes(), "").status, 204);
    settle(&s);
    let v = series(&s, "measurement=many");
    assert_eq!(
        (
            v["series"].as_array().unwrap().len(),
            v["truncated"].as_bool()
        ),
        (1000, Some(true))
    );
}

#[test]
fn escaped_names_round_trip_to_series_and_metrics() {
    let s = Server::start(&[]);
    let body = "we\\ ird\\,m,tag\\ key=va\\,l\\=ue f\\=x=1,str=\"q\\\"uote\" 1\n";
    assert_eq!(post(s.addr, "/write", body.as_bytes(), "").status, 204);
    settle(&s);
    let v = series(&s, "");
    let x = find(&v, "f=x", &[]).unwrap_or_else(|| panic!("{}", v));
    assert_eq!(x["measurement"], "we ird,m");
    assert_eq!(x["tags"]["tag key"], "va,l=ue");
    let st = find(&v, "str", &[]).unwrap();
    assert_eq!(st["last"], "q\"uote");
    let m = get(s.addr, "/metrics").text();
    assert!(m.contains("we_ird_m_f_x{tag_key=\"va,l=ue\"} 1"), "{}", m);
    assert!(
        !m.contains("we_ird_m_str"),
        "string fields are not exported"
    );
}

/// Runs `promtool check metrics` on `text` when promtool is installed (CI requires it).
fn promtool_check(text: &str) -> bool {
    if !tool_available("promtool", "METRICSTREAM_REQUIRE_PROMTOOL") {
        return false;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        text
    );
    true
}

#[test]
fn metrics_pass_promtool() {
    let s = Server::start(&[]);
    let body = "cpu,host=a,region=eu usage_user=1.5,usage_system=2,uptime=100i 1\n\
                cpu-load,host=a,region=eu load=0.5 1\n\
                cpu.load,host=a,region=eu load=0.7 2\n\
                disk,__name=root,path=/var,9x=1 used_bytes=10u,ro=true,label=\"ext4\" 1\n\
                temp,sensor=a\\\"b\\\\c usage=-3.25 1\n\
                metricstream_requests,k=v value=1 1\n\
                7days,x=y hits=1 1\n";
    let r = post(s.addr, "/write", body.as_bytes(), "");
    assert_eq!(r.status, 204, "{}", r.text());
    settle(&s);
    let m = get(s.addr, "/metrics");
    assert_eq!(m.status, 200);
    assert!(
        m.header("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = m.text();
    assert!(
        text.contains("cpu_usage_user{host=\"a\",region=\"eu\"} 1.5"),
        "{}",
        text
    );
    assert_eq!(
        text.matches("# TYPE cpu_load_load gauge").count(),
        1,
        "one family for cpu-load and cpu.load"
    );
    assert!(
        text.contains("disk_used_bytes{_9x=\"1\",path=\"/var\",tag__name=\"root\"} 10"),
        "{}",
        text
    );
    assert!(text.contains("disk_ro{"), "booleans exported as 0/1");
    assert!(!text.contains("disk_label"));
    // In a tag value `\"` and `\\` are literal (only `,` `=` and space are escapable), so
    // the label value is `a\"b\\c`, escaped again for the exposition format.
    assert!(
        text.contains(r#"temp_usage{sensor="a\\\"b\\\\c"} -3.25"#),
        "{}",
        text
    );
    assert!(
        text.contains("_metricstream_requests_value{k=\"v\"} 1"),
        "{}",
        text
    );
    assert!(text.contains("_7days_hits{x=\"y\"} 1"), "{}", text);
    assert!(text.contains("metricstream_requests_total "));
    assert!(text.contains("metricstream_responses_total{status=\"204\"} 1"));
    promtool_check(&text);
    // HEAD: headers only.
    let h = request(
        s.addr,
        "HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
}

#[test]
fn query_create_database_stub() {
    let s = Server::start(&[]);
    for q in [
        "CREATE+DATABASE+mydb",
        "create%20database%20%22my%20db%22",
        "CREATE+DATABASE+x%3B",
    ] {
        let r = get(s.addr, &format!("/query?q={}", q));
        assert_eq!(r.status, 200, "{}: {}", q, r.text());
        assert_eq!(
            r.json(),
            serde_json::json!({"results":[{"statement_id":0}]})
        );
    }
    let r = post(
        s.addr,
        "/query",
        b"q=CREATE+DATABASE+%22a%5C%22b%22",
        "Content-Type: application/x-www-form-urlencoded\r\n",
    );
    assert_eq!(r.status, 200);
    let r = post(s.addr, "/query?q=CREATE+DATABASE+db", b"", "");
    assert_eq!(r.status, 200);
    for q in ["SHOW+DATABASES", "SELECT+*+FROM+cpu", "DROP+DATABASE+x"] {
        let r = get(s.addr, &format!("/query?q={}", q));
        assert_eq!(r.status, 400);
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("CREATE DATABASE")
        );
    }
    assert_eq!(get(s.addr, "/query").status, 400);
    // Client headers the server must tolerate.
    let r = request(
        s.addr,
        "GET /query?q=CREATE+DATABASE+x HTTP/1.1\r\nHost: t\r\nAccept: application/x-msgpack\r\nAuthorization: Token whatever\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
}

#[test]
fn write_over_max_body_is_413() {
    let s = Server::start(&["--max-body-bytes", "1000"]);
    let body = vec![b'#'; 1001];
    let r = post(s.addr, "/write", &body, "");
    assert_eq!(r.status, 413);
    let r = post(s.addr, "/api/v2/write", &body, "");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("request too large"))
    );
}

fn python() -> Option<String> {
    let py = std::env::var("METRICSTREAM_PYTHON").ok().or_else(|| {
        let local = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/venv/bin/python");
        std::path::Path::new(local)
            .exists()
            .then(|| local.to_string())
    });
    let ok = py.as_ref().is_some_and(|p| {
        std::process::Command::new(p)
            .args(["-c", "import influxdb, influxdb_client"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if ok {
        return py;
    }
    assert!(
        std::env::var_os("METRICSTREAM_REQUIRE_CLIENTS").is_none(),
        "the InfluxDB Python clients are required but not importable (set METRICSTREAM_PYTHON to a python with influxdb and influxdb-client)"
    );
    eprintln!(
        "skipping: no python with influxdb and influxdb-client (run .ci/run once to create .ci/venv)"
    );
    None
}

fn run_python(py: &str, script: &str) {
    let out = std::process::Command::new(py)
        .args(["-c", script])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn influxdb_v1_python_client_writes() {
    let Some(py) = python() else { return };
    let s = Server::start(&[]);
    let script = format!(
        r#"
from influxdb import InfluxDBClient
c = InfluxDBClient(host="127.0.0.1", port={port}, database="telegraf", timeout=10)
assert c.ping()
c.create_database("telegraf")
ok = c.write_points([
    {{"measurement": "cpu", "tags": {{"host": "py1"}}, "time": 1700000000000000000, "fields": {{"usage": 12.5, "n": 3}}}},
    {{"measurement": "cpu", "tags": {{"host": "py1"}}, "time": 1700000001000000000, "fields": {{"usage": 14.5, "n": 4}}}},
])
assert ok
c.write_points(["cpu,host=py2 usage=1"], protocol="line", time_precision="s")
"#,
        port = s.addr.port()
    );
    run_python(&py, &script);
    settle(&s);
    let v = series(&s, "measurement=cpu&tag=host:py1&field=usage");
    let x = &v["series"][0];
    assert_eq!(x["tags"]["db"], "telegraf");
    assert_eq!(
        (x["count"].as_u64(), x["last"].as_f64(), x["sum"].as_f64()),
        (Some(2), Some(14.5), Some(27.0))
    );
    assert_eq!(series(&s, "tag=host:py2")["series"][0]["count"], 1);
}

#[test]
fn influxdb_v2_python_client_writes() {
    let Some(py) = python() else { return };
    let s = Server::start(&[]);
    let script = format!(
        r#"
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
with InfluxDBClient(url="http://127.0.0.1:{port}", token="anything", org="org", timeout=10000) as c:
    w = c.write_api(write_options=SYNCHRONOUS)
    w.write(bucket="metrics", record=Point("mem").tag("host", "v2").field("used", 42.0).time(1700000000, WritePrecision.S))
    w.write(bucket="metrics", record=["mem,host=v2 used=43 1700000001000000000"])
    w.write(bucket="metrics", record=[{{"measurement": "mem", "tags": {{"host": "v2"}}, "fields": {{"used": 44.0}}, "time": 1700000002000000000}}])
"#,
        port = s.addr.port()
    );
    run_python(&py, &script);
    settle(&s);
    let v = series(&s, "measurement=mem&tag=host:v2&field=used");
    let x = &v["series"][0];
    assert_eq!(x["tags"]["db"], "metrics");
    assert_eq!(
        (x["count"].as_u64(), x["last"].as_f64()),
        (Some(3), Some(44.0))
    );
    assert_eq!(x["last_timestamp_ns"], 1_700_000_002_000_000_000i64);
}

#[test]
fn a_real_prometheus_scrapes_metrics() {
    if !tool_available("prometheus", "METRICSTREAM_REQUIRE_PROMTOOL") {
        return;
    }
    let s = Server::start(&[]);
    assert_eq!(
        post(
            s.addr,
            "/write",
            b"cpu,host=a usage=1.5\ntemp,room=x\\ y c=-4i",
            ""
        )
        .status,
        204
    );
    settle(&s);
    let dir = std::env::temp_dir().join(format!("ms-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: metricstream\n    static_configs:\n      - targets: ['{}']\n",
            s.addr
        ),
    )
    .unwrap();
    let mut prom = std::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{}", port))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prometheus");
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut last = String::new();
    let up = wait_until(Duration::from_secs(40), || {
        let Ok(st) = std::net::TcpStream::connect_timeout(&api, Duration::from_millis(500)) else {
            return false;
        };
        st.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut r = Reader::new(st);
        r.send(b"GET /api/v1/targets HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
        let Some(resp) = r.try_response_to(false) else {
            return false;
        };
        if resp.status != 200 {
            return false;
        }
        last = resp.text();
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        v["data"]["activeTargets"][0]["health"] == "up"
    });
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(up, "prometheus did not report the target up: {}", last);
}
