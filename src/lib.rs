//! metricstream: a high-concurrency metrics ingestion server.
//!
//! Clients push InfluxDB line protocol over HTTP/1.1; the server parses it, queues it into a
//! bounded pipeline, aggregates it per series, and serves it back to Prometheus
//! (`/metrics`) and a JSON API (`/series`). The contract (flags, endpoints, status codes) is
//! SPEC.md; `docs/architecture.md` explains the design.
//!
//! How a request travels, and where each step lives:
//!
//! ```text
//!  listener.rs ──accept until WouldBlock──▶ reactor.rs ──read until drained──▶ Job (bytes by value)
//!   (socket2: backlog,                      (mio Poll, slab of                     │
//!    SO_REUSEADDR, v4/v6)                    connection.rs, timer.rs)              ▼
//!                                                 ▲                       worker_pool.rs
//!                                                 │ one Waker per batch     exchange.rs: http/ (httparse,
//!                                                 └──── Done (bytes) ◀──── framing) → routes.rs
//!                                                        reactor writes
//! ```
//!
//! `config.rs` turns flags and environment into a [`Config`]; `server.rs` starts the chosen
//! I/O model (the reactor, or one of the comparison models in `io_model/`, which serve each
//! connection on one thread with blocking sockets around the same `exchange.rs`);
//! `stats.rs` holds the counters behind `/stats`.

pub mod app;
pub mod auth;
pub mod config;
pub mod forward;
pub mod http;
pub mod ingest;
pub mod io_model;
pub mod log_limit;
pub mod names;
pub mod net;
pub mod read;
pub mod routes;
pub mod server;
pub mod stats;
pub mod storage;
pub mod sys;
pub mod tuning;

pub use config::{Config, IoModel, Startup};
pub use server::run;
