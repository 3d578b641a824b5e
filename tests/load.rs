//! Load through the real server: 2000 concurrent writer connections × 50 writes each with
//! every 204 accounted for exactly in /series, and a pipelining client that never reads
//! its responses keeping the server's memory bounded. Both end with open connections and
//! descriptors back at their baseline.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WRITERS: usize = 2000;
const WRITES: usize = 50;
const WRITER_THREADS: usize = 20;

fn connect(addr: SocketAddr) -> Reader {
    let st = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    st.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    st.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    Reader::new(st)
}

fn write_request(body: &str) -> Vec<u8> {
    format!(
        "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes()
}

/// What one writer connection saw: its id, its 204s, the sum of the round numbers those
/// 204s acknowledged, and any other statuses.
struct Tally {
    conn: usize,
    ok: u64,
    round_sum: u64,
    other: Vec<u16>,
}

#[test]
fn two_thousand_writers_every_204_counted_exactly_once() {
    let limit = raise_own_nofile_limit(8192);
    assert!(
        limit >= 4096,
        "RLIMIT_NOFILE {} too low for this test",
        limit
    );
    let s = Server::start(&[]);
    let fds0 = quiet_fds(&s);
    let before = s.stats();
    let addr = s.addr;
    let per_thread = WRITERS / WRITER_THREADS;
    // Every connection is open before the first write: 2000 at once.
    let barrier = Arc::new(Barrier::new(WRITER_THREADS + 1));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let ids: Vec<usize> = (t * per_thread..(t + 1) * per_thread).collect();
                let mut conns: Vec<Reader> = ids.iter().map(|_| connect(addr)).collect();
                barrier.wait();
                let mut tallies: Vec<Tally> = ids
                    .iter()
                    .map(|&conn| Tally {
                        conn,
                        ok: 0,
                        round_sum: 0,
                        other: Vec::new(),
                    })
                    .collect();
                for round in 0..WRITES {
                    for (c, &id) in conns.iter_mut().zip(&ids) {
                        c.send(&write_request(&format!(
                            "w,conn={} n=1i,r={}i\n",
                            id, round
                        )));
                    }
                    for (c, tally) in conns.iter_mut().zip(tallies.iter_mut()) {
                        let r = c.response();
                        if r.status == 204 {
                            tally.ok += 1;
                            tally.round_sum += round as u64;
                        } else {
                            tally.other.push(r.status);
                        }
                    }
                }
                tallies
            })
        })
        .collect();
    barrier.wait();
    let connected_in = t0.elapsed();
    let during = s.stats();
    let tallies: Vec<Tally> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer thread"))
        .collect();
    let took = t0.elapsed();
    assert_eq!(tallies.len(), WRITERS);
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let others: Vec<u16> = tallies.iter().flat_map(|t| t.other.clone()).collect();
    // Overload may only ever be 503 (queue full); nothing else is acceptable.
    assert!(
        others.iter().all(|&st| st == 503),
        "unexpected statuses: {:?}",
        others
    );

    assert!(
        wait_until(Duration::from_secs(20), || {
            let st = s.stats();
            st["points_queued"] == st["points_aggregated"]
        }),
        "aggregator did not catch up"
    );
    let r = get(s.addr, "/series?measurement=w&limit=100000");
    assert_eq!(r.status, 200);
    let v: Value = r.json();
    assert_eq!(v["truncated"], false);
    let series = v["series"].as_array().unwrap();
    let mut by_conn = std::collections::HashMap::new();
    for sr in series {
        let conn: usize = sr["tags"]["conn"].as_str().unwrap().parse().unwrap();
        let field = sr["field"].as_str().unwrap().to_string();
        let prev = by_conn.insert(
            (conn, field.clone()),
            (sr["count"].as_u64().unwrap(), sr["sum"].as_f64().unwrap()),
        );
        assert!(prev.is_none(), "series conn={} {} twice", conn, field);
    }
    let mut wrong = Vec::new();
    for t in &tallies {
        let n = by_conn.get(&(t.conn, "n".to_string())).copied();
        let r = by_conn.get(&(t.conn, "r".to_string())).copied();
        let want_n = (t.ok > 0).then_some((t.ok, t.ok as f64));
        let want_r = (t.ok > 0).then_some((t.ok, t.round_sum as f64));
        if n != want_n || r != want_r {
            wrong.push(format!(
                "conn {}: 204s {} (round sum {}), series n={:?} r={:?}",
                t.conn, t.ok, t.round_sum, n, r
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} connections miscounted, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(
        series.len(),
        2 * tallies.iter().filter(|t| t.ok > 0).count()
    );

    let after = s.stats();
    let d = |k: &str| counter(&after, k) - counter(&before, k);
    // One point (line) per write, with two fields.
    assert_eq!(d("points_accepted"), ok);
    assert_eq!(d("points_queued"), ok);
    assert_eq!(d("points_aggregated"), ok);
    assert!(d("connections_accepted") >= WRITERS as u64);
    eprintln!(
        "writers: {} connections open in {:?} (connections_active {} at the barrier), \
         {} writes in {:?} ({:.0} writes/s): {} × 204, {} × 503; accept_batch_max {}, \
         listen_overflows +{}",
        WRITERS,
        connected_in,
        during["connections_active"],
        WRITERS * WRITES,
        took,
        (WRITERS * WRITES) as f64 / took.as_secs_f64(),
        ok,
        others.len(),
        after["accept_batch_max"],
        counter(&after, "listen_overflows").saturating_sub(counter(&before, "listen_overflows")),
    );
    settles_to(&s, 0, fds0, Duration::from_secs(10)).unwrap();
}

/// Peak RSS of the server while `work` runs (sampled every 20 ms by another thread).
fn peak_rss_during<T>(s: &Server, work: impl FnOnce() -> T) -> (T, u64) {
    let pid = s.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let statm =
                    std::fs::read_to_string(format!("/proc/{}/statm", pid)).unwrap_or_default();
                let pages: u64 = statm
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                peak.fetch_max(pages * 4096, Ordering::Relaxed);
                // Sampling interval of the RSS peak.
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = work();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    peak.fetch_max(s.rss_bytes(), Ordering::Relaxed);
    (out, peak.load(Ordering::Relaxed))
}

const MB: u64 = 1 << 20;

#[test]
fn pipelining_client_that_never_reads_keeps_server_memory_bounded() {
    let s = Server::start(&["--body-timeout", "2"]);
    let fds0 = quiet_fds(&s);
    let mut bystander = Reader::new(s.connect());
    let before = bystander.stats();
    let rss0 = s.rss_bytes();

    // 1. 100 MB of pipelined writes (64 KiB bodies, 1 KiB lines), responses never read.
    //    Each response is small, so the server can and must read all of it.
    let line = format!("nr,c=1 s=\"{}\"\n", "x".repeat(1024 - 12));
    assert_eq!(line.len(), 1024);
    let request = write_request(&line.repeat(64));
    let requests = (100 * MB as usize).div_ceil(request.len());
    let mut c = s.connect();
    c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let t0 = Instant::now();
    let (sent, peak_writes) = peak_rss_during(&s, || {
        let mut sent = 0u64;
        for _ in 0..requests {
            c.write_all(&request)
                .expect("the server stopped reading writes");
            sent += request.len() as u64;
        }
        sent
    });
    let writes_took = t0.elapsed();
    // Only now read the responses: every one is there, in order.
    let mut r = Reader::new(c);
    for i in 0..requests {
        assert_eq!(r.response().status, 204, "pipelined write {}", i);
    }
    drop(r);
    let growth_writes = peak_writes.saturating_sub(rss0);

    // 2. Pipelined GETs whose answers are 8× their size, never read: the server has to stop
    //    reading (its output is bounded), so the client's sends stall well before 100 MB.
    //    Then the server gives up on the stalled connection after --body-timeout.
    // The client notices the stall (0.5 s without progress) before the server's 2 s write
    // timeout closes the connection.
    let mut c = s.connect();
    c.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let block: Vec<u8> = b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n".repeat(2048);
    let ((flood_sent, stalled), peak_flood) = peak_rss_during(&s, || {
        let mut sent = 0u64;
        while sent < 100 * MB {
            match c.write(&block) {
                Ok(n) => sent += n as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return (sent, true);
                }
                Err(e) => panic!("flood write failed after {} bytes: {}", sent, e),
            }
        }
        (sent, false)
    });
    let growth_flood = peak_flood.saturating_sub(rss0);
    // Meanwhile everybody else is served.
    assert_eq!(bystander.get("/ping").status, 204);
    assert!(
        wait_until(Duration::from_secs(10), || {
            counter(&bystander.stats(), "timeouts_write") > counter(&before, "timeouts_write")
        }),
        "the stalled connection was not closed for not reading"
    );
    drop(c);
    let after = bystander.stats();

    eprintln!(
        "never-reading client: {} MB of pipelined writes sent in {:?}, peak RSS growth {:.1} MB; \
         GET flood: {:.1} MB sent before {}, peak RSS growth {:.1} MB (RSS at start {:.1} MB)",
        sent / MB,
        writes_took,
        growth_writes as f64 / MB as f64,
        flood_sent as f64 / MB as f64,
        if stalled {
            "the sends stalled"
        } else {
            "reaching 100 MB"
        },
        growth_flood as f64 / MB as f64,
        rss0 as f64 / MB as f64,
    );
    assert!(sent >= 100 * MB);
    assert!(
        growth_writes < 50 * MB,
        "RSS grew by {} MB during 100 MB of unread pipelined writes",
        growth_writes / MB
    );
    assert!(
        growth_flood < 50 * MB,
        "RSS grew by {} MB during the unread GET flood",
        growth_flood / MB
    );
    assert!(
        stalled,
        "the server read 100 MB of GETs without its answers being read"
    );
    assert_eq!(
        counter(&after, "points_accepted") - counter(&before, "points_accepted"),
        64 * requests as u64
    );
    assert_eq!(
        counter(&after, "timeouts_write") - counter(&before, "timeouts_write"),
        1
    );
    drop(bystander);
    settles_to(&s, 0, fds0, Duration::from_secs(10)).unwrap();
}
