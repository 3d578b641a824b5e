//! metricstream: a high-concurrency metrics ingestion server.
//!
//! Clients push InfluxDB line protocol over HTTP/1.1; the server parses it, queues it into a
//! bounded pipeline, aggregates it per series, and serves it back to Prometheus
//! (`/metrics`) and a JSON API (`/series`). The contract (flags, endpoints, status codes) is
//! SPEC.md; `docs/architecture.md` explains the design.
//!
//! How a write travels, and where each step lives:
//!
//! ```text
//!  net/listener.rs ──accept until WouldBlock──▶ net/reactor.rs ──read until drained──▶ Job (bytes by value)
//!   (socket2: backlog,                          (mio Poll, slab of net/connection.rs,     │
//!    SO_REUSEADDR, v4/v6)                        net/lifecycle.rs, net/timer.rs)           ▼
//!                                                    ▲                          net/worker_pool.rs:
//!                                                    │ one Waker per batch       http/exchange.rs (httparse,
//!                                                    │                           framing) → routes.rs →
//!                                                    │                           ingest/ (parse → Batch,
//!                                                    │                           reserve queue room)
//!                                                    │                                     │ append
//!                                                    │                                     ▼
//!                                                    └── ack (204 or 503) ◀── storage/ log thread: one
//!                                                                             write + one fdatasync per
//!                                                                             group, then the batches go
//!                                                                             to ingest/ aggregator ──▶
//!                                                                             read/ (/metrics, /series),
//!                                                                             snapshots
//! ```
//!
//! `config.rs` turns flags and environment into a [`Config`]; `server.rs` recovers the
//! data directory, starts the pipeline, the write log and the chosen I/O model (the reactor,
//! or one of the comparison models in `io_model/`, which serve each connection on one thread
//! with blocking sockets around the same engine and the same connection lifecycle);
//! `durable.rs` carries a held answer's work from its route (a write to the log, a
//! `DELETE /series` through the log to the aggregator) and its outcome back to the reactor,
//! which no server thread waits for; `GET /metrics` is answered with a streamed body
//! (`http/stream.rs`, `read/scrape.rs`), rendered a part per worker job, each part once the
//! previous one was written;
//! `stats.rs` declares every counter once; `tuning.rs` holds every tuning constant;
//! `names.rs` the Prometheus naming rules. docs/architecture.md has a table of every file.

pub mod app;
pub mod auth;
pub mod config;
pub mod durable;
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
