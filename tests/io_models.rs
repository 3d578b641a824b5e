//! The comparison I/O models (`--io-model threadpool` and `--io-model blocking`) against the
//! real binary over raw TCP: the same HTTP behaviour as the reactor (they share the
//! engine), their own timeouts and counters, graceful shutdown, and the queueing that makes
//! them what they are. Each behaviour runs once per model (`for_each_model!`).

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Generates `threadpool::NAME` and `blocking::NAME` tests calling `NAME(model)`.
macro_rules! for_each_model {
    ($($name:ident),* $(,)?) => {
        mod threadpool {
            $( #[test] fn $name() { super::$name("threadpool") } )*
        }
        mod blocking {
            $( #[test] fn $name() { super::$name("blocking") } )*
        }
    };
}

for_each_model!(
    ping_is_204,
    keep_alive_and_pipelining_answer_in_order,
    write_then_series_shows_the_data,
    a_delete_pipelined_with_writes_is_answered_in_order,
    stats_report_the_io_model_and_io_counters,
    sigterm_exits_0_closing_idle_connections,
    sigterm_finishes_a_request_in_flight,
    shutdown_timeout_cuts_a_stalled_request,
    idle_timeout_closes_quietly,
    header_timeout_is_408_and_close,
    framing_error_is_400_and_close,
    a_held_connection_makes_the_next_one_wait,
);

fn start(model: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--io-model", model];
    args.extend_from_slice(extra);
    Server::start(&args)
}

const PING: &[u8] = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n";

fn ping_is_204(model: &str) {
    let s = start(model, &[]);
    let r = get(s.addr, "/ping");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Server"), Some("metricstream"));
    assert!(r.header("Date").is_some());
    assert_eq!(r.header("Request-Id").map(str::len), Some(36));
    let h = request(
        s.addr,
        "HEAD /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(h.status, 204);
}

fn keep_alive_and_pipelining_answer_in_order(model: &str) {
    let s = start(model, &[]);
    let mut c = Reader::new(s.connect());
    // Three requests in one write, then more on the same connection.
    c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 204);
    let h = c.response();
    assert_eq!((h.status, h.text().as_str()), (200, "ok"));
    assert_eq!(c.response().status, 404);
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        c.send(PING);
        let r = c.response();
        assert_eq!(r.status, 204);
        assert!(ids.insert(r.header("Request-Id").unwrap_or("").to_string()));
    }
    // A request split across writes is still one request.
    c.send(b"GET /hea");
    // Pacing, not waiting: a client that pauses mid-head, so the halves arrive apart.
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"lth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(5)));
}

fn write_then_series_shows_the_data(model: &str) {
    let s = start(model, &[]);
    let body = b"cpu,host=a usage=1.5 1000\ncpu,host=b usage=2.5 2000\n";
    let r = post(s.addr, "/write?db=t", body, "");
    assert_eq!(r.status, 204, "{}", r.text());
    // Aggregation runs on its own thread: wait for it, bounded.
    let mut last = serde_json::Value::Null;
    let seen = wait_until(Duration::from_secs(5), || {
        last = get(s.addr, "/series?measurement=cpu").json();
        last["series"].as_array().map(Vec::len) == Some(2)
    });
    assert!(seen, "series: {}", last);
    let series = last["series"].as_array().cloned().unwrap_or_default();
    let a = series
        .iter()
        .find(|x| x["tags"]["host"] == "a")
        .expect("host=a");
    assert_eq!(a["last"], 1.5);
    assert_eq!(a["tags"]["db"], "t");
}

/// The serving thread waits for the delete (these models block a thread per connection):
/// answered in order with the writes around it, with and without the write log.
fn a_delete_pipelined_with_writes_is_answered_in_order(model: &str) {
    for extra in [&[][..], &["--memory-only"][..]] {
        let s = start(model, extra);
        let mut c = Reader::new(s.connect());
        let w = |body: &str| {
            format!(
                "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let del = "DELETE /series?tag=host:a HTTP/1.1\r\nHost: t\r\n\r\n";
        let req = [
            w("cpu,host=a v=1\ncpu,host=b v=1"),
            del.into(),
            w("cpu,host=a v=2"),
            del.into(),
        ];
        c.send(req.concat().as_bytes());
        for want in [1, 1] {
            assert_eq!(c.response().status, 204);
            let r = c.response();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["deleted"], want, "{extra:?}: {}", r.text());
        }
        // On the same connection: the blocking model serves one connection at a time.
        c.send(b"GET /series HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let left = c.response().json();
        assert_eq!(left["series"].as_array().map(Vec::len), Some(1), "{left}");
    }
}

fn stats_report_the_io_model_and_io_counters(model: &str) {
    let s = start(model, &[]);
    for _ in 0..3 {
        assert_eq!(get(s.addr, "/ping").status, 204);
    }
    let v = s.stats();
    assert_eq!(v["io_model"], model);
    // Three pings, and the /stats request itself.
    assert_eq!(v["connections_accepted"], 4);
    assert_eq!(v["accept_batches"], 4, "each accept is a batch of one");
    assert_eq!(v["accept_batch_max"], 1);
    assert_eq!(v["requests_total"], 4);
    assert_eq!(v["responses_by_status"]["204"], 3);
    assert!(v["bytes_read"].as_u64().unwrap_or(0) > 0);
    assert!(v["bytes_written"].as_u64().unwrap_or(0) > 0);
    // Closed connections leave the gauge (the server may still be closing the last ping's
    // when /stats is answered); only the /stats connection remains.
    assert!(wait_until(Duration::from_secs(5), || {
        s.stats()["connections_active"] == 1
    }));
}

fn sigterm_exits_0_closing_idle_connections(model: &str) {
    let mut s = start(model, &[]);
    let mut idle = Reader::new(s.connect());
    idle.send(PING);
    assert_eq!(idle.response().status, 204);
    // The idle keep-alive connection must not hold the shutdown up.
    let code = s.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "log: {}", s.log_text());
    assert!(idle.closed_within(Duration::from_secs(2)));
    let log = s.log_text();
    assert!(log.contains("shutting down: stopped accepting"), "{}", log);
    assert!(log.contains("shutdown complete"), "{}", log);
    assert!(TcpStream::connect_timeout(&s.addr, Duration::from_secs(1)).is_err());
}

fn sigterm_finishes_a_request_in_flight(model: &str) {
    let mut s = start(model, &["--shutdown-timeout", "10"]);
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
    assert_eq!(s.wait(Duration::from_secs(10)), Some(0), "{}", s.log_text());
}

fn shutdown_timeout_cuts_a_stalled_request(model: &str) {
    let mut s = start(model, &["--shutdown-timeout", "1"]);
    let mut c = Reader::new(s.connect());
    c.send(b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Length: 19\r\n\r\nq=CR");
    // The stall must be inside the server when the signal arrives.
    assert!(s.wait_read_all_of(&c.stream, Duration::from_secs(5)));
    let code = s.terminate(Duration::from_secs(8));
    assert_eq!(code, Some(0), "log: {}", s.log_text());
    assert!(c.closed_within(Duration::from_secs(2)));
    let log = s.log_text();
    assert!(
        log.contains("shutdown timeout: closing 1 connections"),
        "{}",
        log
    );
    assert!(log.contains("1 force-closed"), "{}", log);
}

fn idle_timeout_closes_quietly(model: &str) {
    let s = start(model, &["--idle-timeout", "1"]);
    let mut c = Reader::new(s.connect());
    c.send(PING);
    assert_eq!(c.response().status, 204);
    assert!(c.closed_within(Duration::from_secs(5)));
    // A connection that never sends a byte is idle too.
    let mut silent = Reader::new(s.connect());
    assert!(silent.closed_within(Duration::from_secs(5)));
    assert!(wait_until(Duration::from_secs(5), || {
        s.stats()["timeouts_idle"] == 2
    }));
}

fn header_timeout_is_408_and_close(model: &str) {
    let s = start(model, &["--header-timeout", "1"]);
    let mut c = Reader::new(s.connect());
    c.send(b"GET /ping HTTP/1.1\r\nHost: t\r\n");
    let r = c.response();
    assert_eq!(r.status, 408);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(s.stats()["timeouts_header"], 1);
}

fn framing_error_is_400_and_close(model: &str) {
    let s = start(model, &[]);
    let mut c = Reader::new(s.connect());
    c.send(b"POST /query HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(r.json()["error"].is_string());
    assert!(c.closed_within(Duration::from_secs(5)));
    // The server goes on.
    assert_eq!(get(s.addr, "/ping").status, 204);
}

/// With one serving thread, a connection held open keeps the next one waiting — queued by
/// the threadpool, in the kernel's backlog for the blocking model — until it closes. This is
/// the behaviour the comparison exists to show.
fn a_held_connection_makes_the_next_one_wait(model: &str) {
    let s = start(model, &["--workers", "1"]);
    let mut held = Reader::new(s.connect());
    held.send(PING);
    assert_eq!(held.response().status, 204);
    let waiting = s.connect();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut waiting = Reader::new(waiting);
    waiting.send(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(
        !waiting.closed_within(Duration::from_millis(300)),
        "answered while the only thread was busy"
    );
    drop(held);
    waiting
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(waiting.response().status, 204);
}

#[test]
fn threadpool_over_max_connections_is_503_and_close() {
    let s = start("threadpool", &["--max-connections", "1"]);
    let mut held = Reader::new(s.connect());
    held.send(PING);
    assert_eq!(held.response().status, 204);
    let mut extra = Reader::new(s.connect());
    extra.send(PING);
    let r = extra.response();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(extra.closed_within(Duration::from_secs(5)));
    // The held connection is unaffected.
    held.send(PING);
    assert_eq!(held.response().status, 204);
    drop(held);
    // Until the server has seen the close, /stats itself is over the limit.
    let mut v = serde_json::Value::Null;
    let mut refused = 0;
    assert!(wait_until(Duration::from_secs(5), || {
        let r = get(s.addr, "/stats");
        match r.status {
            200 => v = r.json(),
            _ => refused += 1,
        }
        r.status == 200
    }));
    assert_eq!(v["connections_rejected_over_limit"], 1 + refused);
    assert_eq!(v["worker_jobs"], 2, "connections handed to the pool");
}

#[test]
fn threadpool_serves_workers_connections_at_once() {
    let s = start("threadpool", &["--workers", "3"]);
    let mut conns: Vec<Reader> = (0..3).map(|_| Reader::new(s.connect())).collect();
    // Three keep-alive connections, each answered while the other two stay open.
    for _ in 0..3 {
        for c in conns.iter_mut() {
            c.send(PING);
            assert_eq!(c.response().status, 204);
        }
    }
}
