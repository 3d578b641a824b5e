//! The shared context every request handler reaches ([`App`]: configuration, counters,
//! the ingestion pipeline) and the scratch each serving thread keeps ([`Local`]).
//!
//! With the write log on, `App` also holds its handle ([`Durable`]). A handler whose answer
//! is held (a write's `204` until the log holds it, a `DELETE /series` until the aggregator
//! applied it) leaves its work on `Local::deferred` for its serving thread to start once
//! the held reply is encoded; the answers come back on `App::acks`.
//!
//! `App` is built once by `server.rs` and shared read-mostly (`Arc`) by the reactor, the
//! workers and the comparison I/O models; `Local` is owned by one thread and reused by every
//! request it serves, so a steady-state request allocates nothing.

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Config;
use crate::durable::{AckList, Deferred, Durable};
use crate::http::response::ResponseWriter;
use crate::ingest::Pipeline;
use crate::stats::{ServerInfo, Stats};

/// Everything a request handler can reach: shared, read-mostly, alive for the server's life.
pub struct App {
    pub config: Config,
    pub stats: Arc<Stats>,
    pub info: ServerInfo,
    pub pipeline: Arc<Pipeline>,
    /// The write log; `None` under `--memory-only` (writes are queued directly).
    pub durable: Option<Durable>,
    /// Where held answers come back to the reactor (log acknowledgements, applied deletes).
    pub acks: Arc<AckList>,
}

impl App {
    /// An app with its own pipeline (queue and aggregator thread) and no listener, for
    /// driving the engine without sockets: unit tests, benches and fuzzing. The queue holds
    /// `queue_capacity` points and the store `max_series` series.
    pub fn standalone(config: Config) -> std::io::Result<App> {
        let stats = Arc::new(Stats::default());
        let pipeline = Pipeline::start(
            config.queue_capacity,
            config.max_series,
            config.series_ttl,
            Arc::clone(&stats),
        )?;
        Ok(App {
            info: ServerInfo {
                io_model: config.io_model.as_str(),
                listen_addr: config.listen.to_string(),
                backlog_configured: config.backlog,
                backlog_effective: config.backlog,
                workers: config.workers,
                listener_fd: None,
            },
            config,
            acks: Arc::new(AckList::new(Arc::clone(&stats))),
            stats,
            pipeline,
            durable: None,
        })
    }
}

/// Per-thread scratch: reused buffers so a steady-state request allocates nothing.
pub struct Local {
    pub writer: ResponseWriter,
    pub body: Vec<u8>,
    pub ingest: crate::ingest::write::IngestScratch,
    pub now: SystemTime,
    /// Work the last request left for its serving thread to start (its answer is held).
    pub deferred: Option<Deferred>,
}

impl Local {
    pub fn new(instance: u32) -> Self {
        Local {
            writer: ResponseWriter::new(instance),
            body: Vec::new(),
            ingest: Default::default(),
            now: SystemTime::UNIX_EPOCH,
            deferred: None,
        }
    }

    /// Sets the time used for `Date` headers and default timestamps of this call.
    pub fn set_time(&mut self, now: SystemTime) {
        self.now = now;
        self.writer.set_time(now);
    }
}
