//! What an I/O error means to whoever met it: try again (`Interrupted`), wait for
//! readiness or a timeout (`WouldBlock`), pause accepting (out of descriptors), or close
//! that one connection with a short reason.
//!
//! Shared by the reactor and the comparison I/O models so each kind is matched in one
//! place. `WouldBlock` and `Interrupted` are routine and must never be logged.

use std::borrow::Cow;
use std::io;

/// The operation would block: wait for readiness (or, on a socket with `SO_RCVTIMEO` /
/// `SO_SNDTIMEO`, the timeout expired).
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// A signal interrupted the call: just make it again.
pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

/// A blocking socket's `SO_RCVTIMEO`/`SO_SNDTIMEO` expired (`EAGAIN` on Linux).
pub fn timed_out(e: &io::Error) -> bool {
    would_block(e) || e.kind() == io::ErrorKind::TimedOut
}

/// `accept` failed for want of descriptors or memory: the pending connections stay queued
/// in the kernel, and accepting again at once would only spin.
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// A short reason for the close log line; resets are routine, not errors.
pub fn io_reason(e: &io::Error) -> Cow<'static, str> {
    match e.kind() {
        io::ErrorKind::ConnectionReset => Cow::Borrowed("connection reset by peer"),
        io::ErrorKind::BrokenPipe => Cow::Borrowed("broken pipe"),
        _ => Cow::Owned(format!("I/O error: {}", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        let wb = io::Error::from(io::ErrorKind::WouldBlock);
        let intr = io::Error::from(io::ErrorKind::Interrupted);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(would_block(&wb) && !interrupted(&wb) && timed_out(&wb));
        assert!(interrupted(&intr) && !would_block(&intr));
        assert!(!would_block(&reset) && !timed_out(&reset));
        assert!(timed_out(&io::Error::from(io::ErrorKind::TimedOut)));
        assert_eq!(io_reason(&reset), "connection reset by peer");
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_fd_exhaustion(&reset));
    }
}
