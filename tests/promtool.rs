//! Checks the `/metrics` exposition of a store full of awkward line-protocol names with the
//! real Prometheus linter, `promtool check metrics` (Debian package `prometheus`).
//!
//! Skipped with a notice when promtool is not installed, unless the environment variable
//! `METRICSTREAM_REQUIRE_PROMTOOL` is set (CI sets it), in which case a missing promtool fails.
//!
//! Limitation: promtool *lints* names, not only the format. A gauge named `…_total`,
//! `…_count`, `…_sum` or `…_bucket`, a camelCase metric or label name, a name with `:`,
//! a type word (`gauge`, `counter`, …) or a non-base or abbreviated unit in it fails the lint
//! although the exposition is valid and Prometheus scrapes it. metricstream exports user
//! names as they come (sanitised, not rewritten), so this test uses snake_case names that
//! avoid those patterns; it is the format rules that it checks.

mod common;

use std::io::{ErrorKind, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use metricstream::ingest::aggregator::SeriesStore;
use metricstream::ingest::batch::{Batch, FieldRec, PointRec, Value};
use metricstream::read::exposition::{OwnFamily, OwnKind, render_metrics};

enum V {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
    S(&'static str),
}

fn push(b: &mut Batch, key: &[u8], ts: i64, fields: &[(&str, V)]) {
    let key = b.push_bytes(key);
    let fields_start = b.fields.len() as u32;
    for (name, v) in fields {
        let name = b.push_bytes(name.as_bytes());
        let value = match *v {
            V::F(f) => Value::Float(f),
            V::I(i) => Value::Int(i),
            V::U(u) => Value::UInt(u),
            V::B(x) => Value::Bool(x),
            V::S(s) => Value::Str(b.push_bytes(s.as_bytes())),
        };
        b.fields.push(FieldRec { name, value });
    }
    b.points.push(PointRec {
        key,
        timestamp_ns: ts,
        fields_start,
        fields_len: fields.len() as u32,
    });
}

fn tricky_store() -> SeriesStore {
    let mut b = Batch::default();
    // dots, dashes, escaped spaces in measurement, tag keys and values
    push(
        &mut b,
        br"cpu.load-avg,data.center=eu-1,host\ name=web\ 01",
        1,
        &[("short_term", V::F(0.25)), ("long-term", V::F(1.5))],
    );
    // unicode (one `_` per char), leading digit
    push(
        &mut b,
        "température,salle=cuisine".as_bytes(),
        1,
        &[("valeur", V::F(21.5))],
    );
    push(
        &mut b,
        b"5g_signal,cell=north",
        1,
        &[("strength", V::I(-71))],
    );
    // `__` tags, colliding tags (`if.name`, `if-name`, `if_name` -> `if_name`)
    push(
        &mut b,
        b"disk,__name__=sda,__source=udev,mount=root",
        1,
        &[("free_ratio", V::F(0.5))],
    );
    push(
        &mut b,
        b"net,if-name=eth1,if.name=eth0,if_name=eth2",
        1,
        &[("rx_packets", V::U(10))],
    );
    // colliding measurements: one family, duplicate label set resolved
    push(&mut b, b"queue.depth,q=alpha", 1, &[("current", V::I(1))]);
    push(&mut b, b"queue-depth,q=alpha", 1, &[("current", V::I(2))]);
    push(&mut b, b"queue-depth,q=beta", 1, &[("current", V::I(3))]);
    push(&mut b, b"queue_depth,q=gamma", 1, &[("current", V::I(4))]);
    // label values with quotes, backslashes, newline, unicode, escaped comma
    push(
        &mut b,
        b"app,note=say\\ \"hi\"\\ C:\\dir\\\\x\nline\\,two,owner=j\xc3\xb8rn",
        1,
        &[("ready", V::B(true)), ("degraded", V::B(false))],
    );
    // integers: i64 extremes, u64 max; negative floats; tiny and huge floats
    push(
        &mut b,
        b"traffic,link=uplink",
        1,
        &[
            ("octets_seen", V::U(u64::MAX)),
            ("balance", V::I(i64::MIN)),
            ("peak", V::I(i64::MAX)),
        ],
    );
    push(
        &mut b,
        b"weather,city=oslo",
        1,
        &[
            ("temp_celsius", V::F(-12.75)),
            ("ratio_tiny", V::F(-1e-300)),
            ("ratio_huge", V::F(1.7e308)),
        ],
    );
    // collides with the server's namespace -> `_metricstream_…`
    push(
        &mut b,
        b"metricstream_probe,zone=a",
        1,
        &[("latency_seconds", V::F(0.003))],
    );
    // spaces in the measurement, a string field (not exported), a series turned string
    push(&mut b, br"my\ app,env=prod", 1, &[("ready", V::B(true))]);
    push(
        &mut b,
        b"log,level=info",
        1,
        &[("message", V::S("hello \"x\""))],
    );
    push(&mut b, b"state,svc=api", 1, &[("phase", V::I(1))]);
    push(&mut b, b"state,svc=api", 2, &[("phase", V::S("running"))]);
    // an invalid UTF-8 byte in a tag value and a measurement
    push(&mut b, b"raw\xff,tag=\xfe", 1, &[("level", V::F(2.0))]);
    let mut store = SeriesStore::new(10_000);
    let out = store.apply(&b);
    assert_eq!(out.points_dropped_series_limit, 0);
    store
}

#[test]
fn promtool_accepts_tricky_exposition() {
    let store = tricky_store();
    let own = [
        OwnFamily {
            name: "metricstream_points_total",
            help: "Points applied by the aggregator.",
            kind: OwnKind::Counter,
            samples: vec![(vec![], 23.0)],
        },
        OwnFamily {
            name: "metricstream_label_collisions_total",
            help: "Tag labels left out because another tag of the series sanitised to the same name.",
            kind: OwnKind::Counter,
            samples: vec![(vec![], store.label_collisions() as f64)],
        },
        OwnFamily {
            name: "metricstream_series",
            help: "Series held (limit \\ see --max-series).",
            kind: OwnKind::Gauge,
            samples: vec![(vec![], store.series_count() as f64)],
        },
        OwnFamily {
            name: "metricstream_queue_batches",
            help: "Batches waiting.\nPer queue.",
            kind: OwnKind::Gauge,
            samples: vec![
                (vec![("queue", "ingest \"main\"".to_owned())], 3.0),
                (vec![("queue", "retry\\\n".to_owned())], 0.0),
            ],
        },
    ];
    let mut out = Vec::new();
    render_metrics(&store, &own, &mut out);
    let text = String::from_utf8(out.clone()).expect("exposition is UTF-8");
    if std::env::var_os("METRICSTREAM_DUMP_EXPOSITION").is_some() {
        eprintln!("{text}");
    }

    // Sanity checks of our own before asking promtool.
    assert_eq!(text.matches("# TYPE queue_depth_current gauge").count(), 1);
    assert!(text.contains("queue_depth_current{q=\"alpha\"} 2\n"));
    assert!(text.contains("net_rx_packets{if_name=\"eth1\"} 10\n"));
    assert!(text.contains(
        "disk_free_ratio{mount=\"root\",tag__name__=\"sda\",tag__source=\"udev\"} 0.5\n"
    ));
    assert!(text.contains("temp_rature_valeur{salle=\"cuisine\"} 21.5\n"));
    assert!(text.contains("_5g_signal_strength{cell=\"north\"} -71\n"));
    assert!(text.contains("traffic_octets_seen{link=\"uplink\"} 18446744073709551615\n"));
    assert!(text.contains("_metricstream_probe_latency_seconds{zone=\"a\"} 0.003\n"));
    assert!(text.contains(
        "app_ready{note=\"say \\\"hi\\\" C:\\\\dir\\\\\\\\x\\nline,two\",owner=\"jørn\"} 1\n"
    ));
    assert!(!text.contains("log_message"));
    assert!(!text.contains("state_phase"));
    assert_eq!(store.label_collisions(), 2);

    promtool_check(&out, &text, "tricky");
}

/// The families the server renders for itself, every declared figure non-zero, after the
/// user's series.
#[test]
fn promtool_accepts_the_servers_own_families() {
    use metricstream::stats::{ServerInfo, Stats, own_families_with};
    use std::sync::atomic::Ordering::Relaxed;
    let stats = Stats::default();
    for (i, cell) in stats.figure_cells().into_iter().enumerate() {
        cell.store(i as u64 + 1, Relaxed);
    }
    for status in [204, 204, 400, 418] {
        stats.count_response(status);
    }
    let info = ServerInfo {
        io_model: "reactor",
        listen_addr: "127.0.0.1:1".into(),
        backlog_configured: 1024,
        backlog_effective: 1024,
        workers: 2,
        listener_fd: None,
    };
    let own = own_families_with(&stats, &info, Some(4), 3, 1000);
    let mut out = Vec::new();
    render_metrics(&tricky_store(), &own, &mut out);
    let text = String::from_utf8(out.clone()).expect("exposition is UTF-8");
    assert!(text.contains("metricstream_timeouts_total{kind=\"write\"}"));
    assert_eq!(
        text.matches("# TYPE metricstream_timeouts_total counter")
            .count(),
        1
    );
    promtool_check(&out, &text, "own");
}

/// A scrape of the real server as Prometheus makes it (`Accept-Encoding: gzip`), holding
/// awkward names, decompressed and linted.
#[test]
fn promtool_accepts_a_gzip_scrape_of_the_server() {
    let s = common::Server::start(&["--memory-only"]);
    let body: &[u8] =
        b"cpu.load-avg,data.center=eu-1,host\\ name=web\\ 01 short_term=0.25,long-term=1.5\n\
temp,sensor=\"q\\\"uote\" celsius=21.5,ok=true,note=\"text\"\n\
metricstream_probe,zone=a latency_seconds=0.003\n\
m,a-b=1,a.b=2 v=1i\n";
    let r = common::post(s.addr, "/write", body, "");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(common::wait_until(Duration::from_secs(10), || {
        s.stats()["points_aggregated"].as_u64() == Some(4)
    }));
    let gz = common::request(
        s.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("Content-Encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut text)
        .expect("a gzip body");
    assert!(text.contains("cpu_load_avg_short_term{"), "{text}");
    promtool_check(text.as_bytes(), &text, "server-gzip");
}

/// Runs `promtool check metrics` on `out`; skips with a notice when promtool is missing.
fn promtool_check(out: &[u8], text: &str, name: &str) {
    let path = std::env::temp_dir().join(format!(
        "metricstream-promtool-{}-{name}.prom",
        std::process::id()
    ));
    std::fs::write(&path, out).expect("write temp file");
    let stdin = std::fs::File::open(&path).expect("open temp file");
    let result = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::from(stdin))
        .output();
    let _ = std::fs::remove_file(&path);
    let output = match result {
        Ok(o) => o,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if std::env::var_os("METRICSTREAM_REQUIRE_PROMTOOL").is_some() {
                panic!("promtool not found but METRICSTREAM_REQUIRE_PROMTOOL is set");
            }
            println!(
                "NOTICE: promtool not installed; skipping promtool check (apt-get install prometheus)"
            );
            return;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\nstdout: {}\nstderr: {}\n--- exposition ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
