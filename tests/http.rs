//! HTTP/1.1 behaviour of the real server over raw TCP: keep-alive, pipelining, 100-continue,
//! chunked bodies, framing errors, concurrency, /stats accounting, config errors, SIGTERM.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

#[test]
fn ping_is_204_with_the_common_headers() {
    let s = Server::start(&[]);
    let r = get(s.addr, "/ping");
    assert_eq!(r.status, 204);
    assert!(r.header("Date").is_some());
    assert_eq!(r.header("Server"), Some("metricstream"));
    assert!(
        r.header("X-Influxdb-Version")
            .unwrap()
            .starts_with("metricstream-")
    );
    assert_eq!(r.header("X-Influxdb-Build"), Some("OSS"));
    assert_eq!(r.header("Request-Id").map(str::len), Some(36));
    assert!(
        r.header("Content-Length").is_none(),
        "204 carries no Content-Length"
    );
    let h = request(
        s.addr,
        "HEAD /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(h.status, 204);
}

#[test]
fn health_head_404_and_405() {
    let s = Server::start(&[]);
    let r = get(s.addr, "/health");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(r.header("Content-Length"), Some("2"));

    // HEAD: same headers, no body.
    let mut c = Reader::new(s.connect());
    c.send(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\nGET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = c.response_to(true);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Content-Length"), Some("2"));
    assert!(h.body.is_empty());
    // The next response starts right after the head: no stray body bytes.
    assert_eq!(c.response().status, 204);

    let r = get(s.addr, "/nope");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not found");
    let r = request(
        s.addr,
        "DELETE /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
}

#[test]
fn request_ids_differ_per_response() {
    let s = Server::start(&[]);
    let mut c = Reader::new(s.connect());
    let mut ids = std::collections::HashSet::new();
    for _ in 0..50 {
        c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response();
        assert!(ids.insert(r.header("Request-Id").unwrap().to_string()));
    }
}

#[test]
fn keep_alive_rules_for_1_0_and_1_1() {
    let s = Server::start(&[]);
    // 1.1: kept open by default.
    let mut c = Reader::new(s.connect());
    for _ in 0..5 {
        c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 204);
        assert!(r.header("Connection").is_none());
    }
    // Connection: close is honoured.
    c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(5)));

    // 1.0: closed by default...
    let mut c = Reader::new(s.connect());
    c.send(b"GET /ping HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().status, 204);
    assert!(c.closed_within(Duration::from_secs(5)));
    // ...kept with Connection: keep-alive.
    let mut c = Reader::new(s.connect());
    for _ in 0..3 {
        c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), Some("keep-alive"));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start(&[]);
    let mut c = Reader::new(s.connect());
    let mut batch = Vec::new();
    let paths = ["/ping", "/health", "/nope", "/ping", "/health"];
    for _ in 0..20 {
        for p in paths {
            batch.extend_from_slice(format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", p).as_bytes());
        }
    }
    c.send(&batch);
    for _ in 0..20 {
        for p in paths {
            let r = c.response();
            let expected = match p {
                "/ping" => 204,
                "/health" => 200,
                _ => 404,
            };
            assert_eq!(r.status, expected, "pipelined {}", p);
        }
    }
    // Pipelined after a request that closes: later requests are not answered.
    let mut c = Reader::new(s.connect());
    c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 204);
    assert!(c.try_response_to(false).is_none());
}

#[test]
fn split_requests_at_every_byte_boundary() {
    let s = Server::start(&[]);
    let req = b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 22\r\n\r\nq=CREATE+DATABASE+mydb";
    let mut c = Reader::new(s.connect());
    c.stream.set_nodelay(true).unwrap();
    for cut in [1, 5, 17, 40, req.len() - 22, req.len() - 1] {
        c.send(&req[..cut]);
        // Pacing, not waiting: the two parts arrive as separate reads.
        std::thread::sleep(Duration::from_millis(5));
        c.send(&req[cut..]);
        let r = c.response();
        assert_eq!(r.status, 200, "cut at {}", cut);
    }
    // And one byte per write for a whole request.
    for &b in req.iter() {
        c.send(&[b]);
    }
    assert_eq!(c.response().status, 200);
}

#[test]
fn expect_100_continue() {
    let s = Server::start(&[]);
    let body = b"q=CREATE+DATABASE+x";
    let mut c = Reader::new(s.connect());
    c.send(
        format!(
            "POST /query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = c.response();
    assert_eq!(interim.status, 100);
    c.send(body);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["statement_id"], 0);

    // A request already refused gets its final status instead of 100, and the body is
    // never read.
    let mut c = Reader::new(s.connect());
    c.send(
        b"POST /nope HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Connection"), Some("close"));
}

