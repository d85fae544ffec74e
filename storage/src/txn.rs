//! Transactions in a partition's log (KIP-98): which producers have a transaction open
//! here (so the last stable offset stays below its first batch), the transactions that
//! were aborted (so `read_committed` consumers drop their batches), and the control
//! batches (COMMIT / ABORT markers) that end them.
//!
//! The aborted transactions of a segment are kept in `<base>.txnindex` in Kafka's
//! layout (`TransactionIndex.scala`): 34-byte entries of version i16 (0), producerId
//! i64, firstOffset i64, lastOffset i64 (the marker's offset) and lastStableOffset i64.
//! An entry is written (and synced) before its marker is acknowledged; recovery drops
//! entries past the log end and rebuilds those of the replayed segments from their
//! batches, so the file never claims an abort the log does not hold.
//!
//! Worked example: producer 7 writes transactional batches at 10 and 14, producer 9 at
//! 12; the first unstable offset is 10 while both are open. An ABORT marker for 7 lands
//! at 15: the index gains (7, first 10, last 15, lso 12) and the first unstable offset
//! moves to 12, producer 9's first batch. A `read_committed` fetch from 0 is answered up
//! to 12 with aborted_transactions [(7, 10)], and the client drops producer 7's batches
//! from offset 10 until it meets the marker.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use crate::io::Io;
use crate::offset::Offset;
use crate::segment;

/// The file extension of a segment's aborted-transaction index.
pub const TXN_INDEX_EXTENSION: &str = "txnindex";
/// Bytes of one index entry (Kafka's `AbortedTxn.TotalSize`).
const ENTRY_LEN: usize = 34;
/// The index entry version Kafka writes.
const ENTRY_VERSION: i16 = 0;

/// A control record's type (`ControlRecordType`): the key's second i16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

/// A transaction that was aborted in this log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: Offset,
    /// The offset of its ABORT marker.
    pub last_offset: Offset,
    /// The first unstable offset once this transaction ended.
    pub last_stable_offset: Offset,
}

impl AbortedTxn {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&ENTRY_VERSION.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.first_offset.0.to_be_bytes());
        out.extend_from_slice(&self.last_offset.0.to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.0.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| {
            b.get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .map(i64::from_be_bytes)
        };
        if b.get(0..2)? != ENTRY_VERSION.to_be_bytes() {
            return None;
        }
        Some(AbortedTxn {
            producer_id: i64_at(2)?,
            first_offset: Offset(i64_at(10)?),
            last_offset: Offset(i64_at(18)?),
            last_stable_offset: Offset(i64_at(26)?),
        })
    }
}

/// A marker a transaction coordinator asks a partition to append (WriteTxnMarkers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub control: ControlType,
    /// The coordinator's epoch (its `__transaction_state` partition's leader epoch).
    pub coordinator_epoch: i32,
}

