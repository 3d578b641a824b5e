//! The "Hardening" issue through the real server, the quick part: each timeout's status and
//! counter, each limit's status, the `--max-connections` 503 path, authentication accepted
//! and refused in each form (and the token never logged), a client's half-close and reset,
//! and open connections and descriptors returning to their baseline.
//!
//! The slow and heavy parts live in `slowloris.rs`, `load.rs`, `fd_limit.rs` and
//! `shutdown.rs`. Every wait here is bounded; timeouts are set to fractions of a second.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;

/// Reads raw bytes until EOF, a reset, or `limit`; returns them and whether the connection
/// ended (EOF or reset) within the limit.
fn read_to_end_within(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, false);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (got, true),
        }
    }
}

fn delta(after: &serde_json::Value, before: &serde_json::Value, key: &str) -> u64 {
    counter(after, key) - counter(before, key)
}

fn status_delta(after: &serde_json::Value, before: &serde_json::Value, status: u16) -> u64 {
    status_count(after, status) - status_count(before, status)
}

/// Asserts a final error response: `status`, `Connection: close`, then the server closes.
fn assert_error_and_close(c: &mut Reader, status: u16, what: &str) -> Response {
    let r = c.response();
    assert_eq!(r.status, status, "{}: {:?}", what, r);
    assert_eq!(r.header("Connection"), Some("close"), "{}: {:?}", what, r);
    assert!(
        c.closed_within(Duration::from_secs(3)),
        "{}: connection left open",
        what
    );
    r
}

// ----- timeouts ---------------------------------------------------------------------------

#[test]
fn header_timeout_is_408_counted_from_the_first_byte() {
    let s = Server::start(&["--header-timeout", "0.5", "--idle-timeout", "30"]);
    let before = s.stats();

    // A head that stops half-way.
    let mut c = Reader::new(s.connect());
    let t0 = Instant::now();
    c.send(b"GET /ping HTTP/1.1\r\nHo");
    let r = assert_error_and_close(&mut c, 408, "stalled head");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "408 after {:?} for a 0.5 s header timeout",
        waited
    );
    assert!(r.json()["error"].is_string());

    // A head trickled one byte per 100 ms: the deadline runs from the first byte and is not
    // extended by later ones, so the 408 comes long before the whole head could.
    let head = b"GET /ping HTTP/1.1\r\nHost: t\r\nX-Slow: trickled-one-byte-at-a-time\r\n\r\n";
    let mut st = s.connect();
    st.set_nodelay(true).unwrap();
    st.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = Instant::now();
    let mut sent = 0;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for &b in head.iter() {
        if st.write_all(&[b]).is_err() {
            break;
        }
        sent += 1;
        // The read timeout paces the trickle: 100 ms per byte unless an answer comes.
        match st.read(&mut buf) {
            Ok(n) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            _ => {}
        }
    }
    let waited = t0.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "trickled head: got {:?} after {} of {} bytes",
        text,
        sent,
        head.len()
    );
    assert!(
        waited < Duration::from_millis(1500) && sent < head.len(),
        "trickled head answered after {:?} and {} bytes: the header deadline was extended",
        waited,
        sent
    );

    // Between keep-alive requests the idle timeout applies, not the header timeout.
    let mut k = Reader::new(s.connect());
    assert_eq!(k.get("/ping").status, 204);
    assert!(
        !k.closed_within(Duration::from_secs(1)),
        "an idle keep-alive connection was closed by the 0.5 s header timeout"
    );
    assert_eq!(k.get("/ping").status, 204);

    let after = s.stats();
    assert_eq!(delta(&after, &before, "timeouts_header"), 2);
    assert_eq!(status_delta(&after, &before, 408), 2);
    assert_eq!(delta(&after, &before, "timeouts_body"), 0);
    assert_eq!(delta(&after, &before, "timeouts_idle"), 0);
}

