//! Throughput of the aggregator (points/s applied in 1000-point batches of the `cpu`
//! shape) and of the read side (`/metrics` and `/series` rendering over 100k series).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricstream::ingest::aggregator::SeriesStore;
use metricstream::ingest::batch::{Batch, FieldRec, PointRec, Value};
use metricstream::read::exposition::{OwnFamily, OwnKind, render_metrics};
use metricstream::read::series::{SeriesFilter, render_series};

const REGIONS: [&str; 4] = ["us-east", "us-west", "eu-central", "ap-south"];
const BATCH_POINTS: usize = 1000;

/// Batches of `cpu,host=host_N,region=R usage_user=…,usage_system=…,uptime=…i`, cycling
/// through `hosts` x 4 regions with increasing timestamps.
fn cpu_batches(hosts: usize, batches: usize) -> Vec<Batch> {
    let series = hosts * REGIONS.len();
    let mut n = 0usize;
    (0..batches)
        .map(|_| {
            let mut b = Batch::default();
            for _ in 0..BATCH_POINTS {
                let s = n % series;
                let key = format!("cpu,host=host_{},region={}", s / 4, REGIONS[s % 4]);
                let key = b.push_bytes(key.as_bytes());
                let fields_start = b.fields.len() as u32;
                let x = (n % 997) as f64;
                for (name, value) in [
                    ("usage_user", Value::Float(x * 0.1)),
                    ("usage_system", Value::Float(x * 0.05)),
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
                n += 1;
            }
            b
        })
        .collect()
}

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH_POINTS as u64));
    for (label, hosts) in [("cpu_400_keys", 100usize), ("cpu_400k_keys", 100_000)] {
        let batches = cpu_batches(hosts, (hosts * 4).div_ceil(BATCH_POINTS).max(64));
        let mut store = SeriesStore::new(usize::MAX);
        for b in &batches {
            store.apply(b);
        }
        let mut i = 0;
        group.bench_function(label, |bench| {
            bench.iter(|| {
                let out = store.apply(&batches[i % batches.len()]);
                i += 1;
                black_box(out)
            })
        });
    }
    group.finish();
}

fn bench_render(c: &mut Criterion) {
    // 8334 hosts x 4 regions x 3 fields = 100,008 series.
    let mut store = SeriesStore::new(usize::MAX);
    for b in cpu_batches(8334, 34) {
        store.apply(&b);
    }
    assert_eq!(store.series_count(), 100_008);
    let own = [OwnFamily {
        name: "metricstream_points_total",
        help: "Points applied.",
        kind: OwnKind::Counter,
        samples: vec![(vec![], 1e6)],
    }];
    let mut group = c.benchmark_group("render");
    group.sample_size(20);
    group.throughput(Throughput::Elements(store.series_count() as u64));
    let mut out = Vec::new();
    group.bench_function("metrics_100k_series", |bench| {
        bench.iter(|| {
            out.clear();
            render_metrics(&store, &own, &mut out);
            black_box(out.len())
        })
    });
    let all = SeriesFilter {
        limit: usize::MAX,
        ..SeriesFilter::default()
    };
    group.bench_function("series_json_100k_series", |bench| {
        bench.iter(|| {
            out.clear();
            render_series(&store, &all, &mut out);
            black_box(out.len())
        })
    });
    let first_page = SeriesFilter::default();
    group.bench_function("series_json_limit_1000_of_100k", |bench| {
        bench.iter(|| {
            out.clear();
            render_series(&store, &first_page, &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_apply, bench_render);
criterion_main!(benches);
