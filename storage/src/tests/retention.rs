//! Retention and DeleteRecords on a real log: what goes, what stays, and that the log
//! start survives reopening.

use super::{batches, end, small_config};
use crate::batch::tests::build_batch;
use crate::{Log, LogConfig, Offset, ReadError};

fn files(dir: &std::path::Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(ext))
        .count()
}

/// Waits for the background thread to unlink what retention renamed.
fn wait_for_no_deleted_files(dir: &std::path::Path) {
    for _ in 0..200 {
        if files(dir, ".deleted") == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("deleted segment files were never removed");
}

#[test]
fn time_retention_deletes_old_closed_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 1_000,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone(), 0).unwrap();
    // 20 old records (timestamp 100), then 20 recent ones (timestamp 5000).
    for i in 0..40 {
        let ts = if i < 20 { 100 } else { 5_000 };
        log.append(build_batch(ts, &[&[i as u8; 100]]), 0).unwrap();
    }
    log.write_now(0).unwrap();
    let segments = log.segment_count();
    let deleted = log.apply_retention(5_500, end(&log)).unwrap();
    assert!(deleted.segments > 0 && deleted.bytes > 0);
    assert_eq!(log.segment_count(), segments - deleted.segments);
    let start = log.offsets().log_start.offset();
    assert!(start > Offset(0) && start <= Offset(20), "log start {start:?}");
    // Nothing newer than the limit went.
    let all = batches(&log.read(start, 1 << 20, true).unwrap());
    assert_eq!(all.first().map(|b| b.0), Some(start.0));
    assert!(matches!(
        log.read(Offset(0), 1 << 20, true),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    wait_for_no_deleted_files(dir.path());
    assert_eq!(files(dir.path(), ".log"), log.segment_count());
    // Running again now deletes nothing more: the rest is recent.
    assert_eq!(log.apply_retention(5_500, end(&log)).unwrap().segments, 0);
    log.flush_now(0).unwrap();
    drop(log);
    let log = Log::open(dir.path(), config, 0).unwrap();
    assert_eq!(log.offsets().log_start.offset(), start);
    assert_eq!(end(&log), Offset(40));
}

#[test]
fn size_retention_never_deletes_the_active_segment_or_past_the_limit_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 1_500,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config, 0).unwrap();
    for i in 0..60 {
        log.append(build_batch(i, &[&[i as u8; 100]]), 0).unwrap();
    }
    log.write_now(0).unwrap();
    // With only offsets below 3 committed no segment is wholly committed: nothing goes.
    assert_eq!(log.apply_retention(0, Offset(3)).unwrap().segments, 0);
    log.apply_retention(0, end(&log)).unwrap();
    // Kafka's rule: a segment goes only if the log stays at or over the limit without it.
    let left = log.size_bytes();
    assert!((1_500..2_500).contains(&left), "{left} bytes left");
    assert_eq!(end(&log), Offset(60));
}

#[test]
fn delete_records_moves_the_start_into_a_segment_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config(), 0).unwrap();
    for i in 0..40 {
        log.append(build_batch(i, &[&[i as u8; 100]]), 0).unwrap();
    }
    log.write_now(0).unwrap();
    let segments = log.segment_count();
    assert!(log.delete_records(Offset(41), end(&log)).is_err());
    assert!(log.delete_records(Offset(30), Offset(25)).is_err());
    assert_eq!(log.delete_records(Offset(23), end(&log)).unwrap().offset(), Offset(23));
    assert!(log.segment_count() < segments);
    // Moving it back does nothing.
    assert_eq!(log.delete_records(Offset(3), end(&log)).unwrap().offset(), Offset(23));
    assert!(log.read(Offset(22), 1 << 20, true).is_err());
    assert_eq!(batches(&log.read(Offset(23), 1 << 20, true).unwrap())[0].0, 23);
    log.flush_now(0).unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_config(), 0).unwrap();
    assert_eq!(log.offsets().log_start.offset(), Offset(23));
}
