//! The `idle` scenario: open N connections, make one keep-alive request on
//! each so they are real keep-alive connections, then hold them idle. The
//! server's RSS (`--pid`) is read before opening and after all are open and
//! settled, giving bytes per connection. At the end a sample of the held
//! connections is asked one more request, and connections the server closed
//! while held are counted.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::Settings;
use crate::conn::{Handler, Phase, Reactor, Step};
use crate::http::build_request;
use crate::progress::{Counters, Progress};
use crate::report::Report;
use crate::stats::{ErrorKind, Errors, Latency, Statuses};
use crate::sys;

/// Connects issued between two looks at the poller, at most...
const CONNECT_CHUNK: usize = 64;
/// ...and for at most this long, which bounds how late a completed connect
/// is noticed (and so the error on its latency).
const CONNECT_SLICE: Duration = Duration::from_micros(500);
const TICK: Duration = Duration::from_millis(20);

/// `Conn::slot` markers: where a connection is in its life.
const OPENING: usize = 0;
const HELD: usize = 1;
const VERIFYING: usize = 2;

#[derive(Default)]
struct Tally {
    connect: Latency,
    statuses: Statuses,
    errors: Errors,
    connected: u64,
    held: u64,
    not_keep_alive: u64,
    closed_by_server: u64,
    verify_sent: u64,
    verify_ok: u64,
    verify_failed: u64,
}

struct Idle {
    req: Rc<[u8]>,
    timeout: Duration,
    t: Tally,
    counters: Arc<Counters>,
}

impl Idle {
    fn lost(&mut self, r: &mut Reactor, key: usize, kind: Option<ErrorKind>) -> bool {
        let Some(c) = r.close(key) else {
            return false;
        };
        if c.phase != Phase::Connecting {
            self.counters.closed();
        }
        match c.slot {
            HELD => {
                self.t.held -= 1;
                self.t.closed_by_server += 1;
            }
            VERIFYING => {
                self.t.held -= 1;
                self.t.verify_failed += 1;
                if matches!(
                    kind,
                    None | Some(ErrorKind::ClosedEarly) | Some(ErrorKind::Reset)
                ) {
                    self.t.closed_by_server += 1;
                }
            }
            _ => {}
        }
        if let Some(k) = kind {
            self.t.errors.add(k);
            self.counters.error();
        }
        false
    }
}

impl Handler for Idle {
    fn on_step(&mut self, r: &mut Reactor, key: usize, step: Step) -> bool {
        match step {
            Step::Connected(d) => {
                self.t.connect.record(d);
                self.t.connected += 1;
                self.counters.opened();
                let Some(c) = r.conns.get_mut(key) else {
                    return false;
                };
                c.send(&self.req, false);
                c.deadline = Some(c.req_started + self.timeout);
                true
            }
            Step::Response(info, _) => {
                let Some(c) = r.conns.get_mut(key) else {
                    return false;
                };
                self.t.statuses.add(info.status);
                match c.slot {
                    VERIFYING => self.t.verify_ok += 1,
                    _ => {
                        if !info.keep_alive {
                            self.t.not_keep_alive += 1;
                            return self.lost(r, key, None);
                        }
                        self.t.held += 1;
                        self.counters.done(1);
                    }
                }
                c.slot = HELD;
                c.deadline = None;
                if info.keep_alive {
                    c.hold();
                    true
                } else {
                    self.lost(r, key, None)
                }
            }
            Step::Eof => self.lost(r, key, None),
            Step::Failed(kind) => self.lost(r, key, Some(kind)),
            Step::Pending => false,
        }
    }
}

/// Turns the reactor until `until`, or earlier when `done` says so.
fn spin(
    r: &mut Reactor,
    h: &mut Idle,
    until: Instant,
    done: impl Fn(&Reactor, &Idle) -> bool,
) -> std::io::Result<()> {
    let mut last_sweep = Instant::now();
    loop {
        let now = Instant::now();
        if now >= until || done(r, h) {
            return Ok(());
        }
        r.turn(h, Some(until.saturating_duration_since(now).min(TICK)))?;
        let now = Instant::now();
        if now.duration_since(last_sweep) >= TICK {
            last_sweep = now;
            for key in r.expired(now) {
                h.lost(r, key, Some(ErrorKind::TimedOut));
            }
        }
    }
}

fn in_flight(r: &Reactor) -> usize {
    r.conns.iter().filter(|(_, c)| c.slot != HELD).count()
}

