//! Producer-state snapshots (Kafka's `<offset>.snapshot` files of
//! `ProducerStateManager`): the idempotent producers' recent batches and the open
//! transactions as of an offset, so a log opens by loading the newest snapshot and
//! replaying only the batches after it, however many segments back a producer last
//! wrote. Taken when a segment rolls and when the log is flushed at shutdown.
//!
//! Layout (ours, not Kafka's): magic `SLPS`, version u16 (1), CRC-32C u32 of the rest,
//! then the producers (`ProducerState::encode`) and the open transactions
//! (`Transactions::encode_ongoing`); integers big-endian. A file that does not parse or
//! whose CRC does not match is ignored (the log falls back to an older one, or to
//! replaying its newest segments).

use std::io;
use std::path::Path;

use crate::io::Io;
use crate::offset::Offset;
use crate::producer::ProducerState;
use crate::segment;
use crate::txn::Transactions;

pub const SNAPSHOT_EXTENSION: &str = "snapshot";
const MAGIC: &[u8; 4] = b"SLPS";
const VERSION: u16 = 1;
/// Snapshots kept per log: the newest and the one before it (a torn newest one, or
/// one past a truncated tail, leaves the older to load).
const SNAPSHOTS_KEPT: usize = 2;

/// Offsets of the snapshots in `dir`, oldest first.
pub fn list(io: &dyn Io, dir: &Path) -> io::Result<Vec<Offset>> {
    let mut found: Vec<Offset> = io
        .list(dir)?
        .iter()
        .filter_map(|name| name.strip_suffix(".snapshot"))
        .filter_map(|stem| stem.parse::<i64>().ok())
        .map(Offset)
        .collect();
    found.sort();
    Ok(found)
}

/// Writes the state as of `offset` (every batch below it, none at or after), syncs it,
/// and removes all but the newest [`SNAPSHOTS_KEPT`].
pub fn write(
    io: &dyn Io,
    dir: &Path,
    offset: Offset,
    producers: &ProducerState,
    txns: &Transactions,
) -> io::Result<()> {
    let mut body = Vec::new();
    producers.encode(&mut body);
    txns.encode_ongoing(&mut body);
    let mut bytes = Vec::with_capacity(10 + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    bytes.extend_from_slice(&body);
    let name = segment::file_name(offset, SNAPSHOT_EXTENSION);
    crate::io::replace_file(io, dir, &name, &bytes, false)?;
    let all = list(io, dir)?;
    for old in all.iter().take(all.len().saturating_sub(SNAPSHOTS_KEPT)) {
        io.remove_file(&dir.join(segment::file_name(*old, SNAPSHOT_EXTENSION)))?;
    }
    Ok(())
}

/// Reads the snapshot at `offset`; None if it is missing, torn or corrupt.
pub fn read(io: &dyn Io, dir: &Path, offset: Offset) -> Option<(ProducerState, Transactions)> {
    // A snapshot holds at most a few hundred bytes per producer; far beyond is not one.
    let path = dir.join(segment::file_name(offset, SNAPSHOT_EXTENSION));
    let bytes = crate::io::read_small(io, &path, 1 << 30)?;
    let mut r = Reader(&bytes);
    if r.take(4)? != MAGIC || r.u16()? != VERSION {
        return None;
    }
    let crc = r.u32()?;
    if crc32c::crc32c(r.0) != crc {
        return None;
    }
    let producers = ProducerState::decode(&mut r)?;
    let txns = Transactions::decode_ongoing(&mut r)?;
    r.0.is_empty().then_some((producers, txns))
}

/// Removes the snapshot at `offset` (one past the log end after recovery).
pub fn remove(io: &dyn Io, dir: &Path, offset: Offset) -> io::Result<()> {
    io.remove_file(&dir.join(segment::file_name(offset, SNAPSHOT_EXTENSION)))
}

/// A cursor over a snapshot's bytes.
pub(crate) struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}
