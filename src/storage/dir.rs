//! The data directory: `DIR/LOCK`, `DIR/wal/`, `DIR/snapshots/`, and the one handle that
//! owns them while the server runs.
//!
//! [`DataDir::open`] creates the layout and takes an exclusive `flock` on `DIR/LOCK`
//! (writing its pid there), so a second server on the same directory is refused with an
//! error naming the directory and the holder. The lock is released by the kernel when
//! the process exits, however it exits, so a `kill -9` never leaves a stale lock. Every
//! other operation on the directory goes through this handle.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::ingest::SeriesStore;

use super::StorageStats;
use super::file::{Fs, StdFs, sync_dir};
use super::log::{Log, LogOptions, Sink};
use super::record::Lsn;
use super::recovery::{self, Recovery};
use super::segment;
use super::snapshot::{self, Persisted};
use crate::stats::Stats;

/// Why the data directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another process holds `DIR/LOCK`.
    Locked { dir: PathBuf, holder: Option<u32> },
    /// Creating or opening the layout failed.
    Io {
        dir: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Locked {
                dir,
                holder: Some(pid),
            } => write!(
                f,
                "data directory {} is in use by another metricstream (pid {pid})",
                dir.display()
            ),
            OpenError::Locked { dir, holder: None } => write!(
                f,
                "data directory {} is in use by another metricstream (pid unknown)",
                dir.display()
            ),
            OpenError::Io { dir, what, source } => {
                write!(f, "data directory {}: {what}: {source}", dir.display())
            }
        }
    }
}

impl std::error::Error for OpenError {}

/// The locked data directory.
pub struct DataDir {
    root: PathBuf,
    wal: PathBuf,
    snapshots: PathBuf,
    /// Held for the life of the handle: the `flock` lives as long as this descriptor.
    _lock: File,
    /// The server's counters; this handle updates their `storage` group.
    stats: Arc<Stats>,
}

impl fmt::Debug for DataDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataDir").field("root", &self.root).finish()
    }
}

impl DataDir {
    /// Creates `root`, `root/wal` and `root/snapshots` if missing and locks `root/LOCK`.
    pub fn open(root: &Path) -> Result<DataDir, OpenError> {
        DataDir::open_with_stats(root, Arc::new(Stats::default()))
    }

    /// [`DataDir::open`], counting in the server's `stats` (its `storage` group).
    pub fn open_with_stats(root: &Path, stats: Arc<Stats>) -> Result<DataDir, OpenError> {
        let io_err = |what| {
            let dir = root.to_path_buf();
            move |source| OpenError::Io { dir, what, source }
        };
        fs::create_dir_all(root).map_err(io_err("cannot create it"))?;
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join("LOCK"))
            .map_err(io_err("cannot open LOCK"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                let mut text = String::new();
                let holder = lock
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(OpenError::Locked {
                    dir: root.to_path_buf(),
                    holder,
                });
            }
            return Err(io_err("cannot lock LOCK")(err));
        }
        let pid = format!("{}\n", std::process::id());
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| lock.write_all(pid.as_bytes()))
            .map_err(io_err("cannot write LOCK"))?;
        let wal = root.join("wal");
        let snapshots = root.join("snapshots");
        for d in [&wal, &snapshots] {
            fs::create_dir_all(d).map_err(io_err("cannot create a subdirectory"))?;
        }
        // The new directory entries must survive a power loss before anything refers to them.
        sync_dir(root).map_err(io_err("cannot sync it"))?;
        Ok(DataDir {
            root: root.to_path_buf(),
            wal,
            snapshots,
            _lock: lock,
            stats,
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn wal_dir(&self) -> &Path {
        &self.wal
    }

    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshots
    }

    /// The counters for `/stats`.
    pub fn stats(&self) -> &StorageStats {
        &self.stats.storage
    }

    /// Loads the newest valid snapshot and replays the log after it (see [`recovery`]).
    pub fn recover(&self, max_series: usize) -> io::Result<Recovery> {
        recovery::recover(
            self.wal_dir(),
            self.snapshot_dir(),
            self.stats(),
            max_series,
        )
    }

    /// Starts the log thread after [`DataDir::recover`], delivering to `sink`.
    pub fn start_log<S: Sink>(
        &self,
        recovered: &Recovery,
        opts: LogOptions,
        sink: S,
    ) -> io::Result<Log<S::Ticket>> {
        self.start_log_on(recovered, opts, StdFs, sink)
    }

    /// [`DataDir::start_log`] over another file layer (tests inject errors with it).
    pub fn start_log_on<S: Sink, F: Fs>(
        &self,
        recovered: &Recovery,
        opts: LogOptions,
        fs: F,
        sink: S,
    ) -> io::Result<Log<S::Ticket>> {
        Log::start(
            self.wal.clone(),
            recovered.next_lsn,
            opts,
            fs,
            sink,
            Arc::clone(&self.stats),
        )
    }

    /// Encodes `store` as a snapshot covering the log up to `lsn` (the last record applied
    /// to it). Call with the store locked: it copies memory and touches no file.
    pub fn encode_snapshot(store: &SeriesStore, lsn: Lsn) -> Vec<u8> {
        snapshot::encode(store, lsn, unix_now())
    }

    /// Writes an encoded snapshot durably, keeps the two newest, and deletes the log
    /// segments the older kept one covers (and that `still_needed` allows, see
    /// [`DataDir::prune_log`]).
    pub fn write_snapshot(
        &self,
        lsn: Lsn,
        bytes: &[u8],
        still_needed: Option<Lsn>,
    ) -> io::Result<Persisted> {
        let persisted = snapshot::persist(&self.snapshots, lsn, bytes)?;
        self.stats
            .storage
            .snapshot_last_unix
            .store(unix_now(), Relaxed);
        if persisted.kept.len() >= snapshot::KEEP
            && let Some(&older) = persisted.kept.last()
        {
            self.prune_log(older, still_needed)?;
        }
        Ok(persisted)
    }

    /// Deletes every segment whose records all have LSNs at or below `covered` and below
    /// `still_needed` (the oldest record a forwarding cursor has not sent). The newest
    /// segment is never deleted: the log thread may be writing it. Returns how many went.
    pub fn prune_log(&self, covered: Lsn, still_needed: Option<Lsn>) -> io::Result<usize> {
        let limit = match still_needed {
            Some(n) => covered.min(n.saturating_sub(1)),
            None => covered,
        };
        let segments = segment::list(&self.wal)?;
        let mut removed = 0;
        for pair in segments.windows(2) {
            // Every record of pair[0] is below the first LSN of pair[1].
            if pair[1].first.saturating_sub(1) <= limit {
                fs::remove_file(&pair[0].path)?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.wal)?;
        }
        self.stats
            .storage
            .log_segments
            .store((segments.len() - removed) as u64, Relaxed);
        Ok(removed)
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
