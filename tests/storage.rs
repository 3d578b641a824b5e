//! The storage engine against real temporary directories: group commit, injected disk
//! errors, recovery from torn, truncated, damaged and junk files, snapshots, the lock.
//! No server, no sockets; every wait is bounded.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metricstream::ingest::batch::{FieldRec, PointRec, Value};
use metricstream::ingest::{Batch, SeriesStore};
use metricstream::storage::{
    Completion, DataDir, Fs, FsyncMode, LogOptions, Lsn, OpenError, SegmentFile, Sink, StdFs,
    segment, snapshot,
};

const WAIT: Duration = Duration::from_secs(20);

/// One point of series `w,writer=W` with a field of every type, derived from `seq`.
fn point(b: &mut Batch, writer: u32, seq: u32) {
    let key = b.push_bytes(format!("w,writer={writer}").as_bytes());
    let fields_start = b.fields.len() as u32;
    let field = |b: &mut Batch, name: &str, value: Value| {
        let name = b.push_bytes(name.as_bytes());
        b.fields.push(FieldRec { name, value });
    };
    field(b, "f", Value::Float(f64::from(seq) * 0.25 - 3.0));
    field(b, "i", Value::Int(-i64::from(seq) * 1_000_003));
    field(b, "u", Value::UInt(u64::MAX - u64::from(seq)));
    field(b, "b", Value::Bool(seq % 3 == 0));
    let s = b.push_bytes(format!("s\"{seq}\\").as_bytes());
    field(b, "s", Value::Str(s));
    b.points.push(PointRec {
        key,
        // Out of order on purpose, so `last` depends on timestamps, not arrival.
        timestamp_ns: i64::from(seq % 7) * 1000 + i64::from(seq),
        fields_start,
        fields_len: 5,
    });
}

fn batch(writer: u32, seq: u32, points: u32) -> Batch {
    let mut b = Batch::default();
    for p in 0..points {
        point(&mut b, writer, seq * points + p);
    }
    b
}

type Dumped =
    BTreeMap<(Vec<u8>, Vec<u8>), (u64, Option<u64>, Option<u64>, Option<u64>, String, i64)>;

/// Every aggregate, bitwise, keyed by series.
fn dump(s: &SeriesStore) -> Dumped {
    let bits = |x: Option<f64>| x.map(f64::to_bits);
    let mut out = BTreeMap::new();
    for g in s.groups() {
        for f in g.fields {
            out.insert(
                (g.key.to_vec(), f.escaped_name().to_vec()),
                (
                    f.count(),
                    bits(f.sum()),
                    bits(f.min()),
                    bits(f.max()),
                    format!("{:?}", f.last()),
                    f.last_timestamp_ns(),
                ),
            );
        }
    }
    out
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("metricstream-storage-")
        .tempdir_in(std::env::temp_dir())
        .expect("temp dir")
}

/// What the log thread delivered, shared with the test.
#[derive(Default)]
struct Seen {
    applied: Vec<Lsn>,
    groups: usize,
    store: Option<SeriesStore>,
}

struct TestSink {
    seen: Arc<Mutex<Seen>>,
    done: mpsc::Sender<Completion<u64>>,
}

impl Sink for TestSink {
    type Ticket = u64;

    fn apply(&mut self, lsn: Lsn, batch: Batch) {
        let mut s = self.seen.lock().expect("seen");
        s.applied.push(lsn);
        s.store
            .get_or_insert_with(|| SeriesStore::new(1 << 20))
            .apply(&batch);
    }

    fn complete(&mut self, group: &mut Vec<Completion<u64>>) {
        self.seen.lock().expect("seen").groups += 1;
        for c in group.drain(..) {
            let _ = self.done.send(c);
        }
    }
}

fn sink() -> (TestSink, Arc<Mutex<Seen>>, mpsc::Receiver<Completion<u64>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (tx, rx) = mpsc::channel();
    (
        TestSink {
            seen: Arc::clone(&seen),
            done: tx,
        },
        seen,
        rx,
    )
}

