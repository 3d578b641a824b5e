//! Throughput of the write log: 8 and 64 writers in a closed loop, each appending
//! 1000-point `cpu` writes and waiting for the acknowledgement, under each fsync mode
//! (points/s acknowledged; the groups and fdatasyncs it took are printed), and recovery (points/s replayed from the log).
//! Uses a temporary directory under the system temp dir, removed afterwards.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricstream::ingest::batch::{Batch, FieldRec, PointRec, Value};
use metricstream::storage::{Completion, DataDir, FsyncMode, LogOptions, Lsn, Sink};

const BATCH_POINTS: usize = 1000;

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

/// Hands each completion back to the writer that appended it (ticket = writer index),
/// like the reactor answering the connection that sent the write.
struct PerWriter {
    writers: Vec<mpsc::Sender<()>>,
    groups: Arc<AtomicU64>,
}

impl Sink for PerWriter {
    type Ticket = usize;
    fn apply(&mut self, _lsn: Lsn, _batch: Batch) {}
    fn complete(&mut self, group: &mut Vec<Completion<usize>>) {
        self.groups.fetch_add(1, Relaxed);
        for c in group.drain(..) {
            assert!(c.result.is_ok(), "append failed: {:?}", c.result);
            let _ = self.writers[c.ticket].send(());
        }
    }
}

/// `writers` threads, each appending a 1000-point write and waiting for its
/// acknowledgement before the next (a closed loop, like that many connections). One
/// iteration is one write per writer.
fn append(c: &mut Criterion) {
    let template = cpu_batch(0);
    let mut g = c.benchmark_group("log_append");
    g.sample_size(10);
    for writers in [8usize, 64] {
        g.throughput(Throughput::Elements((writers * BATCH_POINTS) as u64));
        for (name, fsync) in [
            ("always", FsyncMode::Always),
            ("interval", FsyncMode::Interval(Duration::from_secs(1))),
        ] {
            let tmp = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
            let dir = DataDir::open(tmp.path()).expect("open");
            let rec = dir.recover(1 << 20).expect("recover");
            let groups = Arc::new(AtomicU64::new(0));
            let (txs, rxs): (Vec<_>, Vec<_>) = (0..writers).map(|_| mpsc::channel()).unzip();
            let sink = PerWriter {
                writers: txs,
                groups: Arc::clone(&groups),
            };
            let opts = LogOptions {
                fsync,
                ..LogOptions::default()
            };
            let log = dir.start_log(&rec, opts, sink).expect("start");
            let rxs: Vec<Mutex<mpsc::Receiver<()>>> = rxs.into_iter().map(Mutex::new).collect();
            let mut appends = 0u64;
            g.bench_function(format!("{name}/{writers}_writers"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for (w, rx) in rxs.iter().enumerate() {
                            let (log, t) = (&log, &template);
                            s.spawn(move || {
                                let rx = rx.lock().expect("rx");
                                for _ in 0..iters {
                                    let batch = Batch {
                                        arena: t.arena.clone(),
                                        points: t.points.clone(),
                                        fields: t.fields.clone(),
                                    };
                                    log.append(w, batch).expect("open");
                                    rx.recv_timeout(Duration::from_secs(30)).expect("acked");
                                }
                            });
                        }
                    });
                    appends += iters * writers as u64;
                    start.elapsed()
                })
            });
            let st = dir.stats();
            println!(
                "log_append/{name}/{writers}_writers: {appends} appends in {} groups, {} fdatasyncs, {} MiB logged",
                groups.load(Relaxed),
                st.log_fsyncs.load(Relaxed),
                st.log_bytes.load(Relaxed) >> 20
            );
            drop(log);
        }
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
