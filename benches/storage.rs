//! Throughput of the write log: 8 and 64 writers in a closed loop, each appending
//! 1000-point `cpu` writes and waiting for the acknowledgement, under each fsync mode
//! (points/s acknowledged; the groups and fdatasyncs it took are printed), recovery (points/s replayed from the log),
//! and the LZ4 compression of logged bodies (points/s compressed and decompressed, and the
//! ratio, printed, for the benchmark's `cpu` bodies and a Telegraf-like mix).
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
                                        received_s: t.received_s,
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

/// A `metricstream-bench write` body: `cpu` lines over 100 hosts x 4 regions, values with
/// 2 and 3 decimals, timestamps 1 ms apart.
fn bench_body(lines: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    let regions = ["us-east", "us-west", "eu-central", "ap-south"];
    let mut out = String::new();
    for n in 0..lines {
        out += &format!(
            "cpu,host=host_{},region={} usage_user={:.2},usage_system={:.3},uptime={}i {}\n",
            n % 100,
            regions[((n / 100) % 4) as usize],
            rng.u64(..10_000) as f64 / 100.0,
            rng.u64(..100_000) as f64 / 1000.0,
            1_000_000 + rng.u64(..90_000_000),
            1_700_000_000_000_000_000 + n * 1_000_000,
        );
    }
    out.into_bytes()
}

/// What one Telegraf agent sends per interval with its default inputs: per host, `cpu`
/// (per core and total), `mem`, `disk`, `diskio`, `net`, `system`, `processes`, every line
/// of one gather with the same timestamp, full-precision floats.
fn telegraf_body(lines: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut out = String::new();
    let mut n = 0usize;
    let mut gather = 0u64;
    while n < lines {
        let host = format!("web-{:02}.prod.example.com", gather % 20);
        let ts = 1_700_000_000_000_000_000 + gather / 20 * 10_000_000_000;
        let f = |rng: &mut fastrand::Rng, scale: f64| rng.f64() * scale;
        for cpu in ["cpu-total", "cpu0", "cpu1", "cpu2", "cpu3"] {
            out += &format!(
                "cpu,cpu={cpu},host={host} usage_user={},usage_system={},usage_idle={},usage_iowait={},usage_irq=0,usage_softirq={},usage_steal=0,usage_guest=0,usage_nice={} {ts}\n",
                f(&mut rng, 40.0),
                f(&mut rng, 10.0),
                f(&mut rng, 100.0),
                f(&mut rng, 2.0),
                f(&mut rng, 1.0),
                f(&mut rng, 0.5)
            );
        }
        out += &format!(
            "mem,host={host} active={}i,available={}i,available_percent={},buffered={}i,cached={}i,free={}i,total=16776601600i,used={}i,used_percent={} {ts}\n",
            rng.u64(..1 << 33),
            rng.u64(..1 << 34),
            f(&mut rng, 100.0),
            rng.u64(..1 << 28),
            rng.u64(..1 << 33),
            rng.u64(..1 << 33),
            rng.u64(..1 << 34),
            f(&mut rng, 100.0)
        );
        for (dev, path) in [("sda1", "/"), ("sdb1", "/var/lib/data")] {
            out += &format!(
                "disk,device={dev},fstype=ext4,host={host},mode=rw,path={path} free={}i,inodes_free={}i,inodes_total=6553600i,inodes_used={}i,total=105087164416i,used={}i,used_percent={} {ts}\n",
                rng.u64(..1 << 36),
                rng.u64(..6_553_600),
                rng.u64(..6_553_600),
                rng.u64(..1 << 36),
                f(&mut rng, 100.0)
            );
            out += &format!(
                "diskio,host={host},name={dev} io_time={}i,iops_in_progress=0i,merged_reads={}i,merged_writes={}i,read_bytes={}i,read_time={}i,reads={}i,weighted_io_time={}i,write_bytes={}i,write_time={}i,writes={}i {ts}\n",
                rng.u64(..1 << 30),
                rng.u64(..1 << 20),
                rng.u64(..1 << 24),
                rng.u64(..1 << 40),
                rng.u64(..1 << 30),
                rng.u64(..1 << 26),
                rng.u64(..1 << 32),
                rng.u64(..1 << 42),
                rng.u64(..1 << 32),
                rng.u64(..1 << 28)
            );
        }
        out += &format!(
            "net,host={host},interface=eth0 bytes_recv={}i,bytes_sent={}i,drop_in=0i,drop_out=0i,err_in=0i,err_out=0i,packets_recv={}i,packets_sent={}i {ts}\n",
            rng.u64(..1 << 44),
            rng.u64(..1 << 44),
            rng.u64(..1 << 34),
            rng.u64(..1 << 34)
        );
        out += &format!(
            "system,host={host} load1={:.2},load15={:.2},load5={:.2},n_cpus=4i,n_users={}i,uptime={}i {ts}\n",
            f(&mut rng, 4.0),
            f(&mut rng, 4.0),
            f(&mut rng, 4.0),
            rng.u64(..5),
            rng.u64(..1 << 24)
        );
        out += &format!(
            "processes,host={host} blocked={}i,running={}i,sleeping={}i,stopped=0i,total={}i,zombies=0i {ts}\n",
            rng.u64(..3),
            rng.u64(..8),
            rng.u64(..400),
            rng.u64(..410)
        );
        n += 13;
        gather += 1;
    }
    out.into_bytes()
}

/// LZ4 block compression of a 1000-line body, as the worker does for each logged write,
/// and its decompression, as replay does; the ratio is printed.
fn lz4(c: &mut Criterion) {
    use metricstream::storage::record::{Encoded, Kind};
    let mut g = c.benchmark_group("record_lz4");
    for (name, body) in [("cpu", bench_body(1000)), ("telegraf", telegraf_body(1000))] {
        let e =
            Encoded::with_lz4_body(Kind::WriteBodyLz4, 14, |b| b.resize(b.len() + 14, 0), &body);
        let packed = lz4_flex::block::compress(&body);
        println!(
            "record_lz4/{name}: {} body bytes ({:.1} a line) -> {} ({:.1} a line), ratio {:.2}",
            body.len(),
            body.len() as f64 / 1000.0,
            packed.len(),
            packed.len() as f64 / 1000.0,
            body.len() as f64 / packed.len() as f64
        );
        assert!(e.len() < body.len());
        g.throughput(Throughput::Elements(1000));
        g.bench_function(format!("compress/{name}"), |b| {
            b.iter(|| Encoded::with_lz4_body(Kind::WriteBodyLz4, 0, |_| {}, &body).len())
        });
        let mut out = vec![0u8; body.len()];
        g.bench_function(format!("decompress/{name}"), |b| {
            b.iter(|| lz4_flex::block::decompress_into(&packed, &mut out).expect("intact"))
        });
    }
    g.finish();
}

criterion_group!(benches, append, recover, lz4);
criterion_main!(benches);
