//! Start-up: the newest valid snapshot, then every log record after it, in LSN order.
//!
//! The algorithm (also in `docs/storage.md`): list `DIR/snapshots/` newest first and take
//! the first that reads back whole (a damaged one is renamed `*.corrupt` and reported);
//! list `DIR/wal/` in LSN order, skip segments whose records the snapshot already covers,
//! and scan the rest. Damage followed by a good record is corruption in the middle: an
//! `error` naming file, offset and bytes, counted in `log_corrupt_records`, and reading
//! goes on after it. Damage running to the end of the *last* segment is a torn tail (the
//! write a crash interrupted, never acknowledged under `--fsync always`): a `warn` naming
//! the same, and the file is cut back so the next run does not see it again. Nothing found
//! in the directory panics or stops start-up; only an unreadable directory is an error.
//! A write logged as its source and body (kind 2, or kind 3 with the body LZ4-compressed)
//! is rebuilt into the batch the worker built (`ingest::write::rebuild`, `rebuild_lz4`,
//! which refuses a block that does not give exactly its declared size); one logged as its batch (kind 1, older logs) is
//! decoded. Replay keeps each series' last-write time for `--series-ttl`: the logged
//! receive time of kinds 2 and 3; kind 1 does not hold one, so its series count as
//! written at replay time (they live one more TTL). A delete (kind 4) removes the matching
//! series at its place in the log. The caller runs one expiry pass over the result before
//! the server listens.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::ingest::lifecycle::Selector;
use crate::ingest::write::{self, IngestScratch};
use crate::ingest::{Batch, SeriesStore};

use super::StorageStats;
use super::record::{Kind, Lsn, Record};
use super::segment::{self, Damage};
use super::snapshot;

/// The state recovered at start-up.
pub struct Recovery {
    /// The aggregates: snapshot plus replay.
    pub store: SeriesStore,
    /// LSN of the last record the store includes (0 if none): the next snapshot's LSN if
    /// nothing else is applied first.
    pub applied_lsn: Lsn,
    /// The LSN the log continues with: above every record and segment name found.
    pub next_lsn: Lsn,
    pub report: RecoveryReport,
}

/// What recovery did, for the start-up info line.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// The snapshot started from, and the LSN it covers.
    pub snapshot: Option<(PathBuf, Lsn)>,
    /// Snapshots newer than that one that could not be read.
    pub snapshots_rejected: usize,
    /// Series (series key + field) held after recovery.
    pub series: usize,
    /// Points replayed from the log.
    pub points: u64,
    /// Records replayed from the log.
    pub records: u64,
    /// Segments read.
    pub segments: usize,
    /// Damaged stretches and undecodable records skipped (not counting a torn tail).
    pub corrupt_records: u64,
    /// Series removed by delete records replayed.
    pub series_deleted: u64,
    /// Intact records of a kind this version does not know, skipped.
    pub unknown_records: u64,
    /// Bytes cut from the end of the log.
    pub torn_bytes: u64,
    pub seconds: f64,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "recovered {} series", self.series)?;
        match &self.snapshot {
            Some((path, lsn)) => write!(f, " from snapshot {} (LSN {lsn})", path.display())?,
            None => f.write_str(" (no snapshot)")?,
        }
        write!(
            f,
            ", replayed {} points from {} records in {} segments in {:.3} s",
            self.points, self.records, self.segments, self.seconds
        )?;
        if self.corrupt_records > 0 || self.torn_bytes > 0 || self.snapshots_rejected > 0 {
            write!(
                f,
                " ({} corrupt records skipped, {} torn bytes cut, {} snapshots rejected)",
                self.corrupt_records, self.torn_bytes, self.snapshots_rejected
            )?;
        }
        Ok(())
    }
}

/// What [`replay`] found.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayOutcome {
    /// Highest LSN seen or implied by a segment name (0 if the log is empty).
    pub last_lsn: Lsn,
    pub segments_read: usize,
    pub corrupt_records: u64,
    pub torn_bytes: u64,
}

