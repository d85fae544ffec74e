//! The shard's log manager as the broker drives it, on both real backends (io_uring and
//! positional I/O) and on the simulated disk: receipts resolve at the asked durability,
//! reads come back from memory and from the files and stop at their upper bound, one
//! round covers every queued partition, a failed sync fails its receipts and the
//! partition refuses writes, and a round cut off by shutdown loses nothing that the
//! final flush then writes.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;

use super::{batches, build_batch, read_all, small_config};
use crate::io::sim::{Faults, SimIo};
use crate::io::uring::{Ring, Uring};
use crate::io::{direct, Engine, Io, IoOptions, Positional, RoundWrite};
use crate::{AppendError, BatchHeader, Durability, Log, LogConfig, LogManager, Offset, PartitionLog, ReadError};
use std::sync::atomic::Ordering;

/// Runs `test` on a current-thread runtime inside a LocalSet, as a shard runs.
fn on_shard<F: Future>(test: impl FnOnce() -> F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, test())
}

/// A manager on `io`, with its task running until the test ends.
fn start(io: Rc<dyn Io>) -> Rc<LogManager> {
    let manager = LogManager::new(io);
    tokio::task::spawn_local(manager.clone().run(std::future::pending()));
    manager
}

fn append(log: &PartitionLog, expected: &mut Vec<Vec<u8>>, durability: Durability) -> Option<crate::AppendReceipt> {
    let n = expected.len();
    let mut batch = build_batch(n as i64, &[&vec![n as u8; 90 + n % 200]]);
    let appended = log.append(Bytes::from(batch.clone()), 0, durability).unwrap();
    crate::batch::assign(&mut batch, appended.info.base_offset, 0, None);
    expected.push(batch);
    appended.receipt
}

/// Every batch, one read at a time (max_bytes 1 with min_one: KIP-74's one whole batch).
async fn read_each(log: &PartitionLog, count: usize) -> Vec<Vec<u8>> {
    let end = log.offsets().log_end.offset();
    let mut out = Vec::new();
    for offset in 0..count {
        out.push(log.read(Offset(offset as i64), 1, true, end).await.unwrap().to_vec());
    }
    out
}

/// Rounds with and without syncs across segment rolls, reads through the backend from
/// the files, a round cut off by stopping the manager, and a reopen at the end.
fn rounds_through(engine: Engine, options: IoOptions) {
    on_shard(|| async move {
        let dir = tempfile::tempdir().unwrap();
        let io = engine.start_with(options).unwrap();
        assert_eq!(io.direct_io(), options.direct_cache_bytes.is_some());
        let direct_before = direct::STATS.bytes_written.load(Ordering::Relaxed);
        let manager = LogManager::new(io);
        assert_eq!(manager.engine(), engine.name());
        let running = tokio::task::spawn_local(manager.clone().run(std::future::pending()));
        let log = manager.open(dir.path(), small_config(), 0).unwrap();
        let mut expected = Vec::new();
        for round in 0..12 {
            let durability = if round % 2 == 0 {
                Durability::Synced
            } else {
                Durability::Written
            };
            let mut receipts = Vec::new();
            for _ in 0..(1 + round % 4) {
                receipts.push(append(&log, &mut expected, durability).expect("acks wait"));
            }
            for r in receipts {
                r.wait().await.unwrap();
            }
        }
        assert!(log.segment_count() > 3, "the rounds crossed segment rolls");
        // The tails are written, so these reads come from the files.
        assert_eq!(read_each(&log, expected.len()).await, expected);
        // Appends whose round is cut off when the manager stops: the final flush writes
        // them (again, if the round had got that far) and nothing is lost.
        for _ in 0..5 {
            append(&log, &mut expected, Durability::Appended);
        }
        tokio::task::yield_now().await;
        running.abort();
        let _ = running.await;
        manager.flush_all();
        drop(log);
        drop(manager);
        let reopened = Log::open(dir.path(), small_config(), 0).unwrap();
        let mut stored = Vec::new();
        let mut offset = 0;
        while offset < expected.len() as i64 {
            let got = reopened.read(Offset(offset), 1, true).unwrap();
            offset = BatchHeader::parse(&got).unwrap().next_offset().0;
            stored.push(got.to_vec());
        }
        assert_eq!(stored, expected);
        // Closed files hold their batches and nothing more (no direct-I/O padding).
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(on_disk, expected.iter().map(|b| b.len() as u64).sum::<u64>());
        if options.direct_cache_bytes.is_some() {
            assert!(direct::STATS.bytes_written.load(Ordering::Relaxed) > direct_before);
        }
    });
}

