//! The record a log leaves at a clean shutdown (`clean-shutdown`, Kafka's
//! `.kafka_cleanshutdown` kept per partition): where its active segment ends, so the
//! next open need not scan that segment to find out.
//!
//! It is written after the final flush and sync, and removed as soon as the log is
//! opened again, before anything can be appended: a log that crashes later never finds
//! a record that describes an older state of it. Even so it is only a hint. An open
//! trusts it only when the active segment's file has exactly the recorded length, its
//! indexes are plausible, and the batches after the last index entry pass their CRCs
//! and end at the recorded offset; anything else is scanned as after a crash.

use std::io;
use std::path::Path;

use crate::io::Io;
use crate::offset::Offset;

/// The record's file name in a log's directory.
pub const FILE: &str = "clean-shutdown";

const VERSION: u8 = 1;
const LEN: usize = 1 + 8 * 7 + 4;

/// Where the active segment ended at a clean shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanEnd {
    pub base_offset: Offset,
    /// The segment's size: its file's length after the shutdown's trim.
    pub size: u64,
    pub next_offset: Offset,
    pub max_timestamp: Option<(i64, Offset)>,
    pub bytes_since_index_entry: u64,
}

impl CleanEnd {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN);
        out.push(VERSION);
        let (has_ts, ts, ts_offset) = match self.max_timestamp {
            Some((ts, offset)) => (1, ts, offset.0),
            None => (0, 0, 0),
        };
        for v in [
            self.base_offset.0,
            self.size as i64,
            self.next_offset.0,
            has_ts,
            ts,
            ts_offset,
            self.bytes_since_index_entry as i64,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn decode(buf: &[u8]) -> Option<CleanEnd> {
        if buf.len() != LEN || buf[0] != VERSION {
            return None;
        }
        let (body, crc) = buf.split_at(LEN - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let field =
            |i: usize| -> Option<i64> { Some(i64::from_be_bytes(body.get(1 + 8 * i..9 + 8 * i)?.try_into().ok()?)) };
        let size = u64::try_from(field(1)?).ok()?;
        let bytes_since_index_entry = u64::try_from(field(6)?).ok()?;
        let max_timestamp = match field(3)? {
            0 => None,
            1 => Some((field(4)?, Offset(field(5)?))),
            _ => return None,
        };
        Some(CleanEnd {
            base_offset: Offset(field(0)?),
            size,
            next_offset: Offset(field(2)?),
            max_timestamp,
            bytes_since_index_entry,
        })
    }

    /// Leaves the record in `dir`. Neither synced nor renamed into place: a record lost
    /// or torn (its CRC then fails) costs the next open a scan, nothing more.
    pub fn store(&self, io: &dyn Io, dir: &Path) -> io::Result<()> {
        let file = io.open(&dir.join(FILE), true)?;
        file.set_len(0)?;
        file.write_all_at(&self.encode(), 0)
    }

    /// Takes the record out of `dir`: what it said, if it is whole, and in any case no
    /// file is left behind. Removing it is an error the open must not ignore, since a
    /// record left in place would outlive the writes that follow.
    pub fn take(io: &dyn Io, dir: &Path) -> io::Result<Option<CleanEnd>> {
        let path = dir.join(FILE);
        let buf = crate::io::read_small(io, &path, 4096);
        match io.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(buf.and_then(|b| CleanEnd::decode(&b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_any_damage_is_refused() {
        let end = CleanEnd {
            base_offset: Offset(1200),
            size: 4_000_123,
            next_offset: Offset(98_765),
            max_timestamp: Some((1_700_000_000_000, Offset(98_700))),
            bytes_since_index_entry: 77,
        };
        let bytes = end.encode();
        assert_eq!(CleanEnd::decode(&bytes), Some(end));
        let none = CleanEnd {
            max_timestamp: None,
            ..end
        };
        assert_eq!(CleanEnd::decode(&none.encode()), Some(none));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(CleanEnd::decode(&bad), None, "byte {i} flipped");
        }
        assert_eq!(CleanEnd::decode(&bytes[..bytes.len() - 1]), None);
    }
}