pub fn run(s: &Settings) -> std::io::Result<Report> {
    let n = s.connections;
    let rss_before = s.pid.and_then(sys::rss_kib);
    let mut progress = Progress::start("idle", "held", Some(n as u64));
    let mut h = Idle {
        req: build_request("GET", &s.path, &s.host, false).into(),
        timeout: s.timeout,
        t: Tally::default(),
        counters: Arc::clone(&progress.counters),
    };
    let mut r = Reactor::new(s.addr, n)?;
    let start = Instant::now();

    // Open all, one keep-alive request each.
    let mut issued = 0usize;
    while issued < n {
        let slice_start = Instant::now();
        for _ in 0..CONNECT_CHUNK.min(n - issued) {
            if let Err(kind) = r.open(OPENING, Some(s.timeout)) {
                h.t.errors.add(kind);
                h.counters.error();
            }
            issued += 1;
            if slice_start.elapsed() >= CONNECT_SLICE {
                break;
            }
        }
        r.turn(&mut h, Some(Duration::ZERO))?;
    }
    // Bounded: every opening connection has a deadline of --timeout.
    spin(&mut r, &mut h, start + s.timeout + TICK * 2, |r, _| {
        in_flight(r) == 0
    })?;
    let open_secs = start.elapsed().as_secs_f64();
    let held_after_open = h.t.held;

    // Settle, read RSS, hold.
    let held_at = Instant::now();
    spin(&mut r, &mut h, held_at + s.settle, |_, _| false)?;
    let rss_after = s.pid.and_then(sys::rss_kib);
    let held_at_rss = h.t.held;
    spin(&mut r, &mut h, held_at + s.hold.max(s.settle), |_, _| false)?;
    let held_secs = held_at.elapsed().as_secs_f64();

    // Verify a sample of the held connections with one more request.
    let held_keys: Vec<usize> = r
        .conns
        .iter()
        .filter(|(_, c)| c.slot == HELD)
        .map(|(k, _)| k)
        .collect();
    let sample = s.verify.min(held_keys.len());
    if let Some(stride) = held_keys.len().checked_div(sample) {
        for &key in held_keys.iter().step_by(stride.max(1)).take(sample) {
            if let Some(c) = r.conns.get_mut(key) {
                c.slot = VERIFYING;
                c.send(&h.req, false);
                c.deadline = Some(c.req_started + s.timeout);
                h.t.verify_sent += 1;
            }
            r.pump(&mut h, key);
        }
        let verify_start = Instant::now();
        spin(
            &mut r,
            &mut h,
            verify_start + s.timeout + TICK * 2,
            |r, _| in_flight(r) == 0,
        )?;
    }
    let still_open = h.t.held;
    progress.finish();
    let keys: Vec<usize> = r.conns.iter().map(|(k, _)| k).collect();
    for key in keys {
        r.close(key);
    }

    let t = &h.t;
    let delta_kib = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    let per_conn = delta_kib
        .filter(|_| held_at_rss > 0)
        .map(|d| ((d as f64 * 1024.0 / held_at_rss as f64) * 10.0).round() / 10.0);

    let mut rep = Report::new();
    rep.reached = t.connected > 0;
    rep.set("connections", json!(n));
    rep.set("connected", json!(t.connected));
    rep.set("held_open", json!(held_after_open));
    rep.set("held_at_rss", json!(held_at_rss));
    rep.set("still_open", json!(still_open));
    rep.set("closed_by_server", json!(t.closed_by_server));
    rep.set("not_keep_alive", json!(t.not_keep_alive));
    rep.set("verify_sent", json!(t.verify_sent));
    rep.set("verify_ok", json!(t.verify_ok));
    rep.set("verify_failed", json!(t.verify_failed));
    rep.set("pid", json!(s.pid));
    rep.set("rss_before_kib", json!(rss_before));
    rep.set("rss_after_kib", json!(rss_after));
    rep.set("rss_delta_kib", json!(delta_kib));
    rep.set("bytes_per_connection", json!(per_conn));
    rep.set("connect_us", t.connect.to_json());
    rep.set("status_counts", t.statuses.to_json());
    rep.set("errors", t.errors.to_json());
    rep.set("open_secs", json!((open_secs * 1e3).round() / 1e3));
    rep.set("held_secs", json!((held_secs * 1e3).round() / 1e3));
    rep.set(
        "duration_secs",
        json!((start.elapsed().as_secs_f64() * 1e3).round() / 1e3),
    );

    rep.row("connections", n.to_string());
    rep.row(
        "held open",
        format!("{held_after_open} (opened in {open_secs:.2} s), {held_at_rss} at RSS reading"),
    );
    rep.row("held for", format!("{held_secs:.1} s"));
    rep.row("closed by server", t.closed_by_server.to_string());
    rep.row(
        "verify",
        format!(
            "{} of {} answered, {} still open at the end",
            t.verify_ok, t.verify_sent, still_open
        ),
    );
    match (s.pid, rss_before, rss_after) {
        (None, _, _) => rep.row("server RSS", "needs --pid PID"),
        (Some(pid), Some(b), Some(a)) => {
            rep.row(
                "server RSS",
                format!(
                    "{b} KiB -> {a} KiB (pid {pid}, {:+} KiB)",
                    a as i64 - b as i64
                ),
            );
            rep.row(
                "bytes/connection",
                per_conn.map_or("n/a".to_string(), |v| format!("{v:.0}")),
            );
        }
        (Some(pid), _, _) => rep.row("server RSS", format!("unreadable for pid {pid}")),
    }
    rep.row("connect", t.connect.summary());
    rep.row("statuses", t.statuses.summary());
    rep.row("errors", t.errors.summary());
    Ok(rep)
}
