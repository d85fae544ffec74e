//! Recovery of a segment at open: a scan that checks every batch, and the cheaper
//! checks that let a closed segment skip it.

use std::io;

use super::Segment;
use crate::batch::{crc_matches, BatchHeader, BATCH_HEADER_LEN};
use crate::index::{OffsetEntry, TimeEntry};
use crate::io::FileRef;
use crate::offset::Offset;

/// What recovery found while scanning a log file.
struct Scan {
    valid_len: u64,
    next_offset: Offset,
    offset_entries: Vec<OffsetEntry>,
    time_entries: Vec<TimeEntry>,
    max_timestamp: Option<(i64, Offset)>,
    bytes_since_index_entry: u64,
}

impl Segment {
    pub(super) fn recover(&mut self, index_interval_bytes: u64) -> io::Result<()> {
        let log = self.log.file()?;
        let file_len = log.size()?;
        let scan = scan(&log, self.base_offset, file_len, index_interval_bytes)?;
        if scan.valid_len < file_len {
            if self.is_block_padding(scan.valid_len, file_len) {
                // Direct I/O pads the last block with zeros until the file is closed.
                tracing::debug!(segment = %self.log_path.display(), "cutting the zero padding of the last block");
            } else {
                tracing::warn!(
                    segment = %self.log_path.display(),
                    kept = scan.valid_len,
                    dropped = file_len - scan.valid_len,
                    "truncating a torn or corrupt tail"
                );
            }
            log.set_len(scan.valid_len)?;
            log.sync_data()?;
        }
        if self.offset_index.entries() != scan.offset_entries.as_slice() {
            self.offset_index.replace(scan.offset_entries)?;
        }
        if self.time_index.entries() != scan.time_entries.as_slice() {
            self.time_index.replace(scan.time_entries)?;
        }
        self.size = scan.valid_len;
        self.written = scan.valid_len;
        self.submitted = scan.valid_len;
        self.next_offset = scan.next_offset;
        self.max_timestamp = scan.max_timestamp;
        self.bytes_since_index_entry = scan.bytes_since_index_entry;
        Ok(())
    }

    /// Whether the file's bytes from `from` to `to` are the zeros direct I/O pads a
    /// partial last block with (less than a block, all zero).
    fn is_block_padding(&self, from: u64, to: u64) -> bool {
        let len = (to - from) as usize;
        let mut buf = vec![0u8; len];
        len < crate::io::direct::BLOCK
            && self.log.file().and_then(|f| f.read_exact_at(&mut buf, from)).is_ok()
            && buf.iter().all(|&b| b == 0)
    }

    /// A cheap plausibility check of a closed segment's indexes: entries ascend, point
    /// inside the file, and each offset entry points at a batch with that base offset.
    pub(super) fn indexes_agree_with_log(&self) -> io::Result<bool> {
        let entries = self.offset_index.entries();
        if entries.is_empty() && self.size > 0 {
            return Ok(false);
        }
        for pair in entries.windows(2) {
            if pair[0].relative_offset >= pair[1].relative_offset || pair[0].position >= pair[1].position {
                return Ok(false);
            }
        }
        for entry in entries {
            match self.header_at(entry.position as u64)? {
                Some(h) if h.base_offset == self.base_offset.plus(entry.relative_offset as i64) => {}
                _ => return Ok(false),
            }
        }
        let times = self.time_index.entries();
        if self.size > 0 && times.is_empty() {
            return Ok(false);
        }
        Ok(times
            .windows(2)
            .all(|p| p[0].timestamp < p[1].timestamp && p[0].relative_offset <= p[1].relative_offset))
    }

    /// A check of indexes this broker wrote and synced before a clean shutdown, which
    /// reads one batch header instead of one per entry: entries ascend and point inside
    /// the file, and the last offset entry points at a batch with its base offset.
    /// (With [`Segment::intact_end`], which reads the batches after that entry.)
    pub(super) fn indexes_plausible(&self) -> io::Result<bool> {
        let entries = self.offset_index.entries();
        let times = self.time_index.entries();
        if self.size > 0 && (entries.is_empty() || times.is_empty()) {
            return Ok(false);
        }
        let ascend = entries
            .windows(2)
            .all(|p| p[0].relative_offset < p[1].relative_offset && p[0].position < p[1].position);
        let times_ascend = times
            .windows(2)
            .all(|p| p[0].timestamp < p[1].timestamp && p[0].relative_offset <= p[1].relative_offset);
        if !ascend || !times_ascend {
            return Ok(false);
        }
        Ok(match entries.last() {
            None => true,
            Some(last) => matches!(
                self.peek_header_at(last.position as u64)?,
                Some(h) if h.base_offset == self.base_offset.plus(last.relative_offset as i64)
            ),
        })
    }

