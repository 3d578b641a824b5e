//! The load test of issue 13: fill the real server with a million series (`m,host=h<i>
//! v=<i>`, bodies of 10,000 lines on several connections), then for about ten seconds read
//! `/metrics` (gzip, decompressed and checked: one `m_v` sample per host, each with its
//! host's value) and `/series?limit=1000` in a loop on two connections while a third sends
//! one small write every 20 ms, open loop. Asserts only correctness: every small write
//! answered 204 (never a 503), every read 200 and complete, every small write visible in
//! `/series` afterwards. Latencies (from when each write was *due*, so a stall cannot hide
//! behind a client that simply waited) and read times are printed, never asserted.
//!
//! Size: `cargo test --release --test scale` loads 1,000,000 series (both tests ~25 s).
//! In the debug build CI runs, a million series took 63 s for the two tests (a checked
//! gzip scrape 8.5-17.6 s instead of 2.2 s), over the ~60 s a new test may add, so under
//! `debug_assertions` it loads 200,000 (~25 s for both; the same code paths: many read
//! slices, many gzip pieces, a store resized while filling). `METRICSTREAM_TEST_SERIES=N`
//! overrides both. The two servers (memory only, then the write log on) run one after the
//! other, never together, so neither measures the other's load.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// How long the reads and the small writes run together.
const LOAD_FOR: Duration = Duration::from_secs(10);

/// The small writes' schedule: one every 20 ms.
const WRITE_EVERY: Duration = Duration::from_millis(20);

/// The small writes go one after the other on one connection, so if each waited for a
/// whole read, sending them all would take hundreds of reads. Past this long after the last
/// one was due, the rest are not sent (counted and printed; speed is never asserted).
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// Lines in each body of the fill.
const BODY_LINES: usize = 10_000;

/// Connections the fill is spread over.
const FILL_CONNECTIONS: usize = 4;

/// Longest any one response may take before the test fails (a debug render of the biggest
/// store takes a few seconds; this only bounds a hang).
const RESPONSE_LIMIT: Duration = Duration::from_secs(120);

/// Only one server of this file runs at a time (the test harness runs tests in parallel).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn series_wanted() -> usize {
    std::env::var("METRICSTREAM_TEST_SERIES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            200_000
        } else {
            1_000_000
        })
}