#[test]
fn body_timeout_is_408_between_body_bytes_and_counted() {
    let s = Server::start(&["--body-timeout", "0.5", "--header-timeout", "30"]);
    let before = s.stats();

    // Content-Length body that stops.
    let mut c = Reader::new(s.connect());
    let t0 = Instant::now();
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\nm v=1");
    assert_error_and_close(&mut c, 408, "stalled Content-Length body");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "408 after {:?} for a 0.5 s body timeout",
        waited
    );

    // Chunked body that stops inside a chunk.
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nm v=1");
    assert_error_and_close(&mut c, 408, "stalled chunked body");

    // A body whose bytes keep coming faster than the timeout is never cut off, however long
    // it takes in total (10 lines, one per 150 ms: 1.5 s for a 0.5 s timeout).
    let mut c = Reader::new(s.connect());
    c.stream.set_nodelay(true).unwrap();
    let line = b"slow,conn=1 v=1\n";
    c.send(
        format!(
            "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            line.len() * 10
        )
        .as_bytes(),
    );
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        c.send(line);
    }
    let r = c.response();
    assert_eq!(r.status, 204, "slow but steady body: {}", r.text());
    // The same with chunks.
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        c.send(format!("{:x}\r\n", line.len()).as_bytes());
        c.send(line);
        c.send(b"\r\n");
    }
    c.send(b"0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 204, "slow but steady chunked body: {}", r.text());

    let after = s.stats();
    assert_eq!(delta(&after, &before, "timeouts_body"), 2);
    assert_eq!(status_delta(&after, &before, 408), 2);
    assert_eq!(delta(&after, &before, "timeouts_header"), 0);
    assert_eq!(delta(&after, &before, "points_accepted"), 20);
}

#[test]
fn idle_timeout_closes_quietly_and_counts() {
    let s = Server::start(&["--idle-timeout", "0.5"]);
    let before = s.stats();

    // A connection that never sends a byte.
    let mut st = s.connect();
    let t0 = Instant::now();
    let (bytes, ended) = read_to_end_within(&mut st, Duration::from_secs(3));
    let waited = t0.elapsed();
    assert!(ended, "silent connection not closed");
    assert!(
        bytes.is_empty(),
        "idle close must be quiet, got {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        waited >= Duration::from_millis(450),
        "closed after {:?}",
        waited
    );

    // A keep-alive connection after its response.
    let mut c = Reader::new(s.connect());
    assert_eq!(c.get("/ping").status, 204);
    let t0 = Instant::now();
    let (bytes, ended) = read_to_end_within(&mut c.stream, Duration::from_secs(3));
    let waited = t0.elapsed();
    assert!(
        ended && bytes.is_empty(),
        "keep-alive idle close: {:?}",
        bytes
    );
    assert!(
        waited >= Duration::from_millis(450),
        "closed after {:?}",
        waited
    );

    let after = s.stats();
    assert_eq!(delta(&after, &before, "timeouts_idle"), 2);
    assert_eq!(status_delta(&after, &before, 408), 0);
    assert_eq!(delta(&after, &before, "timeouts_header"), 0);
}

// ----- limits -----------------------------------------------------------------------------

