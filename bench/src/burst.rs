//! The `burst` scenario: N non-blocking connects issued as fast as possible,
//! each then sending one `Connection: close` request. It measures connect
//! latency (connect() call to writable, so a SYN dropped by a full accept
//! queue shows as a ~1 s / ~3 s retransmit), counts completed, refused,
//! reset and timed-out connections, and reads the kernel's listen
//! overflow/drop counters before and after. Connects are issued back to
//! back, with a zero-timeout look at the poller every 64 connects or 0.5 ms
//! so that connect completion is noticed promptly (resolution ~0.5 ms).
//! With `--connect-first` no request leaves before every connect has been
//! issued: the SYNs arrive as one burst, at the rate one client core can
//! issue connects alone, and an accept loop that waits for a request before
//! taking the next connection shows it (response and total latencies then
//! include the wait).

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::Settings;
use crate::conn::{Handler, Phase, Reactor, Step};
use crate::http::build_request;
use crate::progress::{Counters, Progress};
use crate::report::{Report, per_sec};
use crate::stats::{ErrorKind, Errors, Latency, Statuses, rate};
use crate::sys;

/// Connects issued between two looks at the poller, at most...
const CONNECT_CHUNK: usize = 64;
/// ...and for at most this long, which bounds how late a completed connect
/// is noticed (and so the error on its latency).
const CONNECT_SLICE: Duration = Duration::from_micros(500);
/// How often deadlines are checked.
const SWEEP: Duration = Duration::from_millis(20);
/// Connect latency at or above this is taken as a SYN retransmit.
const RETRANSMIT_US: u64 = 900_000;

struct Burst {
    req: Rc<[u8]>,
    connect: Latency,
    response: Latency,
    total: Latency,
    statuses: Statuses,
    errors: Errors,
    connected: u64,
    completed: u64,
    counters: std::sync::Arc<Counters>,
    connect_first: bool,
    /// Every connect has been issued (requests may go).
    all_issued: bool,
    /// Connected while connects were still being issued: (key, the connection's start
    /// time, to recognise it if its slot was reused meanwhile).
    waiting: Vec<(usize, Instant)>,
}

impl Handler for Burst {
    fn on_step(&mut self, r: &mut Reactor, key: usize, step: Step) -> bool {
        match step {
            Step::Connected(d) => {
                self.connect.record(d);
                self.connected += 1;
                self.counters.opened();
                let Some(c) = r.conns.get_mut(key) else {
                    return false;
                };
                if self.connect_first && !self.all_issued {
                    self.waiting.push((key, c.started));
                    return false;
                }
                c.send(&self.req, false);
                true
            }
            Step::Response(info, d) => {
                self.response.record(d);
                if let Some(c) = r.close(key) {
                    self.total.record(c.started.elapsed());
                }
                self.statuses.add(info.status);
                self.completed += 1;
                self.counters.done(1);
                self.counters.closed();
                false
            }
            Step::Eof => self.fail(r, key, ErrorKind::ClosedEarly),
            Step::Failed(kind) => self.fail(r, key, kind),
            Step::Pending => false,
        }
    }
}

impl Burst {
    /// The last connect was issued: send the requests of the connections already open.
    fn release(&mut self, r: &mut Reactor) {
        self.all_issued = true;
        for (key, started) in std::mem::take(&mut self.waiting) {
            let Some(c) = r.conns.get_mut(key).filter(|c| c.started == started) else {
                continue;
            };
            c.send(&self.req, false);
            r.pump(self, key);
        }
    }

    fn fail(&mut self, r: &mut Reactor, key: usize, kind: ErrorKind) -> bool {
        if let Some(c) = r.close(key) {
            if c.phase != Phase::Connecting {
                self.counters.closed();
            }
        }
        self.errors.add(kind);
        self.counters.error();
        false
    }
}

