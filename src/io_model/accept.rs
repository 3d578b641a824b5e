//! One blocking `accept` for the comparison I/O models, counted like the reactor's drains
//! (an accept batch of one), pausing instead of spinning when descriptors run out.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::app::App;
use crate::log_limit::LogLimiter;
use crate::net::errors::{interrupted, is_fd_exhaustion};
use crate::stats::bump;

// The reactor's tuning, shared so the models differ only in their I/O architecture.
use crate::tuning::ACCEPT_PAUSE;

use super::stop::Stop;

pub enum Accepted {
    Conn(TcpStream, SocketAddr),
    /// Nothing this time (interrupted, a connection aborted, out of descriptors): call again.
    Retry,
    /// Shutdown began: the listener is closed.
    Stopped,
}

/// One blocking `accept`, counted as an accept batch of one.
pub fn accept(
    listener: &TcpListener,
    app: &App,
    stop: &Stop,
    warn_fd: &mut LogLimiter,
) -> Accepted {
    if stop.stopping() {
        return Accepted::Stopped;
    }
    let io = &app.stats.io;
    match listener.accept() {
        Ok((stream, peer)) => {
            bump(&io.connections_accepted, 1);
            app.stats.note_accept_batch(1);
            log::debug!("accepted peer={}", peer);
            Accepted::Conn(stream, peer)
        }
        // Shutting the listener down is how a blocked accept is woken.
        Err(_) if stop.stopping() => Accepted::Stopped,
        Err(e) if interrupted(&e) => Accepted::Retry,
        Err(e) if is_fd_exhaustion(&e) => {
            bump(&io.accept_errors, 1);
            if let Some(suppressed) = warn_fd.check(Instant::now()) {
                log::warn!(
                    "accept failed: {} ({} open connections); pausing accepts for {:?} ({} similar warnings suppressed)",
                    e,
                    io.connections_active.load(Ordering::Relaxed),
                    ACCEPT_PAUSE,
                    suppressed
                );
            }
            // The pending connections stay queued in the kernel; spinning on EMFILE would
            // only burn the core the serving threads need to free descriptors.
            std::thread::sleep(ACCEPT_PAUSE);
            Accepted::Retry
        }
        Err(e) => {
            // ECONNABORTED and friends: that one connection is gone.
            bump(&io.accept_errors, 1);
            log::debug!("accept failed: {}", e);
            Accepted::Retry
        }
    }
}
