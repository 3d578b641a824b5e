//! Series lifecycle through the real server (SPEC.md "Series lifecycle", issue 13):
//! `--series-ttl` expires a series from `/series` and `/metrics` and counts it;
//! `DELETE /series` takes the `/series` filters, refuses what would be ambiguous (`400`)
//! or unauthenticated (`401`), covers every write acknowledged before it (also ones the
//! aggregator had not applied yet, with and without the write log), and stays done after
//! `kill -9` (the delete only in the log) and a graceful restart; expiry also holds after a
//! `kill -9` and a restart. A delete waiting for the aggregator ties up no worker (with a
//! single worker and the aggregator held back through a debug-build endpoint, other
//! requests are still served), and deletes pipelined with writes are answered in order.
//!
//! Each server gets its own temp data directory; every wait is bounded and polls a
//! condition (the only waits on the clock are for a TTL to pass, which is the condition).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "s3cret-token";
const STOP_LIMIT: Duration = Duration::from_secs(30);

fn write(addr: SocketAddr, body: &str) {
    let r = post(addr, "/write?precision=s", body.as_bytes(), "");
    assert_eq!(r.status, 204, "write {body:?}: {}", r.text());
}

fn delete(addr: SocketAddr, query: &str, auth: Option<&str>) -> Response {
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    request(
        addr,
        &format!("DELETE /series{query} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n"),
    )
}