#[test]
fn header_limit_is_431_and_close() {
    let s = Server::start(&["--max-header-bytes", "1024"]);
    let mut bystander = Reader::new(s.connect());
    let before = bystander.stats();
    let head_of = |total: usize| {
        let fixed = "GET /ping HTTP/1.1\r\nHost: t\r\nX-Pad: \r\n\r\n".len();
        format!(
            "GET /ping HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(total - fixed)
        )
    };
    // Exactly at the limit (request line + headers + the blank line): accepted.
    let at = head_of(1024);
    assert_eq!(at.len(), 1024);
    assert_eq!(request(s.addr, &at).status, 204);

    // One byte past it.
    let mut c = Reader::new(s.connect());
    c.send(head_of(1025).as_bytes());
    assert_error_and_close(&mut c, 431, "head of 1025 bytes");

    // A head that is not complete yet but already past the limit is refused at once,
    // without waiting for its end or for the header timeout.
    let mut c = Reader::new(s.connect());
    let t0 = Instant::now();
    c.send(format!("GET /ping HTTP/1.1\r\nX-Pad: {}", "b".repeat(1500)).as_bytes());
    assert_error_and_close(&mut c, 431, "unfinished head past the limit");
    assert!(t0.elapsed() < Duration::from_secs(3));

    // Many small headers adding up past the limit.
    let mut many = String::from("GET /ping HTTP/1.1\r\nHost: t\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-H{}: v{}\r\n", i, i));
    }
    many.push_str("\r\n");
    assert!(many.len() > 1024);
    let mut c = Reader::new(s.connect());
    c.send(many.as_bytes());
    assert_error_and_close(&mut c, 431, "many headers");

    // On /api/v2/ the error has the v2 shape.
    let mut c = Reader::new(s.connect());
    c.send(
        format!(
            "POST /api/v2/write?bucket=b HTTP/1.1\r\nX-Pad: {}\r\nContent-Length: 5\r\n\r\nm v=1",
            "c".repeat(1100)
        )
        .as_bytes(),
    );
    let r = assert_error_and_close(&mut c, 431, "v2 head too large");
    assert!(r.json()["code"].is_string(), "v2 shape: {}", r.text());

    assert_eq!(bystander.get("/ping").status, 204);
    let after = bystander.stats();
    assert_eq!(status_delta(&after, &before, 431), 4);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn body_limit_is_413_and_close_for_length_chunked_and_gzip() {
    let s = Server::start(&["--max-body-bytes", "1000"]);
    let mut bystander = Reader::new(s.connect());
    let before = bystander.stats();

    // Exactly at the limit: accepted.
    let mut body = b"atlimit v=1\n#".to_vec();
    body.resize(1000, b'x');
    assert_eq!(post(s.addr, "/write", &body, "").status, 204);

    // Content-Length past the limit: refused from the head, before any body byte is sent.
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n");
    let r = assert_error_and_close(&mut c, 413, "Content-Length 1001");
    assert!(r.json()["error"].is_string());

    // The same on /api/v2/write, in the v2 shape.
    let mut c = Reader::new(s.connect());
    c.send(b"POST /api/v2/write?bucket=b HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    let r = assert_error_and_close(&mut c, 413, "v2 Content-Length 5000");
    assert_eq!(r.json()["code"], "request too large");

    // Expect: 100-continue gets the 413 instead of the interim 100.
    let mut c = Reader::new(s.connect());
    c.send(
        b"POST /write HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    );
    assert_error_and_close(&mut c, 413, "100-continue over the limit");

    // Chunked: refused as soon as the decoded size passes the limit, before the last chunk.
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("258\r\n{}\r\n", "m v=1\n".repeat(100));
    c.send(chunk.as_bytes());
    c.send(chunk.as_bytes());
    assert_error_and_close(&mut c, 413, "chunked past the limit");

    // Chunked up to exactly the limit: accepted.
    let mut c = Reader::new(s.connect());
    let half = &body[..500];
    let mut raw = b"POST /write HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in [half, &body[500..]] {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    c.send(&raw);
    assert_eq!(c.response().status, 204);

    // gzip: a small body that inflates past the limit (a little bomb) is 413...
    let bomb = gzip("m v=1\n".repeat(20_000).as_bytes());
    assert!(bomb.len() < 1000, "bomb is {} bytes", bomb.len());
    let r = post(s.addr, "/write", &bomb, "Content-Encoding: gzip\r\n");
    assert_eq!(r.status, 413, "gzip bomb: {}", r.text());
    assert_eq!(r.header("Connection"), Some("close"));
    // ...and one that inflates to less is taken.
    let small = gzip("gz v=1\n".repeat(100).as_bytes());
    let r = post(s.addr, "/write", &small, "Content-Encoding: gzip\r\n");
    assert_eq!(r.status, 204, "small gzip: {}", r.text());

    assert_eq!(bystander.get("/ping").status, 204);
    let after = bystander.stats();
    assert_eq!(status_delta(&after, &before, 413), 5);
    // atlimit (1) + the chunked copy of it (1) + 100 from the small gzip body.
    assert_eq!(delta(&after, &before, "points_accepted"), 102);
}

#[test]
fn max_connections_answers_503_and_recovers() {
    let s = Server::start(&["--max-connections", "5"]);
    let fds0 = quiet_fds(&s);
    let mut held: Vec<Reader> = (0..5)
        .map(|_| {
            let mut c = Reader::new(s.connect());
            assert_eq!(c.get("/ping").status, 204);
            c
        })
        .collect();
    let before = held[0].stats();
    assert_eq!(counter(&before, "connections_active"), 5);

    // Over the limit: still accepted, answered 503 + Connection: close without a request...
    let mut c = Reader::new(s.connect());
    let r = assert_error_and_close(&mut c, 503, "over the limit, no request");
    assert!(r.json()["error"].is_string());
    // ...and with one (the request is not served).
    for i in 0..19 {
        let mut c = Reader::new(s.connect());
        c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_error_and_close(&mut c, 503, &format!("over the limit, request {}", i));
    }
    let mid = held[0].stats();
    assert_eq!(delta(&mid, &before, "connections_rejected_over_limit"), 20);
    assert_eq!(status_delta(&mid, &before, 503), 20);
    // The held connections keep working.
    for c in held.iter_mut() {
        assert_eq!(c.get("/ping").status, 204);
    }
    // Warned, but rate-limited: one line for twenty refusals. (The log reaches us through a
    // pipe and a reader thread, so give the line a moment to arrive.)
    let warns = || {
        s.log_text()
            .lines()
            .filter(|l| log_level(l) == Some("WARN") && l.contains("max-connections"))
            .count()
    };
    assert!(wait_until(Duration::from_secs(2), || warns() >= 1));
    assert_eq!(warns(), 1, "log: {}", s.log_text());

    // A slot comes free: the next connection is served normally.
    drop(held.pop());
    assert!(wait_until(Duration::from_secs(5), || {
        counter(&held[0].stats(), "connections_active") == 4
    }));
    let mut c = Reader::new(s.connect());
    assert_eq!(c.get("/ping").status, 204);
    drop(c);

    drop(held);
    settles_to(&s, 0, fds0, Duration::from_secs(5)).unwrap();
}

#[test]
fn max_connections_under_a_burst_every_client_gets_204_or_503() {
    const LIMIT: usize = 20;
    const CLIENTS: usize = 300;
    const THREADS: usize = 10;
    let s = Server::start(&["--max-connections", &LIMIT.to_string()]);
    let fds0 = quiet_fds(&s);
    let before = s.stats();
    let addr = s.addr;
    // Every client connects first (all at once), then asks; each holds its connection
    // until every thread has its answers, so the limit is really reached.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut conns: Vec<Reader> = (0..CLIENTS / THREADS)
                    .map(|_| {
                        let st = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                            .expect("connect");
                        st.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        Reader::new(st)
                    })
                    .collect();
                barrier.wait();
                let mut outcomes = Vec::new();
                for c in conns.iter_mut() {
                    // A rejected connection may already be half-closed by the server.
                    let _ = c.stream.write_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n");
                }
                for c in conns.iter_mut() {
                    let r = c.try_response_quiet();
                    outcomes.push(match r {
                        Some(r) if r.status == 204 => Ok(204),
                        Some(r) if r.status == 503 && r.header("Connection") == Some("close") => {
                            Ok(503)
                        }
                        Some(r) => Err(format!("{} {:?}", r.status, r.headers)),
                        None => Err("no response (reset or closed)".to_string()),
                    });
                }
                barrier.wait();
                outcomes
            })
        })
        .collect();
    let outcomes: Vec<Result<u16, String>> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let bad: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let served = outcomes.iter().filter(|o| matches!(o, Ok(204))).count();
    let refused = outcomes.iter().filter(|o| matches!(o, Ok(503))).count();
    assert!(
        bad.is_empty(),
        "{} clients without a 204 or 503: {:?}",
        bad.len(),
        bad
    );
    assert!(
        (1..=LIMIT).contains(&served),
        "{} served for a limit of {}",
        served,
        LIMIT
    );
    assert_eq!(served + refused, CLIENTS);
    // The burst's connections close as the clients drop them; until the server has seen
    // every close it may still be over the limit, and a /stats request would be refused
    // (and counted). Its descriptor count says when it is done, without asking it.
    assert!(
        wait_until(Duration::from_secs(10), || s.fd_count() == fds0),
        "server still holds {} descriptors (before the burst: {})",
        s.fd_count(),
        fds0
    );
    let after = s.stats();
    assert_eq!(
        delta(&after, &before, "connections_rejected_over_limit"),
        refused as u64
    );
    assert_eq!(status_delta(&after, &before, 503), refused as u64);
    settles_to(&s, 0, fds0, Duration::from_secs(10)).unwrap();
}

