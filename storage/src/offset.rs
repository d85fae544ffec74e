//! Offsets get their own type so that a position in a file, a count and an offset in
//! the log cannot be swapped silently.

use std::fmt;

/// A Kafka offset: the position of a record in its partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl Offset {
    pub const ZERO: Offset = Offset(0);

    pub fn value(self) -> i64 {
        self.0
    }

    /// The offset `n` records after this one.
    pub fn plus(self, n: i64) -> Offset {
        Offset(self.0 + n)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The three offsets that describe a partition log, as Kafka names them.
///
/// Invariant: `log_start <= high_watermark <= log_end`. On a single node every
/// appended batch is immediately part of the high watermark; replication will hold the
/// high watermark back until the in-sync replicas have the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    /// The first offset still in the log (retention moves it forward).
    pub log_start: Offset,
    /// Consumers read up to, not including, this offset.
    pub high_watermark: Offset,
    /// The offset the next appended record gets.
    pub log_end: Offset,
}
