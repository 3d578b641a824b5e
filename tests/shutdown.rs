//! Graceful shutdown under write load: SIGTERM while 200 clients are writing. Every write
//! answered 204 — before or after the signal — ends up in the aggregates (checked against
//! the shutdown summary line), new connections are refused once the listener is closed,
//! and the process exits 0.

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

const CLIENTS: usize = 200;
const THREADS: usize = 10;
const POINTS_PER_WRITE: u64 = 10;

#[derive(Default)]
struct Counts {
    /// Points in writes answered 204.
    acked_points: AtomicU64,
    acked_writes: AtomicU64,
    /// 204s that carried `Connection: close` (answered while shutting down).
    acked_closing: AtomicU64,
    /// Writes that got no answer (the connection closed under them): not acknowledged.
    unanswered: AtomicU64,
    other_status: AtomicU64,
    refused_connects: AtomicU64,
}

fn body(client: usize, seq: u64) -> String {
    (0..POINTS_PER_WRITE)
        .map(|i| format!("load,client={} v={}i\n", client, seq * POINTS_PER_WRITE + i))
        .collect()
}

/// Connects, or `None` once the listener refuses (the server is shutting down).
fn connect(addr: SocketAddr, counts: &Counts) -> Option<Reader> {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(st) => {
            st.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            st.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            Some(Reader::new(st))
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "connect: {}", e);
            counts.refused_connects.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// One client thread: `clients` connections, each writing until the server closes it and
/// refuses a new one. Every round sends one write on each live connection, then reads the
/// answers, so up to `clients` writes are in progress at any moment.
fn drive(addr: SocketAddr, clients: std::ops::Range<usize>, counts: Arc<Counts>) {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut conns: Vec<(usize, Option<Reader>, u64, bool)> = clients
        .map(|id| (id, connect(addr, &counts), 0, false))
        .collect();
    while conns.iter().any(|(_, c, _, _)| c.is_some()) && Instant::now() < deadline {
        // Head and half the body on every connection, a pause, then the other halves: at
        // any moment many writes are half-received, which is what a signal must not cut.
        let mut rest: Vec<Vec<u8>> = Vec::with_capacity(conns.len());
        for (id, slot, seq, sent) in conns.iter_mut() {
            let Some(c) = slot else {
                rest.push(Vec::new());
                continue;
            };
            let b = body(*id, *seq);
            let raw = format!(
                "POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{}",
                b.len(),
                b
            )
            .into_bytes();
            *seq += 1;
            let cut = raw.len() - b.len() / 2;
            *sent = std::io::Write::write_all(&mut c.stream, &raw[..cut]).is_ok();
            rest.push(raw[cut..].to_vec());
        }
        // Pacing, not waiting: the writes stay half-received for a moment.
        std::thread::sleep(Duration::from_millis(5));
        for ((_, slot, _, sent), rest) in conns.iter_mut().zip(&rest) {
            if let Some(c) = slot {
                *sent = *sent && std::io::Write::write_all(&mut c.stream, rest).is_ok();
            }
        }
        for (_, slot, _, sent) in conns.iter_mut() {
            let Some(c) = slot else { continue };
            let answer = if *sent { c.try_response_quiet() } else { None };
            let close = match answer {
                Some(r) if r.status == 204 => {
                    counts
                        .acked_points
                        .fetch_add(POINTS_PER_WRITE, Ordering::Relaxed);
                    counts.acked_writes.fetch_add(1, Ordering::Relaxed);
                    let close = r.header("Connection") == Some("close");
                    if close {
                        counts.acked_closing.fetch_add(1, Ordering::Relaxed);
                    }
                    close
                }
                Some(r) => {
                    counts.other_status.fetch_add(1, Ordering::Relaxed);
                    r.header("Connection") == Some("close")
                }
                None => {
                    counts.unanswered.fetch_add(1, Ordering::Relaxed);
                    true
                }
            };
            if close {
                *slot = connect(addr, &counts);
            }
        }
    }
}

#[test]
fn sigterm_under_write_load_loses_nothing_acknowledged() {
    let mut s = Server::start(&["--shutdown-timeout", "20"]);
    let counts = Arc::new(Counts::default());
    let per = CLIENTS / THREADS;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let counts = Arc::clone(&counts);
            let addr = s.addr;
            std::thread::spawn(move || drive(addr, t * per..(t + 1) * per, counts))
        })
        .collect();

    // Load is flowing.
    assert!(
        wait_until(Duration::from_secs(20), || {
            counts.acked_writes.load(Ordering::Relaxed) >= 2000
        }),
        "the writers did not get going"
    );
    // A request in progress when the signal lands: head parsed (the 100 Continue proves
    // it), body not sent yet. It keeps the server alive while we look at the listener.
    let held = "load,client=held v=1i\n";
    let mut holder = Reader::new(s.connect());
    holder.send(
        format!(
            "POST /write HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            held.len()
        )
        .as_bytes(),
    );
    assert_eq!(holder.response().status, 100);

    let acked_before_signal = counts.acked_writes.load(Ordering::Relaxed);
    let t_signal = Instant::now();
    signal(s.pid(), libc::SIGTERM);
    assert!(
        s.wait_for_log("shutting down", Duration::from_secs(10)),
        "{}",
        s.log_text()
    );
    // The listener is closed: new connections are refused while the server still runs.
    match TcpStream::connect_timeout(&s.addr, Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{}", e),
        Ok(_) => panic!("a new connection was accepted after the listener closed"),
    }
    assert!(s.child.try_wait().unwrap().is_none(), "exited too early");
    // The request in progress is finished, with Connection: close.
    holder.send(held.as_bytes());
    let r = holder.response();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("Connection"), Some("close"));

    let code = s.wait(Duration::from_secs(30));
    let exit_after = t_signal.elapsed();
    for t in threads {
        t.join().expect("writer thread");
    }
    assert_eq!(code, Some(0), "log: {}", s.log_text());
    assert!(s.wait_for_log("shutdown complete", Duration::from_secs(5)));
    let log = s.log_text();
    let (queued, aggregated) =
        shutdown_summary_points(&log).unwrap_or_else(|| panic!("no summary line: {}", log));
    let acked = counts.acked_points.load(Ordering::Relaxed) + 1;
    eprintln!(
        "shutdown under load: {} writes acknowledged ({} before the signal, {} answered with \
         Connection: close), {} points acknowledged; {} writes unanswered (connection closed \
         under them), {} other statuses, {} refused connects; summary queued={} \
         aggregated={}; exited {:?} after the signal",
        counts.acked_writes.load(Ordering::Relaxed) + 1,
        acked_before_signal,
        counts.acked_closing.load(Ordering::Relaxed) + 1,
        acked,
        counts.unanswered.load(Ordering::Relaxed),
        counts.other_status.load(Ordering::Relaxed),
        counts.refused_connects.load(Ordering::Relaxed),
        queued,
        aggregated,
        exit_after
    );
    assert_eq!(counts.other_status.load(Ordering::Relaxed), 0);
    // Everything queued was aggregated, and everything acknowledged was queued.
    assert_eq!(aggregated, queued, "queued points were not aggregated");
    assert!(
        acked <= aggregated,
        "{} acknowledged points but only {} aggregated",
        acked,
        aggregated
    );
    // Every queued write was answered too: nothing was queued and then cut off.
    assert_eq!(acked, queued, "points queued but never acknowledged");
    assert!(counts.refused_connects.load(Ordering::Relaxed) >= 1);
}