/// Builds the control batch of `marker`: one record whose key is (version 0, type) and
/// whose value is (version 0, coordinator epoch), attributes transactional | control,
/// no sequence (Kafka's `MemoryRecords.withEndTransactionMarker`).
pub fn build_marker(marker: &Marker, timestamp_ms: i64) -> Vec<u8> {
    let kind: i16 = match marker.control {
        ControlType::Abort => 0,
        ControlType::Commit => 1,
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let mut b = batch::build(&[(Some(&key), Some(&value))], timestamp_ms);
    batch::set_producer(&mut b, marker.producer_id, marker.producer_epoch, -1, true, true);
    b
}

/// The control type of a whole control batch (None when it is not one, or its first
/// record is not a control record this broker knows).
pub fn control_type(batch_bytes: &[u8]) -> Option<ControlType> {
    let header = BatchHeader::parse(batch_bytes).ok()?;
    if !header.is_control() || header.compression() != 0 {
        return None;
    }
    let body = batch_bytes.get(BATCH_HEADER_LEN..header.size.min(batch_bytes.len()))?;
    let mut found = None;
    let _ = batch::for_each_record(body, |r| {
        if found.is_none() {
            found = r.key.and_then(parse_control_key);
        }
        Ok(())
    });
    found
}

fn parse_control_key(key: &[u8]) -> Option<ControlType> {
    match key.get(2..4)? {
        [0, 0] => Some(ControlType::Abort),
        [0, 1] => Some(ControlType::Commit),
        _ => None,
    }
}

/// The transactions of one log.
#[derive(Debug, Default)]
pub struct Transactions {
    /// Producer id → the first offset of its open transaction.
    ongoing: BTreeMap<i64, Offset>,
    /// Every aborted transaction in the log, in marker order.
    aborted: Vec<AbortedTxn>,
}

impl Transactions {
    /// Takes a batch that is now in the log at `header.base_offset` (on append, and on
    /// replay at recovery). `control` is the marker's type for a control batch. Returns
    /// the aborted transaction an ABORT marker ended, for the segment's index.
    pub fn record(&mut self, header: &BatchHeader, control: Option<ControlType>) -> Option<AbortedTxn> {
        if header.producer_id < 0 || !header.is_transactional() {
            return None;
        }
        if !header.is_control() {
            self.ongoing.entry(header.producer_id).or_insert(header.base_offset);
            return None;
        }
        let first = self.ongoing.remove(&header.producer_id);
        if control != Some(ControlType::Abort) {
            return None;
        }
        let entry = AbortedTxn {
            producer_id: header.producer_id,
            // A marker with no open transaction here (one that touched the partition
            // without writing to it) aborts nothing: an empty range at the marker.
            first_offset: first.unwrap_or(header.base_offset),
            last_offset: header.base_offset,
            last_stable_offset: self.first_unstable().unwrap_or(header.next_offset()),
        };
        self.aborted.push(entry);
        Some(entry)
    }

    /// Appends the open transactions to a snapshot: (producer id, first offset) each.
    pub(crate) fn encode_ongoing(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.ongoing.len() as u32).to_be_bytes());
        for (id, first) in &self.ongoing {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&first.0.to_be_bytes());
        }
    }

    /// Transactions with the open ones a snapshot recorded (and no aborted ones yet).
    pub(crate) fn decode_ongoing(r: &mut crate::snapshot::Reader) -> Option<Transactions> {
        let count = r.u32()?;
        let mut ongoing = BTreeMap::new();
        for _ in 0..count {
            ongoing.insert(r.i64()?, Offset(r.i64()?));
        }
        Some(Transactions {
            ongoing,
            aborted: Vec::new(),
        })
    }

    /// Adds aborted transactions read from a segment's index at open.
    pub fn load_aborted(&mut self, entries: impl IntoIterator<Item = AbortedTxn>) {
        self.aborted.extend(entries);
        self.aborted.sort_by_key(|a| a.last_offset);
    }

    /// Forgets aborted transactions that ended before `log_start` (their batches are gone).
    pub fn forget_before(&mut self, log_start: Offset) {
        let gone = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..gone);
    }

    /// The first offset of the oldest open transaction: the last stable offset can be
    /// no higher.
    pub fn first_unstable(&self) -> Option<Offset> {
        self.ongoing.values().min().copied()
    }

    /// Whether `producer_id` has a transaction open here.
    pub fn is_open(&self, producer_id: i64) -> bool {
        self.ongoing.contains_key(&producer_id)
    }

    /// How many transactions are open here.
    pub fn ongoing_count(&self) -> usize {
        self.ongoing.len()
    }

    /// The aborted transactions a fetch of `from..=upto` must tell its consumer about:
    /// those whose range overlaps it (Kafka's `collectAbortedTxns`).
    pub fn aborted_overlapping(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset <= upto)
            .copied()
            .collect()
    }
}

/// Reads a segment's aborted-transaction index; a missing file is an empty one, and a
/// torn last entry is ignored.
pub fn read_index(io: &dyn Io, dir: &Path, base: Offset) -> io::Result<Vec<AbortedTxn>> {
    let path = dir.join(segment::file_name(base, TXN_INDEX_EXTENSION));
    let file = match io.open(&path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.size()? as usize;
    let mut buf = vec![0u8; len - len % ENTRY_LEN];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf.chunks_exact(ENTRY_LEN).filter_map(AbortedTxn::decode).collect())
}

