//! Micro-benchmarks of the partition log (append: validation into the write-behind
//! tail plus its write round; read: 1 MiB from the files), of a shard's log manager
//! (an acks=1 append and the wait for its write round, on each engine, as the broker's
//! produce path does it) and of the wire codec (decode a Produce request, encode a
//! Fetch response, each carrying 1 MiB of records), and of the log cleaner (one
//! compaction pass over a 64 MiB log).
//!   cargo bench -p sluice-benches

#![allow(clippy::expect_used)] // a benchmark stops at its first failure

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_storage::batch::build;
use sluice_storage::{Durability, Engine, Log, LogConfig, LogManager, Offset};

fn batch_of(records: usize, size: usize) -> Vec<u8> {
    let value = vec![7u8; size];
    let pairs: Vec<_> = (0..records).map(|_| (None, Some(value.as_slice()))).collect();
    build(&pairs, 1)
}

fn log(c: &mut Criterion) {
    let template = Bytes::from(batch_of(16, 1024));
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(template.len() as u64));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).expect("log");
    g.bench_function("append 16 x 1 KiB", |b| {
        b.iter(|| {
            log.append(template.clone(), 0).expect("append");
            log.write_now(0).expect("write round");
        })
    });
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("read 1 MiB", |b| {
        let end = log.offsets().log_end.value();
        let mut next = 0;
        b.iter(|| {
            let bytes = log.read(Offset(next), 1 << 20, true).expect("read");
            next = (next + 1000) % end.max(1);
            bytes.len()
        })
    });
    g.finish();
}

/// One acks=1 append of 1 KiB and the wait for the write round that covers it, through
/// a shard's log manager: the storage half of a linger.ms=0 produce request.
fn manager(c: &mut Criterion) {
    let template = Bytes::from(batch_of(1, 1024));
    let mut g = c.benchmark_group("manager");
    g.throughput(Throughput::Bytes(template.len() as u64));
    for engine in [Engine::IoUring, Engine::Pwrite] {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = local.block_on(&rt, async {
            let manager = LogManager::new(engine.start().expect("engine"));
            tokio::task::spawn_local(manager.clone().run(std::future::pending()));
            manager.open(dir.path(), LogConfig::default(), 0).expect("log")
        });
        let name = format!("append 1 KiB acks=1 and await its round ({})", engine.name());
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                local.block_on(&rt, async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let appended = log.append(template.clone(), 0, Durability::Written).expect("append");
                        appended.receipt.expect("acks=1 waits").wait().await.expect("written");
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

/// A Produce request v3 (the oldest Sluice takes; not flexible, so simple to write by
/// hand) for one partition carrying `records`.
fn produce_request_v3(records: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(-1); // transactional id: null
    out.put_i16(1); // acks
    out.put_i32(30_000); // timeout
    out.put_i32(1); // one topic
    out.put_i16(5);
    out.put_slice(b"bench");
    out.put_i32(1); // one partition
    out.put_i32(0);
    out.put_i32(records.len() as i32);
    out.put_slice(records);
    out.freeze()
}

fn codec(c: &mut Criterion) {
    let mut records = Vec::new();
    while records.len() < 1 << 20 {
        records.extend_from_slice(&batch_of(16, 1024));
    }
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(records.len() as u64));
    let frame = produce_request_v3(&records);
    g.bench_function("decode Produce v3, 1 MiB", |b| {
        b.iter(|| {
            let mut buf = frame.clone();
            let request = ProduceRequest::decode(&mut buf, 3).expect("decode");
            request.topic_data.len()
        })
    });
    let response = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("bench")))
        .with_partitions(vec![PartitionData::default()
            .with_high_watermark(1_000)
            .with_records(Some(Bytes::from(records.clone())))])]);
    g.bench_function("encode Fetch v12, 1 MiB", |b| {
        b.iter(|| {
            let size = response.compute_size(12).expect("size");
            let mut buf = BytesMut::with_capacity(size);
            response.encode(&mut buf, 12).expect("encode");
            buf.len()
        })
    });
    g.finish();
}

/// One cleaning pass (compaction) over a 64 MiB log of 1 KiB records on 10,000 keys in
/// 4 MiB segments: the key map from every segment, then every segment rewritten with
/// one record per key, synced. Throughput is the log's bytes cleaned per second.
fn cleaner(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        segment_bytes: 4 << 20,
        cleanup_compact: true,
        cleanup_delete: false,
        compaction: sluice_storage::cleaner::CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..Default::default()
        },
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config, 0).expect("log");
    let value = vec![7u8; 1000];
    let mut i = 0u64;
    while log.size_bytes() < 64 << 20 {
        let keys: Vec<Vec<u8>> = (0..16)
            .map(|j| format!("key-{}", (i + j) % 10_000).into_bytes())
            .collect();
        let pairs: Vec<_> = keys
            .iter()
            .map(|k| (Some(k.as_slice()), Some(value.as_slice())))
            .collect();
        log.append(build(&pairs, 1), 1).expect("append");
        i += 16;
    }
    log.write_now(1).expect("write round");
    let end = log.offsets().log_end.offset();
    let job = log
        .cleaning_job(1, end, 1 << 20, None)
        .expect("a log that is all dirty is due");
    let bytes: u64 = job.segments.iter().map(|s| s.size).sum();
    let mut g = c.benchmark_group("cleaner");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("compact 64 MiB, 10k keys", |b| {
        b.iter(|| sluice_storage::cleaner::clean(&sluice_storage::io::Positional::new(), &job).expect("clean"))
    });
    g.finish();
}

criterion_group!(benches, log, manager, codec, cleaner);
criterion_main!(benches);
