//! Log behaviour as a reader of the partition would see it: append, read, roll,
//! recover from a torn tail and a corrupt index, and a model-checked random workload.
//! `simulated` runs the log on a disk with injected faults and crashes; `engines`
//! runs the shard's log manager on io_uring and on positional I/O.

mod cleaner;
mod engines;
mod retention;
mod simulated;

use std::fs::OpenOptions;
use std::io::Write;

use proptest::prelude::*;

use crate::batch::tests::build_batch;
use crate::batch::BatchHeader;
use crate::{Log, LogConfig, Offset};

/// The log end, the offset the next append gets.
fn end(log: &Log) -> Offset {
    log.offsets().log_end.offset()
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_000,
        index_interval_bytes: 150,
        ..LogConfig::default()
    }
}

/// Splits a read result into whole batches and returns (base offset, record count) pairs.
fn batches(mut bytes: &[u8]) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = BatchHeader::parse(bytes).expect("whole batch");
        out.push((h.base_offset.0, h.record_count));
        bytes = &bytes[h.size..];
    }
    out
}

#[test]
fn appended_batches_read_back_with_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    let a = log.append(build_batch(10, &[b"a", b"b", b"c"]), 0).unwrap();
    let b = log.append(build_batch(20, &[b"d", b"e"]), 0).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (Offset(0), Offset(2)));
    assert_eq!((b.base_offset, b.last_offset), (Offset(3), Offset(4)));
    assert_eq!(end(&log), Offset(5));
    assert_eq!(
        batches(&log.read(Offset(0), 1 << 20, true).unwrap()),
        vec![(0, 3), (3, 2)]
    );
    // An offset inside a batch returns that whole batch, as Kafka does.
    assert_eq!(batches(&log.read(Offset(4), 1 << 20, true).unwrap()), vec![(3, 2)]);
    assert!(log.read(Offset(5), 1 << 20, true).unwrap().is_empty());
    assert!(log.read(Offset(6), 1 << 20, true).is_err());
}

#[test]
fn max_bytes_cuts_at_whole_batches_but_returns_one_oversized_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    let first = build_batch(1, &[&[1u8; 500]]);
    let size = first.len();
    log.append(first.clone(), 0).unwrap();
    log.append(build_batch(2, &[&[2u8; 500]]), 0).unwrap();
    assert_eq!(batches(&log.read(Offset(0), size + 10, true).unwrap()), vec![(0, 1)]);
    assert_eq!(batches(&log.read(Offset(0), 10, true).unwrap()), vec![(0, 1)]);
    assert!(log.read(Offset(0), 10, false).unwrap().is_empty());
}

#[test]
fn segments_roll_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
    for i in 0..40 {
        log.append(build_batch(i * 10, &[&[i as u8; 100]]), 0).unwrap();
    }
    assert!(log.segment_count() > 3, "1000-byte segments must roll");
    let before = read_all(&log);
    assert_eq!(batches(&before).len(), 40);
    log.flush_now(0).unwrap();
    log.write_now(0).unwrap();
    // Several rolls between two rounds: every sealed segment's indexes reached their
    // files; the active one's stay in memory (recovery rebuilds them).
    let mut bases: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".log")
                .map(str::to_string)
        })
        .collect();
    bases.sort();
    let index_len = |base: &str, ext: &str| {
        std::fs::metadata(dir.path().join(format!("{base}.{ext}")))
            .unwrap()
            .len()
    };
    let active = bases.pop().unwrap();
    for base in &bases {
        assert!(
            index_len(base, "index") > 0 && index_len(base, "index") % 8 == 0,
            "{base}.index"
        );
        assert!(
            index_len(base, "timeindex") > 0 && index_len(base, "timeindex") % 12 == 0,
            "{base}.timeindex"
        );
    }
    assert_eq!(
        index_len(&active, "index"),
        0,
        "the active segment's index is written when sealed"
    );
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(end(&log), Offset(40));
    assert_eq!(read_all(&log), before);
}

