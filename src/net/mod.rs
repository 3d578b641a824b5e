//! The network edge: everything that owns a socket or a thread serving sockets.
//!
//! `listener.rs` makes the listening socket (socket2); `reactor.rs` is the one mio thread
//! that accepts until `WouldBlock`, reads, writes and keeps deadlines (`timer.rs`) for the
//! connections in its slab (`connection.rs`); `worker_pool.rs` runs the CPU-bound part of
//! each request (the HTTP exchange, parsing, queueing) and hands results back through one
//! `mio::Waker` per batch (`doorbell.rs`, also rung by the write log's
//! acknowledgements). Nothing in `http/`, `ingest/` or `read/` depends on this module.

pub mod connection;
pub mod doorbell;
pub mod errors;
pub mod lifecycle;
pub mod listener;
pub mod reactor;
pub mod timer;
pub mod worker_pool;
