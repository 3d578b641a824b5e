//! The worker's whole ingestion step for one write: parse plus building the `Batch` (series
//! keys, spans, field records), against the parser alone, on the benchmark body shape.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricstream::ingest::line_protocol::{Parser, Precision};
use metricstream::ingest::write::{self, IngestScratch, WriteParams};

fn cpu_body() -> Vec<u8> {
    let regions = ["us-east", "us-west", "eu-central", "ap-south"];
    let mut body = String::new();
    for i in 0..1000u64 {
        body.push_str(&format!(
            "cpu,host=host_{},region={} usage_user={}.{:02},usage_system={}.{:02},uptime={}i {}\n",
            i % 100,
            regions[(i / 100 % 4) as usize],
            i * 7 % 100,
            i % 97,
            i * 13 % 100,
            i % 89,
            1_000_000 + i * 7919,
            1_700_000_000_000_000_000u64 + i * 1000
        ));
    }
    body.into_bytes()
}

fn ingest_step(c: &mut Criterion) {
    let body = cpu_body();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1000));
    let mut parser = Parser::new();
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            parser
                .parse(black_box(&body), Precision::Ns, 0, |p| {
                    black_box(p.fields.len());
                })
                .ok()
        })
    });
    let mut scratch = IngestScratch::default();
    for (name, db) in [
        ("parse_and_batch", None),
        ("parse_and_batch_with_db", Some("telegraf")),
    ] {
        let params = WriteParams {
            db: db.map(str::to_string),
            precision: Precision::Ns,
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                write::batch_for_bench(&mut scratch, black_box(&body), &params).map(|b| b.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ingest_step);
criterion_main!(benches);