pub fn run(s: &Settings) -> std::io::Result<Report> {
    let n = s.connections;
    let req: Rc<[u8]> = build_request("GET", &s.path, &s.host, true).into();
    let mut progress = Progress::start("burst", "completed", Some(n as u64));
    let mut h = Burst {
        req,
        connect: Latency::new(),
        response: Latency::new(),
        total: Latency::new(),
        statuses: Statuses::default(),
        errors: Errors::default(),
        connected: 0,
        completed: 0,
        counters: std::sync::Arc::clone(&progress.counters),
        connect_first: s.connect_first,
        all_issued: false,
        waiting: Vec::new(),
    };
    let mut r = Reactor::new(s.addr, n)?;
    let netstat_before = sys::listen_counters();
    let start = Instant::now();
    let mut issued = 0usize;
    let mut timed_out_connecting = 0u64;
    let mut last_sweep = start;
    let mut connects_issued_in = Duration::ZERO;
    while issued < n || !r.conns.is_empty() {
        if issued < n {
            let slice_start = Instant::now();
            for _ in 0..CONNECT_CHUNK.min(n - issued) {
                if let Err(kind) = r.open(issued, Some(s.timeout)) {
                    h.errors.add(kind);
                    h.counters.error();
                }
                issued += 1;
                if slice_start.elapsed() >= CONNECT_SLICE {
                    break;
                }
            }
            if issued == n {
                connects_issued_in = start.elapsed();
                h.release(&mut r);
            }
        }
        let wait = if issued < n { Duration::ZERO } else { SWEEP };
        r.turn(&mut h, Some(wait))?;
        let now = Instant::now();
        if now.duration_since(last_sweep) >= SWEEP {
            last_sweep = now;
            for key in r.expired(now) {
                if let Some(c) = r.close(key) {
                    if c.phase == Phase::Connecting {
                        timed_out_connecting += 1;
                    } else {
                        h.counters.closed();
                    }
                }
                h.errors.add(ErrorKind::TimedOut);
                h.counters.error();
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let netstat_after = sys::listen_counters();
    progress.finish();

    let (overflows, drops) = match (netstat_before, netstat_after) {
        (Some(b), Some(a)) => (Some(a.0.saturating_sub(b.0)), Some(a.1.saturating_sub(b.1))),
        _ => (None, None),
    };
    let retransmits = h.connect.count_at_least(RETRANSMIT_US);
    let refused = h.errors.get(ErrorKind::Refused);
    let reset = h.errors.get(ErrorKind::Reset);
    let timed_out = h.errors.get(ErrorKind::TimedOut);

    let mut rep = Report::new();
    rep.reached = h.connected > 0;
    rep.set("connections", json!(n));
    rep.set("completed", json!(h.completed));
    rep.set("connected", json!(h.connected));
    rep.set("refused", json!(refused));
    rep.set("reset", json!(reset));
    rep.set("timed_out", json!(timed_out));
    rep.set("timed_out_connecting", json!(timed_out_connecting));
    rep.set("errors", h.errors.to_json());
    rep.set("status_counts", h.statuses.to_json());
    rep.set("connect_us", h.connect.to_json());
    rep.set("connects_over_900ms", json!(retransmits));
    rep.set(
        "connects_over_2900ms",
        json!(h.connect.count_at_least(2_900_000)),
    );
    rep.set("response_us", h.response.to_json());
    rep.set("latency_us", h.total.to_json());
    rep.set("listen_overflows_delta", json!(overflows));
    rep.set("listen_drops_delta", json!(drops));
    rep.set(
        "connects_issued_secs",
        json!((connects_issued_in.as_secs_f64() * 1e4).round() / 1e4),
    );
    rep.set("connections_per_sec", json!(rate(h.completed, elapsed)));
    rep.set("connect_first", json!(s.connect_first));
    rep.set("duration_secs", json!((elapsed * 1e3).round() / 1e3));

    rep.row("connections", n.to_string());
    rep.row(
        "completed",
        format!("{} ({})", h.completed, per_sec(rate(h.completed, elapsed))),
    );
    rep.row(
        "refused/reset/timeout",
        format!("{refused} / {reset} / {timed_out} ({timed_out_connecting} while connecting)"),
    );
    rep.row("errors", h.errors.summary());
    rep.row("statuses", h.statuses.summary());
    rep.row("connect", h.connect.summary());
    rep.row(
        "connects >= 0.9s",
        format!("{retransmits} (SYN retransmits)"),
    );
    rep.row("request->response", h.response.summary());
    rep.row("connect->response", h.total.summary());
    let show = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
    rep.row(
        "listen overflows/drops",
        format!("+{} / +{} (system-wide)", show(overflows), show(drops)),
    );
    rep.row(
        "connects issued in",
        format!("{:.1} ms", connects_issued_in.as_secs_f64() * 1e3),
    );
    if s.connect_first {
        rep.row("requests", "sent once every connect was issued");
    }
    rep.row("elapsed", format!("{elapsed:.3} s"));
    Ok(rep)
}
