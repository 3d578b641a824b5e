//! `--io-model blocking`: one thread that accepts a connection, serves it until it closes
//! ([`super::serve`]: blocking reads and writes around the shared HTTP engine), and only
//! then accepts the next.
//!
//! It exists as the baseline the reactor is measured against: while it serves one client,
//! nobody drains the kernel's accept queue, so a burst of connects overflows the backlog
//! (`listen_overflows`, ~1 s SYN retransmits) and one idle keep-alive client holds up
//! everyone else for `--idle-timeout`. It must never grow a second thread of serving or
//! any cleverness that hides that: the point is the plain sequential loop.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{Accepted, ServeThread, SignalThread, Stop, accept, serve};
use crate::app::App;
use crate::log_limit::LogLimiter;

/// Runs until a graceful shutdown completes; returns the number of connections cut at the
/// shutdown deadline.
pub fn run(listener: TcpListener, app: Arc<App>) -> io::Result<usize> {
    let listener = Arc::new(listener);
    let stop = Arc::new(Stop::new(
        Arc::clone(&listener),
        1,
        app.config.shutdown_timeout,
    ));
    let signals = SignalThread::start(Arc::clone(&stop))?;
    let mut thread = ServeThread::new(0, &app);
    let mut warn_fd = LogLimiter::new(Duration::from_secs(10));
    loop {
        match accept(&listener, &app, &stop, &mut warn_fd) {
            Accepted::Conn(stream, peer) => {
                app.stats.io.connections_active.fetch_add(1, Relaxed);
                serve(&app, &stop, &mut thread, stream, peer);
            }
            Accepted::Retry => {}
            Accepted::Stopped => break,
        }
    }
    signals.finish();
    Ok(stop.forced_count())
}
