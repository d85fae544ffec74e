//! Offsets get their own types so that a position in a file, a count and an offset in
//! the log cannot be swapped silently, and neither can two offsets that mean different
//! things: the log end, the high watermark, how far the files are written and how far
//! they are durable are each a distinct type (after Redpanda's committed / stable /
//! dirty offsets). Comparing two kinds takes an explicit `.offset()`.
//!
//! Worked example, one partition on a single node: after batches of 3 and 2 records,
//! `LogStart(0)`, `LogEnd(5)`; the high watermark is 5 as soon as the partition says so
//! (single node: at once); `Written(5)` once a write round has put both batches in the
//! files and `Flushed(5)` once a round's fdatasync has. Always
//! `Flushed <= Written <= LogEnd` and `LogStart <= HighWatermark <= LogEnd`.

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

macro_rules! offset_kind {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub Offset);

        impl $name {
            pub fn offset(self) -> Offset {
                self.0
            }

            pub fn value(self) -> i64 {
                self.0 .0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

offset_kind! {
    /// The first offset still in the log (retention moves it forward).
    LogStart;
    /// The offset the next appended record gets.
    LogEnd;
    /// Consumers read up to, not including, this offset. The partition sets it: at once
    /// on a single node, when every in-sync replica has a batch in a cluster.
    HighWatermark;
    /// Every offset below this is in the files (the page cache at least), so a killed
    /// broker process keeps it.
    Written;
    /// Every offset below this is on stable storage, so a machine crash keeps it.
    Flushed;
}

/// The offsets that storage knows of a partition log. The high watermark is not among
/// them: it depends on replication, which the broker's partition decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start: LogStart,
    pub log_end: LogEnd,
}
