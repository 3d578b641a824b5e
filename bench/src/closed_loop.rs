//! The closed-loop engine behind `keepalive` and `write`: C keep-alive
//! connections, each sending its next request only when the previous
//! response is complete, for a warm-up and then a measured window. Closed
//! or failed connections are replaced. Work is split over `--threads`
//! event loops whose tallies are merged at the end. With a request budget
//! (the `forward` scenario) the run also ends once that many requests were
//! sent and answered: the threads share one counter and each connection
//! closes when it finds the budget spent.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::conn::{Handler, Reactor, Step, run_split};
use crate::progress::Counters;
use crate::stats::{ErrorKind, Errors, Latency, Statuses};

/// How often deadlines are checked, and the longest poll wait.
const TICK: Duration = Duration::from_millis(50);

/// What every connection sends, in rotation.
pub struct Plan<'a> {
    pub requests: &'a [Vec<u8>],
    /// Points carried by one request (0 for keepalive).
    pub points_per_request: u64,
    pub connections: usize,
    pub threads: usize,
    pub timeout: Duration,
    /// When the measured window starts and ends.
    pub measure_from: Instant,
    pub end: Instant,
    /// Requests still to be sent, shared by every thread (`None`: no limit
    /// but `end`). A request counts when it is sent, answered or not.
    pub budget: Option<&'a AtomicU64>,
}

/// Tallies of the measured window (merged over threads).
#[derive(Default)]
pub struct Outcome {
    pub latency: Latency,
    pub statuses: Statuses,
    pub errors: Errors,
    pub responses: u64,
    /// Points acknowledged with 204.
    pub points: u64,
    /// Connections replaced in the window because the server closed them.
    pub reconnects: u64,
    pub connected: u64,
    pub warmup_responses: u64,
    pub warmup_errors: u64,
    /// Request bytes fully written in the window.
    pub bytes_sent: u64,
    /// When the last response of the window arrived.
    pub last_response: Option<Instant>,
}

impl Outcome {
    fn merge(&mut self, o: &Outcome) {
        self.latency.merge(&o.latency);
        self.statuses.merge(&o.statuses);
        self.errors.merge(&o.errors);
        self.responses += o.responses;
        self.points += o.points;
        self.reconnects += o.reconnects;
        self.connected += o.connected;
        self.warmup_responses += o.warmup_responses;
        self.warmup_errors += o.warmup_errors;
        self.bytes_sent += o.bytes_sent;
        self.last_response = self.last_response.max(o.last_response);
    }
}

struct Worker<'a> {
    reqs: Vec<Rc<[u8]>>,
    next: usize,
    points_per_request: u64,
    timeout: Duration,
    measure_from: Instant,
    end: Instant,
    active: usize,
    budget: Option<&'a AtomicU64>,
    /// The budget was found spent: open no more connections.
    spent: bool,
    out: Outcome,
    counters: Arc<Counters>,
}

impl Worker<'_> {
    /// Takes one request from the budget; `false` once it is spent.
    fn take_budget(&mut self) -> bool {
        let Some(b) = self.budget else {
            return true;
        };
        let took = b
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        self.spent |= !took;
        took
    }

    fn send_next(&mut self, r: &mut Reactor, key: usize) -> bool {
        if !r.conns.contains(key) {
            return false;
        }
        if !self.take_budget() {
            self.drop_conn(r, key, true);
            return false;
        }
        let Some(c) = r.conns.get_mut(key) else {
            return false;
        };
        let req = &self.reqs[self.next % self.reqs.len()];
        self.next = self.next.wrapping_add(1);
        c.send(req, false);
        c.deadline = Some(c.req_started + self.timeout);
        true
    }

    fn drop_conn(&mut self, r: &mut Reactor, key: usize, was_open: bool) {
        if r.close(key).is_some() {
            self.active = self.active.saturating_sub(1);
            if was_open {
                self.counters.closed();
            }
        }
    }

    fn in_window(&self, now: Instant) -> bool {
        now >= self.measure_from && now < self.end
    }

    fn fail(&mut self, r: &mut Reactor, key: usize, kind: ErrorKind) -> bool {
        let was_open = r
            .conns
            .get(key)
            .is_some_and(|c| c.phase != crate::conn::Phase::Connecting);
        self.drop_conn(r, key, was_open);
        let now = Instant::now();
        if self.in_window(now) {
            self.out.errors.add(kind);
        } else if now < self.measure_from {
            self.out.warmup_errors += 1;
        }
        self.counters.error();
        false
    }
}

