//! The `churn` scenario: C concurrent workers, each looping connect ->
//! one `Connection: close` request -> full response -> close, for D
//! seconds. After a response the client waits for the server's FIN before
//! closing, so TIME_WAIT stays on the server side as it would in
//! production. Reports connections/s, errors by kind and latency from the
//! connect() call to the end of the response.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::Settings;
use crate::conn::{Handler, Phase, Reactor, Step, run_split};
use crate::http::build_request;
use crate::progress::{Counters, Progress};
use crate::report::{Report, per_sec};
use crate::stats::{ErrorKind, Errors, Latency, Statuses, rate};

const TICK: Duration = Duration::from_millis(50);
/// Longest wait for the server's FIN after a `Connection: close` response.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Outcome {
    latency: Latency,
    connect: Latency,
    statuses: Statuses,
    errors: Errors,
    completed: u64,
    connected: u64,
    /// Connections the server did not close within DRAIN_WAIT.
    drain_timeouts: u64,
    /// Responses without `Connection: close` (the client closed first).
    server_kept_open: u64,
}

struct Churn {
    req: Rc<[u8]>,
    timeout: Duration,
    end: Instant,
    active: usize,
    out: Outcome,
    counters: Arc<Counters>,
}

impl Churn {
    fn drop_conn(&mut self, r: &mut Reactor, key: usize) {
        if let Some(c) = r.close(key) {
            self.active = self.active.saturating_sub(1);
            if c.phase != Phase::Connecting {
                self.counters.closed();
            }
        }
    }
}

impl Handler for Churn {
    fn on_step(&mut self, r: &mut Reactor, key: usize, step: Step) -> bool {
        match step {
            Step::Connected(d) => {
                self.out.connected += 1;
                self.out.connect.record(d);
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
                if Instant::now() < self.end {
                    self.out.latency.record(c.started.elapsed());
                    self.out.statuses.add(info.status);
                    self.out.completed += 1;
                    self.counters.done(1);
                }
                if info.keep_alive {
                    self.out.server_kept_open += 1;
                    self.drop_conn(r, key);
                    false
                } else {
                    c.drain();
                    c.deadline = Some(Instant::now() + DRAIN_WAIT);
                    true
                }
            }
            Step::Eof => {
                self.drop_conn(r, key);
                false
            }
            Step::Failed(kind) => {
                if Instant::now() < self.end {
                    self.out.errors.add(kind);
                    self.counters.error();
                }
                self.drop_conn(r, key);
                false
            }
            Step::Pending => false,
        }
    }
}

fn worker(
    s: &Settings,
    conns: usize,
    start: Instant,
    counters: Arc<Counters>,
) -> std::io::Result<Outcome> {
    let mut r = Reactor::new(s.addr, conns)?;
    let end = start + s.duration;
    let mut h = Churn {
        req: build_request("GET", &s.path, &s.host, true).into(),
        timeout: s.timeout,
        end,
        active: 0,
        out: Outcome::default(),
        counters,
    };
    let mut last_sweep = Instant::now();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        while h.active < conns {
            match r.open(0, Some(s.timeout)) {
                Ok(_) => h.active += 1,
                Err(kind) => {
                    h.out.errors.add(kind);
                    h.counters.error();
                    break;
                }
            }
        }
        r.turn(&mut h, Some(end.saturating_duration_since(now).min(TICK)))?;
        let now = Instant::now();
        if now.duration_since(last_sweep) >= TICK {
            last_sweep = now;
            for key in r.expired(now) {
                let draining = r.conns.get(key).is_some_and(|c| c.phase == Phase::Draining);
                if draining {
                    h.out.drain_timeouts += 1;
                } else if now < end {
                    h.out.errors.add(ErrorKind::TimedOut);
                    h.counters.error();
                }
                h.drop_conn(&mut r, key);
            }
        }
    }
    let open: Vec<usize> = r.conns.iter().map(|(k, _)| k).collect();
    for key in open {
        h.drop_conn(&mut r, key);
    }
    Ok(h.out)
}

pub fn run(s: &Settings) -> std::io::Result<Report> {
    let mut progress = Progress::start("churn", "connections", None);
    let start = Instant::now();
    let counters = Arc::clone(&progress.counters);
    let parts = run_split(s.threads, s.connections, |_, conns| {
        worker(s, conns, start, Arc::clone(&counters))
    })?;
    progress.finish();
    let mut out = Outcome::default();
    for p in &parts {
        out.latency.merge(&p.latency);
        out.connect.merge(&p.connect);
        out.statuses.merge(&p.statuses);
        out.errors.merge(&p.errors);
        out.completed += p.completed;
        out.connected += p.connected;
        out.drain_timeouts += p.drain_timeouts;
        out.server_kept_open += p.server_kept_open;
    }
    let secs = s.duration.as_secs_f64();
    let cps = rate(out.completed, secs);

    let mut rep = Report::new();
    rep.reached = out.connected > 0;
    rep.set("connections", json!(s.connections));
    rep.set("threads", json!(s.threads));
    rep.set("duration_secs", json!(secs));
    rep.set("completed", json!(out.completed));
    rep.set("connected", json!(out.connected));
    rep.set("connections_per_sec", json!(cps));
    rep.set("requests_per_sec", json!(cps));
    rep.set("latency_us", out.latency.to_json());
    rep.set("connect_us", out.connect.to_json());
    rep.set("status_counts", out.statuses.to_json());
    rep.set("non_2xx", json!(out.statuses.non_2xx()));
    rep.set("errors", out.errors.to_json());
    rep.set("error_count", json!(out.errors.total()));
    rep.set("drain_timeouts", json!(out.drain_timeouts));
    rep.set("server_kept_open", json!(out.server_kept_open));

    rep.row(
        "concurrency",
        format!("{} on {} thread(s)", s.connections, s.threads),
    );
    rep.row("window", format!("{secs:.1} s"));
    rep.row("completed", format!("{} ({})", out.completed, per_sec(cps)));
    rep.row("connect->response", out.latency.summary());
    rep.row("connect", out.connect.summary());
    rep.row("statuses", out.statuses.summary());
    rep.row("errors", out.errors.summary());
    if out.server_kept_open > 0 || out.drain_timeouts > 0 {
        rep.row(
            "server close",
            format!(
                "{} responses without Connection: close, {} FIN waits timed out",
                out.server_kept_open, out.drain_timeouts
            ),
        );
    }
    Ok(rep)
}