/// A segment written over many rounds while it was active gets all its index entries
/// into its files when it is sealed, so reopening the log keeps them as they are
/// (before, each round dropped the active segment's new entries, and every reopen
/// rebuilt every such segment's indexes by scanning it).
#[test]
fn segments_written_over_many_rounds_keep_whole_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
    for i in 0..40 {
        log.append(build_batch(i * 10, &[&[i as u8; 100]]), 0).unwrap();
        log.write_now(0).unwrap();
    }
    let before = read_all(&log);
    drop(log);
    let indexes = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".index") || n.ends_with(".timeindex"))
            .map(|n| (n.clone(), std::fs::read(dir.path().join(&n)).unwrap()))
            .collect();
        files.sort();
        files
    };
    let on_disk = indexes();
    let sealed = &on_disk[..on_disk.len() - 2];
    assert!(sealed.len() >= 6, "the test must seal segments");
    for (name, bytes) in sealed {
        // Every segment holds 100-byte batches, so its offset index has several entries.
        let entry = if name.ends_with(".index") { 8 } else { 12 };
        assert!(bytes.len() >= 2 * entry, "{name}: {} bytes", bytes.len());
    }
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(read_all(&log), before);
    drop(log);
    assert_eq!(
        &indexes()[..sealed.len()],
        sealed,
        "reopening rewrote a sealed segment's index"
    );
}

/// Reads from offset 0 to the end the way a consumer does, one fetch after another.
fn read_all(log: &Log) -> Vec<u8> {
    let mut all = Vec::new();
    let mut next = Offset(0);
    while next < end(log) {
        let chunk = log.read(next, 1 << 20, true).unwrap();
        let got = batches(&chunk);
        next = Offset(got.last().map(|(b, n)| b + *n as i64).unwrap());
        all.extend_from_slice(&chunk);
    }
    all
}

#[test]
fn a_torn_final_batch_is_cut_off_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append(build_batch(1, &[b"kept"]), 0).unwrap();
    log.append(build_batch(2, &[b"kept too"]), 0).unwrap();
    log.write_now(0).unwrap();
    drop(log);
    // A crash in the middle of the third write leaves half a batch at the tail.
    let torn = build_batch(3, &[b"lost in the crash"]);
    let path = dir.path().join("00000000000000000000.log");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(f);
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(end(&log), Offset(2));
    assert_eq!(
        batches(&log.read(Offset(0), 1 << 20, true).unwrap()),
        vec![(0, 1), (1, 1)]
    );
    let next = log.append(build_batch(4, &[b"after"]), 0).unwrap();
    assert_eq!(next.base_offset, Offset(2));
    assert_eq!(batches(&log.read(Offset(2), 1 << 20, true).unwrap()), vec![(2, 1)]);
}

#[test]
fn a_corrupt_batch_in_the_tail_truncates_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.append(build_batch(1, &[b"one"]), 0).unwrap();
    log.append(build_batch(2, &[b"two"]), 0).unwrap();
    log.write_now(0).unwrap();
    drop(log);
    let path = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    assert_eq!(end(&log), Offset(1));
}

#[test]
fn a_corrupt_index_of_a_closed_segment_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
    for i in 0..30 {
        log.append(build_batch(i, &[&[7u8; 120]]), 0).unwrap();
    }
    let expected: Vec<bytes::Bytes> = (0..30).map(|o| log.read(Offset(o), 1 << 20, true).unwrap()).collect();
    log.write_now(0).unwrap();
    drop(log);
    std::fs::write(dir.path().join("00000000000000000000.index"), [0xAB; 24]).unwrap();
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    for (o, want) in expected.iter().enumerate() {
        assert_eq!(&log.read(Offset(o as i64), 1 << 20, true).unwrap(), want, "offset {o}");
    }
}

#[test]
fn offsets_by_timestamp_and_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
    // Batch i holds 3 records with timestamps 1000*i, 1000*i+1, 1000*i+2.
    for i in 1..=20 {
        log.append(build_batch(1000 * i, &[b"x", b"y", b"z"]), 0).unwrap();
    }
    // Timestamp 5001 is the second record of the fifth batch (offsets 12..14).
    assert_eq!(log.offset_for_timestamp(5001).unwrap(), Some((Offset(13), 5001)));
    assert_eq!(log.offset_for_timestamp(5003).unwrap(), Some((Offset(15), 6000)));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((Offset(0), 1000)));
    assert_eq!(log.offset_for_timestamp(99_999).unwrap(), None);
    assert_eq!(log.max_timestamp(), Some((Offset(59), 20002)));
}

#[test]
fn log_append_time_overrides_the_producers_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        timestamp_type: crate::TimestampType::LogAppendTime,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config, 0).unwrap();
    let info = log.append(build_batch(5, &[b"x"]), 777_000).unwrap();
    assert_eq!(info.log_append_time_ms, Some(777_000));
    let bytes = log.read(Offset(0), 1 << 20, true).unwrap();
    assert_eq!(BatchHeader::parse(&bytes).unwrap().max_timestamp, 777_000);
}

