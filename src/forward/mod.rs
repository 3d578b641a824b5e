//! Forwarding: every accepted point, from the write log to the stores users already run
//! (SPEC "Forwarding"), at least once, in log order, one thread per target.
//!
//! ```text
//!  log thread ── LogTail (committed end) ──▶ forwarder.rs, one thread per target:
//!                                            LogReader from its cursor ──▶ Batch ──▶ encode
//!                                            ──▶ client.rs (blocking HTTP) ──▶ 2xx ──▶ cursor.rs
//!  snapshot thread: prunes log segments only below every target's stored position
//! ```
//!
//! - `forwarder.rs`: the thread (batching, retries, the backlog cap, counters);
//! - `cursor.rs`: the persisted position (`DIR/forward/<id>.cursor`);
//! - `remote_write.rs`: batches -> Prometheus remote_write 1.0 bodies (protobuf + snappy),
//!   series named and labelled exactly as `/metrics` names them (`crate::names`);
//! - `influx.rs`: batches -> line protocol bodies (gzip) with each point's arrival timestamp;
//! - `target.rs`: a forward URL, its basic auth, and a display form without the password;
//! - `client.rs`: one blocking HTTP sender for every target, classifying each answer as
//!   success, retry or reject;
//! - `retry.rs`: the backoff policy (pure, seeded, no sleeping).
//!
//! [`Forwarding`] starts the threads after recovery and before the server listens, so a
//! new target's cursor is the log's end at that moment, and stops them at shutdown after
//! the log is closed. Nothing here runs on the reactor or a worker (the client blocks), and
//! nothing here can hold up ingestion. docs/forwarding.md has the formats and semantics.

pub mod client;
pub mod cursor;
pub mod forwarder;
pub mod influx;
pub mod remote_write;
pub mod retry;
pub mod sender;
pub mod target;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ingest::batch::Batch;
use crate::stats::{ForwardStats, Stats};
use crate::storage::{LogTail, Lsn};
use client::Client;
use cursor::Cursor;
use forwarder::{Forwarder, Setup, Stop};
use target::Target;

/// The wire format a target receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus remote_write 1.0 (`--remote-write-url`).
    RemoteWrite,
    /// InfluxDB line protocol, gzip (`--influx-write-url`).
    LineProtocol,
}

/// One request body, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Compressed body (snappy block for remote_write, gzip for line protocol).
    pub body: Vec<u8>,
    /// Points with at least one value in this request (`points_sent` once it is `2xx`).
    pub points: usize,
    /// Field values in this request (samples for remote_write, field values for line
    /// protocol); at most the limit given to the encoder.
    pub values: usize,
}

/// What an encoder made of some batches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The requests, in log order; a forwarder sends them in this order.
    pub requests: Vec<Request>,
    /// Field values not sent because the format cannot carry them (string fields in
    /// remote_write): counted as dropped, reason `unsupported`.
    pub unsupported: u64,
}

/// Requests per shard, each shard's in log order (a series is always in one shard).
#[derive(Debug, Default)]
pub struct Sharded {
    pub requests: Vec<Vec<Request>>,
    /// As in [`Encoded::unsupported`].
    pub unsupported: u64,
}

/// A forwarder's encoder: the format, and what it remembers between batches (remote_write
/// keeps every series' labels encoded).
pub struct Encoder {
    format: Format,
    remote_write: remote_write::Encoder,
}

impl Encoder {
    pub fn new(format: Format) -> Encoder {
        Encoder {
            format,
            remote_write: remote_write::Encoder::default(),
        }
    }

    /// Encodes `batches` (in log order) into requests of at most `max_values` values,
    /// spread over `shards` by series.
    pub fn encode(&mut self, batches: &[&Batch], max_values: usize, shards: usize) -> Sharded {
        match self.format {
            Format::RemoteWrite => self.remote_write.encode(batches, max_values, shards),
            Format::LineProtocol => influx::encode_sharded(batches, max_values, shards),
        }
    }
}

/// Encodes `batches` (in log order) for `format`, at most `max_values` field values per
/// request (a point is never split, so a point with more fields than that travels alone).
pub fn encode(format: Format, batches: &[&Batch], max_values: usize) -> Encoded {
    match format {
        Format::RemoteWrite => remote_write::encode(batches, max_values),
        Format::LineProtocol => influx::encode(batches, max_values),
    }
}