fn opts(fsync: FsyncMode) -> LogOptions {
    LogOptions {
        fsync,
        ..LogOptions::default()
    }
}

fn wait_for(rx: &mpsc::Receiver<Completion<u64>>) -> Completion<u64> {
    rx.recv_timeout(WAIT)
        .expect("completion within the time limit")
}

/// Appends `batches` one at a time (each waits for its completion), returns the results.
fn append_each(
    log: &metricstream::storage::Log<u64>,
    rx: &mpsc::Receiver<Completion<u64>>,
    batches: impl IntoIterator<Item = (u64, Batch)>,
) -> Vec<Result<Lsn, io::ErrorKind>> {
    batches
        .into_iter()
        .map(|(t, b)| {
            log.append(t, b).expect("log open");
            let c = wait_for(rx);
            assert_eq!(c.ticket, t);
            c.result.map_err(|e| e.kind())
        })
        .collect()
}

#[test]
fn group_commit_from_many_threads() {
    let tmp = tempdir();
    let dir = DataDir::open(tmp.path()).expect("open");
    let rec = dir.recover(1 << 20).expect("recover");
    assert_eq!(rec.next_lsn, 1);
    let (sink, seen, rx) = sink();
    let log = dir
        .start_log(&rec, opts(FsyncMode::Always), sink)
        .expect("start");
    const THREADS: u32 = 8;
    const EACH: u32 = 200;
    std::thread::scope(|s| {
        for w in 0..THREADS {
            let log = &log;
            s.spawn(move || {
                for seq in 0..EACH {
                    log.append(u64::from(w) << 32 | u64::from(seq), batch(w, seq, 3))
                        .expect("open");
                }
            });
        }
    });
    let mut done = Vec::new();
    for _ in 0..THREADS * EACH {
        done.push(wait_for(&rx));
    }
    log.close();
    let total = u64::from(THREADS * EACH);
    let lsns: Vec<Lsn> = done
        .iter()
        .map(|c| *c.result.as_ref().expect("ok"))
        .collect();
    assert_eq!(
        lsns,
        (1..=total).collect::<Vec<_>>(),
        "completions in LSN order"
    );
    assert!(done.iter().all(|c| c.points == 3));
    // Each writer's appends got increasing LSNs (appends from one thread keep their order).
    for w in 0..u64::from(THREADS) {
        let mine: Vec<_> = done.iter().filter(|c| c.ticket >> 32 == w).collect();
        assert!(mine.windows(2).all(|p| p[0].ticket < p[1].ticket));
    }
    let seen = seen.lock().expect("seen");
    assert_eq!(seen.applied, lsns, "applied in LSN order, every one");
    let fsyncs = dir.stats().log_fsyncs.load(Relaxed);
    println!(
        "{total} appends, {} groups, {fsyncs} fdatasyncs",
        seen.groups
    );
    assert_eq!(fsyncs as usize, seen.groups, "one fdatasync per group");
    // Eight threads appending while the log syncs: groups form.
    assert!(fsyncs < total, "{fsyncs} fsyncs for {total} appends");
    let live = dump(seen.store.as_ref().expect("applied"));
    drop(seen);
    drop(dir);

    // Everything acknowledged is replayed, exactly.
    let dir = DataDir::open(tmp.path()).expect("reopen");
    let rec = dir.recover(1 << 20).expect("recover");
    assert_eq!(rec.next_lsn, total + 1);
    assert_eq!(rec.report.points, total * 3);
    assert_eq!(rec.report.corrupt_records, 0);
    assert_eq!(dump(&rec.store), live);
    assert_eq!(dir.stats().recovered_points.load(Relaxed), total * 3);
}

