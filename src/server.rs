//! Start-up and shutdown: from a validated [`Config`] to a running I/O model and back.
//!
//! Raises the fd limit; unless `--memory-only`, opens and locks the data directory,
//! recovers the aggregates (newest snapshot + log replay), starts the aggregator from them
//! and the write log after them; only then binds the listener, builds the shared [`App`]
//! and runs the chosen I/O model until a graceful shutdown completes.
//!
//! The order of shutdown matters for the "204 means on disk" promise: the I/O model stops
//! taking requests and finishes those in flight first; then the log is closed (what is
//! pending is written, synced and queued), the pipeline drained, and a final snapshot
//! written; the directory lock is released last. A snapshot thread meanwhile writes one
//! every `--snapshot-interval`; its failures are logged, never fatal. With forward targets,
//! their threads start after the log (a new target's cursor is the log's end before the
//! server listens) and stop after it is closed, given a few seconds to send what is
//! committed; snapshots never prune a log segment a target has not sent.

use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::{Config, Fsync, IoModel};
use crate::durable::{AckList, Durable, DurableSink};
use crate::forward::{Forwarding, Positions};
use crate::ingest::Pipeline;
use crate::io_model;
use crate::log_limit::LogLimiter;
use crate::net::listener;
use crate::net::reactor::Reactor;
use crate::stats::{ServerInfo, Stats};
use crate::storage::{DataDir, FsyncMode, LogOptions, Recovery};