#[test]
fn flush_jobs_cover_what_was_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    log.flush_now(0).unwrap();
    assert!(log.take_writes(true).expect("files open").is_none());
    log.append(build_batch(5, &[b"x", b"y"]), 0).unwrap();
    let job = log.take_writes(true).expect("files open").expect("unflushed data");
    log.append(build_batch(6, &[b"z"]), 0).unwrap();
    let receipt = job.receipt();
    job.run_blocking(&crate::io::Positional::new()).unwrap();
    log.complete_writes(&receipt, 0);
    assert_eq!(log.flushed().offset(), Offset(2));
    assert_eq!(log.written().offset(), Offset(2));
    // The next round takes only what came after the first.
    let next = log.take_writes(true).expect("files open").expect("the third record");
    assert_eq!(next.receipt().upto(), Offset(3));
    assert_eq!(next.bytes(), build_batch(6, &[b"z"]).len() as u64);
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Read { at: usize, max_bytes: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0usize..300, 1..5).prop_map(Op::Append),
        3 => (0usize..1000, 0usize..2000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random appends, reads and reopenings agree with a list of the batches appended.
    #[test]
    fn log_matches_a_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
        // The model: each appended batch's bytes as stored, in order.
        let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
        let mut next = 0i64;
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let values: Vec<Vec<u8>> = sizes.iter().map(|n| vec![next as u8; *n]).collect();
                    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
                    let mut batch = build_batch(next, &refs);
                    let info = log.append(batch.clone(), 0).unwrap();
                    prop_assert_eq!(info.base_offset, Offset(next));
                    // Stored as sent, but for the fields the broker patches.
                    crate::batch::assign(&mut batch, info.base_offset, 0, None);
                    model.push((next, batch));
                    next += sizes.len() as i64;
                }
                Op::Read { at, max_bytes } => {
                    let at = if next == 0 { 0 } else { (at as i64) % (next + 1) };
                    let got = log.read(Offset(at), max_bytes, true).unwrap();
                    let first = model.iter().position(|(base, b)| {
                        let h = BatchHeader::parse(b).unwrap();
                        *base <= at && at <= h.last_offset().0
                    });
                    let mut want = Vec::new();
                    if let Some(first) = first {
                        for (i, (_, b)) in model[first..].iter().enumerate() {
                            if i > 0 && want.len() + b.len() > max_bytes { break; }
                            if i == 0 || want.len() + b.len() <= max_bytes { want.extend_from_slice(b); }
                        }
                    }
                    // Segment boundaries may end a read early; it must be a prefix of `want`.
                    prop_assert!(want.starts_with(&got), "read at {} returned bytes not in the model", at);
                    prop_assert_eq!(got.is_empty(), want.is_empty());
                }
                Op::Reopen => {
                    log.flush_now(0).unwrap();
                    drop(log);
                    log = Log::open(dir.path(), small_config(), 0).unwrap();
                    prop_assert_eq!(end(&log), Offset(next));
                }
            }
        }
    }
}

