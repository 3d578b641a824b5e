//! The worker pool: CPU-bound request work off the reactor thread.
//!
//! The reactor submits [`Job`]s — a connection's received bytes, its output buffer and its
//! half-finished request state, all *by value* — in batches, one lock per batch. A worker
//! takes a share of the queued jobs at once (so a batch handed over together is answered
//! together), runs the exchange engine over them and publishes the [`Done`]s in one go.
//!
//! Waking the reactor costs a syscall and usually a context switch, so it happens at most
//! once per batch and only when needed (the [`Doorbell`], shared with the write log's
//! acknowledgements). Workers own nothing long-lived; a job's token and generation let the
//! reactor recognise a completion for a connection that closed meanwhile. A job that
//! panics is answered `500` and closed (`process_catching`): every job taken comes back as
//! a completion, so no connection is left waiting for ever.
//!
//! A worker that finds no job for [`IDLE_RELEASE_AFTER`] hands the memory it freed back to
//! the OS once (`sys::release_idle_memory`) before it sleeps on: a burst of large writes
//! leaves nothing resident behind it on an idle worker.
//!
//! A streamed answer (`/metrics`, `/series`) is a job per part: the connection's `Exchange` carries the
//! body's source into the job and back, and the engine appends the next part.
//!
//! A request answered with a held reply (`Progress::AwaitDurable`: a write's `204`, a
//! `DELETE /series`) has its work started by the worker *after* its completion is
//! published (the write appended to the log, the delete to the log or the queue), so the
//! reactor always has the completion before the answer (from the log thread or the
//! aggregator) can reach it. The reactor takes answers first and completions second, and
//! handles them in the opposite order. A worker never waits for that work.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use crate::app::App;
use crate::app::Local;
use crate::durable::{self, Ack, ConnTicket, Deferred, HeldAnswer, Ticket};
use crate::http::exchange::{self, Exchange, Progress};
use crate::net::doorbell::Doorbell;
use crate::stats::bump;
use crate::tuning::{IDLE_RELEASE_AFTER, MAX_CHUNK, PUBLISH_EVERY, SLOW_JOB};

/// One connection's bytes on their way to a worker.
pub struct Job {
    pub token: usize,
    pub generation: u32,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    pub exchange: Exchange,
    /// The server is shutting down: answer with `Connection: close`.
    pub closing: bool,
}

/// A job on its way back, with the response bytes appended to `output`.
pub struct Done {
    pub token: usize,
    pub generation: u32,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    pub exchange: Exchange,
    pub progress: Progress,
}

struct JobQueue {
    jobs: VecDeque<Job>,
    idle_workers: usize,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<JobQueue>,
    available: Condvar,
    done: Mutex<Vec<Done>>,
    /// Completions published and not yet taken (read without the lock by the reactor).
    done_len: AtomicUsize,
    bell: Arc<Doorbell>,
    workers: usize,
    app: Arc<App>,
}

pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-job leaves the data consistent (pushes are atomic), so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WorkerPool {
    pub fn start(workers: usize, app: Arc<App>, waker: Arc<mio::Waker>) -> std::io::Result<Self> {
        let bell = Arc::new(Doorbell::new(waker));
        app.acks.attach(Arc::clone(&bell));
        let shared = Arc::new(Shared {
            queue: Mutex::new(JobQueue {
                jobs: VecDeque::with_capacity(1024),
                idle_workers: 0,
                shutdown: false,
            }),
            available: Condvar::new(),
            done: Mutex::new(Vec::with_capacity(1024)),
            done_len: AtomicUsize::new(0),
            bell,
            workers: workers.max(1),
            app,
        });
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("worker-{}", i))
                .spawn(move || worker_loop(&shared, i as u32 + 1))?;
            threads.push(handle);
        }
        Ok(WorkerPool { shared, threads })
    }

    /// Queues every job in `jobs` (leaving it empty) under one lock and wakes as many idle
    /// workers as there are jobs.
    pub fn submit(&self, jobs: &mut Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let n = jobs.len();
        let to_wake = {
            let mut q = lock(&self.shared.queue);
            q.jobs.extend(jobs.drain(..));
            self.shared
                .app
                .stats
                .pool
                .worker_queue_depth
                .store(q.jobs.len() as u64, Ordering::Relaxed);
            q.idle_workers.min(n)
        };
        for _ in 0..to_wake {
            self.shared.available.notify_one();
        }
    }

    /// Moves every held answer's ack into `acks`, then every completion into `into`.
    /// In that order: a job's completion is published before its work is started, so
    /// every ack taken has its completion taken with it or before. Clears the wake flag
    /// first (see [`Doorbell`]).
    pub fn take_completions(&self, acks: &mut Vec<Ack>, into: &mut Vec<Done>) {
        self.shared.bell.taken();
        self.shared.app.acks.take(acks);
        if self.shared.done_len.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut done = lock(&self.shared.done);
        self.shared.done_len.store(0, Ordering::SeqCst);
        if into.is_empty() {
            std::mem::swap(&mut *done, into);
        } else {
            into.append(&mut done);
        }
    }

    /// Called by the reactor before a poll that may block. Returns `false` if completions
    /// are already waiting (then poll without blocking).
    pub fn park(&self) -> bool {
        let shared = &self.shared;
        shared
            .bell
            .park(|| shared.done_len.load(Ordering::SeqCst) > 0 || shared.app.acks.waiting())
    }

    /// Called by the reactor when its poll returned.
    pub fn unpark(&self) {
        self.shared.bell.unpark();
    }

    /// Stops the workers after the queued jobs are done, and joins them.
    pub fn shutdown(self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.available.notify_all();
        for t in self.threads {
            if t.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
    }
}