fn keep_alive(s: &Server) -> Reader {
    let stream = s.connect();
    stream
        .set_read_timeout(Some(RESPONSE_LIMIT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(RESPONSE_LIMIT))
        .expect("write timeout");
    Reader::new(stream)
}

fn post_on(r: &mut Reader, body: &[u8]) -> Response {
    let mut raw = format!(
        "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    r.send(&raw);
    r.response()
}

fn get_on(r: &mut Reader, path: &str, headers: &str) -> Response {
    r.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    r.response()
}

/// Writes `m,host=h<i> v=<i>` for every i below `n`, over [`FILL_CONNECTIONS`] keep-alive
/// connections, and waits until all of it is in the store. A `503` (queue full while the
/// aggregator catches up) is retried a bounded number of times and counted.
fn fill(s: &Server, n: usize) {
    let t0 = Instant::now();
    let per = n.div_ceil(FILL_CONNECTIONS);
    let retried: usize = thread::scope(|scope| {
        let handles: Vec<_> = (0..FILL_CONNECTIONS)
            .map(|c| {
                let (lo, hi) = (c * per, ((c + 1) * per).min(n));
                scope.spawn(move || {
                    let mut r = keep_alive(s);
                    let mut retried = 0;
                    let mut body = Vec::with_capacity(BODY_LINES * 24);
                    for start in (lo..hi).step_by(BODY_LINES) {
                        body.clear();
                        for i in start..(start + BODY_LINES).min(hi) {
                            body.extend_from_slice(format!("m,host=h{i} v={i}\n").as_bytes());
                        }
                        let mut tries = 0;
                        loop {
                            let resp = post_on(&mut r, &body);
                            if resp.status == 204 {
                                break;
                            }
                            assert!(
                                resp.status == 503 && tries < 200,
                                "fill write answered {} after {} tries: {}",
                                resp.status,
                                tries,
                                resp.text()
                            );
                            tries += 1;
                            retried += 1;
                            thread::sleep(Duration::from_millis(50));
                        }
                    }
                    retried
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fill thread"))
            .sum()
    });
    let acked = t0.elapsed();
    assert!(
        wait_until(Duration::from_secs(120), || {
            s.stats()["points_aggregated"].as_u64() == Some(n as u64)
        }),
        "the fill was not aggregated: {}",
        s.stats()
    );
    assert_eq!(s.stats()["series"].as_u64(), Some(n as u64));
    eprintln!(
        "filled {n} series: acknowledged in {:.2} s, in the store in {:.2} s, \
         {retried} bodies retried after a 503",
        acked.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// Checks a decompressed scrape: exactly one `m_v{host="h<i>"} <i>` sample per host below
/// `n`. Every sample is parsed (it costs less than the decompression), so "a sample of
/// hosts" is all of them.
fn check_scrape(text: &str, n: usize) {
    let mut seen = vec![false; n];
    let mut samples = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("m_v{host=\"h") else {
            continue;
        };
        let (host, value) = rest
            .split_once("\"} ")
            .unwrap_or_else(|| panic!("a malformed sample: {line:?}"));
        let i: usize = host
            .parse()
            .unwrap_or_else(|_| panic!("a host outside the fill: {line:?}"));
        assert!(
            i < n && !seen[i],
            "a host outside the fill or twice: {line:?}"
        );
        assert_eq!(value, i.to_string(), "the wrong value: {line:?}");
        seen[i] = true;
        samples += 1;
    }
    assert_eq!(samples, n, "samples of m_v in the scrape");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((p / 100.0 * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

fn summary(what: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{what}: {} done, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        v.len(),
        ms(pct(&v, 50.0)),
        ms(pct(&v, 99.0)),
        ms(v.last().copied().unwrap_or_default())
    )
}

/// Reads `path` in a loop until `stop`, checking each answer with `check`; returns how
/// long each read took to its last byte.
fn read_loop(
    s: &Server,
    stop: &AtomicBool,
    path: &str,
    headers: &str,
    check: impl Fn(&Response),
) -> Vec<Duration> {
    let mut r = keep_alive(s);
    let mut took = Vec::new();
    // Bounded by the stop flag (set after LOAD_FOR) and, should that never come, a count.
    for _ in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t0 = Instant::now();
        let resp = get_on(&mut r, path, headers);
        took.push(t0.elapsed());
        check(&resp);
    }
    took
}

/// Sets its flag when dropped, on success and on panic alike.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn reads_while_writing(args: &[&str]) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let n = series_wanted();
    let s = Server::start(args);
    eprintln!("server {args:?}, {n} series");
    fill(&s, n);

    let stop = AtomicBool::new(false);
    let (writes, scrapes, series_reads) = thread::scope(|scope| {
        let scrapes = scope.spawn(|| {
            read_loop(&s, &stop, "/metrics", "Accept-Encoding: gzip\r\n", |r| {
                assert_eq!(r.status, 200, "/metrics: {}", r.text());
                assert_eq!(r.header("Content-Encoding"), Some("gzip"));
                check_scrape(&gunzip(&r.body), n);
            })
        });
        let series_reads = scope.spawn(|| {
            read_loop(&s, &stop, "/series?limit=1000", "", |r| {
                assert_eq!(r.status, 200, "/series: {}", r.text());
                let v = r.json();
                let got = v["series"].as_array().map_or(0, |a| a.len());
                assert_eq!(got, 1000, "series in a /series?limit=1000 answer");
                assert_eq!(v["truncated"], true);
            })
        });

        // The readers stop when the writes are done, and also when the writer panics (a
        // scope waits for every thread: readers left looping would hold the failure up).
        let stop_readers = StopOnDrop(&stop);
        // Open loop: write k is due at start + k * WRITE_EVERY whatever happened to write
        // k - 1, and its latency counts from then.
        let mut w = keep_alive(&s);
        let mut latencies = Vec::new();
        let start = Instant::now();
        let total = (LOAD_FOR.as_micros() / WRITE_EVERY.as_micros()) as u32;
        let give_up = start + LOAD_FOR + GIVE_UP_AFTER;
        for k in 0..total {
            if Instant::now() > give_up {
                eprintln!("gave up {} small writes: each waited for a read", total - k);
                break;
            }
            let due = start + WRITE_EVERY * k;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let resp = post_on(&mut w, format!("lat,k={k} v={k}\n").as_bytes());
            latencies.push(due.elapsed());
            assert_eq!(resp.status, 204, "small write {k}: {}", resp.text());
        }
        drop(stop_readers);
        let scrapes = scrapes.join().expect("the /metrics reader");
        let series_reads = series_reads.join().expect("the /series reader");
        (latencies, scrapes, series_reads)
    });

    assert!(!scrapes.is_empty() && !series_reads.is_empty());
    let total = writes.len();
    let path = format!("/series?measurement=lat&limit={}", total + 1);
    let mut missing = Vec::new();
    let visible = wait_until(Duration::from_secs(30), || {
        let r = get(s.addr, &path);
        assert_eq!(r.status, 200, "{}", r.text());
        let mut seen = vec![false; total];
        for e in r.json()["series"].as_array().into_iter().flatten() {
            let k = e["tags"]["k"]
                .as_str()
                .and_then(|k| k.parse::<usize>().ok());
            if let Some(k) = k.filter(|&k| k < total) {
                seen[k] = e["last"].as_f64() == Some(k as f64);
            }
        }
        missing = (0..total).filter(|&k| !seen[k]).collect();
        missing.is_empty()
    });
    assert!(
        visible,
        "small writes never visible in /series: {missing:?}"
    );
    eprintln!("{}", summary("small writes (from when due)", writes));
    eprintln!("{}", summary("gzip /metrics reads (checked)", scrapes));
    eprintln!("{}", summary("/series?limit=1000 reads", series_reads));
}

#[test]
fn memory_only_reads_at_scale_never_hold_up_writes() {
    reads_while_writing(&["--memory-only", "--max-series", "2000000"]);
}

#[test]
fn write_log_reads_at_scale_never_hold_up_writes() {
    reads_while_writing(&["--max-series", "2000000"]);
}
