//! Compaction on a real log: one latest value per key, offsets kept, tombstones gone
//! after `delete.retention.ms`, and a swap that a crash cannot tear.

use std::collections::BTreeMap;

use super::{end, small_config};
use crate::batch::{self, BatchHeader};
use crate::cleaner::{self, CompactionConfig};
use crate::compression;
use crate::io::Positional;
use crate::{Log, LogConfig, Offset};

fn compact_config() -> LogConfig {
    LogConfig {
        cleanup_compact: true,
        cleanup_delete: false,
        compaction: CompactionConfig {
            delete_retention_ms: 1_000,
            min_cleanable_dirty_ratio: 0.01,
            ..CompactionConfig::default()
        },
        ..small_config()
    }
}

/// Every record in the log: offset → (key, value).
fn records(log: &Log) -> BTreeMap<i64, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut next = log.offsets().log_start.offset();
    while next < end(log) {
        let chunk = log.read(next, 1 << 20, true).unwrap();
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let h = BatchHeader::parse(rest).unwrap();
            let body = compression::records_of(&rest[..h.size], &h, 1 << 20).unwrap();
            batch::for_each_record(&body, |r| {
                let key = String::from_utf8_lossy(r.key.unwrap()).into_owned();
                let value = r.value.map(|v| String::from_utf8_lossy(v).into_owned());
                out.insert(h.base_offset.0 + r.offset_delta, (key, value));
                Ok(())
            })
            .unwrap();
            next = h.next_offset();
            rest = &rest[h.size..];
        }
    }
    out
}

/// 300 records over 10 keys, key 3 deleted at the end (a tombstone), at time `ts`.
fn fill(log: &mut Log, ts: i64) -> BTreeMap<String, (i64, Option<String>)> {
    let mut latest = BTreeMap::new();
    for i in 0..300 {
        let key = format!("k{}", i % 10);
        let value = format!("v{i}");
        let info = log
            .append(batch::build(&[(Some(key.as_bytes()), Some(value.as_bytes()))], ts), ts)
            .unwrap();
        latest.insert(key, (info.base_offset.0, Some(value)));
    }
    let info = log.append(batch::build(&[(Some(b"k3"), None)], ts), ts).unwrap();
    latest.insert("k3".into(), (info.base_offset.0, None));
    // A fresh active segment, so everything above is in closed ones.
    let mut config = log.config().clone();
    config.segment_ms = 0;
    log.set_config(config.clone());
    log.append(batch::build(&[(Some(b"k0"), Some(b"last"))], ts), ts + 1)
        .unwrap();
    latest.insert("k0".into(), (end(log).0 - 1, Some("last".into())));
    config.segment_ms = i64::MAX;
    log.set_config(config);
    log.write_now(ts).unwrap();
    latest
}

fn run_pass(log: &mut Log, now: i64) -> Option<u64> {
    let job = log.cleaning_job(now, end(log), 1 << 20, None)?;
    let cleaned = cleaner::clean(&Positional::new(), &job).unwrap();
    log.install_cleaned(cleaned, now).unwrap()
}

