//! Sluice storage: the partition log.
//!
//! A partition is a directory of segments (`<base>.log`, `<base>.index`,
//! `<base>.timeindex`) holding record batches exactly as producers sent them. This crate
//! knows record batches and files, never requests or sockets (DESIGN.md, "Storage").

pub mod batch;
pub mod engine;
pub mod index;
pub mod io;
pub mod log;
pub mod offset;
pub mod producer;
pub mod segment;

pub use batch::{BatchError, BatchHeader, TimestampType};
pub use log::{AppendError, AppendInfo, Log, LogConfig, ReadError, WriteJob, WriteReceipt};
pub use offset::{LogOffsets, Offset};
pub use producer::SequenceError;
pub use segment::{DiskRead, ReadStep};

#[cfg(test)]
mod tests;
