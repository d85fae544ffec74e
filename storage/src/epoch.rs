//! The leader epoch cache (KIP-101, Kafka's `LeaderEpochFileCache`): for every leader
//! epoch the log has seen, the first offset written under it. A follower that comes
//! back asks its leader where its latest epoch ended (OffsetForLeaderEpoch) and
//! truncates a divergent tail to there, instead of trusting its high watermark.
//!
//! Kept in `leader-epoch-checkpoint` beside the segments, in Kafka's text format
//! (version `0`, the entry count, then `epoch start_offset` per line), rewritten
//! whenever an epoch is added or the log is truncated: that happens once per
//! leadership change, never per batch.

use std::io;
use std::path::Path;

use crate::io::Io;
use crate::offset::Offset;

pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// One epoch's start: every offset from `start` up to the next entry's start was
/// written under `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start: Offset,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// Reads the checkpoint; a missing or unreadable one is an empty cache (the log's
    /// batches are then scanned by the caller to rebuild it).
    pub fn load(io: &dyn Io, dir: &Path) -> Option<EpochCache> {
        // A checkpoint holds one line per leadership change; anything larger is not one.
        let buf = crate::io::read_small(io, &dir.join(CHECKPOINT_FILE), 1 << 20)?;
        EpochCache::parse(std::str::from_utf8(&buf).ok()?)
    }

    fn parse(text: &str) -> Option<EpochCache> {
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut cache = EpochCache::default();
        for _ in 0..count {
            let mut fields = lines.next()?.split_whitespace();
            let epoch = fields.next()?.parse().ok()?;
            let start = Offset(fields.next()?.parse().ok()?);
            cache.assign(epoch, start);
        }
        Some(cache)
    }

    fn render(&self) -> String {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start.0));
        }
        text
    }

    /// Writes the checkpoint: to a temporary file that is synced, then renamed over the
    /// old one, so a crash leaves either checkpoint whole.
    pub fn store(&self, io: &dyn Io, dir: &Path) -> io::Result<()> {
        crate::io::replace_file(io, dir, CHECKPOINT_FILE, self.render().as_bytes(), true)
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start`. Only a newer epoch is recorded (an older
    /// or equal one is already known); returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start: Offset) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(last) if last.epoch >= epoch => false,
            Some(last) if last.start > start => false,
            _ => {
                self.entries.push(EpochEntry { epoch, start });
                true
            }
        }
    }

    /// Forgets epochs that start at or after `end` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end: Offset) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start < end);
        before != self.entries.len()
    }

    /// The log now starts at `start` (retention, DeleteRecords): epochs that ended
    /// before it are forgotten and the one holding it starts there (Kafka's
    /// `truncateFromStart`). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start: Offset) -> bool {
        let holding = self.entries.partition_point(|e| e.start <= start);
        if holding == 0 {
            return false;
        }
        let changed = holding > 1 || self.entries[0].start != start;
        self.entries.drain(..holding - 1);
        self.entries[0].start = start;
        changed
    }

    /// Forgets every epoch: the log was emptied and starts again at a new offset.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// OffsetForLeaderEpoch's answer for `requested`, given the log end: the largest
    /// epoch at or below it and the offset where that epoch ended (the start of the next
    /// epoch, or the log end for the latest). None (UNDEFINED) when the log has no
    /// epoch that old or newer. Kafka's `LeaderEpochFileCache.endOffsetFor`.
    pub fn end_offset_for(&self, requested: i32, log_end: Offset) -> Option<(i32, Offset)> {
        let latest = self.entries.last()?;
        if requested == latest.epoch {
            return Some((requested, log_end));
        }
        let higher = self.entries.iter().find(|e| e.epoch > requested)?;
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => Some((floor.epoch, higher.start)),
            // Older than every epoch here: it ended, as far as this log knows, where the
            // first one began.
            None => Some((requested, higher.start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for (e, s) in entries {
            c.assign(*e, Offset(*s));
        }
        c
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let c = cache(&[(0, 0), (2, 10), (5, 30)]);
        let end = Offset(42);
        assert_eq!(c.end_offset_for(5, end), Some((5, end)));
        assert_eq!(c.end_offset_for(2, end), Some((2, Offset(30))));
        // An epoch this log never had ends where the next one it had begins.
        assert_eq!(c.end_offset_for(3, end), Some((2, Offset(30))));
        assert_eq!(c.end_offset_for(1, end), Some((0, Offset(10))));
        assert_eq!(c.end_offset_for(6, end), None);
        assert_eq!(cache(&[(3, 7)]).end_offset_for(1, end), Some((1, Offset(7))));
        assert_eq!(EpochCache::default().end_offset_for(0, end), None);
    }

    #[test]
    fn a_log_start_moving_up_forgets_the_epochs_before_it() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 20)]);
        assert!(c.truncate_from_start(Offset(15)));
        assert_eq!(c, cache(&[(3, 15), (4, 20)]));
        assert!(!c.truncate_from_start(Offset(15)));
        assert!(!c.truncate_from_start(Offset(3)));
        assert!(c.truncate_from_start(Offset(20)));
        assert_eq!(c, cache(&[(4, 20)]));
    }

    #[test]
    fn only_newer_epochs_are_recorded_and_truncation_forgets_later_ones() {
        let mut c = cache(&[(1, 0), (1, 5), (0, 9), (3, 12)]);
        assert_eq!(c.entries().len(), 2);
        assert!(c.truncate_from_end(Offset(12)));
        assert_eq!(
            c.latest(),
            Some(EpochEntry {
                epoch: 1,
                start: Offset(0)
            })
        );
        let text = c.render();
        assert_eq!(EpochCache::parse(&text), Some(c));
        assert_eq!(EpochCache::parse("0\n2\n1 0\n"), None);
    }
}