/// Whether the test's temporary directory takes O_DIRECT; says so when it does not.
fn direct_io_here() -> bool {
    match direct::probe(&std::env::temp_dir()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipped: the temporary directory refuses O_DIRECT ({e})");
            false
        }
    }
}

/// Direct I/O with a chunk cache smaller than one round, so reads go to the disk, and
/// a descriptor budget so small that files are closed and reopened between rounds.
const DIRECT_SMALL_CACHE: IoOptions = IoOptions {
    direct_cache_bytes: Some(8 << 10),
    open_files: Some(4),
};

#[test]
fn rounds_through_the_io_uring_backend() {
    Uring::probe().expect("io_uring must be usable on this machine");
    rounds_through(Engine::IoUring, IoOptions::default());
}

#[test]
fn rounds_through_the_io_uring_backend_with_direct_io() {
    Uring::probe().expect("io_uring must be usable on this machine");
    if !direct_io_here() {
        return;
    }
    rounds_through(Engine::IoUring, DIRECT_SMALL_CACHE);
    rounds_through(
        Engine::IoUring,
        IoOptions {
            direct_cache_bytes: Some(64 << 20),
            open_files: None,
        },
    );
}

#[test]
fn rounds_through_the_positional_backend() {
    rounds_through(Engine::Pwrite, IoOptions::default());
}

#[test]
fn rounds_through_the_positional_backend_with_direct_io() {
    if !direct_io_here() {
        return;
    }
    rounds_through(Engine::Pwrite, DIRECT_SMALL_CACHE);
}

