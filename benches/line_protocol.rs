//! Parser throughput: MB/s (`Throughput::Bytes`) and points/s (`Throughput::Elements`) on a
//! uniform 1000-line cpu body and on a Telegraf-like mix of measurements.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricstream::ingest::line_protocol::{OwnedFieldValue, Parser, Precision, write_line};

const LINES: usize = 1000;
const BASE_TS: i64 = 1_700_000_000_000_000_000;
const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "ap-south-1"];

/// Deterministic xorshift so every run measures the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A float with `decimals` decimals below `max`, as monitoring agents print them.
    fn float(&mut self, max: u64, decimals: u32) -> f64 {
        let scale = 10u64.pow(decimals);
        (self.next() % (max * scale)) as f64 / scale as f64
    }
}

type Fields<'a> = Vec<(&'a [u8], OwnedFieldValue)>;

fn push_line(
    out: &mut Vec<u8>,
    measurement: &str,
    tags: &[(&str, &str)],
    fields: Fields<'_>,
    ts: i64,
) {
    let tags: Vec<(&[u8], &[u8])> = tags
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    write_line(out, measurement.as_bytes(), &tags, &fields, Some(ts));
    out.push(b'\n');
}

/// `cpu,host=host_N,region=REGION usage_user=F,usage_system=F,uptime=Ni TS`:
/// 100 hosts x 4 regions.
fn cpu_body() -> Vec<u8> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    for i in 0..LINES {
        let host = format!("host_{}", i % 100);
        let region = REGIONS[(i / 100) % 4];
        let fields: Fields<'_> = vec![
            (b"usage_user", OwnedFieldValue::Float(rng.float(100, 4))),
            (b"usage_system", OwnedFieldValue::Float(rng.float(100, 4))),
            (
                b"uptime",
                OwnedFieldValue::Int((rng.next() % 10_000_000) as i64),
            ),
        ];
        push_line(
            &mut out,
            "cpu",
            &[("host", &host), ("region", region)],
            fields,
            BASE_TS + i as i64 * 1_000_000_000,
        );
    }
    out
}

