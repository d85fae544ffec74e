//! Reads of a segment in steps: each step answers from the write-behind tail, or from
//! bytes the previous step asked to read, or names the next file range to read, so
//! the caller (the shard's log manager) decides how to wait for the disk.

use bytes::{Bytes, BytesMut};

use super::{Segment, TailBatch};
use crate::batch::{BatchHeader, BATCH_HEADER_LEN};
use crate::io::handles::Handle;
use crate::offset::Offset;

/// The most one read step takes from the file: a follower's 4 MiB per partition
/// (`replica.fetch.max.bytes` here) in one read, less one block so that the aligned
/// read of a direct-I/O file still fits the buffer pool's largest class. A fetch may
/// answer with less than its `max_bytes`. With 1 MiB steps a follower that had fallen
/// more than the read cache behind its leader (RF 3 on one disk: ~28 MB per partition)
/// caught up by ~0.5 MB per partition per round trip and never did, so every acks=all
/// write waited on it. A first batch larger than this is still read whole, by a second
/// step (KIP-74).
const READ_BYTES_MAX: u64 = (crate::io::direct::POOLED_MAX - crate::io::direct::BLOCK) as u64;

impl Segment {
    /// Where a read of `offset` starts: the index entry at or before it. The read
    /// returns no batch that starts at or after `upto`.
    pub fn read_cursor(&self, offset: Offset, max_bytes: usize, min_one: bool, upto: Offset) -> ReadCursor {
        let relative = (offset.0 - self.base_offset.0).clamp(0, u32::MAX as i64) as u32;
        let pos = self
            .offset_index
            .floor(relative)
            .map(|e| e.position as u64)
            .unwrap_or(0);
        ReadCursor {
            segment: self.base_offset,
            pos,
            offset,
            max_bytes,
            min_one,
            upto,
        }
    }

    /// One step of a read: whole batches starting with the one that holds the cursor's
    /// offset, at most `max_bytes` of them, or the first alone when it is larger and
    /// `min_one` is set (KIP-74). `data` is what the previous step asked to read from
    /// the file (it starts at the cursor). A step either answers or names the next
    /// file range to read, so the caller decides how to wait for the disk.
    pub fn read_step(&self, mut cursor: ReadCursor, data: Option<Bytes>, lookahead: u64) -> ReadStep {
        if let Some(data) = data {
            let mut at = 0usize;
            while let Ok(h) = BatchHeader::parse(&data[at..]) {
                if h.next_offset() > cursor.offset {
                    break;
                }
                at += h.size;
                if at >= data.len() {
                    break;
                }
            }
            if at < data.len() && BatchHeader::parse(&data[at..]).is_ok() {
                return match whole_batches(&data[at..], &cursor) {
                    Whole::Bytes(0) => ReadStep::Done(Bytes::new()),
                    Whole::Bytes(n) => ReadStep::Done(data.slice(at..at + n)),
                    Whole::First(size) => {
                        cursor.pos += at as u64;
                        ReadStep::Disk(DiskRead {
                            file: self.log.clone(),
                            pos: cursor.pos,
                            len: size,
                            cursor,
                        })
                    }
                };
            }
            // Skipped past what was read, or stopped inside a header: plan afresh.
            cursor.pos += at as u64;
        }
        if cursor.pos >= self.size {
            return ReadStep::Done(Bytes::new());
        }
        if cursor.pos >= self.written {
            return ReadStep::Done(self.read_tail(&cursor));
        }
        let len = (cursor.max_bytes.max(BATCH_HEADER_LEN) as u64 + lookahead)
            .min(READ_BYTES_MAX)
            .min(self.written - cursor.pos);
        ReadStep::Disk(DiskRead {
            file: self.log.clone(),
            pos: cursor.pos,
            len: len as usize,
            cursor,
        })
    }

    /// A read served from the write-behind tail: no I/O, and no copy for one batch.
    fn read_tail(&self, cursor: &ReadCursor) -> Bytes {
        let first = self.tail.partition_point(|b| b.end() <= cursor.pos);
        let mut chosen: Vec<&TailBatch> = Vec::new();
        let mut total = 0usize;
        for b in self.tail.iter().skip(first) {
            let Ok(h) = BatchHeader::parse(&b.head) else { break };
            if h.next_offset() <= cursor.offset {
                continue;
            }
            if h.base_offset >= cursor.upto {
                break;
            }
            let len = b.len() as usize;
            let fits = total + len <= cursor.max_bytes;
            let first_anyway = chosen.is_empty() && cursor.min_one;
            if !(fits || first_anyway) {
                break;
            }
            total += len;
            chosen.push(b);
        }
        match chosen.as_slice() {
            [] => Bytes::new(),
            [one] if one.body.is_empty() => one.head.clone(),
            many => {
                let mut out = BytesMut::with_capacity(total);
                for b in many {
                    out.extend_from_slice(&b.head);
                    out.extend_from_slice(&b.body);
                }
                out.freeze()
            }
        }
    }
}

/// Where a read stands between steps: the segment, the file position of the batch to
/// look at next, and what the reader asked for.
#[derive(Debug, Clone, Copy)]
pub struct ReadCursor {
    pub(crate) segment: Offset,
    pub(crate) pos: u64,
    pub(crate) offset: Offset,
    pub(crate) max_bytes: usize,
    pub(crate) min_one: bool,
    /// No batch starting at or after this offset is returned (the high watermark for
    /// consumers, the log end for followers).
    pub(crate) upto: Offset,
}

/// The outcome of a read step.
pub enum ReadStep {
    /// Whole batches (possibly none).
    Done(Bytes),
    /// Read this range of the file and continue with `Log::read_continue`.
    Disk(DiskRead),
}

pub struct DiskRead {
    /// The segment's log file: its open file is taken (and held) for the read only.
    pub file: Handle,
    pub pos: u64,
    pub len: usize,
    pub(crate) cursor: ReadCursor,
}

enum Whole {
    /// This many bytes of whole batches fit.
    Bytes(usize),
    /// Nothing fits but the first batch is wanted whole: it is this long.
    First(usize),
}

/// How many leading bytes of `buf` are whole batches below the cursor's `upto` and
/// within its `max_bytes` (KIP-74: the first batch counts even when larger, with
/// `min_one`).
fn whole_batches(buf: &[u8], cursor: &ReadCursor) -> Whole {
    let (max_bytes, min_one) = (cursor.max_bytes, cursor.min_one);
    let mut end = 0usize;
    while let Ok(h) = BatchHeader::parse(&buf[end..]) {
        if h.base_offset >= cursor.upto {
            break;
        }
        let first = end == 0;
        if end + h.size > buf.len() {
            if first && min_one {
                return Whole::First(h.size);
            }
            break;
        }
        if end + h.size > max_bytes && !(first && min_one) {
            break;
        }
        end += h.size;
    }
    Whole::Bytes(end)
}