#[test]
fn reads_stop_at_their_upper_bound_and_refuse_offsets_outside_the_log() {
    on_shard(|| async {
        let dir = tempfile::tempdir().unwrap();
        let manager = start(Rc::new(Positional::new()));
        let log = manager.open(dir.path(), LogConfig::default(), 0).unwrap();
        let mut expected = Vec::new();
        for _ in 0..4 {
            append(&log, &mut expected, Durability::Appended);
        }
        // Offsets 0..4, one record a batch. A consumer bounded at 2 sees two batches.
        let two = log.read(Offset(0), 1 << 20, true, Offset(2)).await.unwrap();
        assert_eq!(batches(&two), vec![(0, 1), (1, 1)]);
        // Between the bound and the log end: nothing, and no error (Kafka's answer
        // between the high watermark and the log end).
        assert!(log.read(Offset(3), 1 << 20, true, Offset(2)).await.unwrap().is_empty());
        // At the log end: nothing; past it or before the start: out of range.
        assert!(log.read(Offset(4), 1 << 20, true, Offset(4)).await.unwrap().is_empty());
        assert!(matches!(
            log.read(Offset(5), 1 << 20, true, Offset(4)).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.read(Offset(-1), 1 << 20, true, Offset(4)).await,
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        // Once written, the same bound holds for reads from the files.
        append(&log, &mut expected, Durability::Synced)
            .expect("a receipt")
            .wait()
            .await
            .unwrap();
        let from_files = log.read(Offset(1), 1 << 20, true, Offset(3)).await.unwrap();
        assert_eq!(batches(&from_files), vec![(1, 1), (2, 1)]);
    });
}

#[test]
fn one_round_covers_every_queued_partition() {
    on_shard(|| async {
        let dir = tempfile::tempdir().unwrap();
        let manager = LogManager::new(Rc::new(Positional::new()));
        let rounds = Rc::new(RefCell::new(Vec::new()));
        let seen = rounds.clone();
        manager.observe(move |stats| seen.borrow_mut().push((stats.logs, stats.synced)));
        let logs: Vec<PartitionLog> = (0..4)
            .map(|p| {
                manager
                    .open(&dir.path().join(format!("t-{p}")), LogConfig::default(), 0)
                    .unwrap()
            })
            .collect();
        // Four partitions appended to before the manager runs: one round for all.
        let mut expected = Vec::new();
        let receipts: Vec<_> = logs
            .iter()
            .map(|log| append(log, &mut expected, Durability::Synced).expect("a receipt"))
            .collect();
        tokio::task::spawn_local(manager.clone().run(std::future::pending()));
        for r in receipts {
            r.wait().await.unwrap();
        }
        // Creating each log's first segment is in the round too (its directory sync).
        assert_eq!(rounds.borrow().as_slice(), &[(4, true)]);
    });
}

#[test]
fn a_failed_sync_fails_its_receipt_and_the_partition_refuses_writes() {
    on_shard(|| async {
        let sim = SimIo::new(11, Faults::default());
        let manager = start(Rc::new(sim.clone()));
        let synced = manager.open(Path::new("/sim/a-0"), LogConfig::default(), 0).unwrap();
        let written = manager.open(Path::new("/sim/b-0"), LogConfig::default(), 0).unwrap();
        let mut expected = Vec::new();
        // Both logs' first rounds (their new directories synced) succeed.
        for log in [&synced, &written] {
            append(log, &mut expected, Durability::Synced)
                .expect("a receipt")
                .wait()
                .await
                .unwrap();
        }
        sim.set_faults(Faults {
            sync_error_ppm: 1_000_000,
            ..Faults::default()
        });
        let doomed = append(&synced, &mut expected, Durability::Synced).expect("a receipt");
        let fine = append(&written, &mut expected, Durability::Written).expect("a receipt");
        assert!(doomed.wait().await.is_err(), "a failed sync is never acknowledged");
        fine.wait().await.expect("a write without a sync does not fail");
        assert!(synced.failed());
        assert!(matches!(
            synced.append(Bytes::from(build_batch(1, &[b"later"])), 0, Durability::Written),
            Err(AppendError::Failed)
        ));
        assert!(!written.failed());
    });
}

#[test]
fn an_unwritten_tail_over_its_bound_makes_even_acks_0_wait() {
    on_shard(|| async {
        let dir = tempfile::tempdir().unwrap();
        // The manager does not run: nothing gets written.
        let manager = LogManager::new(Rc::new(Positional::new()));
        let log = manager.open(dir.path(), LogConfig::default(), 0).unwrap();
        let value = vec![7u8; 1_000_000];
        let mut waited = 0;
        for i in 0..20 {
            let batch = Bytes::from(build_batch(i, &[&value]));
            if log.append(batch, 0, Durability::Appended).unwrap().receipt.is_some() {
                waited += 1;
            }
        }
        // 16 MiB of unwritten tail is about 16 of these batches.
        assert!((3..=5).contains(&waited), "{waited} appends waited");
    });
}

#[test]
fn the_log_opens_and_recovers_on_io_uring() {
    Uring::probe().expect("io_uring must be usable on this machine");
    on_shard(|| async {
        let dir = tempfile::tempdir().unwrap();
        let io: Rc<dyn Io> = Rc::new(Uring::new().unwrap());
        let mut log = Log::open_with(io.clone(), dir.path(), small_config(), 0).unwrap();
        for i in 0..40 {
            log.append(build_batch(i * 10, &[&[i as u8; 100]]), 0).unwrap();
        }
        assert!(log.segment_count() > 3);
        let before = read_all(&log);
        log.flush_now(0).unwrap();
        drop(log);
        // A torn write at the tail is cut off at recovery, on this backend too.
        let active = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max()
            .unwrap();
        let torn = build_batch(1, &[b"half"]);
        let mut f = OpenOptions::new().append(true).open(&active).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);
        let log = Log::open_with(io, dir.path(), small_config(), 0).unwrap();
        assert_eq!(log.offsets().log_end.offset(), Offset(40));
        assert_eq!(read_all(&log), before);
    });
}

/// A round with more buffers than one writev takes (IOV_MAX) is written in passes, in
/// order, and synced after the last; a round over more files than one pass submits is
/// split into passes; a file that only wants a sync shares the round.
#[test]
fn ring_rounds_larger_than_one_writev_or_one_pass() {
    Uring::probe().expect("io_uring must be usable on this machine");
    let dir = tempfile::tempdir().unwrap();
    on_shard(|| async {
        let ring = Ring::new().unwrap();
        tokio::task::spawn_local(ring.clone().drive());
        let data = Positional::new().open(&dir.path().join("data"), true).unwrap();
        let bufs: Vec<Bytes> = (0..3000u32).map(|i| Bytes::from(format!("{i:05};"))).collect();
        let expected: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
        let mut round = vec![RoundWrite {
            file: data.clone(),
            pos: 10,
            bufs,
            sync: true,
        }];
        let mut others = Vec::new();
        for i in 0..300 {
            let file = Positional::new().open(&dir.path().join(format!("f{i}")), true).unwrap();
            round.push(RoundWrite {
                file: file.clone(),
                pos: 0,
                bufs: if i % 3 == 0 {
                    Vec::new()
                } else {
                    vec![Bytes::from(format!("file {i}"))]
                },
                sync: true,
            });
            others.push((i, file));
        }
        let results = ring.write_round(round).await;
        assert_eq!(results.len(), 301);
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(data.size().unwrap(), 10 + expected.len() as u64);
        // Read back through the ring itself (the backend's reads try the page cache
        // first, so this is the path a cold read takes).
        let back = ring.read_exact(&data, 10, expected.len()).await.unwrap();
        assert_eq!(back, expected);
        for (i, file) in others {
            let want = if i % 3 == 0 { String::new() } else { format!("file {i}") };
            let mut got = vec![0u8; want.len()];
            file.read_exact_at(&mut got, 0).unwrap();
            assert_eq!(got, want.as_bytes(), "file {i}");
        }
    });
}

/// A small round without a sync is written in place with pwritev, more than IOV_MAX
/// buffers included, and a read of cached data comes back in place too.
#[test]
fn small_rounds_are_written_in_place() {
    use crate::io::{inline, WriteRound};
    let dir = tempfile::tempdir().unwrap();
    let file = Positional::new().open(&dir.path().join("small"), true).unwrap();
    let bufs: Vec<Bytes> = (0..3000u32).map(|i| Bytes::from(format!("{i:05};"))).collect();
    let expected: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
    let round = WriteRound {
        writes: vec![RoundWrite {
            file: file.clone(),
            pos: 7,
            bufs,
            sync: false,
        }],
        dirs: Vec::new(),
    };
    assert!(inline::fits(&round), "18 KB without a sync is written in place");
    let outcome = inline::run(round);
    assert!(outcome.writes.iter().all(|r| r.is_ok()));
    let fd = file.raw_fd().unwrap();
    let cached = inline::read_cached(fd, 7, expected.len()).expect("just written: in the page cache");
    assert_eq!(cached, expected);
    let synced = WriteRound {
        writes: vec![RoundWrite {
            file,
            pos: 0,
            bufs: vec![Bytes::from_static(b"x")],
            sync: true,
        }],
        dirs: Vec::new(),
    };
    assert!(
        !inline::fits(&synced),
        "a round that syncs waits for the disk elsewhere"
    );
}

/// A direct-I/O round too large to write in place whole: its small sync-free writes
/// go through the page cache here, the rest through the ring, the outcomes come back
/// in the round's order, and every file holds what was appended, over two rounds (the
/// second rewrites each partial last block).
#[test]
fn a_large_direct_round_writes_its_small_parts_in_place() {
    use crate::io::{inline, WriteRound};
    Uring::probe().expect("io_uring must be usable on this machine");
    if !direct_io_here() {
        return;
    }
    on_shard(|| async {
        let dir = tempfile::tempdir().unwrap();
        let io = Engine::IoUring
            .start_with(IoOptions {
                direct_cache_bytes: Some(1 << 20),
                open_files: None,
            })
            .unwrap();
        // The manager drives the ring.
        let _manager = start(io.clone());
        let paths: Vec<_> = (0..21).map(|i| dir.path().join(format!("f{i}"))).collect();
        let files: Vec<_> = paths.iter().map(|p| io.open(p, true).unwrap()).collect();
        let mut expected: Vec<Vec<u8>> = vec![Vec::new(); files.len()];
        for round in 0..2u8 {
            let writes: Vec<RoundWrite> = files
                .iter()
                .enumerate()
                .map(|(i, file)| {
                    // File 0 takes 512 KiB (direct), file 7 a synced write (the ring),
                    // the others 3,000 bytes each (in place).
                    let len = if i == 0 { 512 << 10 } else { 3000 };
                    let bytes: Vec<u8> = (0..len).map(|j| (i * 7 + j + round as usize) as u8).collect();
                    let pos = expected[i].len() as u64;
                    expected[i].extend_from_slice(&bytes);
                    RoundWrite {
                        file: file.clone(),
                        pos,
                        bufs: vec![Bytes::from(bytes)],
                        sync: i == 7,
                    }
                })
                .collect();
            let round = WriteRound {
                writes,
                dirs: Vec::new(),
            };
            assert!(!inline::fits(&round), "the round is too large to write in place whole");
            let outcome = io.write_round(round).await;
            assert_eq!(outcome.writes.len(), files.len());
            assert!(outcome.writes.iter().all(|r| r.is_ok()));
        }
        for (i, path) in paths.iter().enumerate() {
            let on_disk = std::fs::read(path).unwrap();
            assert!(on_disk.len() >= expected[i].len(), "file {i}");
            assert_eq!(&on_disk[..expected[i].len()], &expected[i][..], "file {i}");
        }
    });
}