/// Loads the newest valid snapshot and replays the log after it into the store.
pub fn recover(
    wal_dir: &Path,
    snapshot_dir: &Path,
    stats: &StorageStats,
    max_series: usize,
) -> io::Result<Recovery> {
    let started = Instant::now();
    snapshot::remove_temp_files(snapshot_dir);
    let loaded = snapshot::load_newest(snapshot_dir, max_series)?;
    let mut report = RecoveryReport {
        snapshots_rejected: loaded.rejected.len(),
        ..RecoveryReport::default()
    };
    for (path, why) in &loaded.rejected {
        log::error!(
            "snapshot {} is unusable ({why}); falling back to an older one and a longer replay",
            path.display()
        );
    }
    let (mut store, snap_lsn) = match loaded.snapshot {
        Some((path, d)) => {
            stats.snapshot_last_unix.store(d.created_unix, Relaxed);
            report.snapshot = Some((path, d.lsn));
            (d.store, d.lsn)
        }
        None => (SeriesStore::new(max_series), 0),
    };
    let mut applied_lsn = snap_lsn;
    let mut scratch = IngestScratch::default();
    let replay_s = crate::ingest::lifecycle::unix_s(std::time::SystemTime::now());
    let outcome = replay(wal_dir, snap_lsn, true, |rec| {
        match Kind::from_byte(rec.kind) {
            Some(Kind::Write) => {
                let mut batch = Batch::decode(rec.payload).map_err(|e| e.to_string())?;
                batch.received_s = replay_s;
                report.points += batch.len() as u64;
                store.apply(&batch);
            }
            Some(Kind::WriteBody) => {
                let batch = write::rebuild(&mut scratch, rec.payload)?;
                report.points += batch.len() as u64;
                store.apply(&batch);
            }
            Some(Kind::WriteBodyLz4) => {
                let batch = write::rebuild_lz4(&mut scratch, rec.payload)?;
                report.points += batch.len() as u64;
                store.apply(&batch);
            }
            Some(Kind::Delete) => {
                let selector = Selector::decode(rec.payload)?;
                report.series_deleted += store.delete(&selector);
            }
            None => {
                report.unknown_records += 1;
                log::error!(
                    "log record {} has kind {} unknown to this version; skipped",
                    rec.lsn,
                    rec.kind
                );
            }
        }
        report.records += 1;
        applied_lsn = rec.lsn;
        Ok(())
    })?;
    report.segments = outcome.segments_read;
    report.corrupt_records = outcome.corrupt_records;
    report.torn_bytes = outcome.torn_bytes;
    report.series = store.series_count();
    report.seconds = started.elapsed().as_secs_f64();
    stats
        .log_corrupt_records
        .fetch_add(outcome.corrupt_records, Relaxed);
    stats.recovered_points.fetch_add(report.points, Relaxed);
    stats.log_segments.store(
        segment::list(wal_dir).map_or(0, |l| l.len() as u64),
        Relaxed,
    );
    Ok(Recovery {
        store,
        applied_lsn,
        next_lsn: outcome.last_lsn.max(snap_lsn) + 1,
        report,
    })
}

/// Reads every intact record with an LSN above `after`, in order, handing it to `each`
/// (an `Err` from `each` counts the record as corrupt, logged with its place). With
/// `cut_torn_tail`, a torn tail of the last segment is truncated away (and synced).
pub fn replay(
    wal_dir: &Path,
    after: Lsn,
    cut_torn_tail: bool,
    mut each: impl FnMut(&Record<'_>) -> Result<(), String>,
) -> io::Result<ReplayOutcome> {
    let segments = segment::list(wal_dir)?;
    let mut out = ReplayOutcome::default();
    for (i, seg) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        // Records are numbered upwards from the name: one number per record at least.
        out.last_lsn = out.last_lsn.max(seg.first.saturating_sub(1));
        if let Some(next) = segments.get(i + 1)
            && next.first.saturating_sub(1) <= after
        {
            continue; // wholly covered by the snapshot
        }
        let bytes = match std::fs::read(&seg.path) {
            Ok(b) => b,
            Err(e) => {
                log::error!(
                    "cannot read log segment {}: {e}; skipped",
                    seg.path.display()
                );
                out.corrupt_records += 1;
                continue;
            }
        };
        out.segments_read += 1;
        let mut failed: Vec<(u64, Lsn, String)> = Vec::new();
        let scan = segment::scan(&bytes, out.last_lsn, |offset, rec| {
            if rec.lsn > after
                && let Err(why) = each(&rec)
            {
                failed.push((offset, rec.lsn, why));
            }
        });
        out.last_lsn = scan.last_lsn;
        for (offset, lsn, why) in failed {
            out.corrupt_records += 1;
            log::error!(
                "log segment {} offset {offset}: record {lsn} cannot be decoded ({why}); skipped",
                seg.path.display()
            );
        }
        for Damage { offset, bytes } in scan.skipped {
            out.corrupt_records += 1;
            log::error!(
                "log segment {} offset {offset}: {bytes} corrupt bytes skipped",
                seg.path.display()
            );
        }
        let Some(Damage { offset, bytes }) = scan.tail else {
            continue;
        };
        if !is_last {
            out.corrupt_records += 1;
            log::error!(
                "log segment {} offset {offset}: {bytes} corrupt bytes at the end of a segment that is not the last; skipped",
                seg.path.display()
            );
            continue;
        }
        out.torn_bytes += bytes;
        log::warn!(
            "log segment {} offset {offset}: torn tail of {bytes} bytes dropped (a write interrupted by a crash)",
            seg.path.display()
        );
        if cut_torn_tail {
            let cut = OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .and_then(|f| f.set_len(scan.good_end).and_then(|()| f.sync_all()));
            if let Err(e) = cut {
                log::error!("cannot cut the torn tail of {}: {e}", seg.path.display());
            }
        }
    }
    Ok(out)
}
