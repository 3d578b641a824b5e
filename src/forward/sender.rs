//! A forward target's senders: one thread per lane, each sending its lane's requests in
//! order, one at a time, with retries; the forwarder's reader thread feeds them rounds.
//!
//! The reader encodes what it gathered into one request list per lane, a series always in
//! the same lane (by a hash of its key), so the receiver sees each series' samples in log
//! order while the lanes' requests are in flight at the same time (a receiver uses a core
//! per request; one request at a time leaves it waiting on the sender and the sender on
//! it). A lane marks a round done once every request of it is answered `2xx`, refused
//! (`4xx`: dropped, counted), or dropped for the backlog cap; the reader moves the cursor
//! to the last round every lane has done. Each lane queues at most [`LANE_DEPTH`] rounds, so
//! a dead target holds a bounded number of requests in memory and the rest stays in the log.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Request;
use super::client::{Client, Outcome};
use super::forwarder::Stop;
use super::retry::Backoff;
use super::target::Target;
use crate::log_limit::LogLimiter;
use crate::stats::ForwardStats;
use crate::storage::dir::unix_now;

/// Rounds a lane holds besides the one it is sending.
pub const LANE_DEPTH: usize = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One lane's requests of one round.
struct Round {
    id: u64,
    requests: Vec<Request>,
}

struct Lane {
    queue: Mutex<VecDeque<Round>>,
    ready: Condvar,
    /// The id of the last round this lane finished.
    done: AtomicU64,
}

/// What the reader and the lanes of one target share.
pub struct Lanes {
    lanes: Vec<Lane>,
    progress: Mutex<()>,
    progressed: Condvar,
    /// Rounds with an id at or below this are dropped unsent (the backlog cap).
    drop_through: AtomicU64,
    /// The reader submits nothing more: a lane with an empty queue may stop.
    reader_done: AtomicBool,
    target: Target,
    client: Client,
    stats: Arc<ForwardStats>,
    stop: Arc<Stop>,
    warn: Mutex<LogLimiter>,
}

impl Lanes {
    pub fn new(
        count: usize,
        target: Target,
        client: Client,
        stats: Arc<ForwardStats>,
        stop: Arc<Stop>,
    ) -> Lanes {
        Lanes {
            lanes: (0..count.max(1))
                .map(|_| Lane {
                    queue: Mutex::new(VecDeque::new()),
                    ready: Condvar::new(),
                    done: AtomicU64::new(0),
                })
                .collect(),
            progress: Mutex::new(()),
            progressed: Condvar::new(),
            drop_through: AtomicU64::new(0),
            reader_done: AtomicBool::new(false),
            target,
            client,
            stats,
            stop,
            warn: Mutex::new(LogLimiter::new(Duration::from_secs(10))),
        }
    }

    pub fn count(&self) -> usize {
        self.lanes.len()
    }

    /// Every lane can take another round.
    pub fn has_room(&self) -> bool {
        self.lanes.iter().all(|l| lock(&l.queue).len() < LANE_DEPTH)
    }

    /// Queues round `id`: `per_lane[i]` for lane `i` (an empty list completes at once).
    pub fn submit(&self, id: u64, per_lane: Vec<Vec<Request>>) {
        for (lane, requests) in self.lanes.iter().zip(per_lane) {
            lock(&lane.queue).push_back(Round { id, requests });
            lane.ready.notify_one();
        }
    }