/// A rotation of what a Telegraf agent with the default inputs sends: wide float lines, integer
/// counters, unsigned counters, strings, booleans, many tags.
fn telegraf_body() -> Vec<u8> {
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let mut out = Vec::new();
    for i in 0..LINES {
        let host = format!("web{:02}", i % 20);
        let ts = BASE_TS + (i as i64 / 10) * 10_000_000_000;
        let h = host.as_str();
        match i % 10 {
            0 | 1 => {
                let cpu = if i % 10 == 0 {
                    "cpu-total".to_string()
                } else {
                    format!("cpu{}", i % 8)
                };
                let names: [&[u8]; 10] = [
                    b"usage_user",
                    b"usage_system",
                    b"usage_idle",
                    b"usage_nice",
                    b"usage_iowait",
                    b"usage_irq",
                    b"usage_softirq",
                    b"usage_steal",
                    b"usage_guest",
                    b"usage_guest_nice",
                ];
                // Telegraf prints full-precision floats such as 98.19639278557115.
                let fields = names
                    .iter()
                    .map(|n| (*n, OwnedFieldValue::Float(rng.float(100, 14))))
                    .collect();
                push_line(&mut out, "cpu", &[("cpu", &cpu), ("host", h)], fields, ts);
            }
            2 => {
                let fields = vec![
                    (&b"free"[..], OwnedFieldValue::UInt(rng.next() % (1 << 40))),
                    (
                        b"inodes_free",
                        OwnedFieldValue::UInt(rng.next() % (1 << 24)),
                    ),
                    (b"inodes_total", OwnedFieldValue::UInt(1 << 24)),
                    (
                        b"inodes_used",
                        OwnedFieldValue::UInt(rng.next() % (1 << 20)),
                    ),
                    (b"total", OwnedFieldValue::UInt(1 << 40)),
                    (b"used", OwnedFieldValue::UInt(rng.next() % (1 << 40))),
                    (b"used_percent", OwnedFieldValue::Float(rng.float(100, 13))),
                ];
                push_line(
                    &mut out,
                    "disk",
                    &[
                        ("device", "nvme0n1p2"),
                        ("fstype", "ext4"),
                        ("host", h),
                        ("mode", "rw"),
                        ("path", "/"),
                    ],
                    fields,
                    ts,
                );
            }
            3 => {
                let fields = vec![
                    (
                        &b"active"[..],
                        OwnedFieldValue::UInt(rng.next() % (1 << 34)),
                    ),
                    (b"available", OwnedFieldValue::UInt(rng.next() % (1 << 34))),
                    (
                        b"available_percent",
                        OwnedFieldValue::Float(rng.float(100, 13)),
                    ),
                    (b"buffered", OwnedFieldValue::UInt(rng.next() % (1 << 30))),
                    (b"cached", OwnedFieldValue::UInt(rng.next() % (1 << 33))),
                    (b"free", OwnedFieldValue::UInt(rng.next() % (1 << 33))),
                    (b"total", OwnedFieldValue::UInt(1 << 34)),
                    (b"used", OwnedFieldValue::UInt(rng.next() % (1 << 34))),
                    (b"used_percent", OwnedFieldValue::Float(rng.float(100, 13))),
                ];
                push_line(&mut out, "mem", &[("host", h)], fields, ts);
            }
            4 => {
                let fields = vec![
                    (
                        &b"bytes_recv"[..],
                        OwnedFieldValue::UInt(rng.next() % (1 << 44)),
                    ),
                    (b"bytes_sent", OwnedFieldValue::UInt(rng.next() % (1 << 44))),
                    (b"drop_in", OwnedFieldValue::UInt(rng.next() % 100)),
                    (b"drop_out", OwnedFieldValue::UInt(0)),
                    (b"err_in", OwnedFieldValue::UInt(0)),
                    (b"err_out", OwnedFieldValue::UInt(0)),
                    (
                        b"packets_recv",
                        OwnedFieldValue::UInt(rng.next() % (1 << 36)),
                    ),
                    (
                        b"packets_sent",
                        OwnedFieldValue::UInt(rng.next() % (1 << 36)),
                    ),
                ];
                push_line(
                    &mut out,
                    "net",
                    &[("host", h), ("interface", "eth0")],
                    fields,
                    ts,
                );
            }
            5 => {
                let days = rng.next() % 400;
                let uptime = format!("{days} days, {:2}:{:02}", days % 24, days % 60);
                let fields = vec![
                    (&b"load1"[..], OwnedFieldValue::Float(rng.float(8, 2))),
                    (b"load5", OwnedFieldValue::Float(rng.float(8, 2))),
                    (b"load15", OwnedFieldValue::Float(rng.float(8, 2))),
                    (b"n_cpus", OwnedFieldValue::Int(8)),
                    (b"n_users", OwnedFieldValue::Int(2)),
                    (b"uptime", OwnedFieldValue::UInt(days * 86_400)),
                    (b"uptime_format", OwnedFieldValue::Str(uptime.into_bytes())),
                ];
                push_line(&mut out, "system", &[("host", h)], fields, ts);
            }
            6 => {
                let fields = vec![
                    (
                        &b"io_time"[..],
                        OwnedFieldValue::UInt(rng.next() % (1 << 30)),
                    ),
                    (b"read_bytes", OwnedFieldValue::UInt(rng.next() % (1 << 40))),
                    (b"read_time", OwnedFieldValue::UInt(rng.next() % (1 << 30))),
                    (b"reads", OwnedFieldValue::UInt(rng.next() % (1 << 30))),
                    (
                        b"weighted_io_time",
                        OwnedFieldValue::UInt(rng.next() % (1 << 30)),
                    ),
                    (
                        b"write_bytes",
                        OwnedFieldValue::UInt(rng.next() % (1 << 40)),
                    ),
                    (b"writes", OwnedFieldValue::UInt(rng.next() % (1 << 30))),
                ];
                push_line(
                    &mut out,
                    "diskio",
                    &[("host", h), ("name", "nvme0n1")],
                    fields,
                    ts,
                );
            }
            7 => {
                let fields = vec![
                    (&b"blocked"[..], OwnedFieldValue::Int(0)),
                    (b"running", OwnedFieldValue::Int((rng.next() % 8) as i64)),
                    (b"sleeping", OwnedFieldValue::Int((rng.next() % 400) as i64)),
                    (b"stopped", OwnedFieldValue::Int(0)),
                    (b"total", OwnedFieldValue::Int(412)),
                    (b"zombies", OwnedFieldValue::Int(0)),
                ];
                push_line(&mut out, "processes", &[("host", h)], fields, ts);
            }
            8 => {
                let fields = vec![
                    (
                        &b"container_id"[..],
                        OwnedFieldValue::Str(format!("{:016x}", rng.next()).into_bytes()),
                    ),
                    (b"exitcode", OwnedFieldValue::Int(0)),
                    (b"oomkilled", OwnedFieldValue::Bool(false)),
                    (b"pid", OwnedFieldValue::Int((rng.next() % 65536) as i64)),
                    (b"started_at", OwnedFieldValue::Int(BASE_TS / 1_000_000)),
                    (
                        b"uptime_ns",
                        OwnedFieldValue::Int((rng.next() % (1 << 50)) as i64),
                    ),
                ];
                push_line(
                    &mut out,
                    "docker_container_status",
                    &[
                        ("container_image", "nginx"),
                        ("container_name", "web frontend"),
                        ("container_status", "running"),
                        ("engine_host", h),
                        ("server_version", "24.0.7"),
                    ],
                    fields,
                    ts,
                );
            }
            _ => {
                let fields = vec![
                    (
                        &b"response_time"[..],
                        OwnedFieldValue::Float(rng.float(2, 9)),
                    ),
                    (b"http_response_code", OwnedFieldValue::Int(200)),
                    (
                        b"content_length",
                        OwnedFieldValue::Int((rng.next() % 100_000) as i64),
                    ),
                    (b"result_code", OwnedFieldValue::Int(0)),
                ];
                push_line(
                    &mut out,
                    "http_response",
                    &[
                        ("host", h),
                        ("method", "GET"),
                        ("result", "success"),
                        ("server", "https://example.com/health?full=1"),
                        ("status_code", "200"),
                    ],
                    fields,
                    ts,
                );
            }
        }
    }
    out
}