#[test]
fn interval_mode_syncs_on_its_own_and_at_close() {
    let tmp = tempdir();
    let dir = DataDir::open(tmp.path()).expect("open");
    let rec = dir.recover(100).expect("recover");
    let (sink, _seen, rx) = sink();
    let log = dir
        .start_log(
            &rec,
            opts(FsyncMode::Interval(Duration::from_millis(50))),
            sink,
        )
        .expect("start");
    let results = append_each(&log, &rx, (0..20).map(|i| (i, batch(1, i as u32, 2))));
    assert!(results.iter().all(Result::is_ok));
    // The interval sync happens without further appends (bounded wait, polled).
    let deadline = std::time::Instant::now() + WAIT;
    while dir.stats().log_fsyncs.load(Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "no interval sync");
        std::thread::sleep(Duration::from_millis(10));
    }
    log.close();
    assert!(dir.stats().log_fsyncs.load(Relaxed) < 20);
    drop(dir);
    let rec = DataDir::open(tmp.path())
        .expect("reopen")
        .recover(100)
        .expect("recover");
    assert_eq!(rec.report.points, 40);
}

/// A file layer whose writes and syncs fail on demand, like a full or failing disk. A
/// failing write first writes part of the data, as a real `ENOSPC` can.
#[derive(Clone, Default)]
struct Faults {
    fail_writes: Arc<AtomicBool>,
    fail_syncs: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
}

struct FaultyFs(Faults);

struct FaultySegment {
    inner: Box<dyn SegmentFile>,
    faults: Faults,
}

impl Fs for FaultyFs {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(FaultySegment {
            inner: StdFs.create(path)?,
            faults: self.0.clone(),
        }))
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
}

