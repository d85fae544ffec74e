//! Retention: which closed segments Kafka's `delete` cleanup policy removes, and the
//! log start offset checkpoint that DeleteRecords moves.
//!
//! Kafka's rules (`UnifiedLog.deleteOldSegments`): a segment goes when its newest
//! record is older than `retention.ms`, when the partition without it is still at or
//! over `retention.bytes`, or when it lies wholly below the log start offset. Only a
//! prefix of the log goes (the oldest segments first, stopping at the first that
//! stays), only segments wholly below the high watermark, and never the active segment.
//!
//! The log start offset is kept in `log-start-offset` beside the segments (version `0`,
//! then the offset), rewritten atomically whenever DeleteRecords moves it into a
//! segment: retention alone never needs it, as the first segment's base says as much.

use std::io;
use std::path::Path;

use crate::io::Io;
use crate::offset::Offset;

pub const LOG_START_FILE: &str = "log-start-offset";

/// What retention needs to know of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base: Offset,
    /// The offset after its last batch.
    pub next: Offset,
    pub size: u64,
    /// Its newest record's timestamp (or, with none, when it was created or opened).
    pub newest_ms: i64,
}

/// The limits a retention pass applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub now_ms: i64,
    /// `retention.ms`; negative keeps everything.
    pub retention_ms: i64,
    /// `retention.bytes`; negative puts no bound on size.
    pub retention_bytes: i64,
    /// Whether `cleanup.policy` includes `delete`; without it only segments below the
    /// log start offset go.
    pub delete_policy: bool,
    pub log_start: Offset,
    /// Segments must end at or below this (the high watermark, and what is written).
    pub upto: Offset,
}

/// Why the oldest segments go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// How many of the oldest segments to delete.
    pub segments: usize,
    pub by_time: usize,
    pub by_size: usize,
    pub by_log_start: usize,
}

/// How many of the oldest `segments` (in offset order, the last being the active one)
/// retention deletes.
pub fn deletable(segments: &[SegmentSummary], limits: &Limits) -> Verdict {
    // The active segment and anything not yet wholly committed stay.
    let closed = segments.len().saturating_sub(1);
    let eligible = segments[..closed].iter().take_while(|s| s.next <= limits.upto).count();
    let candidates = &segments[..eligible];
    let by_log_start = candidates.iter().take_while(|s| s.next <= limits.log_start).count();
    let (mut by_time, mut by_size) = (0, 0);
    if limits.delete_policy {
        if limits.retention_ms >= 0 {
            let oldest_kept = limits.now_ms.saturating_sub(limits.retention_ms);
            by_time = candidates.iter().take_while(|s| s.newest_ms < oldest_kept).count();
        }
        if limits.retention_bytes >= 0 {
            let total: u64 = segments.iter().map(|s| s.size).sum();
            let mut over = total as i128 - limits.retention_bytes as i128;
            for s in candidates {
                if over - (s.size as i128) < 0 {
                    break;
                }
                over -= s.size as i128;
                by_size += 1;
            }
        }
    }
    Verdict {
        segments: by_time.max(by_size).max(by_log_start),
        by_time,
        by_size,
        by_log_start,
    }
}

/// Reads the log start checkpoint; None when there is none or it is unreadable (the
/// first segment's base is then the log start).
pub fn load_log_start(io: &dyn Io, dir: &Path) -> Option<Offset> {
    load_offset(io, &dir.join(LOG_START_FILE))
}

/// Writes the log start checkpoint.
pub fn store_log_start(io: &dyn Io, dir: &Path, offset: Offset) -> io::Result<()> {
    store_offset(io, dir, LOG_START_FILE, offset)
}

/// Reads a one-offset checkpoint file (version `0`, then the offset).
pub(crate) fn load_offset(io: &dyn Io, path: &Path) -> Option<Offset> {
    let buf = crate::io::read_small(io, path, 64)?;
    let text = std::str::from_utf8(&buf).ok()?;
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    lines.next()?.trim().parse().ok().map(Offset)
}

/// Writes a one-offset checkpoint, atomically and durably.
pub(crate) fn store_offset(io: &dyn Io, dir: &Path, name: &str, offset: Offset) -> io::Result<()> {
    let text = format!("0\n{}\n", offset.0);
    crate::io::replace_file(io, dir, name, text.as_bytes(), true)
}

/// Forgets the checkpoint (the log was emptied and starts again elsewhere).
pub fn remove_log_start(io: &dyn Io, dir: &Path) -> io::Result<()> {
    io.remove_file(&dir.join(LOG_START_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, next: i64, size: u64, newest_ms: i64) -> SegmentSummary {
        SegmentSummary {
            base: Offset(base),
            next: Offset(next),
            size,
            newest_ms,
        }
    }

    fn limits() -> Limits {
        Limits {
            now_ms: 10_000,
            retention_ms: -1,
            retention_bytes: -1,
            delete_policy: true,
            log_start: Offset(0),
            upto: Offset(i64::MAX),
        }
    }

    #[test]
    fn time_retention_deletes_the_expired_prefix_and_never_the_active_segment() {
        let segments = [
            seg(0, 10, 100, 1000),
            seg(10, 20, 100, 2000),
            seg(20, 30, 100, 9000),
            seg(30, 31, 10, 500),
        ];
        let v = deletable(
            &segments,
            &Limits {
                retention_ms: 5000,
                ..limits()
            },
        );
        // Up to the first segment newer than 5000; the old active segment stays.
        assert_eq!((v.segments, v.by_time), (2, 2));
        let all_old = [seg(0, 10, 100, 1), seg(10, 20, 100, 1)];
        assert_eq!(
            deletable(
                &all_old,
                &Limits {
                    retention_ms: 0,
                    ..limits()
                }
            )
            .segments,
            1
        );
    }

    #[test]
    fn size_retention_keeps_the_partition_at_or_under_its_limit() {
        let segments = [
            seg(0, 10, 100, 0),
            seg(10, 20, 100, 0),
            seg(20, 30, 100, 0),
            seg(30, 35, 50, 0),
        ];
        // 350 bytes, limit 200: dropping 100 leaves 250; dropping another would leave 150,
        // under the limit, so (as in Kafka) it stays.
        assert_eq!(
            deletable(
                &segments,
                &Limits {
                    retention_bytes: 200,
                    ..limits()
                }
            )
            .by_size,
            1
        );
        assert_eq!(
            deletable(
                &segments,
                &Limits {
                    retention_bytes: 150,
                    ..limits()
                }
            )
            .by_size,
            2
        );
        assert_eq!(
            deletable(
                &segments,
                &Limits {
                    retention_bytes: 250,
                    ..limits()
                }
            )
            .by_size,
            1
        );
        assert_eq!(
            deletable(
                &segments,
                &Limits {
                    retention_bytes: 349,
                    ..limits()
                }
            )
            .by_size,
            0
        );
    }

    #[test]
    fn nothing_above_the_high_watermark_goes_and_compacted_logs_keep_old_data() {
        let segments = [seg(0, 10, 100, 0), seg(10, 20, 100, 0), seg(20, 30, 100, 0)];
        let v = deletable(
            &segments,
            &Limits {
                retention_ms: 0,
                upto: Offset(15),
                ..limits()
            },
        );
        assert_eq!(v.segments, 1);
        let compacted = Limits {
            retention_ms: 0,
            delete_policy: false,
            log_start: Offset(20),
            ..limits()
        };
        // Only what DeleteRecords put below the log start goes.
        assert_eq!(
            deletable(&segments, &compacted),
            Verdict {
                segments: 2,
                by_log_start: 2,
                ..Verdict::default()
            }
        );
    }
}