#[test]
fn chunked_bodies() {
    let s = Server::start(&[]);
    let mut c = Reader::new(s.connect());
    c.send(b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(b"5\r\nq=CRE\r\n");
    // Pacing, not waiting: the chunks arrive in separate reads.
    std::thread::sleep(Duration::from_millis(20));
    c.send(b"E;ext=1\r\nATE+DATABASE+d\r\n");
    c.send(b"2\r\nb1\r\n0\r\nTrailer: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    // The connection stays usable after a chunked request.
    c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 204);
}

#[test]
fn framing_errors_are_400_and_close_while_others_keep_working() {
    let s = Server::start(&[]);
    let mut bystander = Reader::new(s.connect());
    let vectors: &[&[u8]] = &[
        b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 7\r\n\r\nhello",
        b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Length: 1_0\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /query HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello",
        b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHo\x7fst: t\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /pi ng HTTP/1.1\r\n\r\n",
        b"\x00\x01\x02\x03 garbage\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n",
    ];
    for (i, v) in vectors.iter().enumerate() {
        let mut c = Reader::new(s.connect());
        c.send(v);
        let r = c.response();
        assert_eq!(
            r.status,
            400,
            "vector {} {:?}: {}",
            i,
            String::from_utf8_lossy(v),
            r.text()
        );
        assert_eq!(r.header("Connection"), Some("close"), "vector {}", i);
        assert!(r.json()["error"].is_string());
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "vector {} left open",
            i
        );
        bystander.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(
            bystander.response().status,
            204,
            "bystander after vector {}",
            i
        );
    }
    // HTTP/2 preface and unknown versions.
    let r = request_bytes(s.addr, b"GET /ping HTTP/2.0\r\n\r\n");
    assert_eq!(r.status, 505);
}

#[test]
fn five_hundred_concurrent_keep_alive_connections() {
    let s = Server::start(&[]);
    let addr = s.addr;
    let threads: Vec<_> = (0..10)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conns: Vec<Reader> = (0..50)
                    .map(|_| {
                        let st =
                            TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
                        st.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                        Reader::new(st)
                    })
                    .collect();
                let mut answered = 0;
                for _ in 0..20 {
                    for c in conns.iter_mut() {
                        c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
                    }
                    for c in conns.iter_mut() {
                        assert_eq!(c.response().status, 204);
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 500 * 20);
    let st = s.stats();
    assert!(st["connections_accepted"].as_u64().unwrap() >= 500);
    assert!(st["accept_batch_max"].as_u64().unwrap() >= 1);
}

#[test]
fn stats_counters_move_by_exactly_the_requests_made() {
    let s = Server::start(&[]);
    let before = s.stats();
    let mut c = Reader::new(s.connect());
    for _ in 0..7 {
        c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().status, 204);
    }
    for _ in 0..3 {
        c.send(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().status, 404);
    }
    drop(c);
    let after = s.stats();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    let status = |v: &serde_json::Value, k: &str| v["responses_by_status"][k].as_u64().unwrap_or(0);
    // 10 requests plus the second /stats itself (counted when it arrived).
    assert_eq!(
        n(&after, "requests_total") - n(&before, "requests_total"),
        11
    );
    assert_eq!(status(&after, "204") - status(&before, "204"), 7);
    assert_eq!(status(&after, "404") - status(&before, "404"), 3);
    // The first /stats response was counted after it was rendered.
    assert_eq!(status(&after, "200") - status(&before, "200"), 1);
    assert_eq!(
        n(&after, "connections_accepted") - n(&before, "connections_accepted"),
        2
    );
    assert!(n(&after, "worker_jobs") > n(&before, "worker_jobs"));
    assert!(n(&after, "bytes_read") > n(&before, "bytes_read"));
    assert_eq!(after["io_model"], "reactor");
    assert_eq!(after["listen_addr"], s.addr.to_string());
    assert_eq!(after["backlog_configured"], 1024);
    for k in ["accept_queue_depth", "listen_overflows", "listen_drops"] {
        assert!(after[k].is_u64(), "{} should be a number on Linux", k);
    }
}

#[test]
fn ipv6_loopback_works() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback on this machine");
        return;
    }
    let s = Server::start(&["--listen", "[::1]:0"]);
    assert!(s.addr.is_ipv6());
    assert_eq!(get(s.addr, "/ping").status, 204);
}