fn count_points(parser: &mut Parser, body: &[u8]) -> usize {
    let mut sink = 0i64;
    let n = parser
        .parse(black_box(body), Precision::Ns, 0, |p| {
            sink = sink
                .wrapping_add(p.timestamp_ns)
                .wrapping_add(p.fields.len() as i64);
        })
        .expect("bench body must parse");
    black_box(sink);
    n
}

fn bench(c: &mut Criterion) {
    let bodies = [("cpu", cpu_body()), ("telegraf_mix", telegraf_body())];
    let mut parser = Parser::new();
    for (name, body) in &bodies {
        let points = count_points(&mut parser, body);
        let first = body.split(|&c| c == b'\n').next().unwrap_or_default();
        eprintln!(
            "{name}: {} bytes, {points} points, {:.1} bytes/line, e.g. {}",
            body.len(),
            body.len() as f64 / points as f64,
            String::from_utf8_lossy(first)
        );
    }

    let mut group = c.benchmark_group("line_protocol_bytes");
    for (name, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*name, |b| b.iter(|| count_points(&mut parser, body)));
    }
    group.finish();

    let mut group = c.benchmark_group("line_protocol_points");
    for (name, body) in &bodies {
        let points = count_points(&mut parser, body);
        group.throughput(Throughput::Elements(points as u64));
        group.bench_function(*name, |b| b.iter(|| count_points(&mut parser, body)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