    /// The header of the batch at `position` when a whole one fits in the file, read
    /// without read-ahead (the checks of a clean shutdown read a few headers only).
    fn peek_header_at(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        if position + BATCH_HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut buf = [0u8; BATCH_HEADER_LEN];
        self.log.file()?.peek_at(&mut buf, position)?;
        Ok(BatchHeader::parse(&buf)
            .ok()
            .filter(|h| position + h.size as u64 <= self.size))
    }

    /// After a clean shutdown, the offset after the segment's last batch: the batch
    /// headers from its last index entry on follow each other to exactly the end of
    /// the file. Their CRCs are not checked: every byte was synced before the record
    /// of the shutdown was written, so there is no torn write to find (as Kafka skips
    /// recovery after a clean shutdown), and a scan would read the whole last batch.
    pub(super) fn headers_end(&self) -> io::Result<Option<Offset>> {
        let mut next = self.base_offset;
        let mut pos = self.offset_index.last().map(|e| e.position as u64).unwrap_or(0);
        while let Some(h) = self.peek_header_at(pos)? {
            if h.base_offset < next {
                return Ok(None);
            }
            next = h.next_offset();
            pos += h.size as u64;
        }
        Ok((pos == self.size).then_some(next))
    }

    /// Whether an active segment whose file has the length `end` records is as it was
    /// at that clean shutdown: plausible indexes, and batch headers from the last index
    /// entry to the file's end that end at the recorded offset.
    pub(super) fn ends_as_recorded(&self, end: &super::CleanEnd) -> io::Result<bool> {
        if !self.indexes_plausible()? {
            return Ok(false);
        }
        if self.size == 0 {
            return Ok(end.next_offset == self.base_offset);
        }
        Ok(self.headers_end()? == Some(end.next_offset))
    }

    /// The offset after a closed segment's last batch, if the batches after its last
    /// index entry (at most about `index.interval.bytes` of them) are whole, pass their
    /// CRC and end exactly at the end of the file; None if its tail is damaged.
    pub(super) fn intact_end(&self) -> io::Result<Option<Offset>> {
        let from = self.offset_index.last().map(|e| e.position as u64).unwrap_or(0);
        if from > self.size {
            return Ok(None);
        }
        // One read for the whole stretch (a few KiB: one index interval and a batch).
        let mut tail = vec![0u8; (self.size - from) as usize];
        self.read_at(&mut tail, from)?;
        let mut next = self.base_offset;
        let mut rest = &tail[..];
        while rest.len() >= BATCH_HEADER_LEN {
            let Ok(h) = BatchHeader::parse(rest) else {
                return Ok(None);
            };
            if h.size > rest.len() || !crc_matches(&rest[..h.size], &h) || h.base_offset < next {
                return Ok(None);
            }
            next = h.next_offset();
            rest = &rest[h.size..];
        }
        Ok(rest.is_empty().then_some(next))
    }
}

/// Reads a log file batch by batch from the start, checking each CRC, and stops at the
/// first batch that is torn, corrupt, or does not follow its predecessor's offsets.
fn scan(log: &FileRef, base_offset: Offset, file_len: u64, index_interval_bytes: u64) -> io::Result<Scan> {
    let mut out = Scan {
        valid_len: 0,
        next_offset: base_offset,
        offset_entries: Vec::new(),
        time_entries: Vec::new(),
        max_timestamp: None,
        bytes_since_index_entry: 0,
    };
    let mut batch = Vec::new();
    let mut header = [0u8; BATCH_HEADER_LEN];
    let mut pos = 0u64;
    while pos + BATCH_HEADER_LEN as u64 <= file_len {
        log.read_exact_at(&mut header, pos)?;
        let Ok(h) = BatchHeader::parse(&header) else {
            break;
        };
        if pos + h.size as u64 > file_len || h.base_offset < out.next_offset || h.last_offset_delta < 0 {
            break;
        }
        batch.resize(h.size, 0);
        log.read_exact_at(&mut batch, pos)?;
        if !crc_matches(&batch, &h) {
            break;
        }
        if pos == 0 || out.bytes_since_index_entry >= index_interval_bytes {
            let relative_offset = (h.base_offset.0 - base_offset.0) as u32;
            out.offset_entries.push(OffsetEntry {
                relative_offset,
                position: pos as u32,
            });
            out.bytes_since_index_entry = 0;
            if out.time_entries.last().is_none_or(|e| h.max_timestamp > e.timestamp) {
                let relative_offset = (h.last_offset().0 - base_offset.0) as u32;
                out.time_entries.push(TimeEntry {
                    timestamp: h.max_timestamp,
                    relative_offset,
                });
            }
        }
        if out.max_timestamp.is_none_or(|(ts, _)| h.max_timestamp > ts) {
            out.max_timestamp = Some((h.max_timestamp, h.last_offset()));
        }
        pos += h.size as u64;
        out.bytes_since_index_entry += h.size as u64;
        out.next_offset = h.next_offset();
        out.valid_len = pos;
    }
    Ok(out)
}