#[test]
fn bad_configuration_exits_2_naming_flag_and_value() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--backlog", "0"], &[], "--backlog"),
        (&["--backlog", "70000"], &[], "\"70000\""),
        (&["--workers", "many"], &[], "--workers"),
        (&["--io-model", "epoll"], &[], "\"epoll\""),
        (&["--listen", "nowhere"], &[], "--listen"),
        (&["--max-body-bytes", "-5"], &[], "--max-body-bytes"),
        (&["--idle-timeout", "soon"], &[], "--idle-timeout"),
        (
            &[],
            &[("METRICSTREAM_BACKLOG", "abc")],
            "METRICSTREAM_BACKLOG",
        ),
        (
            &[],
            &[("METRICSTREAM_WORKERS", "0")],
            "METRICSTREAM_WORKERS",
        ),
        (&["--no-such-flag"], &[], "--no-such-flag"),
        // Out of range, an unknown enum word, a bad duration: from the environment the
        // variable is named, and the flag when both are set (the flag wins).
        (
            &[],
            &[("METRICSTREAM_MAX_CONNECTIONS", "0")],
            "invalid value \"0\" for METRICSTREAM_MAX_CONNECTIONS",
        ),
        (
            &[],
            &[("METRICSTREAM_IO_MODEL", "epoll")],
            "invalid value \"epoll\" for METRICSTREAM_IO_MODEL",
        ),
        (
            &[],
            &[("METRICSTREAM_IDLE_TIMEOUT", "forever")],
            "\"forever\" for METRICSTREAM_IDLE_TIMEOUT",
        ),
        (
            &["--backlog=0"],
            &[("METRICSTREAM_BACKLOG", "12")],
            "invalid value \"0\" for --backlog",
        ),
        (
            &[],
            &[("METRICSTREAM_AUTH_TOKEN", "two words")],
            "\"<hidden>\" for METRICSTREAM_AUTH_TOKEN",
        ),
    ];
    for (args, env, needle) in cases {
        let (code, err) = run_expecting_exit(args, env);
        assert_eq!(code, Some(2), "{:?} {:?}: {}", args, env, err);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line expected: {:?}", err);
        assert!(
            lines[0].contains(needle),
            "{:?} should name {}: {}",
            args,
            needle,
            err
        );
    }
    let (_, err) = run_expecting_exit(&[], &[("METRICSTREAM_AUTH_TOKEN", "two words")]);
    assert!(!err.contains("two words"), "the token was echoed: {}", err);
    // The flag wins over the environment.
    let s = Server::start_with_env(&["--backlog", "77"], &[("METRICSTREAM_BACKLOG", "abc")]);
    assert_eq!(s.stats()["backlog_configured"], 77);
    let s2 = Server::start_with_env(&[], &[("METRICSTREAM_BACKLOG", "99")]);
    assert_eq!(s2.stats()["backlog_configured"], 99);
}

#[test]
fn help_lists_every_flag() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--backlog",
        "--workers",
        "--io-model",
        "--max-connections",
        "--max-header-bytes",
        "--max-body-bytes",
        "--header-timeout",
        "--body-timeout",
        "--idle-timeout",
        "--queue-capacity",
        "--max-series",
        "--shutdown-timeout",
        "--auth-token",
    ] {
        assert!(text.contains(flag), "--help lacks {}", flag);
    }
    assert!(text.contains("METRICSTREAM_LISTEN"));
}

#[test]
fn sigterm_exits_0_closing_idle_connections() {
    let mut s = Server::start(&[]);
    let mut idle = Reader::new(s.connect());
    idle.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.response().status, 204);
    let code = s.terminate(Duration::from_secs(15));
    assert_eq!(code, Some(0), "log: {}", s.log_text());
    assert!(idle.closed_within(Duration::from_secs(2)));
    assert!(s.log_text().contains("shutdown complete"));
    // The listener is gone.
    assert!(TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)).is_err());
}

#[test]
fn sigterm_finishes_a_request_in_flight() {
    let mut s = Server::start(&["--shutdown-timeout", "10"]);
    let mut c = Reader::new(s.connect());
    // Head sent, body not yet: the request is in progress when the signal arrives.
    c.send(b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 19\r\n\r\nq=CREATE");
    assert!(s.wait_read_all_of(&c.stream, Duration::from_secs(5)));
    signal(s.pid(), libc::SIGTERM);
    assert!(s.wait_for_log("shutting down", Duration::from_secs(5)));
    c.send(b"+DATABASE+x");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(s.wait(Duration::from_secs(10)), Some(0));
}

#[test]
fn no_connection_left_behind() {
    let s = Server::start(&[]);
    // Let the server settle, then take its baseline.
    assert_eq!(get(s.addr, "/ping").status, 204);
    assert!(wait_until(
        Duration::from_secs(5),
        || s.stats()["connections_active"] == 1
    ));
    let fds = s.fd_count();
    for _ in 0..50 {
        let mut c = Reader::new(s.connect());
        c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().status, 204);
    }
    for _ in 0..20 {
        let mut c = s.connect();
        let _ = c.write_all(b"GET /pi");
    }
    let settled = wait_until(Duration::from_secs(5), || {
        s.stats()["connections_active"] == 1 && s.fd_count() == fds
    });
    assert!(
        settled,
        "active={} fds={} (baseline {})",
        s.stats()["connections_active"],
        s.fd_count(),
        fds
    );
}
