//! Start-up and shutdown: from a validated [`Config`] to a running I/O model and back.
//!
//! Raises the fd limit, binds the listener, builds the shared [`App`], runs the chosen I/O
//! model until a graceful shutdown completes, then logs the shutdown summary. The order of
//! shutdown matters for the "204 means aggregated" promise: the I/O model stops taking
//! requests and finishes those in flight first, and only then is the pipeline drained.

use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::app::App;
use crate::config::{Config, IoModel};
use crate::ingest::Pipeline;
use crate::io_model;
use crate::net::listener;
use crate::net::reactor::Reactor;
use crate::stats::{ServerInfo, Stats};

#[derive(Debug)]
pub enum ServerError {
    Bind(std::net::SocketAddr, std::io::Error),
    Io(&'static str, std::io::Error),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {}: {}", addr, e),
            ServerError::Io(what, e) => write!(f, "{}: {}", what, e),
        }
    }
}

impl std::error::Error for ServerError {}

/// Runs the server until SIGTERM/SIGINT and a graceful shutdown.
pub fn run(config: Config) -> Result<(), ServerError> {
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
    let stats = Arc::new(Stats::default());
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
    let pipeline = Pipeline::start(config.queue_capacity, config.max_series, Arc::clone(&stats))
        .map_err(|e| ServerError::Io("starting the aggregator", e))?;
    let app = Arc::new(App {
        config: config.clone(),
        stats: Arc::clone(&stats),
        info,
        pipeline: Arc::clone(&pipeline),
    });

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

    // Every request is answered or abandoned by now, so nothing new can be queued: drain
    // what was acknowledged into the aggregates.
    let queued_at_stop = pipeline.queue_depth();
    let drained = pipeline.drain_and_stop();
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