impl Handler for Worker<'_> {
    fn on_step(&mut self, r: &mut Reactor, key: usize, step: Step) -> bool {
        match step {
            Step::Connected(_) => {
                self.out.connected += 1;
                self.counters.opened();
                self.send_next(r, key)
            }
            Step::Response(info, d) => {
                let now = Instant::now();
                if self.in_window(now) {
                    self.out.latency.record(d);
                    self.out.statuses.add(info.status);
                    self.out.responses += 1;
                    self.out.last_response = Some(now);
                    if info.status == 204 {
                        self.out.points += self.points_per_request;
                    }
                    if let Some(c) = r.conns.get(key) {
                        self.out.bytes_sent += c.request_len() as u64;
                    }
                } else if now < self.measure_from {
                    self.out.warmup_responses += 1;
                }
                self.counters.done(1);
                if now >= self.end {
                    self.drop_conn(r, key, true);
                    return false;
                }
                if info.keep_alive {
                    self.send_next(r, key)
                } else {
                    self.drop_conn(r, key, true);
                    if self.in_window(now) {
                        self.out.reconnects += 1;
                    }
                    false
                }
            }
            Step::Eof => self.fail(r, key, ErrorKind::ClosedEarly),
            Step::Failed(kind) => self.fail(r, key, kind),
            Step::Pending => false,
        }
    }
}

fn worker(
    plan: &Plan<'_>,
    addr: std::net::SocketAddr,
    conns: usize,
    counters: Arc<Counters>,
) -> std::io::Result<Outcome> {
    let mut r = Reactor::new(addr, conns)?;
    let mut w = Worker {
        reqs: plan.requests.iter().map(|q| Rc::from(&q[..])).collect(),
        next: 0,
        points_per_request: plan.points_per_request,
        timeout: plan.timeout,
        measure_from: plan.measure_from,
        end: plan.end,
        active: 0,
        budget: plan.budget,
        spent: false,
        out: Outcome::default(),
        counters,
    };
    let mut last_sweep = Instant::now();
    loop {
        let now = Instant::now();
        if now >= plan.end || (w.spent && w.active == 0) {
            break;
        }
        let mut slot = 0;
        while w.active < conns && !w.spent {
            match r.open(slot, Some(plan.timeout)) {
                Ok(_) => w.active += 1,
                Err(kind) => {
                    if w.in_window(now) {
                        w.out.errors.add(kind);
                    } else {
                        w.out.warmup_errors += 1;
                    }
                    w.counters.error();
                    break;
                }
            }
            slot += 1;
        }
        let wait = plan.end.saturating_duration_since(now).min(TICK);
        r.turn(&mut w, Some(wait))?;
        let now = Instant::now();
        if now.duration_since(last_sweep) >= TICK {
            last_sweep = now;
            for key in r.expired(now) {
                w.fail(&mut r, key, ErrorKind::TimedOut);
            }
        }
    }
    let open: Vec<usize> = r.conns.iter().map(|(k, _)| k).collect();
    for key in open {
        let was_open = r
            .conns
            .get(key)
            .is_some_and(|c| c.phase != crate::conn::Phase::Connecting);
        w.drop_conn(&mut r, key, was_open);
    }
    Ok(w.out)
}

/// Runs the plan on its threads and merges what they measured.
pub fn run(
    plan: &Plan<'_>,
    addr: std::net::SocketAddr,
    counters: &Arc<Counters>,
) -> std::io::Result<Outcome> {
    let parts = run_split(plan.threads, plan.connections, |_, conns| {
        worker(plan, addr, conns, Arc::clone(counters))
    })?;
    let mut total = Outcome::default();
    for p in &parts {
        total.merge(p);
    }
    Ok(total)
}