// ----- authentication ---------------------------------------------------------------------

const TOKEN: &str = "s3cr3t-T0k3n_xyz";

/// GET /stats with the token (the harness's `Server::stats` sends none).
fn authed_stats(s: &Server) -> serde_json::Value {
    let r = request(
        s.addr,
        &format!(
            "GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Token {}\r\n\r\n",
            TOKEN
        ),
    );
    assert_eq!(r.status, 200);
    r.json()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn auth_accepted_and_refused_in_each_form_and_never_logged() {
    let s = Server::start_with_env(&["--auth-token", TOKEN], &[("RUST_LOG", "trace")]);
    let mut accepted = header_forms(TOKEN, "anyuser");
    accepted.extend([
        (
            "/write".into(),
            format!("Authorization: Basic {}\r\n", b64(&format!(":{}", TOKEN))),
        ),
        (format!("/write?db=d&u=someone&p={}", TOKEN), String::new()),
        (
            "/api/v2/write?bucket=b".into(),
            format!("Authorization: Token {}\r\n", TOKEN),
        ),
    ]);
    for (i, (path, header)) in accepted.iter().enumerate() {
        let body = format!("authok,form={} v=1", i);
        let r = post(s.addr, path, body.as_bytes(), header);
        assert_eq!(
            r.status,
            204,
            "form {} {} {:?}: {}",
            i,
            path,
            header,
            r.text()
        );
    }
    for path in ["/series", "/stats", "/metrics"] {
        let r = request(
            s.addr,
            &format!(
                "GET {} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
                path, TOKEN
            ),
        );
        assert_eq!(r.status, 200, "GET {} with the token", path);
    }
    let r = get(s.addr, &format!("/query?q=CREATE+DATABASE+x&p={}", TOKEN));
    assert_eq!(r.status, 200);

    // Refused: missing or wrong in every form.
    let wrong = format!("{}x", TOKEN);
    let refused: Vec<(&str, String)> = vec![
        ("/write", String::new()),
        ("/write", format!("Authorization: Token {}\r\n", wrong)),
        (
            "/write",
            format!("Authorization: Bearer {}\r\n", &TOKEN[1..]),
        ),
        ("/write", "Authorization: Bearer \r\n".to_string()),
        (
            "/write",
            format!(
                "Authorization: Basic {}\r\n",
                b64(&format!("anyuser:{}", wrong))
            ),
        ),
        // The token as the user name is not the password.
        (
            "/write",
            format!("Authorization: Basic {}\r\n", b64(&format!("{}:", TOKEN))),
        ),
        ("/write", format!("Authorization: {}\r\n", TOKEN)),
        ("/write", format!("Authorization: Digest {}\r\n", TOKEN)),
        ("/write?p=wrong", String::new()),
        ("/write?u=x&pp=wrong", String::new()),
    ];
    for (path, header) in &refused {
        let r = post(s.addr, path, b"authbad v=1", header);
        assert_eq!(r.status, 401, "{} {:?}", path, header);
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Bearer"),
            "{} {:?}",
            path,
            header
        );
        assert!(r.json()["error"].is_string());
    }
    for path in [
        "/series",
        "/stats",
        "/metrics",
        "/query?q=CREATE+DATABASE+x",
        "/nope",
    ] {
        let r = get(s.addr, path);
        assert_eq!(r.status, 401, "GET {} without the token", path);
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    }
    // v2 shape.
    let r = post(s.addr, "/api/v2/write?bucket=b", b"authbad v=1", "");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "unauthorized");

    // /ping and /health are open, with or without (even a wrong) token.
    assert_eq!(get(s.addr, "/ping").status, 204);
    assert_eq!(get(s.addr, "/health").status, 200);
    let r = request(
        s.addr,
        "GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Token nope\r\n\r\n",
    );
    assert_eq!(r.status, 204);

    // Exactly the accepted writes were ingested.
    let st = authed_stats(&s);
    assert_eq!(counter(&st, "points_accepted"), accepted.len() as u64);
    assert_eq!(status_count(&st, 401), (refused.len() + 5 + 1) as u64);

    // The token never appears in the log, in any encoding, even at trace level.
    let log = s.log_text();
    assert!(
        log.contains("auth=token"),
        "start-up line should say auth is on"
    );
    for needle in [
        TOKEN.to_string(),
        wrong,
        b64(&format!("anyuser:{}", TOKEN)),
        b64(&format!(":{}", TOKEN)),
        TOKEN[1..].to_string(),
    ] {
        assert!(
            !log.contains(&needle),
            "log contains {:?}:\n{}",
            needle,
            log
        );
    }
}

