//! Durability: the write log, snapshots of the aggregates, and recovery at start-up.
//!
//! ```text
//!  worker: Batch ──Encoded::write──▶ Log::append ──▶ log thread: one writev + one fdatasync
//!                                                      per group, DIR/wal/<lsn>.wal
//!                                                         │ in LSN order
//!                                     Sink::apply ◀───────┤ (to the aggregator queue)
//!                                     Sink::complete ◀────┘ (Ok(lsn) / Err: 503; one wake)
//!  aggregator: SeriesStore ──snapshot::encode (under lock)──▶ DataDir::write_snapshot
//!              (temp, fsync, rename, dir fsync; two kept) ──▶ DataDir::prune_log
//!  start-up:   DataDir::open (DIR/LOCK) ──▶ DataDir::recover (newest valid snapshot + replay)
//!              ──▶ DataDir::start_log
//! ```
//!
//! [`DataDir`] owns the directory and its lock; [`log`] the group-commit thread;
//! [`record`] and [`segment`] the byte format; [`snapshot`] the aggregates on disk;
//! [`recovery`] the start-up replay. The byte layouts and what each `fsync` protects are in
//! `docs/storage.md`. Nothing in this module may run on the reactor thread, and nothing
//! found in the data directory may panic it or stop start-up.

pub mod dir;
pub mod file;
pub mod log;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;

use std::sync::atomic::AtomicU64;

pub use dir::{DataDir, OpenError};
pub use file::{Fs, SegmentFile, StdFs};
pub use log::{AppendError, Closed, Completion, FsyncMode, Log, LogOptions, Sink};
pub use record::{Encoded, Lsn};
pub use recovery::{Recovery, RecoveryReport};

/// The storage counters `/stats` exposes, updated by the log thread, snapshots and
/// recovery; read with `Relaxed` loads.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Bytes appended to the log since start.
    pub log_bytes: AtomicU64,
    /// Segment files in `DIR/wal/` now.
    pub log_segments: AtomicU64,
    /// `fdatasync` calls on the log since start.
    pub log_fsyncs: AtomicU64,
    /// Damaged records skipped during recovery (not counting a torn tail).
    pub log_corrupt_records: AtomicU64,
    /// Wall-clock seconds of the last snapshot written (or loaded at start-up); 0 if none.
    pub snapshot_last_unix: AtomicU64,
    /// Points replayed from the log at start-up.
    pub recovered_points: AtomicU64,
}