/// A producer's batch with idempotence fields set, CRC fixed up.
fn idempotent_batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    let mut b = build_batch(1, values);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[test]
fn idempotent_retries_are_not_written_twice_even_after_reopening() {
    use crate::producer::SequenceError;
    use crate::AppendError;
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    let first = log.append(idempotent_batch(7, 0, 0, &[b"a", b"b"]), 0).unwrap();
    assert_eq!((first.base_offset, first.duplicate), (Offset(0), false));
    let retry = log.append(idempotent_batch(7, 0, 0, &[b"a", b"b"]), 0).unwrap();
    assert_eq!(
        (retry.base_offset, retry.last_offset, retry.duplicate),
        (Offset(0), Offset(1), true)
    );
    assert_eq!(end(&log), Offset(2), "a retry writes nothing");
    let gap = log.append(idempotent_batch(7, 0, 5, &[b"c"]), 0);
    assert!(matches!(
        gap,
        Err(AppendError::Sequence(SequenceError::OutOfOrder {
            expected: 2,
            got: 5,
            ..
        }))
    ));
    assert_eq!(
        log.append(idempotent_batch(7, 0, 2, &[b"c"]), 0).unwrap().base_offset,
        Offset(2)
    );
    // Another producer is independent.
    assert_eq!(
        log.append(idempotent_batch(8, 0, 0, &[b"z"]), 0).unwrap().base_offset,
        Offset(3)
    );
    log.flush_now(0).unwrap();
    log.write_now(0).unwrap();
    drop(log);

    let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
    let retry = log.append(idempotent_batch(7, 0, 2, &[b"c"]), 0).unwrap();
    assert_eq!(
        (retry.base_offset, retry.duplicate),
        (Offset(2), true),
        "state is rebuilt from the log"
    );
    // A bumped epoch starts again at 0; the old epoch is then fenced.
    assert_eq!(
        log.append(idempotent_batch(7, 1, 0, &[b"d"]), 0).unwrap().base_offset,
        Offset(4)
    );
    let fenced = log.append(idempotent_batch(7, 0, 3, &[b"e"]), 0);
    assert!(matches!(
        fenced,
        Err(AppendError::Sequence(SequenceError::Fenced { .. }))
    ));
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = Log::open(dir.path(), config, 0).unwrap();
    log.append(build_batch(1, &[b"old"]), 0).unwrap();
    log.append(build_batch(2, &[b"still young"]), 999).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(build_batch(3, &[b"new segment"]), 1000).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(batches(&log.read(Offset(2), 1 << 20, true).unwrap()), vec![(2, 1)]);
}

/// A follower's log: batches copied from a leader keep the leader's offsets and epochs;
/// a divergent tail is cut at the end of the epoch the new leader reports, and what
/// remains (and its epochs) survives reopening.
#[test]
fn replicated_batches_keep_offsets_and_epochs_and_truncate_to_an_epochs_end() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Log::open(leader_dir.path(), small_config(), 0).unwrap();
    leader.become_leader(1).unwrap();
    for i in 0..10u8 {
        if i == 6 {
            leader.become_leader(3).unwrap();
        }
        leader.append(build_batch(i as i64, &[&[i; 40], &[i; 40]]), 0).unwrap();
    }
    let bytes = bytes::Bytes::from(read_all(&leader));
    let epochs: Vec<i32> = {
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let h = BatchHeader::parse(rest).unwrap();
            out.push(h.partition_leader_epoch);
            rest = &rest[h.size..];
        }
        out
    };
    assert_eq!(epochs, [1, 1, 1, 1, 1, 1, 3, 3, 3, 3]);
    assert_eq!(leader.end_offset_for_epoch(1), Some((1, Offset(12))));
    assert_eq!(leader.end_offset_for_epoch(2), Some((1, Offset(12))));
    assert_eq!(leader.end_offset_for_epoch(3), Some((3, Offset(20))));

    let follower_dir = tempfile::tempdir().unwrap();
    let mut follower = Log::open(follower_dir.path(), small_config(), 0).unwrap();
    // The fetch's size limit cut the last batch short: it waits for the next fetch.
    let cut = bytes.slice(..bytes.len() - 10);
    let appended = follower.append_replicated(&cut, 0).unwrap();
    assert_eq!(end(&follower), Offset(18));
    follower.append_replicated(&bytes.slice(appended..), 0).unwrap();
    assert_eq!(end(&follower), Offset(20));
    assert!(follower.segment_count() > 1, "the follower rolls segments too");
    assert_eq!(read_all(&follower), read_all(&leader));
    // A batch that does not start at the log end is refused.
    assert!(follower.append_replicated(&bytes.slice(..appended), 0).is_err());

    // A new leader had only epoch 1 up to offset 12: the follower cuts epoch 3 away.
    follower.write_now(0).unwrap();
    follower.truncate_to(Offset(12), 0).unwrap();
    assert_eq!(end(&follower), Offset(12));
    assert_eq!(follower.latest_epoch().map(|e| e.epoch), Some(1));
    assert_eq!(batches(&follower.read(Offset(0), 1 << 20, true).unwrap()).len(), 6);
    drop(follower);
    let mut reopened = Log::open(follower_dir.path(), small_config(), 0).unwrap();
    assert_eq!(end(&reopened), Offset(12));
    assert_eq!(reopened.end_offset_for_epoch(1), Some((1, Offset(12))));
    reopened.become_leader(4).unwrap();
    let next = reopened.append(build_batch(99, &[b"x"]), 0).unwrap();
    assert_eq!(next.base_offset, Offset(12));
    assert_eq!(reopened.end_offset_for_epoch(3), Some((1, Offset(12))));

    // Emptied and restarted where a leader's log now starts.
    reopened.write_now(0).unwrap();
    reopened.truncate_fully_at(Offset(500), 0).unwrap();
    assert_eq!(reopened.offsets().log_start.offset(), Offset(500));
    assert_eq!(end(&reopened), Offset(500));
    assert_eq!(reopened.latest_epoch(), None);
}

