//! Micro-benchmarks of the partition log: append (validation + write) and read.
//!   cargo bench -p sluice-benches

#![allow(clippy::expect_used)] // a benchmark stops at its first failure

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_storage::batch::build;
use sluice_storage::{Log, LogConfig, Offset};

fn batch_of(records: usize, size: usize) -> Vec<u8> {
    let value = vec![7u8; size];
    let pairs: Vec<_> = (0..records).map(|_| (None, Some(value.as_slice()))).collect();
    build(&pairs, 1)
}

fn append(c: &mut Criterion) {
    let template = batch_of(16, 1024);
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(template.len() as u64));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).expect("log");
    g.bench_function("append 16 x 1 KiB", |b| {
        b.iter(|| {
            let mut batch = template.clone();
            log.append(&mut batch, 0).expect("append");
        })
    });
    g.bench_function("read 1 MiB", |b| {
        let end = log.offsets().high_watermark.value();
        let mut next = 0;
        b.iter(|| {
            let bytes = log.read(Offset(next), 1 << 20, true).expect("read");
            next = (next + 1000) % end.max(1);
            bytes.len()
        })
    });
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