#[test]
fn auth_token_with_special_characters_in_every_form() {
    // Printable ASCII without spaces is allowed: characters that mean something in URLs,
    // in base64 and in Basic credentials.
    let token = "a+b/c=d:e%f&g?h#i";
    let s = Server::start(&["--auth-token", token]);
    let encoded: String = form_urlencoded_byte_serialize(token);
    let mut forms = header_forms(token, "user");
    forms.push((format!("/write?u=user&p={}", encoded), String::new()));
    for (path, header) in &forms {
        let r = post(s.addr, path, b"special v=1", header);
        assert_eq!(r.status, 204, "{} {:?}: {}", path, header, r.text());
    }
    // The raw (unencoded) token in the query does not decode to the token.
    let r = post(s.addr, &format!("/write?p={}", token), b"special v=1", "");
    assert_eq!(r.status, 401);
    assert!(!s.log_text().contains(token));
}

/// `/write` with the token in each header form: Token, Bearer, and Basic as `user:token`.
fn header_forms(token: &str, user: &str) -> Vec<(String, String)> {
    vec![
        (
            "/write".to_string(),
            format!("Authorization: Token {}\r\n", token),
        ),
        (
            "/write".to_string(),
            format!("Authorization: Bearer {}\r\n", token),
        ),
        (
            "/write".to_string(),
            format!(
                "Authorization: Basic {}\r\n",
                b64(&format!("{}:{}", user, token))
            ),
        ),
    ]
}