fn transactional_batch(producer_id: i64, sequence: i32, values: &[&[u8]]) -> Vec<u8> {
    let mut b = build_batch(0, values);
    crate::batch::set_producer(&mut b, producer_id, 0, sequence, true, false);
    b
}

fn marker(producer_id: i64, control: crate::ControlType) -> crate::Marker {
    crate::Marker {
        producer_id,
        producer_epoch: 0,
        control,
        coordinator_epoch: 0,
    }
}

#[test]
fn transactions_hold_the_stable_offset_and_aborts_survive_reopening_and_rolls() {
    use crate::ControlType::{Abort, Commit};
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
    log.append(build_batch(0, &[b"plain"]), 0).unwrap();
    log.append(transactional_batch(7, 0, &[b"a1", b"a2"]), 0).unwrap(); // 1..=2
    log.append(transactional_batch(9, 0, &[b"b1"]), 0).unwrap(); // 3
    assert_eq!(log.first_unstable_offset(), Some(Offset(1)));
    let abort = log.append_marker(&marker(7, Abort), 0).unwrap(); // 4
    assert_eq!(abort.base_offset, Offset(4));
    assert_eq!(log.first_unstable_offset(), Some(Offset(3)));
    log.append_marker(&marker(9, Commit), 0).unwrap(); // 5
    assert_eq!(log.first_unstable_offset(), None);
    // Enough later batches to roll past the segments replayed at open, so the abort
    // must come back from its segment's transaction index.
    for i in 0..40 {
        log.append(
            build_batch(0, &[format!("filler {i:04} ........................").as_bytes()]),
            0,
        )
        .unwrap();
    }
    log.append(transactional_batch(11, 0, &[b"open"]), 0).unwrap();
    let open_at = end(&log).plus(-1);
    log.flush_now(0).unwrap();
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    let aborted = log.aborted_overlapping(Offset(0), Offset(100));
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (aborted[0].producer_id, aborted[0].first_offset, aborted[0].last_offset),
        (7, Offset(1), Offset(4))
    );
    assert!(log.aborted_overlapping(Offset(5), Offset(100)).is_empty());
    assert_eq!(log.first_unstable_offset(), Some(open_at));
    // A fenced (older-epoch) marker is refused; the producer's own next batch is not.
    let mut log = log;
    let newer = crate::Marker {
        producer_epoch: 3,
        ..marker(11, Abort)
    };
    log.append_marker(&newer, 0).unwrap();
    assert!(log.append_marker(&marker(11, Commit), 0).is_err());
    assert_eq!(log.first_unstable_offset(), None);
    assert_eq!(log.aborted_overlapping(open_at, open_at).len(), 1);
}

#[test]
fn producer_snapshots_carry_producers_and_open_transactions_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
    let first = log.append(idempotent_batch(5, 0, 0, &[b"once"]), 0).unwrap();
    log.append(transactional_batch(8, 0, &[b"open"]), 0).unwrap(); // offset 1
    for i in 0..60 {
        log.append(
            build_batch(0, &[format!("filler {i:04} ........................").as_bytes()]),
            0,
        )
        .unwrap();
    }
    assert!(log.segment_count() > 4, "{} segments", log.segment_count());
    // A crash: the tail is written but no shutdown snapshot is taken.
    log.write_now(0).unwrap();
    drop(log);
    let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
    // The producer's first batch is many segments back, yet its retry is recognised.
    let retry = log.append(idempotent_batch(5, 0, 0, &[b"once"]), 0).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, first.base_offset);
    // And the transaction opened at offset 1 still holds the stable offset there.
    assert_eq!(log.first_unstable_offset(), Some(Offset(1)));
    log.flush_now(0).unwrap();
    let end_before = end(&log);
    drop(log);
    let snapshots = crate::snapshot::list(&crate::io::Positional::new(), dir.path()).unwrap();
    assert_eq!(
        snapshots.last(),
        Some(&end_before),
        "a clean shutdown snapshots the log end"
    );
    assert!(snapshots.len() <= 2, "{snapshots:?}");
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.first_unstable_offset(), Some(Offset(1)));
}