fn worker_loop(shared: &Shared, instance: u32) {
    let app = &*shared.app;
    let mut local = Local::new(instance);
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_CHUNK);
    let mut finished: Vec<Done> = Vec::with_capacity(MAX_CHUNK);
    let mut appends: Vec<(ConnTicket, Option<Deferred>)> = Vec::new();
    // The memory freed since the worker last went idle was handed back.
    let mut released = true;
    loop {
        {
            let mut q = lock(&shared.queue);
            loop {
                if !q.jobs.is_empty() {
                    released = false;
                    // An even share of what is queued, so every worker gets some of a burst.
                    let share = q.jobs.len().div_ceil(shared.workers).clamp(1, MAX_CHUNK);
                    jobs.extend(q.jobs.drain(..share));
                    app.stats
                        .pool
                        .worker_queue_depth
                        .store(q.jobs.len() as u64, Ordering::Relaxed);
                    break;
                }
                if q.shutdown {
                    return;
                }
                q.idle_workers += 1;
                if released {
                    q = shared.available.wait(q).unwrap_or_else(|p| p.into_inner());
                } else {
                    let (guard, waited) = shared
                        .available
                        .wait_timeout(q, IDLE_RELEASE_AFTER)
                        .unwrap_or_else(|p| p.into_inner());
                    q = guard;
                    if waited.timed_out() && q.jobs.is_empty() {
                        // Idle a while: give back what the last burst freed, unlocked.
                        q.idle_workers -= 1;
                        drop(q);
                        crate::sys::release_idle_memory();
                        released = true;
                        q = lock(&shared.queue);
                        continue;
                    }
                }
                q.idle_workers -= 1;
            }
        }
        bump(&app.stats.requests.worker_jobs, jobs.len() as u64);
        local.set_time(SystemTime::now());
        let mut last_publish = Instant::now();
        // Popped from the back: the share's first job first.
        jobs.reverse();
        while let Some(job) = jobs.pop() {
            let started = Instant::now();
            finished.push(run_job(app, &mut local, job, &mut appends));
            if !jobs.is_empty() && started.elapsed() >= SLOW_JOB {
                // A slow job (a big read): the rest of the share must not wait for the
                // next one too. Back to the front of the queue, for whoever is free first.
                give_back(shared, &mut jobs);
            }
            if last_publish.elapsed() >= PUBLISH_EVERY {
                publish(shared, &mut finished, instance);
                start_all(app, &mut appends);
                last_publish = Instant::now();
                local.set_time(SystemTime::now());
            }
        }
        publish(shared, &mut finished, instance);
        // Only now: the completions of these jobs are published, so their acks come after.
        start_all(app, &mut appends);
    }
}

/// Returns the jobs a worker took but has not started (`jobs`, last first) to the front of
/// the queue, in their order, and wakes idle workers for them.
fn give_back(shared: &Shared, jobs: &mut Vec<Job>) {
    let n = jobs.len();
    let to_wake = {
        let mut q = lock(&shared.queue);
        for job in jobs.drain(..) {
            q.jobs.push_front(job);
        }
        q.idle_workers.min(n)
    };
    for _ in 0..to_wake {
        shared.available.notify_one();
    }
}

/// Starts the deferred work of published jobs (see [`durable::start`]).
fn start_all(app: &App, appends: &mut Vec<(ConnTicket, Option<Deferred>)>) {
    for (conn, work) in appends.drain(..) {
        durable::start(app, work, Ticket::Conn(conn));
    }
}

/// How a connection is named in log lines: the reactor's slab token.
struct Token(usize);

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "token={}", self.0)
    }
}

/// Hands finished jobs to the reactor, waking it only if it may be blocked.
fn publish(shared: &Shared, finished: &mut Vec<Done>, instance: u32) {
    if finished.is_empty() {
        return;
    }
    {
        let mut done = lock(&shared.done);
        done.append(finished);
        shared.done_len.store(done.len(), Ordering::SeqCst);
    }
    shared
        .bell
        .ring(&shared.app.stats, &format_args!("worker {}", instance));
}

/// Runs the engine over one job. A panic in it (a handler bug) is caught there: that
/// connection gets a `500` and is closed, this worker and every other connection go on.
/// Deferred work is put on `appends`, to be started once this job's completion is out.
fn run_job(
    app: &App,
    local: &mut Local,
    mut job: Job,
    appends: &mut Vec<(ConnTicket, Option<Deferred>)>,
) -> Done {
    let progress = exchange::process_catching(
        app,
        local,
        &mut job.exchange,
        &mut job.input,
        &mut job.output,
        job.closing,
        Token(job.token),
    );
    let deferred = local.deferred.take();
    match progress {
        Progress::AwaitDurable { close } => {
            let more = !job.input.is_empty() || !job.exchange.is_idle();
            let conn = ConnTicket {
                token: job.token,
                generation: job.generation,
                held: HeldAnswer::new(deferred.as_ref(), close, more),
            };
            appends.push((conn, deferred));
        }
        // Only a panic after the handler can leave work behind: it was not started, and a
        // write's queue room goes back.
        _ => {
            if let Some(d) = deferred {
                app.pipeline.unreserve(d.reserved_points());
            }
        }
    }
    Done {
        token: job.token,
        generation: job.generation,
        input: job.input,
        output: job.output,
        exchange: job.exchange,
        progress,
    }
}