/// Writes a segment's whole aborted-transaction index (none: the file is removed), and
/// syncs it: an abort must not be forgotten once its marker is acknowledged.
pub fn write_index(io: &dyn Io, dir: &Path, base: Offset, entries: &[AbortedTxn]) -> io::Result<()> {
    let path = dir.join(segment::file_name(base, TXN_INDEX_EXTENSION));
    if entries.is_empty() {
        return match io.remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        e.encode(&mut bytes);
    }
    let file = io.open(&path, true)?;
    file.set_len(0)?;
    file.write_all_at(&bytes, 0)?;
    file.sync_data()
}

/// Appends one entry to a segment's index and syncs it.
pub fn append_index(io: &dyn Io, dir: &Path, base: Offset, entry: &AbortedTxn) -> io::Result<()> {
    let path = dir.join(segment::file_name(base, TXN_INDEX_EXTENSION));
    let file = io.open(&path, true)?;
    let len = file.size()?;
    let mut bytes = Vec::with_capacity(ENTRY_LEN);
    entry.encode(&mut bytes);
    // A torn entry from a crash is overwritten.
    file.write_all_at(&bytes, len - len % ENTRY_LEN as u64)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, base: i64, control: bool) -> BatchHeader {
        let bytes = if control {
            build_marker(
                &Marker {
                    producer_id,
                    producer_epoch: 0,
                    control: ControlType::Abort,
                    coordinator_epoch: 0,
                },
                0,
            )
        } else {
            let mut b = batch::build(&[(None, Some(b"v"))], 0);
            batch::set_producer(&mut b, producer_id, 0, 0, true, false);
            b
        };
        BatchHeader {
            base_offset: Offset(base),
            ..BatchHeader::parse(&bytes).unwrap_or_else(|e| panic!("{e}"))
        }
    }

    #[test]
    fn the_worked_example() {
        let mut t = Transactions::default();
        assert_eq!(t.record(&header(7, 10, false), None), None);
        t.record(&header(9, 12, false), None);
        t.record(&header(7, 14, false), None);
        assert_eq!(t.first_unstable(), Some(Offset(10)));
        let aborted = t.record(&header(7, 15, true), Some(ControlType::Abort));
        assert_eq!(
            aborted,
            Some(AbortedTxn {
                producer_id: 7,
                first_offset: Offset(10),
                last_offset: Offset(15),
                last_stable_offset: Offset(12),
            })
        );
        assert_eq!(t.first_unstable(), Some(Offset(12)));
        assert_eq!(t.aborted_overlapping(Offset(0), Offset(11)).len(), 1);
        assert!(t.aborted_overlapping(Offset(16), Offset(20)).is_empty());
        assert!(t.aborted_overlapping(Offset(0), Offset(9)).is_empty());
        t.record(&header(9, 16, true), Some(ControlType::Commit));
        assert_eq!(t.first_unstable(), None);
    }

    #[test]
    fn markers_name_their_type_and_index_entries_round_trip() {
        for control in [ControlType::Abort, ControlType::Commit] {
            let m = Marker {
                producer_id: 3,
                producer_epoch: 2,
                control,
                coordinator_epoch: 5,
            };
            let b = build_marker(&m, 1);
            let h = BatchHeader::parse(&b).unwrap_or_else(|e| panic!("{e}"));
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (3, 2, -1));
            assert!(batch::crc_matches(&b, &h));
            assert_eq!(control_type(&b), Some(control));
        }
        let e = AbortedTxn {
            producer_id: 1,
            first_offset: Offset(2),
            last_offset: Offset(3),
            last_stable_offset: Offset(4),
        };
        let mut bytes = Vec::new();
        e.encode(&mut bytes);
        assert_eq!(bytes.len(), ENTRY_LEN);
        assert_eq!(AbortedTxn::decode(&bytes), Some(e));
    }
}
