//! The forwarder's CPU per sample before the network: encoding logged batches as
//! remote_write (protobuf + snappy) and as line protocol (gzip), on the benchmark body
//! shape (1000 points of 3 fields, 100 hosts x 4 regions), 10 batches = 30 000 values per
//! call, split at the 10 000-value request limit as a forwarder would.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricstream::forward::{Encoder, Format};
use metricstream::ingest::Batch;
use metricstream::ingest::line_protocol::Precision;
use metricstream::ingest::write::{self, IngestScratch, WriteParams};
use metricstream::tuning::FORWARD_MAX_VALUES;

/// The server's allocator, so allocation costs are the ones a forwarder thread pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cpu_batch(offset: u64) -> Batch {
    let body = common::cpu_body(offset, 1_000_000);
    let params = WriteParams {
        db: None,
        precision: Precision::Ns,
    };
    write::batch_for_bench(&mut IngestScratch::default(), &body, &params).expect("valid body")
}

fn forward_encode(c: &mut Criterion) {
    let batches: Vec<Batch> = (0..10).map(cpu_batch).collect();
    let refs: Vec<&Batch> = batches.iter().collect();
    let values: usize = batches.iter().map(|b| b.fields.len()).sum();
    let mut g = c.benchmark_group("forward_encode");
    g.throughput(Throughput::Elements(values as u64));
    for (name, format) in [
        ("remote_write", Format::RemoteWrite),
        ("line_protocol", Format::LineProtocol),
    ] {
        // As a forwarder runs it: one encoder for the life of the target.
        let mut encoder = Encoder::new(format);
        g.bench_function(name, |b| {
            b.iter(|| {
                encoder
                    .encode(black_box(&refs), FORWARD_MAX_VALUES, 1)
                    .requests
                    .len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, forward_encode);
criterion_main!(benches);