fn deleted(addr: SocketAddr, query: &str) -> u64 {
    let r = delete(addr, query, None);
    assert_eq!(r.status, 200, "DELETE /series{query}: {}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.contains("json")));
    r.json()["deleted"].as_u64().expect("deleted count")
}

/// `measurement tagkey=value field` of every series listed (up to 100 000).
fn series(addr: SocketAddr) -> BTreeSet<String> {
    series_where(addr, "")
}

fn series_where(addr: SocketAddr, filter: &str) -> BTreeSet<String> {
    let r = get(addr, &format!("/series?limit=100000{filter}"));
    assert_eq!(r.status, 200);
    let v = r.json();
    v["series"]
        .as_array()
        .expect("series array")
        .iter()
        .map(|s| {
            let tags: Vec<String> = s["tags"]
                .as_object()
                .expect("tags")
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect();
            format!(
                "{} {} {}",
                s["measurement"].as_str().unwrap_or("?"),
                tags.join(","),
                s["field"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The `count` of the one series `filter` selects, once the aggregator shows it (a `204`
/// means logged and queued; it is applied a moment later).
fn count_of(addr: SocketAddr, filter: &str) -> u64 {
    let mut count = None;
    wait_until(Duration::from_secs(10), || {
        let r = get(addr, &format!("/series?{filter}"));
        count = r.json()["series"][0]["count"].as_u64();
        count.is_some()
    });
    count.expect("the series shows up")
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--data-dir", dir.to_str().expect("UTF-8 temp path")];
    if !extra.contains(&"--snapshot-interval") {
        // An hour: a kill -9 leaves everything in the log only.
        args.extend(["--snapshot-interval", "3600"]);
    }
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn kill9(s: &mut Server) {
    assert!(s.kill9(), "the server did not die on SIGKILL");
}

fn stop(s: &mut Server) {
    assert_eq!(
        s.terminate(STOP_LIMIT),
        Some(0),
        "graceful stop: {}",
        s.log_text()
    );
}

/// Waits until the wall clock is `secs` past `since` (bounded by that time plus a margin).
fn wait_past(since: Instant, secs: f64) {
    let due = since + Duration::from_secs_f64(secs);
    assert!(wait_until(
        Duration::from_secs_f64(secs) + Duration::from_secs(5),
        || Instant::now() >= due
    ));
}

// ===== --series-ttl

#[test]
fn a_series_not_written_for_the_ttl_leaves_series_and_metrics_and_is_counted() {
    let s = Server::start(&["--series-ttl", "1"]);
    write(s.addr, "gone,host=a v=1\nkept,host=a v=1");
    // A 204 means logged and queued; the aggregator applies it a moment later.
    assert!(wait_until(Duration::from_secs(10), || series(s.addr).len() == 2));
    let expired = wait_until(Duration::from_secs(20), || {
        // `kept` is written all along; only `gone` may expire.
        write(s.addr, "kept,host=a v=2");
        !series(s.addr).contains("gone host=a v")
    });
    assert!(expired, "gone never expired: {:?}", series(s.addr));
    assert_eq!(series(s.addr), set(&["kept host=a v"]));
    let stats = s.stats();
    assert_eq!(counter(&stats, "series_expired"), 1);
    assert_eq!(counter(&stats, "series"), 1);
    let m = get(s.addr, "/metrics").text();
    assert!(!m.contains("gone_v{"), "{m}");
    assert!(m.contains("kept_v{host=\"a\"} 2"), "{m}");
    assert!(m.contains("metricstream_series_expired_total 1"), "{m}");
    // A later write starts a fresh series.
    write(s.addr, "gone,host=a v=5");
    assert_eq!(count_of(s.addr, "measurement=gone"), 1);
}

#[test]
fn ttl_zero_keeps_series() {
    let s = Server::start(&["--series-ttl", "0", "--memory-only"]);
    let t0 = Instant::now();
    write(s.addr, "m v=1");
    wait_past(t0, 2.5);
    assert_eq!(series(s.addr), set(&["m  v"]));
    assert_eq!(counter(&s.stats(), "series_expired"), 0);
}

#[test]
fn expiry_holds_after_kill9_and_a_restart() {
    let tmp = TempDir::new("lifecycle-ttl-kill");
    let dir = tmp.join("data");
    let mut s = start(&dir, &["--series-ttl", "2"]);
    let t0 = Instant::now();
    write(s.addr, "old,host=a v=1");
    kill9(&mut s);
    // Receive times are kept in whole seconds, and a series goes when more than the TTL
    // has passed since: 2 s plus the rounding.
    wait_past(t0, 3.5);
    let s = start(&dir, &["--series-ttl", "2"]);
    // The first read after the restart already does not show it: it never comes back.
    assert_eq!(series(s.addr), BTreeSet::new());
    let stats = s.stats();
    assert_eq!(counter(&stats, "series_expired"), 1);
    assert_eq!(counter(&stats, "recovered_points"), 1);
    assert_eq!(counter(&stats, "series"), 0);
}

#[test]
fn expiry_holds_after_a_snapshot_and_a_restart() {
    let tmp = TempDir::new("lifecycle-ttl-snap");
    let dir = tmp.join("data");
    let mut s = start(&dir, &["--series-ttl", "2"]);
    let t0 = Instant::now();
    write(s.addr, "old,host=a v=1");
    // A graceful stop writes a snapshot: the last-write time must be in it.
    stop(&mut s);
    wait_past(t0, 3.5);
    let s = start(&dir, &["--series-ttl", "2"]);
    assert_eq!(series(s.addr), BTreeSet::new());
    assert_eq!(counter(&s.stats(), "series_expired"), 1);
}

// ===== DELETE /series: filters, refusals, authentication

#[test]
fn delete_takes_the_series_filters_and_refuses_what_is_ambiguous() {
    let s = Server::start(&["--auth-token", TOKEN]);
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let w = |body: &str| {
        let r = post(s.addr, "/write", body.as_bytes(), &auth);
        assert_eq!(r.status, 204, "{}", r.text());
    };
    w(
        "cpu,host=a,dc=x idle=1,user=2\ncpu,host=b,dc=y idle=3\nmem,host=a free=4\nmem\\ x,host=c fr\\ ee=5",
    );
    // Unauthenticated: 401, nothing deleted.
    let r = delete(s.addr, "?measurement=cpu", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = delete(s.addr, "?measurement=cpu", Some("wrong"));
    assert_eq!(r.status, 401);
    // No filter, an empty one, limit=, an unknown or misspelt parameter, a bad tag: 400
    // with a JSON error, nothing deleted.
    for q in [
        "",
        "?",
        "?measurement=",
        "?field=",
        "?tag=",
        "?tag=host",
        "?tag=host:",
        "?tag=:a",
        "?measurement=cpu&limit=1",
        "?measuremnt=cpu",
        "?measurement=cpu&host=a",
        "?measurement=cpu&measurement=mem",
        "?measurement=%zz",
    ] {
        let r = delete(s.addr, q, Some(TOKEN));
        assert_eq!(r.status, 400, "DELETE /series{q}: {}", r.text());
        assert!(
            r.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{q}"
        );
    }
    let del = |q: &str| {
        let r = delete(s.addr, q, Some(TOKEN));
        assert_eq!(r.status, 200, "DELETE /series{q}: {}", r.text());
        r.json()["deleted"].as_u64().expect("deleted")
    };
    let list = || {
        let r = request(
            s.addr,
            &format!("GET /series HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n"),
        );
        r.json()["series"].as_array().expect("series").len()
    };
    assert!(wait_until(Duration::from_secs(10), || list() == 5));
    // The v1 credentials in the query are not filters.
    assert_eq!(del(&format!("?measurement=cpu&field=user&p={TOKEN}")), 1);
    assert_eq!(del("?measurement=nothing"), 0);
    // Unescaped names, percent-decoding as GET /series does.
    assert_eq!(del("?measurement=mem+x&field=fr%20ee"), 1);
    // Several tags: all must hold.
    assert_eq!(del("?tag=host:a&tag=dc:y"), 0);
    assert_eq!(del("?tag=host:a"), 2);
    assert_eq!(list(), 1);
    let r = request(
        s.addr,
        &format!("GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n"),
    );
    let stats = r.json();
    assert_eq!(counter(&stats, "series_deleted"), 4);
    assert_eq!(counter(&stats, "series"), 1);
    // A method the route does not answer names DELETE in Allow.
    let r = request(
        s.addr,
        &format!("PUT /series HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n"),
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, DELETE"));
    // A later write starts a fresh series.
    w("cpu,host=a,dc=x idle=9");
    assert!(wait_until(Duration::from_secs(10), || list() == 2));
    let r = request(
        s.addr,
        &format!(
            "GET /series?measurement=cpu&tag=host:a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n"
        ),
    );
    assert_eq!(r.json()["series"][0]["count"], 1);
}

// ===== DELETE /series covers every acknowledged write

/// Rounds of "a write of many points acknowledged, then a delete": the delete must find
/// every point of the write, even though the aggregator may not have applied it yet when
/// the `204` left.
fn delete_covers_the_write_acknowledged_just_before(extra: &[&str]) {
    let s = Server::start(extra);
    let mut body = String::new();
    for i in 0..2000 {
        body.push_str(&format!("burst,host=h{i} v={i}\n"));
    }
    for round in 0..15 {
        write(s.addr, &body);
        assert_eq!(deleted(s.addr, "?measurement=burst"), 2000, "round {round}");
        assert_eq!(series_where(s.addr, "&measurement=burst"), BTreeSet::new());
    }
    assert_eq!(counter(&s.stats(), "series_deleted"), 15 * 2000);
}

#[test]
fn delete_covers_the_write_acknowledged_just_before_it_with_the_log() {
    delete_covers_the_write_acknowledged_just_before(&[]);
}

#[test]
fn delete_covers_the_write_acknowledged_just_before_it_in_memory() {
    delete_covers_the_write_acknowledged_just_before(&["--memory-only"]);
}

/// A writer sends one new series per request without pause; the main thread deletes the
/// measurement now and then. After each delete is answered, no series whose write was
/// acknowledged before the delete was sent may be listed.
#[test]
fn delete_races_writers_and_never_leaves_an_acknowledged_write() {
    let s = Server::start(&[]);
    let addr = s.addr;
    // Index of the next write the writer will send; every index below it is acknowledged.
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut r = Reader::new(s.connect());
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let body = format!("race,host=h{i} v=1\n");
                let raw = format!(
                    "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                r.send(raw.as_bytes());
                assert_eq!(r.response().status, 204);
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
        });
        let index = |line: &str| -> u64 {
            line.split_whitespace()
                .nth(1)
                .and_then(|t| t.strip_prefix("host=h"))
                .and_then(|n| n.parse().ok())
                .expect("race host index")
        };
        let mut total = 0;
        for round in 0..20 {
            // Let some writes through first (bounded).
            let from = acked.load(Ordering::SeqCst);
            assert!(
                wait_until(Duration::from_secs(20), || acked.load(Ordering::SeqCst)
                    >= from + 5),
                "the writer stalled"
            );
            let before = acked.load(Ordering::SeqCst);
            total += deleted(addr, "?measurement=race");
            for line in series_where(addr, "&measurement=race") {
                let i = index(&line);
                assert!(
                    i >= before,
                    "round {round}: h{i} was acknowledged before the delete (< {before}) and survived it"
                );
            }
        }
        stop.store(true, Ordering::SeqCst);
        assert!(total > 0);
    });
}

// ===== DELETE /series does not tie up a worker

/// A raw request with its `Content-Length` (0 when `body` is empty).
fn raw(method_path: &str, headers: &str, body: &str) -> String {
    format!(
        "{method_path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn hold_aggregator(addr: SocketAddr, ms: u64) {
    let r = post(addr, &format!("/debug/hold-aggregator?ms={ms}"), b"", "");
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Nothing has arrived on `r`'s connection yet (looked at without waiting).
fn nothing_arrived(r: &Reader) -> bool {
    let mut b = [0u8; 1];
    r.stream.set_nonblocking(true).expect("nonblocking");
    let quiet =
        matches!(r.stream.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    r.stream.set_nonblocking(false).expect("blocking");
    quiet
}

/// With one worker and the aggregator held (debug builds only), `K` deletes on `K`
/// connections all wait for it; meanwhile that one worker still answers `/stats` (which
/// shows every delete's head was taken: the worker was not stuck in the first),
/// `/health` and a write on other connections. Released, every delete gets its own count,
/// and a request pipelined behind a delete is answered after it.
fn pending_deletes_leave_the_worker_free(extra: &[&str]) {
    const K: usize = 6;
    let mut args = vec!["--workers", "1"];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    // Measurement d<i> has i + 1 series.
    let mut body = String::from("keep v=1\n");
    for i in 0..K {
        for h in 0..=i {
            body.push_str(&format!("d{i},host=h{h} v=1\n"));
        }
    }
    write(s.addr, &body);
    let total = 1 + K * (K + 1) / 2;
    assert!(wait_until(Duration::from_secs(10), || series(s.addr).len() == total));

    // A minute at most: a server that ties its worker up fails the waits below, never
    // hangs the test.
    hold_aggregator(s.addr, 60_000);
    let base = counter(&s.stats(), "requests_total");
    let mut conns: Vec<Reader> = (0..K)
        .map(|i| {
            let mut r = Reader::new(s.connect());
            r.stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut req = raw(&format!("DELETE /series?measurement=d{i}"), "", "");
            if i == 0 {
                // Pipelined behind the delete: looked at only once it is answered.
                req.push_str(&raw("DELETE /series?measurement=none", "", ""));
                req.push_str(&raw("GET /series?measurement=d0", "", ""));
            }
            r.send(req.as_bytes());
            r
        })
        .collect();
    // Each /stats request counts itself; what is left over is delete heads taken.
    let mut polls = 0;
    let mut taken = 0;
    let all_taken = wait_until(Duration::from_secs(20), || {
        polls += 1;
        taken = counter(&s.stats(), "requests_total") - base - polls;
        taken >= K as u64
    });
    assert!(all_taken, "only {taken} of {K} deletes taken by the worker");
    assert_eq!(get(s.addr, "/health").status, 200);
    write(s.addr, "other v=1");
    for (i, r) in conns.iter().enumerate() {
        assert!(
            nothing_arrived(r),
            "delete {i} answered while the aggregator is held"
        );
    }

    hold_aggregator(s.addr, 0);
    for (i, r) in conns.iter_mut().enumerate() {
        let a = r.response();
        assert_eq!(a.status, 200, "delete {i}: {}", a.text());
        assert!(a.header("content-type").is_some_and(|c| c.contains("json")));
        assert_eq!(a.json()["deleted"], i + 1, "delete {i}: {}", a.text());
    }
    let r = &mut conns[0];
    let a = r.response();
    assert_eq!(a.json()["deleted"], 0, "{}", a.text());
    let a = r.response();
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["series"], serde_json::json!([]), "{}", a.text());
    assert!(wait_until(Duration::from_secs(10), || series(s.addr)
        == set(&["keep  v", "other  v"])));
    let stats = s.stats();
    assert_eq!(counter(&stats, "series_deleted"), (K * (K + 1) / 2) as u64);
    assert_eq!(status_count(&stats, 503), 0);
}

#[test]
fn pending_deletes_leave_the_worker_free_with_the_log() {
    pending_deletes_leave_the_worker_free(&[]);
}

#[test]
fn pending_deletes_leave_the_worker_free_in_memory() {
    pending_deletes_leave_the_worker_free(&["--memory-only"]);
}

/// Writes and deletes pipelined in one send on one connection are answered in order,
/// each delete covering the writes before it; an HTTP/1.0 keep-alive delete says so in
/// its answer, and a delete with `Connection: close` is the last answer.
fn a_delete_pipelined_behind_writes_is_answered_in_order(extra: &[&str]) {
    let s = Server::start(extra);
    let mut r = Reader::new(s.connect());
    r.stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = raw("POST /write", "", "p,host=a v=1\np,host=b v=1\nq v=1");
    req.push_str(&raw("DELETE /series?measurement=p", "", ""));
    req.push_str(&raw("POST /write", "", "p,host=c v=2"));
    req.push_str("DELETE /series?measurement=p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    req.push_str(&raw("GET /series?measurement=p", "", ""));
    req.push_str(&raw(
        "DELETE /series?measurement=q",
        "Connection: close\r\n",
        "",
    ));
    req.push_str(&raw("GET /health", "", ""));
    r.send(req.as_bytes());
    // A DELETE's answer: its count and its `Connection` header.
    let deleted = |r: &mut Reader, n: u64, connection: Option<&str>| {
        let a = r.response();
        assert_eq!(
            (a.status, a.json()["deleted"].as_u64()),
            (200, Some(n)),
            "{}",
            a.text()
        );
        assert_eq!(a.header("connection"), connection);
    };
    assert_eq!(r.response().status, 204);
    deleted(&mut r, 2, None);
    assert_eq!(r.response().status, 204);
    deleted(&mut r, 1, Some("keep-alive"));
    let a = r.response();
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["series"], serde_json::json!([]), "{}", a.text());
    deleted(&mut r, 1, Some("close"));
    // The GET /health after it is never answered.
    assert!(r.try_response_to(false).is_none());
    assert_eq!(series(s.addr), BTreeSet::new());
}

#[test]
fn a_delete_pipelined_behind_writes_is_answered_in_order_with_the_log() {
    a_delete_pipelined_behind_writes_is_answered_in_order(&[]);
}

#[test]
fn a_delete_pipelined_behind_writes_is_answered_in_order_in_memory() {
    a_delete_pipelined_behind_writes_is_answered_in_order(&["--memory-only"]);
}

// ===== DELETE /series survives restarts

#[test]
fn a_delete_only_in_the_log_survives_kill9_and_later_writes_stay() {
    let tmp = TempDir::new("lifecycle-delete-kill");
    let dir = tmp.join("data");
    let mut s = start(&dir, &[]);
    write(s.addr, "cpu,host=a v=1\ncpu,host=b v=1\ncpu,host=a v=2");
    assert_eq!(deleted(s.addr, "?tag=host:a"), 1);
    // Written after the delete: a fresh series that must survive it at replay.
    write(s.addr, "cpu,host=a v=7");
    write(s.addr, "mem,host=a v=1");
    kill9(&mut s);
    // No snapshot was written: the delete is in the log only.
    let snaps = std::fs::read_dir(dir.join("snapshots"))
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    assert_eq!(snaps, 0, "a snapshot was written");
    let mut s = start(&dir, &[]);
    assert_eq!(
        series(s.addr),
        set(&["cpu host=a v", "cpu host=b v", "mem host=a v"])
    );
    assert_eq!(count_of(s.addr, "measurement=cpu&tag=host:a"), 1);
    // Once more, now deleting after a restart, then a graceful stop (snapshot) and a kill.
    assert_eq!(deleted(s.addr, "?measurement=mem"), 1);
    stop(&mut s);
    let mut s = start(&dir, &[]);
    assert_eq!(series(s.addr), set(&["cpu host=a v", "cpu host=b v"]));
    kill9(&mut s);
    let s = start(&dir, &[]);
    assert_eq!(series(s.addr), set(&["cpu host=a v", "cpu host=b v"]));
    assert_eq!(count_of(s.addr, "measurement=cpu&tag=host:b"), 1);
}

#[test]
fn a_delete_covered_by_a_snapshot_and_more_log_survives_kill9() {
    let tmp = TempDir::new("lifecycle-delete-snap");
    let dir = tmp.join("data");
    let mut s = start(&dir, &["--snapshot-interval", "1"]);
    write(s.addr, "a v=1\nb v=1");
    assert_eq!(deleted(s.addr, "?measurement=a"), 1);
    // Wait (bounded) for a snapshot covering the delete (record 2), then log more past it.
    assert!(wait_until(Duration::from_secs(20), || newest_snapshot_lsn(
        &dir
    ) >= 2));
    write(s.addr, "c v=1");
    assert_eq!(deleted(s.addr, "?measurement=b"), 1);
    kill9(&mut s);
    let s = start(&dir, &[]);
    assert_eq!(series(s.addr), set(&["c  v"]));
    let v: Value = s.stats();
    assert_eq!(counter(&v, "series"), 1);
}

/// The highest LSN among the snapshots in `DIR/snapshots` (the digits of their names).
fn newest_snapshot_lsn(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("snapshots"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let digits: String = name.chars().filter(char::is_ascii_digit).collect();
                    name.ends_with(".snap").then(|| digits.parse().ok())?
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