/// Percent-encodes every byte outside unreserved characters (what clients send for `p=`).
fn form_urlencoded_byte_serialize(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{:02X}", b)
            }
        })
        .collect()
}

#[test]
fn auth_token_from_the_environment() {
    let s = Server::start_with_env(&[], &[("METRICSTREAM_AUTH_TOKEN", TOKEN)]);
    assert_eq!(get(s.addr, "/series").status, 401);
    let r = get(s.addr, &format!("/series?p={}", TOKEN));
    assert_eq!(r.status, 200);
    assert!(!s.log_text().contains(TOKEN));
}

#[test]
fn auth_refusal_answers_before_an_announced_body_and_closes() {
    let s = Server::start(&["--auth-token", TOKEN]);
    let before = authed_stats(&s);
    // Content-Length announced, body not sent: the 401 comes from the head alone.
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    let r = assert_error_and_close(&mut c, 401, "unsent Content-Length body");
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));

    // Chunked.
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_error_and_close(&mut c, 401, "unsent chunked body");

    // Expect: 100-continue gets the 401 instead of the interim 100.
    let mut c = Reader::new(s.connect());
    c.send(
        b"POST /write HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
    );
    assert_error_and_close(&mut c, 401, "100-continue");

    let after = authed_stats(&s);
    assert_eq!(status_delta(&after, &before, 401), 3);
    assert_eq!(status_delta(&after, &before, 100), 0);
    assert_eq!(delta(&after, &before, "points_accepted"), 0);
}

/// SPEC, Authentication: "Otherwise 401 ... and nothing is read past the head (the
/// connection is closed if a body was announced)" — also when the body came along with the
/// head in one segment.
#[test]
fn auth_refusal_closes_even_when_the_body_came_with_the_head() {
    let s = Server::start(&["--auth-token", TOKEN]);
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nauthbad v=1");
    let r = assert_error_and_close(&mut c, 401, "body sent along with the head");
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
}

// ----- half-close and reset ---------------------------------------------------------------

#[test]
fn half_closed_client_still_gets_its_responses() {
    let s = Server::start(&[]);
    let fds0 = quiet_fds(&s);

    // One request, then shutdown(SHUT_WR).
    let mut c = Reader::new(s.connect());
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    c.stream.shutdown(Shutdown::Write).unwrap();
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(c.closed_within(Duration::from_secs(3)));

    // A write with a body.
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\nhalf v=1 100");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.response().status, 204);
    assert!(c.closed_within(Duration::from_secs(3)));

    // A chunked write.
    let mut c = Reader::new(s.connect());
    c.send(b"POST /write HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nc\r\nhalf v=2 200\r\n0\r\n\r\n");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(c.response().status, 204);
    assert!(c.closed_within(Duration::from_secs(3)));

    // Pipelined requests, then the FIN: every one is answered, in order.
    let mut c = Reader::new(s.connect());
    let mut batch = Vec::new();
    for _ in 0..10 {
        batch.extend_from_slice(
            b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        );
    }
    c.send(&batch);
    c.stream.shutdown(Shutdown::Write).unwrap();
    for i in 0..10 {
        assert_eq!(c.response().status, 204, "pipelined pair {}", i);
        assert_eq!(c.response().status, 200, "pipelined pair {}", i);
    }
    assert!(c.closed_within(Duration::from_secs(3)));

    // The request and the FIN sent as early as possible, many times over (the FIN often
    // arrives in the same read as the request).
    for i in 0..50 {
        let mut c = Reader::new(s.connect());
        let body = format!("half v={}i\n", i);
        c.send(
            format!(
                "POST /write HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                body
            )
            .as_bytes(),
        );
        c.stream.shutdown(Shutdown::Write).unwrap();
        let r = c.try_response_to(false);
        assert_eq!(r.map(|r| r.status), Some(204), "round {}", i);
    }

    // A half-closed incomplete request is not waited for until a timeout.
    let mut c = Reader::new(s.connect());
    c.send(b"GET /ping HTTP/1.1\r\nHo");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert!(c.closed_within(Duration::from_secs(3)));

    let st = s.stats();
    assert_eq!(counter(&st, "points_accepted"), 52);
    settles_to(&s, 0, fds0, Duration::from_secs(5)).unwrap();
}