#[test]
fn compaction_keeps_the_latest_value_of_every_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), compact_config(), 0).unwrap();
    let latest = fill(&mut log, 100);
    let before = log.size_bytes();
    let reclaimed = run_pass(&mut log, 200).expect("a pass ran");
    assert!(
        reclaimed > 0 && log.size_bytes() < before / 3,
        "{} of {before} bytes left",
        log.size_bytes()
    );
    let seen = records(&log);
    // One record per key (the tombstone is still within delete.retention.ms), each the
    // latest, at the offset it was produced at.
    let mut by_key: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    for (offset, (key, value)) in &seen {
        assert!(
            by_key.insert(key.clone(), (*offset, value.clone())).is_none() || key == "k0",
            "{key} twice"
        );
    }
    for (key, (offset, value)) in &latest {
        assert_eq!(seen.get(offset), Some(&(key.clone(), value.clone())), "key {key}");
    }
    // The log reopens to the same records; the next pass has nothing new to do.
    drop(log);
    let mut log = Log::open(dir.path(), compact_config(), 0).unwrap();
    assert_eq!(records(&log), seen);
    assert_eq!(run_pass(&mut log, 200), None);
    // Past delete.retention.ms the tombstone goes too, once the log is dirty again.
    log.append(batch::build(&[(Some(b"k1"), Some(b"again"))], 5_000), 5_000)
        .unwrap();
    let mut config = log.config().clone();
    config.segment_ms = 0;
    log.set_config(config);
    log.append(batch::build(&[(Some(b"k9"), Some(b"roll"))], 5_000), 5_000)
        .unwrap();
    log.write_now(5_000).unwrap();
    run_pass(&mut log, 5_000).expect("a second pass");
    let keys: Vec<String> = records(&log).into_values().map(|(k, _)| k).collect();
    assert!(
        !keys.contains(&"k3".to_string()),
        "the tombstone outlived delete.retention.ms: {keys:?}"
    );
}

#[test]
fn a_crash_before_the_marker_keeps_the_old_segments_and_after_it_the_new_ones() {
    for complete in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), compact_config(), 0).unwrap();
        fill(&mut log, 100);
        let before = records(&log);
        let job = log.cleaning_job(200, end(&log), 1 << 20, None).unwrap();
        cleaner::clean(&Positional::new(), &job).unwrap();
        if complete {
            cleaner::mark_complete(&Positional::new(), dir.path()).unwrap();
        }
        // The broker dies here: nothing was swapped in.
        drop(log);
        let log = Log::open(dir.path(), compact_config(), 0).unwrap();
        let after = records(&log);
        assert!(!dir.path().join(cleaner::CLEANED_DIR).exists());
        if complete {
            assert!(after.len() < before.len() / 10, "the swap was not finished");
            for (offset, record) in &after {
                assert_eq!(before.get(offset), Some(record));
            }
        } else {
            assert_eq!(after, before);
        }
        assert_eq!(end(&log), Offset(302));
    }
}

/// Faults while a pass writes and swaps its segments, then power loss: whatever point
/// the swap reached, the log that opens holds only records that were there, at their
/// offsets, and every key's latest value.
#[test]
fn the_swap_survives_faults_and_power_loss_on_the_simulated_disk() {
    use std::path::Path;
    use std::rc::Rc;

    use crate::io::sim::{Faults, SimIo};

    let dir = Path::new("/sim/compacted-0");
    let mut installed = 0;
    for seed in 1..=60u64 {
        let sim = SimIo::new(seed, Faults::default());
        let mut log = Log::open_with(Rc::new(sim.clone()), dir, compact_config(), 0).unwrap();
        let latest = fill(&mut log, 100);
        log.flush_now(100).unwrap();
        let before = records(&log);
        sim.set_faults(Faults {
            write_error_ppm: 1_000,
            sync_error_ppm: 30_000,
            read_error_ppm: 0,
        });
        if let Some(job) = log.cleaning_job(200, end(&log), 1 << 20, None) {
            if let Ok(cleaned) = cleaner::clean(&sim, &job) {
                if log.install_cleaned(cleaned, 200).is_ok() {
                    installed += 1;
                }
            }
        }
        sim.crash();
        drop(log);
        sim.set_faults(Faults::default());
        let log = Log::open_with(Rc::new(sim.clone()), dir, compact_config(), 0).unwrap();
        let after = records(&log);
        for (offset, record) in &after {
            assert_eq!(before.get(offset), Some(record), "seed {seed}: offset {offset}");
        }
        for (key, (offset, value)) in &latest {
            assert_eq!(
                after.get(offset),
                Some(&(key.clone(), value.clone())),
                "seed {seed}: the latest value of {key} is gone"
            );
        }
    }
    assert!(installed > 0, "no pass ever got through the faults");
}