    /// The last round every lane has finished.
    pub fn completed(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| l.done.load(Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Sleeps until a lane finishes a round or `timeout` passes.
    pub fn wait_progress(&self, seen: u64, timeout: Duration) {
        let g = lock(&self.progress);
        if self.completed() == seen {
            let _ = self.progressed.wait_timeout(g, timeout);
        }
    }

    /// Drops every round up to `id` that is not sent yet (its points counted `backlog`).
    pub fn drop_through(&self, id: u64) {
        self.drop_through.fetch_max(id, Relaxed);
    }

    /// No more rounds: lanes stop once their queues are empty.
    pub fn finish(&self) {
        self.reader_done.store(true, Relaxed);
        for lane in &self.lanes {
            let _g = lock(&lane.queue);
            lane.ready.notify_all();
        }
    }

    fn finished(&self, lane: &Lane, id: u64) {
        lane.done.store(id, Relaxed);
        let _g = lock(&self.progress);
        self.progressed.notify_all();
    }
}

/// A lane's thread: its rounds in order, each request until it is not to be retried.
pub fn run_lane(lanes: &Lanes, index: usize, seed: u64) {
    let Some(lane) = lanes.lanes.get(index) else {
        return;
    };
    let mut backoff = Backoff::new(seed);
    loop {
        let round = {
            let mut q = lock(&lane.queue);
            loop {
                if lanes.stop.deadline_passed() {
                    return;
                }
                if let Some(r) = q.pop_front() {
                    break r;
                }
                if lanes.reader_done.load(Relaxed) {
                    return;
                }
                q = lane
                    .ready
                    .wait_timeout(q, Duration::from_secs(1))
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
        };
        // Room for another round: the reader may be waiting for it.
        {
            let _g = lock(&lanes.progress);
            lanes.progressed.notify_all();
        }
        for (i, req) in round.requests.iter().enumerate() {
            match send(lanes, &mut backoff, round.id, req) {
                Sent::Done => {}
                Sent::Stop => return,
                Sent::Dropped => {
                    let rest: usize = round.requests[i..].iter().map(|r| r.points).sum();
                    lanes.stats.dropped_backlog.fetch_add(rest as u64, Relaxed);
                    break;
                }
            }
        }
        lanes.finished(lane, round.id);
    }
}

enum Sent {
    /// Delivered or refused: the next request.
    Done,
    /// Shutdown while it could not be delivered.
    Stop,
    /// Dropped for the backlog cap, with the rest of its round.
    Dropped,
}

/// Sends one request until it is delivered, refused, dropped, or the server stops.
fn send(lanes: &Lanes, backoff: &mut Backoff, round: u64, req: &Request) -> Sent {
    let shown = lanes.target.redacted();
    let st = &lanes.stats;
    loop {
        if round <= lanes.drop_through.load(Relaxed) {
            return Sent::Dropped;
        }
        if lanes.stop.deadline_passed() {
            return Sent::Stop;
        }
        let started = Instant::now();
        let outcome = lanes.client.send(&lanes.target, &req.body);
        let took = started.elapsed();
        if log::log_enabled!(log::Level::Debug) {
            let status = match &outcome {
                Outcome::Success { status }
                | Outcome::Reject { status, .. }
                | Outcome::Retry { status, .. } => *status,
            };
            log::debug!(
                "forward {shown}: {} points, {} values, {} bytes -> {} in {:.1} ms",
                req.points,
                req.values,
                req.body.len(),
                if status == 0 {
                    "network error".to_string()
                } else {
                    status.to_string()
                },
                took.as_secs_f64() * 1e3
            );
        }
        match outcome {
            Outcome::Success { .. } => {
                st.points_sent.fetch_add(req.points as u64, Relaxed);
                st.last_success_unix.store(unix_now(), Relaxed);
                if backoff.failures() > 0 {
                    log::info!(
                        "forward {shown}: delivering again after {} failed attempts",
                        backoff.failures()
                    );
                }
                backoff.reset();
                return Sent::Done;
            }
            Outcome::Reject { status, body } => {
                st.dropped_rejected.fetch_add(req.points as u64, Relaxed);
                st.set_last_error(Some(format!("{status}: {}", body.trim())));
                if let Some(n) = lock(&lanes.warn).check(Instant::now()) {
                    log::warn!(
                        "forward {shown}: {} points refused with {status} ({}); dropped ({n} similar suppressed)",
                        req.points,
                        body.trim()
                    );
                }
                return Sent::Done;
            }
            Outcome::Retry {
                status,
                error,
                retry_after,
            } => {
                st.retries.fetch_add(1, Relaxed);
                let text = if status == 0 {
                    error
                } else {
                    format!("{status}: {error}")
                };
                let delay = backoff.next_delay(retry_after);
                if let Some(n) = lock(&lanes.warn).check(Instant::now()) {
                    log::warn!(
                        "forward {shown}: {text}; retrying in {:.1} s ({} attempts failed, {n} similar suppressed)",
                        delay.as_secs_f64(),
                        backoff.failures()
                    );
                }
                st.set_last_error(Some(text));
                // Waits in steps of a second, so a shutdown or a backlog drop is seen.
                let until = Instant::now() + delay;
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    if lanes.stop.sleep(left.min(Duration::from_secs(1))) {
                        return Sent::Stop;
                    }
                    if round <= lanes.drop_through.load(Relaxed) {
                        return Sent::Dropped;
                    }
                }
            }
        }
    }
}