#[test]
fn half_close_after_a_large_pipelined_batch_gets_every_answer() {
    let s = Server::start(&[]);
    let fds0 = quiet_fds(&s);
    // ~1.3 MB of pipelined requests whose answers (~10 MB) pass the output high-water mark
    // many times, then the FIN. Sent from another thread while this one reads.
    const N: usize = 40_000;
    let mut c = Reader::new(s.connect());
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let batch = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n".repeat(N);
        writer.write_all(&batch).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    c.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    for i in 0..N {
        let r = c.try_response_quiet();
        assert_eq!(r.map(|r| r.status), Some(204), "response {} of {}", i, N);
    }
    assert!(c.closed_within(Duration::from_secs(5)));
    sender.join().unwrap();
    settles_to(&s, 0, fds0, Duration::from_secs(5)).unwrap();
}

/// Many clients that half-close after their request: each must be closed by the server as
/// soon as its response is written (its EOF was read), not left open until a timeout.
#[test]
fn half_closed_clients_are_all_closed_right_after_their_response() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 625;
    let s = Server::start(&["--idle-timeout", "60"]);
    let fds0 = quiet_fds(&s);
    let addr = s.addr;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let st = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
                    st.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut c = Reader::new(st);
                    let body = format!("halfmany v={}i\n", i);
                    c.send(
                        format!(
                            "POST /write HTTP/1.1\r\nContent-Length: {}\r\n\r\n{}",
                            body.len(),
                            body
                        )
                        .as_bytes(),
                    );
                    c.stream.shutdown(Shutdown::Write).unwrap();
                    assert_eq!(c.try_response_quiet().map(|r| r.status), Some(204));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = s.stats();
    assert_eq!(
        counter(&st, "points_accepted"),
        (THREADS * PER_THREAD) as u64
    );
    settles_to(&s, 0, fds0, Duration::from_secs(3)).unwrap();
}