#[test]
fn shutdown_timeout_force_closes_a_stalled_request_and_still_exits_0() {
    let mut s = Server::start(&["--shutdown-timeout", "0.5"]);
    // A write that will never finish its body, and one that is complete.
    let mut stalled = Reader::new(s.connect());
    stalled.send(
        b"POST /write HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n",
    );
    assert_eq!(stalled.response().status, 100);
    assert_eq!(post(s.addr, "/write", b"done v=1i", "").status, 204);
    let t0 = Instant::now();
    signal(s.pid(), libc::SIGTERM);
    let code = s.wait(Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(code, Some(0), "log: {}", s.log_text());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "exited {:?} after the signal for a 0.5 s shutdown timeout",
        took
    );
    assert!(stalled.closed_within(Duration::from_secs(2)));
    // The process is gone, but its last stderr lines may still be on their way to us.
    assert!(s.wait_for_log("shutdown complete", Duration::from_secs(5)));
    let log = s.log_text();
    assert!(log.contains("1 force-closed"), "{}", log);
    assert_eq!(shutdown_summary_points(&log), Some((1, 1)), "{}", log);
}

#[test]
fn a_second_signal_cuts_the_shutdown_short() {
    let mut s = Server::start(&["--shutdown-timeout", "30"]);
    let mut stalled = Reader::new(s.connect());
    stalled.send(
        b"POST /write HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n",
    );
    assert_eq!(stalled.response().status, 100);
    signal(s.pid(), libc::SIGTERM);
    assert!(s.wait_for_log("shutting down", Duration::from_secs(10)));
    // Still waiting for the request in progress...
    assert!(s.wait(Duration::from_millis(300)).is_none());
    // ...until the second signal.
    let t0 = Instant::now();
    signal(s.pid(), libc::SIGINT);
    assert_eq!(s.wait(Duration::from_secs(5)), Some(0), "{}", s.log_text());
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(s.wait_for_log("shutdown complete", Duration::from_secs(5)));
    assert!(s.log_text().contains("1 force-closed"), "{}", s.log_text());
}