/// Every target's stored position, for the snapshot thread's pruning.
#[derive(Clone, Default)]
pub struct Positions(Vec<Arc<AtomicU64>>);

impl Positions {
    /// The oldest LSN some target still needs (`None` without targets).
    pub fn still_needed(&self) -> Option<Lsn> {
        self.0.iter().map(|p| p.load(Relaxed) + 1).min()
    }
}

/// The running forwarders.
pub struct Forwarding {
    threads: Vec<(String, JoinHandle<()>)>,
    positions: Positions,
    stop: Arc<Stop>,
}

impl Forwarding {
    /// Opens each target's cursor in `DIR/forward/` (a new target starts at the log's
    /// committed end) and starts its thread, all sending through `client`. Registers the
    /// targets' counters in `stats`. The error is one line naming what failed.
    pub fn start(
        targets: &[Target],
        data_dir: &Path,
        wal_dir: &Path,
        tail: &Arc<LogTail>,
        client: &Client,
        max_backlog: u64,
        stats: &Stats,
    ) -> Result<Forwarding, String> {
        let dir = forwarder::cursor_dir(data_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let stop = Arc::new(Stop::default());
        let end = tail.committed_lsn();
        let mut setups = Vec::new();
        let mut all_stats = Vec::new();
        for target in targets {
            let name = cursor::file_name(target.format(), target.redacted());
            let (mut cursor, stored) = Cursor::open(&dir, &name)
                .map_err(|e| format!("cannot open {}: {e}", dir.join(&name).display()))?;
            let start = match stored {
                Some(lsn) if lsn <= end => lsn,
                Some(lsn) => {
                    log::warn!(
                        "forward {}: its position (LSN {lsn}) is past the end of the write log (LSN {end}); starting from the end",
                        target.redacted()
                    );
                    end
                }
                None => end,
            };
            if stored != Some(start) {
                cursor
                    .store(start)
                    .map_err(|e| format!("cannot write {}: {e}", cursor.path().display()))?;
            }
            log::info!(
                "forwarding to {} ({}) from LSN {} ({})",
                target.redacted(),
                forwarder::format_name(target.format()),
                start + 1,
                if stored.is_some() {
                    "where it stopped"
                } else {
                    "new target: points logged from now on"
                }
            );
            let st = Arc::new(ForwardStats::new(
                target.redacted(),
                forwarder::format_name(target.format()),
            ));
            all_stats.push(Arc::clone(&st));
            setups.push(Setup {
                name: format!("forward-{}", setups.len()),
                target: target.clone(),
                client: client.clone(),
                wal_dir: wal_dir.to_path_buf(),
                tail: Arc::clone(tail),
                cursor,
                start,
                position: Arc::new(AtomicU64::new(start)),
                stats: st,
                max_backlog,
                lanes: std::env::var("XLANES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(crate::tuning::FORWARD_LANES),
                stop: Arc::clone(&stop),
            });
        }
        if stats.forward.set(all_stats).is_err() {
            return Err("forward targets registered twice".to_string());
        }
        let positions = Positions(setups.iter().map(|s| Arc::clone(&s.position)).collect());
        let mut threads = Vec::new();
        for setup in setups {
            let shown = setup.target.redacted().to_string();
            let thread = std::thread::Builder::new()
                .name(setup.name.clone())
                .spawn(move || Forwarder::new(setup).run())
                .map_err(|e| format!("cannot start a forwarder thread: {e}"))?;
            threads.push((shown, thread));
        }
        Ok(Forwarding {
            threads,
            positions,
            stop,
        })
    }

    pub fn positions(&self) -> Positions {
        self.positions.clone()
    }

    /// Lets the forwarders send what is committed for up to `grace`, then stops them.
    /// Call after the log is closed. A forwarder still busy after `grace` (a request to a
    /// slow target) is left to finish on its own; it resumes from its cursor next time.
    pub fn stop(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.stop.request(deadline);
        for (shown, thread) in self.threads {
            // Bounded: the deadline plus a request's timeout at worst is not waited for.
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                if thread.join().is_err() {
                    log::error!("forward {shown}: the forwarder thread panicked");
                }
            } else {
                log::warn!(
                    "forward {shown}: still sending at shutdown; what it has not delivered is sent after the next start"
                );
            }
        }
    }
}