#[test]
fn client_reset_is_cleaned_up_and_logged_at_debug_only() {
    let s = Server::start_with_env(&[], &[("RUST_LOG", "debug")]);
    let fds0 = quiet_fds(&s);
    let from = s.log.lock().unwrap().len();

    // Idle keep-alive connection reset after a response.
    let mut c = Reader::new(s.connect());
    assert_eq!(c.get("/ping").status, 204);
    reset(c.stream);
    // Reset in the middle of a head.
    let mut st = s.connect();
    st.write_all(b"GET /ping HTTP/1.1\r\nHo").unwrap();
    reset(st);
    // Reset in the middle of a body.
    let mut st = s.connect();
    st.write_all(b"POST /write HTTP/1.1\r\nContent-Length: 100\r\n\r\nm v=1")
        .unwrap();
    reset(st);
    // Reset while the server lingers after an error response (431 for a huge head).
    let mut st = s.connect();
    st.write_all(format!("GET /ping HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)).as_bytes())
        .unwrap();
    let mut first = [0u8; 12];
    st.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 431");
    reset(st);
    // Reset with responses still to be written (a pile of pipelined /stats never read).
    let mut st = s.connect();
    let mut batch = Vec::new();
    for _ in 0..2000 {
        batch.extend_from_slice(b"GET /stats HTTP/1.1\r\n\r\n");
    }
    st.write_all(&batch).unwrap();
    // The server is writing answers once the first bytes of one reach us.
    st.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(
        matches!(st.peek(&mut [0u8; 1]), Ok(1)),
        "no answer to the pipelined /stats"
    );
    reset(st);
    // Reset right after connecting.
    for _ in 0..20 {
        reset(s.connect());
    }

    settles_to(&s, 0, fds0, Duration::from_secs(5)).unwrap();
    // The close lines were written before the descriptors closed; let them reach us.
    assert!(wait_until(Duration::from_secs(2), || {
        let log = s.log.lock().unwrap();
        let count = |what: &str| log[from..].iter().filter(|l| l.contains(what)).count();
        count("closed token=") >= count("accepted token=")
    }));
    let lines: Vec<String> = s.log.lock().unwrap()[from..].to_vec();
    // The 431 above is a limit hit, which SPEC has warned about (rate-limited): not a reset.
    let loud: Vec<&String> = lines
        .iter()
        .filter(|l| !matches!(log_level(l), Some("DEBUG") | Some("TRACE")))
        .filter(|l| !l.contains("limit hit: a request passed --max-header-bytes"))
        .collect();
    assert!(
        loud.is_empty(),
        "lines above debug for client resets: {:#?}",
        loud
    );
    assert!(
        lines.iter().any(|l| l.contains("connection reset by peer")),
        "no close line names the reset: {:#?}",
        lines
    );
}

// ----- safety nets ------------------------------------------------------------------------

/// `GET /debug/panic` exists only in debug builds (which the tests run): its handler panics.
#[cfg(debug_assertions)]
#[test]
fn a_panicking_handler_answers_500_and_closes_while_everything_else_keeps_serving() {
    // One worker: the requests after the panic can only be answered if it survived.
    let s = Server::start(&["--workers", "1"]);
    let mut bystander = Reader::new(s.connect());
    assert_eq!(bystander.get("/ping").status, 204);
    let before = bystander.stats();

    let mut c = Reader::new(s.connect());
    c.send(
        b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n\
GET /debug/panic HTTP/1.1\r\nHost: t\r\n\r\n\
GET /ping HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(c.response().status, 204, "the request before the panic");
    let r = assert_error_and_close(&mut c, 500, "panicking handler");
    assert_eq!(r.json()["error"], "internal server error");

    assert!(
        s.wait_for_log(
            "panicked while answering a request",
            Duration::from_secs(10)
        ),
        "no error logged: {}",
        s.log_text()
    );
    let log = s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("panicked while answering a request"))
        .unwrap_or_default();
    assert_eq!(log_level(line), Some("ERROR"), "{}", line);
    assert!(line.contains("token="), "names the connection: {}", line);

    // The open connection, new connections and later requests are all served.
    for _ in 0..5 {
        assert_eq!(bystander.get("/ping").status, 204);
        assert_eq!(get(s.addr, "/health").status, 200);
    }
    // And a second panic is caught just the same.
    assert_eq!(get(s.addr, "/debug/panic").status, 500);
    assert_eq!(bystander.get("/ping").status, 204);
    let after = bystander.stats();
    assert_eq!(status_delta(&after, &before, 500), 2);
}

/// The `warn` lines for limits hit: how many there are in `log` for `flag`.
fn limit_warnings(log: &str, flag: &str) -> usize {
    log.lines()
        .filter(|l| log_level(l) == Some("WARN") && l.contains("limit hit") && l.contains(flag))
        .count()
}

#[test]
fn limits_hit_warn_rate_limited_for_header_and_body_limits() {
    let s = Server::start_with_env(
        &["--max-header-bytes", "1024", "--max-body-bytes", "1000"],
        // `warn` everywhere; the harness needs the start-up line, which is `info`.
        &[("RUST_LOG", "warn,metricstream::server=info")],
    );
    let too_long_head = format!(
        "GET /ping HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(1100)
    );
    for i in 0..100 {
        let r = request(
            s.addr,
            "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
        );
        assert_eq!(r.status, 413, "body limit hit {}", i);
        assert_eq!(
            request(s.addr, &too_long_head).status,
            431,
            "head limit hit {}",
            i
        );
    }
    let both = || {
        let log = s.log_text();
        limit_warnings(&log, "--max-body-bytes") >= 1
            && limit_warnings(&log, "--max-header-bytes") >= 1
    };
    assert!(
        wait_until(Duration::from_secs(10), both),
        "limit hits not logged at warn: {}",
        s.log_text()
    );
    // One line per limit per 10 s interval, however many hits: never one per request (two
    // allows for the run straddling an interval boundary).
    let log = s.log_text();
    for flag in ["--max-body-bytes", "--max-header-bytes"] {
        let n = limit_warnings(&log, flag);
        assert!((1..=2).contains(&n), "{} warnings for {}: {}", n, flag, log);
    }
}
