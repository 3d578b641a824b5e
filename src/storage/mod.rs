//! Durability: the write log, snapshots of the aggregates, and recovery at start-up.
//!
//! ```text
//!  worker: Batch + WriteSource ──Log::append_source──▶ log thread: one writev + one
//!          (record = source + the body as one           fdatasync per group,
//!           LZ4 block, compressed and checksummed here) DIR/wal/<lsn>.wal
//!                                                         │ in LSN order
//!                                     Sink::apply ◀───────┤ (to the aggregator queue)
//!                                     Sink::complete ◀────┘ (Ok(lsn) / Err: 503; one wake)
//!  aggregator: SeriesStore ──snapshot::encode (under lock)──▶ DataDir::write_snapshot
//!              (temp, fsync, rename, dir fsync; two kept) ──▶ DataDir::prune_log
//!  start-up:   DataDir::open (DIR/LOCK) ──▶ DataDir::recover (newest valid snapshot + replay;
//!              a logged body is decompressed and rebuilt into its Batch by ingest::write)
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
pub mod reader;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod tail;

pub use dir::{DataDir, OpenError};
pub use file::{Fs, SegmentFile, StdFs};
pub use log::{AppendError, Closed, Completion, FsyncMode, Log, LogOptions, Sink};
pub use reader::LogReader;
pub use record::{Encoded, Lsn};
pub use recovery::{Recovery, RecoveryReport};
pub use tail::{Committed, LogTail};

/// The storage counters `/stats` exposes (`log_bytes`, `log_segments`, `log_fsyncs`,
/// `log_corrupt_records`, `snapshot_last_unix`, `recovered_points`), updated by the log
/// thread, snapshots and recovery; read with `Relaxed` loads. Declared once in the stats
/// table (`stats.rs`), so `/stats` and `/metrics` show them with the other counters.
pub type StorageStats = crate::stats::StorageCounters;
