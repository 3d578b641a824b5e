//! The comparison I/O models, `--io-model threadpool` and `--io-model blocking`, and what
//! they share.
//!
//! Both replace only the reactor's place in the data flow: listener -> *accept, read* ->
//! `exchange::process` (the same HTTP engine, routes and ingestion as the reactor) ->
//! *write*. Each connection is served end to end by one thread with a blocking
//! `std::net::TcpStream`: [`serve`] carries out the same connection `Lifecycle` as the
//! reactor (which phase deadline applies, 408 or a quiet close, lingering), mapping its
//! "arm a deadline at T" onto `SO_RCVTIMEO` for the next read and `SO_SNDTIMEO` for writes
//! in place of the reactor's timer wheel. They count the same `/stats` I/O figures as the
//! reactor (each `accept` is an accept batch of one), so benchmark numbers line up; any
//! difference between the models is the I/O architecture alone.
//!
//! [`Stop`] is the graceful shutdown they share: a signal thread ([`SignalThread`]) wakes a
//! blocked `accept` by shutting the listener's read side, cuts idle keep-alive connections
//! the same way, lets requests in progress finish with `Connection: close`, and at
//! `--shutdown-timeout` (or a second signal) shuts every remaining connection down.
//!
//! A write whose `204` waits for the write log (`Progress::AwaitDurable`) is appended by
//! the serving thread itself, which then blocks on its own `durable::Waiter` until the log thread
//! answers, and goes on as the reactor does with an acknowledgement (`durable::after_ack`).
//!
//! `stop.rs` holds the shutdown, `accept.rs` the blocking accept, `serve.rs` one
//! connection served end to end.
//!
//! Nothing here parses HTTP or knows a route, and no thread waits without a bound on a
//! socket: every blocking call has a timeout or is woken by [`Stop`].

mod accept;
pub mod blocking;
mod serve;
mod stop;
pub mod threadpool;

pub use accept::{Accepted, accept};
pub use serve::{ServeThread, serve};
pub use stop::{SignalThread, Stop};

use std::sync::{Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Slots hold plain data that a panicking holder cannot leave half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
