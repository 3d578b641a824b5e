//! HTTP framing throughput: request heads (httparse + framing checks), in-place chunked
//! decoding, and the whole exchange engine answering pipelined requests — 16 at a time,
//! and 10k- and 200k-deep pipelines (per-request cost must not grow with the depth).

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricstream::app::App;
use metricstream::app::Local;
use metricstream::config::Config;
use metricstream::http::exchange::{self, Exchange};
use metricstream::http::{ChunkedDecoder, parse_head};

const PING: &[u8] = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n";
const WRITE_HEAD: &[u8] = b"POST /write?db=telegraf&precision=ns HTTP/1.1\r\nHost: metrics.example:8086\r\nUser-Agent: Telegraf/1.28.5 Go/1.21.4\r\nContent-Length: 109000\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Encoding: identity\r\nAuthorization: Token 0123456789abcdef\r\nAccept-Encoding: gzip\r\n\r\n";

fn heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_head");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ping", |b| {
        b.iter(|| {
            parse_head(black_box(PING), 16384)
                .ok()
                .flatten()
                .map(|h| h.head_len)
        })
    });
    g.bench_function("telegraf_write", |b| {
        b.iter(|| {
            parse_head(black_box(WRITE_HEAD), 16384)
                .ok()
                .flatten()
                .map(|h| h.head_len)
        })
    });
    g.finish();
}

fn chunked(c: &mut Criterion) {
    let body = vec![b'x'; 100_000];
    let mut raw = Vec::new();
    for part in body.chunks(8192) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("http_chunked");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_100k_in_8k_chunks", |b| {
        b.iter_batched_ref(
            || raw.clone(),
            |buf| {
                let mut d = ChunkedDecoder::new(0);
                d.decode(buf, usize::MAX).ok()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn engine(c: &mut Criterion) {
    let app = App::standalone(Config {
        queue_capacity: 1_000_000,
        ..Config::default()
    })
    .expect("aggregator thread");
    let mut stream = Vec::new();
    for _ in 0..16 {
        stream.extend_from_slice(PING);
    }
    let mut local = Local::new(1);
    local.set_time(SystemTime::now());
    let mut g = c.benchmark_group("exchange");
    g.throughput(Throughput::Elements(16));
    g.bench_function("16_pipelined_pings", |b| {
        let mut input = Vec::with_capacity(stream.len());
        let mut output = Vec::with_capacity(16 * 256);
        b.iter(|| {
            input.clear();
            input.extend_from_slice(&stream);
            output.clear();
            let mut ex = Exchange::default();
            exchange::process(&app, &mut local, &mut ex, &mut input, &mut output, false)
        })
    });
    g.finish();
}

/// Answers a whole pipeline the way the I/O layer does: `process` until it needs more,
/// "writing" (clearing) the output whenever it stops at the high-water mark.
fn answer_pipeline(app: &App, local: &mut Local, input: &mut Vec<u8>, output: &mut Vec<u8>) {
    let mut ex = Exchange::default();
    loop {
        let progress = exchange::process(app, local, &mut ex, input, output, false);
        output.clear();
        match progress {
            exchange::Progress::WriteFirst => continue,
            _ => break,
        }
    }
}

fn deep_pipelines(c: &mut Criterion) {
    let app = App::standalone(Config::default()).expect("aggregator thread");
    let mut local = Local::new(1);
    local.set_time(SystemTime::now());
    let mut g = c.benchmark_group("exchange_pipeline");
    g.sample_size(10);
    for depth in [10_000usize, 200_000] {
        let stream = PING.repeat(depth);
        g.throughput(Throughput::Elements(depth as u64));
        g.bench_function(format!("{}_deep_pings", depth), |b| {
            let mut output = Vec::with_capacity(1 << 20);
            b.iter_batched_ref(
                || stream.clone(),
                |input| {
                    answer_pipeline(&app, &mut local, input, &mut output);
                    assert!(input.is_empty());
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, heads, chunked, engine, deep_pipelines);
criterion_main!(benches);