impl SegmentFile for FaultySegment {
    fn write_all_vectored(&mut self, bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        if self.faults.fail_writes.load(Relaxed) {
            self.faults.failed.fetch_add(1, Relaxed);
            let first = &bufs[0];
            let half = IoSlice::new(&first[..first.len() / 2 + 1]);
            self.inner.write_all_vectored(&mut [half])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write_all_vectored(bufs)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.faults.fail_syncs.load(Relaxed) {
            self.faults.failed.fetch_add(1, Relaxed);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

#[test]
fn disk_errors_fail_the_write_apply_nothing_and_the_log_recovers() {
    let tmp = tempdir();
    let dir = DataDir::open(tmp.path()).expect("open");
    let rec = dir.recover(100).expect("recover");
    let faults = Faults::default();
    let (sink, seen, rx) = sink();
    let log = dir
        .start_log_on(
            &rec,
            opts(FsyncMode::Always),
            FaultyFs(faults.clone()),
            sink,
        )
        .expect("start");
    let ok = append_each(&log, &rx, (0..3).map(|i| (i, batch(1, i as u32, 2))));
    assert_eq!(ok, [Ok(1), Ok(2), Ok(3)]);

    faults.fail_writes.store(true, Relaxed);
    let full = append_each(&log, &rx, (10..13).map(|i| (i, batch(2, i as u32, 2))));
    assert!(
        full.iter().all(|r| *r == Err(io::ErrorKind::StorageFull)),
        "{full:?}"
    );
    faults.fail_writes.store(false, Relaxed);
    faults.fail_syncs.store(true, Relaxed);
    let eio = append_each(&log, &rx, (20..22).map(|i| (i, batch(3, i as u32, 2))));
    assert!(eio.iter().all(Result::is_err), "{eio:?}");
    faults.fail_syncs.store(false, Relaxed);
    assert_eq!(faults.failed.load(Relaxed), 5);

    // Space is back: writes succeed again, numbered straight after the last good one.
    let again = append_each(&log, &rx, (30..32).map(|i| (i, batch(4, i as u32, 2))));
    assert_eq!(again, [Ok(4), Ok(5)]);
    log.close();
    let seen = seen.lock().expect("seen");
    assert_eq!(
        seen.applied,
        [1, 2, 3, 4, 5],
        "nothing of a failed write applied"
    );
    let live = dump(seen.store.as_ref().expect("applied"));
    assert!(
        live.keys()
            .all(|(k, _)| k != b"w,writer=2" && k != b"w,writer=3")
    );
    drop(seen);
    drop(dir);

    // The half-written records were cut off: no corruption, no torn tail, exact replay.
    let rec = DataDir::open(tmp.path())
        .expect("reopen")
        .recover(100)
        .expect("recover");
    assert_eq!((rec.report.corrupt_records, rec.report.torn_bytes), (0, 0));
    assert_eq!(rec.report.records, 5);
    assert_eq!(dump(&rec.store), live);
}

/// Writes `n` single-append groups (one record each) and returns the data dir path.
fn log_with(tmp: &Path, n: u64, segment_bytes: u64) -> SeriesStore {
    let dir = DataDir::open(tmp).expect("open");
    let rec = dir.recover(1000).expect("recover");
    let (sink, seen, rx) = sink();
    let log = dir
        .start_log(
            &rec,
            LogOptions {
                fsync: FsyncMode::Always,
                segment_bytes,
            },
            sink,
        )
        .expect("start");
    let res = append_each(
        &log,
        &rx,
        (0..n).map(|i| (i, batch((i % 5) as u32, i as u32, 2))),
    );
    assert!(res.iter().all(Result::is_ok));
    log.close();
    let mut s = seen.lock().expect("seen");
    s.store.take().unwrap_or_else(|| SeriesStore::new(1000))
}

fn segments(tmp: &Path) -> Vec<PathBuf> {
    segment::list(&tmp.join("wal"))
        .expect("list")
        .into_iter()
        .map(|s| s.path)
        .collect()
}

/// Byte offsets of every record in a segment.
fn record_offsets(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).expect("read");
    let mut offsets = Vec::new();
    segment::scan(&bytes, 0, |off, _| offsets.push(off));
    offsets
}

/// Expected aggregates when only the records numbered in `lsns` (1-based) were applied.
fn expected(lsns: impl IntoIterator<Item = u64>) -> Dumped {
    let mut s = SeriesStore::new(1000);
    for l in lsns {
        let i = l - 1;
        s.apply(&batch((i % 5) as u32, i as u32, 2));
    }
    dump(&s)
}

#[test]
fn torn_and_truncated_tails_are_cut_with_a_warning() {
    for cut_inside_header in [false, true] {
        let tmp = tempdir();
        log_with(tmp.path(), 10, u64::MAX);
        let seg = &segments(tmp.path())[0];
        let offsets = record_offsets(seg);
        let len = fs::metadata(seg).expect("meta").len();
        let cut = if cut_inside_header {
            offsets[9] + 5
        } else {
            len - 3
        };
        fs::OpenOptions::new()
            .write(true)
            .open(seg)
            .and_then(|f| f.set_len(cut))
            .expect("truncate");
        let dir = DataDir::open(tmp.path()).expect("reopen");
        let rec = dir.recover(1000).expect("recover");
        assert_eq!(rec.report.records, 9);
        assert_eq!(rec.report.torn_bytes, cut - offsets[9]);
        assert_eq!(
            rec.report.corrupt_records, 0,
            "a torn tail is not corruption"
        );
        assert_eq!(dump(&rec.store), expected(1..=9));
        assert_eq!(rec.next_lsn, 10, "the torn record's number is reused");
        assert_eq!(
            fs::metadata(seg).expect("meta").len(),
            offsets[9],
            "tail cut"
        );
        // Appending after the cut, then recovering again: clean.
        let (sink, _seen, rx) = sink();
        let log = dir
            .start_log(&rec, opts(FsyncMode::Always), sink)
            .expect("start");
        assert_eq!(append_each(&log, &rx, [(9, batch(4, 9, 2))]), [Ok(10)]);
        log.close();
        drop(dir);
        let rec = DataDir::open(tmp.path())
            .expect("reopen")
            .recover(1000)
            .expect("recover");
        assert_eq!((rec.report.records, rec.report.torn_bytes), (10, 0));
        assert_eq!(dump(&rec.store), expected(1..=10));
    }
}

#[test]
fn flipped_bytes_in_the_middle_are_skipped_and_counted() {
    let tmp = tempdir();
    // Small segments: the damage sits in the middle of the first one, not the last.
    log_with(tmp.path(), 12, 1000);
    let segs = segments(tmp.path());
    assert!(segs.len() > 2, "{segs:?}");
    let offsets = record_offsets(&segs[0]);
    assert!(offsets.len() >= 3);
    // LSN of the last record of the second segment.
    let second_last = (offsets.len() + record_offsets(&segs[1]).len()) as u64;
    let mut bytes = fs::read(&segs[0]).expect("read");
    bytes[offsets[1] as usize + 30] ^= 0xff;
    fs::write(&segs[0], &bytes).expect("write");
    // And damage at the very end of a segment that is not the last.
    let mut second = fs::read(&segs[1]).expect("read");
    let n = second.len();
    second[n - 1] ^= 0x01;
    fs::write(&segs[1], &second).expect("write");

    let dir = DataDir::open(tmp.path()).expect("reopen");
    let rec = dir.recover(1000).expect("recover");
    assert_eq!(rec.report.corrupt_records, 2);
    assert_eq!(dir.stats().log_corrupt_records.load(Relaxed), 2);
    assert_eq!(rec.report.torn_bytes, 0);
    assert_eq!(rec.report.records, 10);
    assert_eq!(
        dump(&rec.store),
        expected((1..=12).filter(|&l| l != 2 && l != second_last))
    );
    assert_eq!(rec.next_lsn, 13);
}

#[test]
fn junk_and_empty_files_are_ignored() {
    let tmp = tempdir();
    let live = log_with(tmp.path(), 5, u64::MAX);
    let wal = tmp.path().join("wal");
    let snaps = tmp.path().join("snapshots");
    fs::write(wal.join("notes.txt"), b"hello").expect("junk");
    fs::write(wal.join("00000000000000000001.wal.bak"), b"junk").expect("junk");
    fs::create_dir(wal.join("00000000000000000002.wal")).expect("a directory with a segment name");
    fs::write(wal.join("00000000000000000003.wal"), b"").expect("empty segment");
    fs::write(snaps.join("snapshot-junk.snap"), b"x").expect("junk");
    fs::write(snaps.join("README"), b"").expect("junk");
    fs::write(snaps.join(snapshot::name(3) + ".tmp"), b"half a snapshot").expect("tmp");
    let dir = DataDir::open(tmp.path()).expect("reopen");
    let rec = dir.recover(1000).expect("recover");
    assert_eq!(rec.report.records, 5);
    assert_eq!(rec.report.corrupt_records, 0);
    assert_eq!(dump(&rec.store), dump(&live));
    assert_eq!(rec.next_lsn, 6);
    assert!(
        !snaps.join(snapshot::name(3) + ".tmp").exists(),
        "leftover temp removed"
    );

    // A directory of nothing but junk: an empty start, never a panic.
    let junk = tempdir();
    fs::create_dir_all(junk.path().join("wal")).expect("mkdir");
    fs::create_dir_all(junk.path().join("snapshots")).expect("mkdir");
    let noise: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(junk.path().join("wal").join(segment::name(1)), &noise).expect("noise");
    fs::write(
        junk.path().join("wal").join(segment::name(50)),
        &noise[..17],
    )
    .expect("noise");
    fs::write(
        junk.path().join("snapshots").join(snapshot::name(9)),
        &noise,
    )
    .expect("noise");
    let dir = DataDir::open(junk.path()).expect("open");
    let rec = dir.recover(1000).expect("recover");
    assert_eq!(rec.store.series_count(), 0);
    assert_eq!(rec.report.snapshots_rejected, 1);
    assert!(
        rec.next_lsn >= 50,
        "never numbered below an existing segment"
    );
}

#[test]
fn snapshot_plus_replay_equals_everything_applied_in_order() {
    let tmp = tempdir();
    let dir = DataDir::open(tmp.path()).expect("open");
    let rec = dir.recover(1000).expect("recover");
    let (sink, seen, rx) = sink();
    let log = dir
        .start_log(
            &rec,
            LogOptions {
                fsync: FsyncMode::Always,
                segment_bytes: 2000,
            },
            sink,
        )
        .expect("start");
    let mut next = 0u64;
    let mut append = |n: u64| {
        let r = append_each(
            &log,
            &rx,
            (next..next + n).map(|i| (i, batch((i % 5) as u32, i as u32, 2))),
        );
        next += n;
        assert!(r.iter().all(Result::is_ok));
    };
    let snap_at = |dir: &DataDir| {
        let s = seen.lock().expect("seen");
        let lsn = *s.applied.last().expect("applied");
        let bytes = DataDir::encode_snapshot(s.store.as_ref().expect("store"), lsn);
        drop(s);
        dir.write_snapshot(lsn, &bytes, None).expect("snapshot")
    };
    append(20);
    let first = snap_at(&dir);
    assert_eq!(first.kept, [20]);
    append(20);
    let second = snap_at(&dir);
    assert_eq!(second.kept, [40, 20]);
    let segs_before = segments(tmp.path()).len();
    append(20);
    let third = snap_at(&dir);
    assert_eq!(third.kept, [60, 40], "only two snapshots kept");
    assert_eq!(
        snapshot::list(&tmp.path().join("snapshots"))
            .expect("list")
            .len(),
        2
    );
    // Segments wholly at or below LSN 40 (the older kept snapshot) are gone.
    let segs_after = segment::list(&tmp.path().join("wal")).expect("list");
    assert!(
        segs_after.len() < segs_before + 3,
        "{} vs {segs_before}",
        segs_after.len()
    );
    assert!(segs_after.windows(2).all(|p| p[1].first - 1 > 40));
    append(15);
    log.close();
    let live = dump(seen.lock().expect("seen").store.as_ref().expect("store"));
    drop(dir);

    let dir = DataDir::open(tmp.path()).expect("reopen");
    let rec = dir.recover(1000).expect("recover");
    assert_eq!(rec.report.snapshot.as_ref().map(|s| s.1), Some(60));
    assert_eq!(rec.report.records, 15);
    assert_eq!(
        dump(&rec.store),
        live,
        "snapshot + replay == everything in order"
    );
    assert_eq!(dump(&rec.store), expected(1..=75));
    assert_eq!(rec.applied_lsn, 75);
    assert!(dir.stats().snapshot_last_unix.load(Relaxed) > 0);
    drop(dir);

    // The newest snapshot damaged: the older one and a longer replay give the same.
    let newest = tmp.path().join("snapshots").join(snapshot::name(60));
    let mut bytes = fs::read(&newest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&newest, &bytes).expect("write");
    let dir = DataDir::open(tmp.path()).expect("reopen");
    let rec = dir.recover(1000).expect("recover");
    assert_eq!(rec.report.snapshots_rejected, 1);
    assert_eq!(rec.report.snapshot.as_ref().map(|s| s.1), Some(40));
    assert_eq!(rec.report.records, 35);
    assert_eq!(dump(&rec.store), live);
}

#[test]
fn prune_keeps_what_a_cursor_still_needs() {
    let tmp = tempdir();
    log_with(tmp.path(), 30, 300);
    let dir = DataDir::open(tmp.path()).expect("open");
    let firsts = |p: &Path| -> Vec<Lsn> {
        segment::list(&p.join("wal"))
            .expect("list")
            .iter()
            .map(|s| s.first)
            .collect()
    };
    let before = firsts(tmp.path());
    assert!(before.len() > 4, "{before:?}");
    // A cursor still needs LSN 8: the segment holding it stays, though a snapshot covers 30.
    dir.prune_log(30, Some(8)).expect("prune");
    let after = firsts(tmp.path());
    assert!(after[0] <= 8 && after.len() < before.len(), "{after:?}");
    dir.prune_log(30, None).expect("prune");
    assert_eq!(
        firsts(tmp.path()),
        [*before.last().expect("last")],
        "the newest segment stays"
    );
    assert_eq!(dir.stats().log_segments.load(Relaxed), 1);
}

#[test]
fn a_second_open_names_the_directory_and_holder() {
    let tmp = tempdir();
    let first = DataDir::open(tmp.path()).expect("first");
    let err = DataDir::open(tmp.path()).expect_err("second open must fail");
    assert!(
        matches!(err, OpenError::Locked { holder: Some(pid), .. } if pid == std::process::id())
    );
    let msg = err.to_string();
    assert!(msg.contains(&tmp.path().display().to_string()), "{msg}");
    assert!(msg.contains(&std::process::id().to_string()), "{msg}");
    drop(first);
    DataDir::open(tmp.path()).expect("free again once the holder is gone");
}

/// A write logged as its source and decoded body (record kind 3, the body compressed)
/// replays to exactly the aggregates its batch gave when it was applied live (count, sum,
/// min, max, last per series), with `db` or none, every precision, gzip bodies and lines
/// without a timestamp (the receive time), in a log that also holds kind-1 and kind-2
/// records as older versions wrote.
#[test]
fn logged_write_bodies_replay_to_the_same_aggregates() {
    use metricstream::ingest::line_protocol::Precision;
    use metricstream::ingest::write::{self, IngestScratch, WriteParams, WriteSource};
    use std::io::Write;

    let gzip = |body: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body).expect("gzip");
        enc.finish().expect("gzip")
    };
    let tmp = tempdir();
    let dir = DataDir::open(tmp.path()).expect("open");
    let rec = dir.recover(1 << 20).expect("recover");
    let (sink, seen, rx) = sink();
    let log = dir
        .start_log(&rec, opts(FsyncMode::Always), sink)
        .expect("start");
    let stats = metricstream::stats::Stats::default();
    let mut scratch = IngestScratch::default();
    let precisions = [
        Precision::Ns,
        Precision::Us,
        Precision::Ms,
        Precision::S,
        Precision::M,
        Precision::H,
    ];
    let mut points = 0u64;
    let mut ticket = 0u64;
    let mut body_bytes = 0u64;
    for round in 0..3u64 {
        for db in [None, Some("tele graf")] {
            for precision in precisions {
                for gz in [false, true] {
                    ticket += 1;
                    // Timestamps out of order, some lines without one; strings, every type.
                    let body = format!(
                        "cpu,zone=z{round},host=h u={ticket}.5,i=-{ticket}i,n={ticket}u,b=t,s=\"x\\\"{ticket}\" {}\n\
                         cpu,host=h u=-{ticket}\n\
                         # comment\n\
                         mem,db=own,b=1,a=2 free={ticket}i {}\n",
                        (ticket * 7919) % 1000,
                        1000 - ticket,
                    );
                    body_bytes += body.len() as u64;
                    let sent = if gz {
                        gzip(body.as_bytes())
                    } else {
                        body.clone().into_bytes()
                    };
                    let params = WriteParams {
                        db: db.map(str::to_string),
                        precision,
                    };
                    let now_ns = 1_700_000_000_000_000_000 + ticket as i64;
                    let parsed =
                        write::parse(&stats, &mut scratch, &sent, gz, &params, now_ns, 1 << 20)
                            .expect("valid");
                    points += parsed.batch.len() as u64;
                    let source = WriteSource {
                        params,
                        now_ns,
                        body_len: parsed.body_len,
                    };
                    if ticket % 5 == 0 {
                        // An older version's record: the batch itself.
                        log.append(ticket, parsed.batch).expect("open");
                    } else if ticket % 5 == 1 {
                        // An older version's record: the body uncompressed.
                        log.append_body(ticket, parsed.batch, &source)
                            .expect("open");
                    } else {
                        log.append_source(ticket, parsed.batch, &source)
                            .expect("open");
                    }
                    assert!(wait_for(&rx).result.is_ok());
                }
            }
        }
    }
    log.close();
    let log_bytes = dir.stats().log_bytes.load(Relaxed);
    let live = dump(seen.lock().expect("seen").store.as_ref().expect("applied"));
    drop(dir);
    let rec = DataDir::open(tmp.path())
        .expect("reopen")
        .recover(1 << 20)
        .expect("recover");
    assert_eq!(rec.report.corrupt_records, 0);
    assert_eq!(rec.report.records, ticket);
    assert_eq!(rec.report.points, points);
    assert_eq!(dump(&rec.store), live);
    println!("{ticket} writes, {body_bytes} body bytes, {log_bytes} log bytes");
}
