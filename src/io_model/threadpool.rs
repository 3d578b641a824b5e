//! `--io-model threadpool`: the classic thread-per-connection server with a fixed pool.
//!
//! One thread blocks in `accept` and puts each new connection on a queue; `--workers` pool
//! threads take connections off it and serve each one end to end ([`super::serve`]: blocking
//! reads and writes around the shared HTTP engine) until it closes, then take the next.
//!
//! The queue is bounded by `--max-connections`, counting connections queued *and* being
//! served: past it the accept thread answers `503` with `Connection: close` and closes, as
//! the reactor does, so the kernel backlog keeps draining and the accept thread never waits
//! for the pool. Below it a connection waits in the queue while every pool thread is busy —
//! and a pool thread stays busy for as long as its client keeps the connection open, idle
//! or not. That is this model's weakness under many keep-alive or slow clients (requests
//! wait up to `--idle-timeout` for a thread), and what the benchmarks are there to show.
//! `worker_jobs` in `/stats` counts connections handed to the pool and `worker_queue_depth`
//! the connections waiting for a thread.
//!
//! The accept thread must never block on a client: it does not read requests, and it cannot
//! linger after a `503` the way the reactor does (it drains what already arrived instead).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::{Accepted, ServeThread, SignalThread, Stop, accept, lock, serve};
use crate::app::App;
use crate::http::ResponseWriter;
use crate::http::exchange;
use crate::log_limit::LogLimiter;
use crate::stats::bump;

/// Runs until a graceful shutdown completes; returns the number of connections cut at the
/// shutdown deadline.
pub fn run(listener: TcpListener, app: Arc<App>) -> io::Result<usize> {
    let workers = app.config.workers;
    let listener = Arc::new(listener);
    let stop = Arc::new(Stop::new(
        Arc::clone(&listener),
        workers,
        app.config.shutdown_timeout,
    ));
    let signals = SignalThread::start(Arc::clone(&stop))?;
    let queue = Arc::new(ConnQueue::default());
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let shared = (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&queue));
        let spawned = std::thread::Builder::new()
            .name(format!("pool-{}", i))
            .spawn(move || pool_thread(i, &shared.0, &shared.1, &shared.2));
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => {
                queue.close();
                join(threads);
                return Err(e);
            }
        }
    }
    accept_loop(&listener, &app, &queue, &stop);
    // Connections already accepted are still served (with `Connection: close`); the pool
    // threads exit once the queue is empty, or drop what is left once shutdown is forced.
    queue.close();
    join(threads);
    signals.finish();
    Ok(stop.forced_count())
}

fn join(threads: Vec<std::thread::JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            log::error!("a pool thread panicked");
        }
    }
}

fn accept_loop(listener: &TcpListener, app: &App, queue: &ConnQueue, stop: &Stop) {
    let mut writer = ResponseWriter::new(0);
    let mut warn_fd = LogLimiter::new(Duration::from_secs(10));
    let mut warn_limit = LogLimiter::new(Duration::from_secs(10));
    loop {
        match accept(listener, app, stop, &mut warn_fd) {
            Accepted::Conn(stream, peer) => {
                let io = &app.stats.io;
                if io.connections_active.load(Relaxed) as usize >= app.config.max_connections {
                    bump(&io.connections_rejected_over_limit, 1);
                    if let Some(suppressed) = warn_limit.check(Instant::now()) {
                        log::warn!(
                            "--max-connections {} reached: answering new connections 503 ({} similar warnings suppressed)",
                            app.config.max_connections,
                            suppressed
                        );
                    }
                    reject(app, &mut writer, stream, peer);
                    continue;
                }
                io.connections_active.fetch_add(1, Relaxed);
                queue.push(stream, peer, app);
            }
            Accepted::Retry => {}
            Accepted::Stopped => return,
        }
    }
}

/// Answers a connection over `--max-connections` with `503` and closes it, without ever
/// blocking: whatever the client already sent is read first and after the half-close, so
/// closing does not turn into a reset that would destroy the answer.
fn reject(app: &App, writer: &mut ResponseWriter, stream: TcpStream, peer: SocketAddr) {
    let mut out = Vec::with_capacity(512);
    writer.set_time(SystemTime::now());
    exchange::write_io_error(
        app,
        writer,
        503,
        "too many open connections",
        true,
        &mut out,
    );
    if stream.set_nonblocking(true).is_ok() {
        discard_available(app, &stream);
        // A fresh socket's send buffer takes these few hundred bytes at once.
        if let Ok(n) = (&stream).write(&out) {
            bump(&app.stats.io.bytes_written, n as u64);
        }
        let _ = stream.shutdown(Shutdown::Write);
        discard_available(app, &stream);
    }
    log::debug!("closed peer={} reason=over connection limit", peer);
}

fn discard_available(app: &App, mut stream: &TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        bump(&app.stats.io.bytes_read, n as u64);
    }
}

fn pool_thread(i: usize, app: &App, stop: &Stop, queue: &ConnQueue) {
    let mut t = ServeThread::new(i, app);
    while let Some((stream, peer)) = queue.pop(app) {
        bump(&app.stats.requests.worker_jobs, 1);
        // After a forced stop `serve` refuses the connection (and counts it as cut).
        serve(app, stop, &mut t, stream, peer);
    }
}

/// Accepted connections waiting for a pool thread. Its length is bounded by the
/// `--max-connections` check in the accept loop.
#[derive(Default)]
struct ConnQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    conns: VecDeque<(TcpStream, SocketAddr)>,
    closed: bool,
}

impl ConnQueue {
    fn push(&self, stream: TcpStream, peer: SocketAddr, app: &App) {
        {
            let mut q = lock(&self.state);
            q.conns.push_back((stream, peer));
            app.stats
                .pool
                .worker_queue_depth
                .store(q.conns.len() as u64, Relaxed);
        }
        self.ready.notify_one();
    }

    /// The next connection, waiting for one; `None` once closed and empty.
    fn pop(&self, app: &App) -> Option<(TcpStream, SocketAddr)> {
        let mut q = lock(&self.state);
        loop {
            if let Some(c) = q.conns.pop_front() {
                app.stats
                    .pool
                    .worker_queue_depth
                    .store(q.conns.len() as u64, Relaxed);
                return Some(c);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}
