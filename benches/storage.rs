//! Throughput of the write log: appends of 1000-point `cpu` batches from 8 threads with
//! group commit under each fsync mode (points/s acknowledged, with the groups and
//! fdatasyncs it took printed), and recovery (points/s replayed from the log).
//! Uses a temporary directory under the system temp dir, removed afterwards.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricstream::ingest::batch::{Batch, FieldRec, PointRec, Value};
use metricstream::storage::{Completion, DataDir, FsyncMode, LogOptions, Lsn, Sink};

const BATCH_POINTS: usize = 1000;
const THREADS: usize = 8;

fn cpu_batch(seed: usize) -> Batch {
    let mut b = Batch::default();
    for i in 0..BATCH_POINTS {
        let n = seed * BATCH_POINTS + i;
        let key = format!("cpu,host=host_{},region=r{}", n % 250, n % 4);
        let key = b.push_bytes(key.as_bytes());
        let fields_start = b.fields.len() as u32;
        for (name, value) in [
            ("usage_user", Value::Float((n % 997) as f64 * 0.1)),
            ("usage_system", Value::Float((n % 991) as f64 * 0.05)),
            ("uptime", Value::Int(n as i64)),
        ] {
            let name = b.push_bytes(name.as_bytes());
            b.fields.push(FieldRec { name, value });
        }
        b.points.push(PointRec {
            key,
            timestamp_ns: 1_700_000_000_000_000_000 + n as i64,
            fields_start,
            fields_len: 3,
        });
    }
    b
}

/// Counts completions; drops the batches (the aggregator is measured elsewhere).
struct Counting(mpsc::Sender<usize>);

impl Sink for Counting {
    type Ticket = ();
    fn apply(&mut self, _lsn: Lsn, _batch: Batch) {}
    fn complete(&mut self, group: &mut Vec<Completion<()>>) {
        let ok = group.iter().filter(|c| c.result.is_ok()).count();
        group.clear();
        let _ = self.0.send(ok);
    }
}

fn append(c: &mut Criterion) {
    let template = cpu_batch(0);
    let mut g = c.benchmark_group("log_append");
    g.throughput(Throughput::Elements((THREADS * BATCH_POINTS) as u64));
    g.sample_size(20);
    for (name, fsync) in [
        ("always", FsyncMode::Always),
        ("interval", FsyncMode::Interval(Duration::from_secs(1))),
    ] {
        let tmp = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
        let dir = DataDir::open(tmp.path()).expect("open");
        let rec = dir.recover(1 << 20).expect("recover");
        let (tx, rx) = mpsc::channel();
        let opts = LogOptions {
            fsync,
            ..LogOptions::default()
        };
        let log = dir.start_log(&rec, opts, Counting(tx)).expect("start");
        let (mut appends, mut groups) = (0u64, 0u64);
        let fsyncs_before = dir.stats().log_fsyncs.load(Relaxed);
        // One iteration: 8 threads each append one 1000-point write; done when all 8
        // are acknowledged.
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    std::thread::scope(|s| {
                        for _ in 0..THREADS {
                            let (log, t) = (&log, &template);
                            s.spawn(move || {
                                let batch = Batch {
                                    arena: t.arena.clone(),
                                    points: t.points.clone(),
                                    fields: t.fields.clone(),
                                };
                                log.append((), batch).expect("open");
                            });
                        }
                    });
                    let mut acked = 0;
                    while acked < THREADS {
                        acked += rx.recv_timeout(Duration::from_secs(30)).expect("acked");
                        groups += 1;
                    }
                    appends += THREADS as u64;
                }
                start.elapsed()
            })
        });
        let fsyncs = dir.stats().log_fsyncs.load(Relaxed) - fsyncs_before;
        println!(
            "log_append/{name}: {appends} appends in {groups} groups, {fsyncs} fdatasyncs, {} MiB logged",
            dir.stats().log_bytes.load(Relaxed) >> 20
        );
        drop(log);
    }
    g.finish();
}

fn recover(c: &mut Criterion) {
    const WRITES: usize = 200;
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    {
        let dir = DataDir::open(tmp.path()).expect("open");
        let rec = dir.recover(1 << 20).expect("recover");
        let (tx, rx) = mpsc::channel();
        let opts = LogOptions {
            fsync: FsyncMode::Interval(Duration::from_secs(1)),
            ..LogOptions::default()
        };
        let log = dir.start_log(&rec, opts, Counting(tx)).expect("start");
        for i in 0..WRITES {
            log.append((), cpu_batch(i)).expect("open");
        }
        let mut acked = 0;
        while acked < WRITES {
            acked += rx.recv_timeout(Duration::from_secs(30)).expect("acked");
        }
    }
    let mut g = c.benchmark_group("recover");
    g.throughput(Throughput::Elements((WRITES * BATCH_POINTS) as u64));
    g.sample_size(10);
    g.bench_function("replay_200k_points_1000_series", |b| {
        b.iter(|| {
            let dir = DataDir::open(tmp.path()).expect("open");
            let rec = dir.recover(1 << 20).expect("recover");
            assert_eq!(rec.report.points, (WRITES * BATCH_POINTS) as u64);
            rec.store.series_count()
        })
    });
    g.finish();
}

criterion_group!(benches, append, recover);
criterion_main!(benches);