#[derive(Debug)]
pub enum ServerError {
    Bind(std::net::SocketAddr, std::io::Error),
    Io(&'static str, std::io::Error),
    /// The data directory could not be opened, locked or recovered (one line, exit 1).
    Storage(String),
    /// A setting that passed parsing but cannot be used (an unreadable `--forward-ca-file`):
    /// one line, exit 2 like any other configuration error.
    Config(String),
}

impl ServerError {
    /// The process exit code this error stops the server with.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::Config(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {}: {}", addr, e),
            ServerError::Io(what, e) => write!(f, "{}: {}", what, e),
            ServerError::Storage(what) | ServerError::Config(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ServerError {}

/// Runs the server until SIGTERM/SIGINT and a graceful shutdown.
pub fn run(config: Config) -> Result<(), ServerError> {
    // A bad --forward-ca-file is a configuration error: refused before anything starts.
    let forward_client = match config.forward_targets().next() {
        Some(_) => Some(
            crate::forward::client::Client::new(config.forward_ca_file.as_deref())
                .map_err(|e| ServerError::Config(e.to_string()))?,
        ),
        None => None,
    };
    match crate::sys::raise_nofile_limit() {
        Ok(l) if l.soft > l.soft_before => log::info!(
            "raised RLIMIT_NOFILE soft limit from {} to {} (hard {})",
            l.soft_before,
            l.soft,
            l.hard
        ),
        Ok(l) => {
            log::info!("RLIMIT_NOFILE soft {} hard {}", l.soft, l.hard);
            if (l.soft as usize) < config.max_connections + 64 {
                log::warn!(
                    "RLIMIT_NOFILE {} is below --max-connections {}: accepts will pause when descriptors run out",
                    l.soft,
                    config.max_connections
                );
            }
        }
        Err(e) => log::warn!("could not raise RLIMIT_NOFILE: {}", e),
    }

    crate::sys::reserve_fd_table(config.max_connections + 256);
    let stats = Arc::new(Stats::default());
    // Everything acknowledged before a crash is back in the aggregates before we listen.
    let storage = if config.memory_only {
        None
    } else {
        Some(open_storage(&config, &stats)?)
    };
    let nonblocking = config.io_model == IoModel::Reactor;
    let bound = listener::bind(config.listen, config.backlog, nonblocking)
        .map_err(|e| ServerError::Bind(config.listen, e))?;
    if bound.backlog_effective < bound.backlog_configured {
        log::warn!(
            "--backlog {} exceeds /proc/sys/net/core/somaxconn; the kernel caps it at {}",
            bound.backlog_configured,
            bound.backlog_effective
        );
    }
    let info = ServerInfo {
        io_model: config.io_model.as_str(),
        listen_addr: bound.local_addr.to_string(),
        backlog_configured: bound.backlog_configured,
        backlog_effective: bound.backlog_effective,
        workers: config.workers,
        listener_fd: Some(bound.listener.as_raw_fd()),
    };
    log::info!(
        "metricstream {} listening on {} (io_model={}, backlog={} effective={}, workers={}, max_connections={}, max_header_bytes={}, max_body_bytes={}, header/body/idle timeouts={:?}/{:?}/{:?}, queue_capacity={}, max_series={}, auth={})",
        env!("CARGO_PKG_VERSION"),
        bound.local_addr,
        config.io_model.as_str(),
        bound.backlog_configured,
        bound.backlog_effective,
        config.workers,
        config.max_connections,
        config.max_header_bytes,
        config.max_body_bytes,
        config.header_timeout,
        config.body_timeout,
        config.idle_timeout,
        config.queue_capacity,
        config.max_series,
        if config.auth_token.is_some() {
            "token"
        } else {
            "off"
        },
    );
    let acks = Arc::new(AckList::new(Arc::clone(&stats)));
    let (pipeline, durable, storage) = match storage {
        None => {
            let pipeline = Pipeline::start(
                config.queue_capacity,
                config.max_series,
                config.series_ttl,
                Arc::clone(&stats),
            )
            .map_err(|e| ServerError::Io("starting the aggregator", e))?;
            (pipeline, None, None)
        }
        Some((dir, recovery)) => {
            let loaded = recovery.report.snapshot.as_ref().map(|(_, lsn)| *lsn);
            let (pipeline, durable) = start_durable(&config, &stats, &dir, recovery, &acks)?;
            (pipeline, Some(durable), Some((dir, loaded)))
        }
    };
    let forwarding = match (&durable, &storage, &forward_client) {
        (Some(d), Some((dir, _)), Some(client)) => {
            let targets: Vec<_> = config.forward_targets().cloned().collect();
            let f = Forwarding::start(
                &targets,
                dir.path(),
                dir.wal_dir(),
                d.tail(),
                client,
                config.forward_max_backlog_bytes,
                &stats,
            )
            .map_err(ServerError::Config)?;
            Some(f)
        }
        _ => None,
    };
    let positions = forwarding
        .as_ref()
        .map(Forwarding::positions)
        .unwrap_or_default();
    let app = Arc::new(App {
        config: config.clone(),
        stats: Arc::clone(&stats),
        info,
        pipeline: Arc::clone(&pipeline),
        durable,
        acks,
    });
    let snapshots = match &storage {
        Some((dir, loaded)) => Some(
            Snapshotter::start(
                Arc::clone(dir),
                Arc::clone(&pipeline),
                config.snapshot_interval,
                *loaded,
                positions.clone(),
            )
            .map_err(|e| ServerError::Io("starting the snapshot thread", e))?,
        ),
        None => None,
    };

    let forced = match config.io_model {
        IoModel::Reactor => {
            let reactor = Reactor::new(bound.listener, Arc::clone(&app))
                .map_err(|e| ServerError::Io("starting the reactor", e))?;
            reactor
                .run()
                .map_err(|e| ServerError::Io("reactor failed", e))?
        }
        IoModel::Threadpool => io_model::threadpool::run(bound.listener, Arc::clone(&app))
            .map_err(|e| ServerError::Io("threadpool I/O model failed", e))?,
        IoModel::Blocking => io_model::blocking::run(bound.listener, Arc::clone(&app))
            .map_err(|e| ServerError::Io("blocking I/O model failed", e))?,
    };

    // Every request is answered or abandoned by now, so nothing new can be logged or
    // queued: write out the log, drain what was acknowledged into the aggregates, and
    // snapshot them.
    if let Some(durable) = &app.durable {
        durable.close();
    }
    // What is committed goes out now if the targets take it; the rest waits in the log.
    if let Some(f) = forwarding {
        f.stop(
            config
                .shutdown_timeout
                .min(crate::tuning::FORWARD_SHUTDOWN_GRACE),
        );
    }
    let queued_at_stop = pipeline.queue_depth();
    let drained = pipeline.drain_and_stop();
    if let (Some(s), Some((dir, _))) = (snapshots, &storage) {
        let mut last = s.stop();
        let mut warn = LogLimiter::new(Duration::from_secs(10));
        snapshot(dir, &pipeline, &mut last, &mut warn, &positions);
    }
    let rq = &stats.requests;
    let io = &stats.io;
    let pl = &stats.pipeline;
    log::info!(
        "shutdown complete after {:.1}s: {} connections accepted, {} force-closed, {} requests; points queued={} aggregated={} (drained {} at stop) dropped_series_limit={}; series={}; {} bytes read, {} bytes written",
        stats.started.elapsed().as_secs_f64(),
        io.connections_accepted.load(Relaxed),
        forced,
        rq.requests_total.load(Relaxed),
        pl.points_queued.load(Relaxed),
        drained.points_aggregated,
        queued_at_stop,
        pl.points_dropped_series_limit.load(Relaxed),
        drained.series,
        io.bytes_read.load(Relaxed),
        io.bytes_written.load(Relaxed),
    );
    Ok(())
}

/// Opens and locks the data directory and recovers what it holds. The errors are the one
/// line the server exits 1 with.
fn open_storage(
    config: &Config,
    stats: &Arc<Stats>,
) -> Result<(Arc<DataDir>, Recovery), ServerError> {
    let dir = DataDir::open_with_stats(&config.data_dir, Arc::clone(stats))
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let recovery = dir.recover(config.max_series).map_err(|e| {
        ServerError::Storage(format!(
            "data directory {}: recovery failed: {}",
            config.data_dir.display(),
            e
        ))
    })?;
    log::info!(
        "data directory {}: {}",
        config.data_dir.display(),
        recovery.report
    );
    Ok((Arc::new(dir), recovery))
}

/// Starts the aggregator from the recovered aggregates and the write log after them.
fn start_durable(
    config: &Config,
    stats: &Arc<Stats>,
    dir: &DataDir,
    recovery: Recovery,
    acks: &Arc<AckList>,
) -> Result<(Arc<Pipeline>, Durable), ServerError> {
    let fsync = match config.fsync {
        Fsync::Always => FsyncMode::Always,
        Fsync::Interval => FsyncMode::Interval(crate::tuning::LOG_SYNC_INTERVAL),
    };
    let opts = LogOptions {
        fsync,
        ..LogOptions::default()
    };
    let Recovery {
        mut store,
        applied_lsn,
        next_lsn,
        report,
    } = recovery;
    // Before the server listens: a series that expired while the server was down (or
    // before a crash) is never read again.
    let ttl_s = config.series_ttl.as_secs().min(u64::from(u32::MAX)) as u32;
    if ttl_s > 0 {
        let now_s = crate::ingest::lifecycle::unix_s(std::time::SystemTime::now());
        let expired = store.expire_all(now_s, ttl_s);
        crate::stats::bump(&stats.pipeline.series_expired, expired);
        if expired > 0 {
            log::info!("{expired} recovered series not written for --series-ttl {ttl_s} s expired");
        }
    }
    let pipeline = Pipeline::start_from(
        store,
        applied_lsn,
        config.queue_capacity,
        config.series_ttl,
        Arc::clone(stats),
    )
    .map_err(|e| ServerError::Io("starting the aggregator", e))?;
    // The store went to the aggregator; the log needs only where to continue.
    let rest = Recovery {
        store: crate::ingest::SeriesStore::new(0),
        applied_lsn,
        next_lsn,
        report,
    };
    let sink = DurableSink::new(Arc::clone(&pipeline), Arc::clone(acks));
    let log = dir
        .start_log(&rest, opts, sink)
        .map_err(|e| ServerError::Io("starting the write log", e))?;
    log::info!(
        "write log in {} (--fsync {}, snapshots every {:?})",
        dir.wal_dir().display(),
        config.fsync.as_str(),
        config.snapshot_interval
    );
    Ok((pipeline, Durable::new(log, Arc::clone(acks))))
}

/// Writes a snapshot of the aggregates unless they are unchanged since `last` (the LSN
/// of the last one). Encoding happens under the store lock (a memory copy), the file
/// work outside it. Failures are logged (rate-limited) and never fatal: the log still
/// holds everything, a later snapshot tries again.
fn snapshot(
    dir: &DataDir,
    pipeline: &Pipeline,
    last: &mut Option<u64>,
    warn: &mut LogLimiter,
    positions: &Positions,
) {
    let started = Instant::now();
    let encoded = pipeline.with_applied(|store, lsn| {
        (*last != Some(lsn)).then(|| (lsn, DataDir::encode_snapshot(store, lsn)))
    });
    let Some((lsn, bytes)) = encoded else {
        return;
    };
    // Log segments a forward target has not sent yet are kept.
    match dir.write_snapshot(lsn, &bytes, positions.still_needed()) {
        Ok(p) => {
            *last = Some(lsn);
            log::debug!(
                "snapshot {} ({} bytes, LSN {}) in {:.3} s",
                p.path.display(),
                p.bytes,
                lsn,
                started.elapsed().as_secs_f64()
            );
        }
        Err(e) => {
            if let Some(suppressed) = warn.check(Instant::now()) {
                log::error!(
                    "snapshot of the aggregates in {} failed: {} (the log still holds every write; {} similar errors suppressed)",
                    dir.snapshot_dir().display(),
                    e,
                    suppressed
                );
            }
        }
    }
}

/// The thread that snapshots the aggregates every `--snapshot-interval`, and stops
/// promptly when asked.
struct Snapshotter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Returns the LSN of the last snapshot it wrote (or the one loaded at start-up).
    thread: JoinHandle<Option<u64>>,
}

impl Snapshotter {
    fn start(
        dir: Arc<DataDir>,
        pipeline: Arc<Pipeline>,
        every: Duration,
        loaded: Option<u64>,
        positions: Positions,
    ) -> std::io::Result<Snapshotter> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || {
                let mut warn = LogLimiter::new(Duration::from_secs(10));
                // Nothing new since the snapshot loaded at start-up: nothing to write.
                let mut last = loaded;
                let (lock, cv) = &*s;
                loop {
                    let deadline = Instant::now() + every;
                    let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    while !*stopped {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        stopped = cv
                            .wait_timeout(stopped, left)
                            .map_or_else(|p| p.into_inner().0, |(g, _)| g);
                    }
                    if *stopped {
                        return last;
                    }
                    drop(stopped);
                    snapshot(&dir, &pipeline, &mut last, &mut warn, &positions);
                }
            })?;
        Ok(Snapshotter { stop, thread })
    }

    /// Stops the thread (a snapshot under way finishes first) and joins it. Returns the
    /// LSN of the newest snapshot on disk, if known.
    fn stop(self) -> Option<u64> {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        self.thread.join().unwrap_or_else(|_| {
            log::error!("the snapshot thread panicked");
            None
        })
    }
}
