//! Sluice storage: the partition log.
//!
//! A partition is a directory of segments (`<base>.log`, `<base>.index`,
//! `<base>.timeindex`) holding record batches exactly as producers sent them. This crate
//! knows record batches and files, never requests or sockets (DESIGN.md, "Storage").
//!
//! The broker uses one [`LogManager`] per shard: it opens the shard's partition logs
//! ([`PartitionLog`]), appends with a receipt that resolves at the asked
//! [`Durability`], and reads; the manager runs write rounds and reads through the
//! shard's I/O backend ([`io::Io`]).

pub mod batch;
pub mod cleaner;
pub mod compression;
pub mod epoch;
pub mod index;
pub mod io;
pub mod log;
pub mod manager;
pub mod offset;
pub mod producer;
pub mod retention;
pub mod segment;
pub mod snapshot;
pub mod sparse;
pub mod txn;

pub use batch::{BatchError, BatchHeader, TimestampType};
pub use io::Engine;
pub use log::{AppendError, AppendInfo, DeleteRecordsError, Deleted, Log, LogConfig, ReadError};
pub use manager::{AppendReceipt, Appended, Durability, LogManager, PartitionLog, RoundStats, WriteFailed};
pub use offset::{Flushed, HighWatermark, LogEnd, LogOffsets, LogStart, Offset, Written};
pub use producer::SequenceError;
pub use txn::{AbortedTxn, ControlType, Marker};

#[cfg(test)]
mod tests;
