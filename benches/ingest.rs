//! The worker's whole ingestion step for one write: parse plus building the `Batch` (series
//! keys, spans, field records), against the parser alone, on the benchmark body shape.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricstream::ingest::line_protocol::{Parser, Precision};
use metricstream::ingest::write::{self, IngestScratch, WriteParams};

fn ingest_step(c: &mut Criterion) {
    let body = common::cpu_body(0, 1000);
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
