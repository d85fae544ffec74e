//! One segment of a partition log: `<base>.log` with its two sparse indexes.
//!
//! A segment only appends. It knows its size, the offset after its last batch and the
//! largest timestamp it holds; the log decides when to roll to a new one. Positions in
//! the file are `u64` while offsets are [`Offset`], so the two cannot be mixed.
//!
//! Appends are write-behind: a batch joins the segment's in-memory tail at once (and is
//! readable from there), and the log's next write round hands the whole tail to the
//! engine as one vectored write. `written` is how much of the segment is in the file;
//! everything past it is served from the tail.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::io::{FileRef, Io};

use crate::batch::{crc_matches, for_each_record, BatchHeader, BATCH_HEADER_LEN};
use crate::index::{IndexFile, OffsetEntry, TimeEntry};
use crate::offset::Offset;

/// The most one read step takes from the file. A fetch may answer with less than its
/// `max_bytes`, and smaller reads reuse the allocator's memory instead of mapping (and
/// faulting in) a fresh 10 MiB buffer per partition per fetch, which profiling showed
/// to be the largest cost of serving a backlog. A first batch larger than this is
/// still read whole, by a second step (KIP-74).
const READ_BYTES_MAX: u64 = 1 << 20;

/// Kafka names segment files by base offset, zero-padded to 20 digits so they sort.
pub fn file_name(base: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base.0)
}

pub struct Segment {
    base_offset: Offset,
    log: FileRef,
    log_path: PathBuf,
    offset_index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    /// Bytes of whole, valid batches; the next append goes here.
    size: u64,
    /// Bytes known to be in the file; `submitted` bytes were handed to a write round.
    written: u64,
    submitted: u64,
    /// Batches at and after `written`: the write-behind tail.
    tail: VecDeque<TailBatch>,
    next_offset: Offset,
    /// Largest batch max-timestamp in the segment and the last offset of that batch.
    max_timestamp: Option<(i64, Offset)>,
    bytes_since_index_entry: u64,
    /// Wall-clock time of the first append (or of opening an older segment), for `segment.ms`.
    created_ms: i64,
}

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
    pub fn create(io: &dyn Io, dir: &Path, base_offset: Offset, now_ms: i64) -> io::Result<Segment> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = io.open(&log_path, true)?;
        log.set_len(0)?;
        let mut offset_index = IndexFile::open(io, &dir.join(file_name(base_offset, "index")))?;
        offset_index.replace(Vec::new())?;
        let mut time_index = IndexFile::open(io, &dir.join(file_name(base_offset, "timeindex")))?;
        time_index.replace(Vec::new())?;
        Ok(Segment {
            base_offset,
            log,
            log_path,
            offset_index,
            time_index,
            size: 0,
            written: 0,
            submitted: 0,
            tail: VecDeque::new(),
            next_offset: base_offset,
            max_timestamp: None,
            bytes_since_index_entry: 0,
            created_ms: now_ms,
        })
    }

    /// Opens an existing segment. The active (last) segment is always scanned in full:
    /// a crash may have left a torn batch at its tail, which is cut off, and its indexes
    /// are rebuilt from what survives. A closed segment keeps its indexes when they are
    /// consistent with the log, and is rebuilt by a scan when they are not.
    pub fn open(
        io: &dyn Io,
        dir: &Path,
        base_offset: Offset,
        is_active: bool,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = io.open(&log_path, false)?;
        let offset_index = IndexFile::open(io, &dir.join(file_name(base_offset, "index")))?;
        let time_index = IndexFile::open(io, &dir.join(file_name(base_offset, "timeindex")))?;
        let file_len = log.size()?;
        let mut segment = Segment {
            base_offset,
            log,
            log_path,
            offset_index,
            time_index,
            size: file_len,
            written: file_len,
            submitted: file_len,
            tail: VecDeque::new(),
            next_offset: base_offset,
            max_timestamp: None,
            bytes_since_index_entry: 0,
            created_ms: now_ms,
        };
        if is_active {
            segment.recover(index_interval_bytes)?;
        } else if !segment.indexes_agree_with_log()? {
            segment.recover(index_interval_bytes)?;
            segment.seal();
            segment.write_blocking()?;
        } else {
            segment.next_offset = segment.last_batch_next_offset()?;
            segment.max_timestamp = segment
                .time_index
                .last()
                .map(|e| (e.timestamp, base_offset.plus(e.relative_offset as i64)));
        }
        Ok(segment)
    }

    fn recover(&mut self, index_interval_bytes: u64) -> io::Result<()> {
        let file_len = self.log.size()?;
        let scan = scan(&self.log, self.base_offset, file_len, index_interval_bytes)?;
        if scan.valid_len < file_len {
            tracing::warn!(
                segment = %self.log_path.display(),
                kept = scan.valid_len,
                dropped = file_len - scan.valid_len,
                "truncating a torn or corrupt tail"
            );
            self.log.set_len(scan.valid_len)?;
            self.log.sync_data()?;
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

    /// A cheap plausibility check of a closed segment's indexes: entries ascend, point
    /// inside the file, and each offset entry points at a batch with that base offset.
    fn indexes_agree_with_log(&self) -> io::Result<bool> {
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

    fn last_batch_next_offset(&self) -> io::Result<Offset> {
        let mut next = self.base_offset;
        let mut pos = self.offset_index.last().map(|e| e.position as u64).unwrap_or(0);
        while let Some(h) = self.header_at(pos)? {
            next = h.next_offset();
            pos += h.size as u64;
        }
        Ok(next)
    }

    /// The header of the batch at `position`, if a whole one starts there.
    fn header_at(&self, position: u64) -> io::Result<Option<BatchHeader>> {
        if position + BATCH_HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut buf = [0u8; BATCH_HEADER_LEN];
        self.read_at(&mut buf, position)?;
        Ok(BatchHeader::parse(&buf)
            .ok()
            .filter(|h| position + h.size as u64 <= self.size))
    }

    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    pub fn max_timestamp(&self) -> Option<(i64, Offset)> {
        self.max_timestamp
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Appends one batch whose offsets were already assigned, to the tail in memory:
    /// `head` then `body` (see [`TailBatch`]).
    pub fn append(&mut self, head: Bytes, body: Bytes, header: &BatchHeader, index_interval_bytes: u64) {
        if self.size == 0 || self.bytes_since_index_entry >= index_interval_bytes {
            let relative_offset = (header.base_offset.0 - self.base_offset.0) as u32;
            self.offset_index.push(OffsetEntry {
                relative_offset,
                position: self.size as u32,
            });
            self.bytes_since_index_entry = 0;
            self.maybe_add_time_entry(header.max_timestamp, header.last_offset());
        }
        if self.max_timestamp.is_none_or(|(ts, _)| header.max_timestamp > ts) {
            self.max_timestamp = Some((header.max_timestamp, header.last_offset()));
        }
        let batch = TailBatch {
            pos: self.size,
            head,
            body,
        };
        let len = batch.len();
        self.tail.push_back(batch);
        self.size += len;
        self.bytes_since_index_entry += len;
        self.next_offset = header.next_offset();
    }

    fn maybe_add_time_entry(&mut self, timestamp: i64, offset: Offset) {
        if self.time_index.last().is_none_or(|e| timestamp > e.timestamp) {
            let relative_offset = (offset.0 - self.base_offset.0) as u32;
            self.time_index.push(TimeEntry {
                timestamp,
                relative_offset,
            });
        }
    }

    /// Called when the log rolls past this segment: its time index then ends with the
    /// segment's largest timestamp, so a reopened closed segment knows it without a scan.
    pub fn seal(&mut self) {
        if let Some((ts, offset)) = self.max_timestamp {
            self.maybe_add_time_entry(ts, offset);
        }
    }

    /// Bytes appended but not yet known to be in the file.
    pub fn unwritten_bytes(&self) -> u64 {
        self.size - self.written
    }

    /// Hands everything not yet given to a write round to one: the tail as one
    /// vectored write, and the new entries of both indexes.
    pub fn take_writes(&mut self, out: &mut Vec<FileWrite>) {
        if self.submitted < self.size {
            let first = self.tail.partition_point(|b| b.pos < self.submitted);
            let mut bufs = Vec::with_capacity(2 * (self.tail.len() - first));
            for batch in self.tail.iter().skip(first) {
                bufs.push(batch.head.clone());
                if !batch.body.is_empty() {
                    bufs.push(batch.body.clone());
                }
            }
            out.push(FileWrite {
                file: self.log.clone(),
                pos: self.submitted,
                bufs,
                segment: self.base_offset,
                target: Target::Log,
            });
            self.submitted = self.size;
        }
        if let Some((pos, bytes)) = self.offset_index.take_unwritten() {
            out.push(FileWrite {
                file: self.offset_index.file(),
                pos,
                bufs: vec![bytes],
                segment: self.base_offset,
                target: Target::OffsetIndex,
            });
        }
        if let Some((pos, bytes)) = self.time_index.take_unwritten() {
            out.push(FileWrite {
                file: self.time_index.file(),
                pos,
                bufs: vec![bytes],
                segment: self.base_offset,
                target: Target::TimeIndex,
            });
        }
    }

    /// Writes everything pending on the calling thread (start-up and tests).
    pub fn write_blocking(&mut self) -> io::Result<()> {
        let mut writes = Vec::new();
        self.take_writes(&mut writes);
        for w in &writes {
            w.run_blocking()?;
            self.wrote(w.target, w.len());
        }
        Ok(())
    }

    /// Whether everything appended was already handed to a write round.
    pub fn fully_submitted(&self) -> bool {
        self.submitted >= self.size
    }

    /// A write round put `len` bytes into one of this segment's files.
    pub fn wrote(&mut self, target: Target, len: u64) {
        match target {
            Target::Log => {
                self.written = (self.written + len).min(self.size);
                while self.tail.front().is_some_and(|b| b.end() <= self.written) {
                    self.tail.pop_front();
                }
            }
            Target::OffsetIndex => self.offset_index.wrote(len),
            Target::TimeIndex => self.time_index.wrote(len),
        }
    }

    /// Forgets write rounds that never completed; the next round writes their bytes again.
    pub fn rewind(&mut self) {
        self.submitted = self.written;
        self.offset_index.rewind();
        self.time_index.rewind();
    }

    /// Reads `buf.len()` bytes at `pos`: from the file below `written`, from the tail
    /// above it.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let end = pos + buf.len() as u64;
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the segment's end",
            ));
        }
        let from_file = end.min(self.written).saturating_sub(pos) as usize;
        if from_file > 0 {
            self.log.read_exact_at(&mut buf[..from_file], pos)?;
        }
        let mut at = pos + from_file as u64;
        let first = self.tail.partition_point(|b| b.end() <= at);
        for batch in self.tail.iter().skip(first) {
            let body_pos = batch.pos + batch.head.len() as u64;
            for (p, b) in [(batch.pos, &batch.head), (body_pos, &batch.body)] {
                if at >= end || at >= p + b.len() as u64 {
                    continue;
                }
                let within = (at - p) as usize;
                let n = (b.len() - within).min((end - at) as usize);
                let into = (at - pos) as usize;
                buf[into..into + n].copy_from_slice(&b[within..within + n]);
                at += n as u64;
            }
        }
        if at < end {
            return Err(io::Error::other("segment tail does not cover its size"));
        }
        Ok(())
    }
    /// File handles whose data a flush must make durable.
    pub fn sync_handles(&self, with_indexes: bool) -> Vec<FileRef> {
        let mut files = vec![self.log.clone()];
        if with_indexes {
            files.push(self.offset_index.file());
            files.push(self.time_index.file());
        }
        files
    }

    /// Calls `visit` with the header of every batch, in order.
    pub fn visit_headers(&self, mut visit: impl FnMut(&BatchHeader)) -> io::Result<()> {
        let mut pos = 0;
        while let Some(h) = self.header_at(pos)? {
            visit(&h);
            pos += h.size as u64;
        }
        Ok(())
    }

    /// Position of the first batch that holds an offset at or after `offset`.
    fn position_of(&self, offset: Offset) -> io::Result<Option<u64>> {
        let relative = (offset.0 - self.base_offset.0).clamp(0, u32::MAX as i64) as u32;
        let mut pos = self
            .offset_index
            .floor(relative)
            .map(|e| e.position as u64)
            .unwrap_or(0);
        while let Some(h) = self.header_at(pos)? {
            if h.next_offset() > offset {
                return Ok(Some(pos));
            }
            pos += h.size as u64;
        }
        Ok(None)
    }

    /// Where a read of `offset` starts: the index entry at or before it.
    pub fn read_cursor(&self, offset: Offset, max_bytes: usize, min_one: bool) -> ReadCursor {
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
                return match whole_batches(&data[at..], cursor.max_bytes, cursor.min_one) {
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

    /// The first record whose timestamp is at or after `timestamp`, with its timestamp.
    /// Uncompressed batches are searched record by record; in a compressed batch the
    /// answer is its first offset and max timestamp (records are not decompressed).
    pub fn find_timestamp(&self, timestamp: i64) -> io::Result<Option<(Offset, i64)>> {
        let start_relative = self
            .time_index
            .last_below(timestamp)
            .map(|e| e.relative_offset)
            .unwrap_or(0);
        let mut pos = self
            .position_of(self.base_offset.plus(start_relative as i64))?
            .unwrap_or(self.size);
        while let Some(h) = self.header_at(pos)? {
            if h.max_timestamp >= timestamp {
                if h.compression() != 0 || h.timestamp_type() == crate::batch::TimestampType::LogAppendTime {
                    return Ok(Some((h.base_offset, h.max_timestamp)));
                }
                let mut batch = vec![0u8; h.size];
                self.read_at(&mut batch, pos)?;
                let mut found = None;
                let _ = for_each_record(&batch[BATCH_HEADER_LEN..], |r| {
                    let ts = h.base_timestamp + r.timestamp_delta;
                    if found.is_none() && ts >= timestamp {
                        found = Some((h.base_offset.plus(r.offset_delta), ts));
                    }
                    Ok(())
                });
                return Ok(found.or(Some((h.base_offset, h.max_timestamp))));
            }
            pos += h.size as u64;
        }
        Ok(None)
    }

    /// Removes the segment's files.
    pub fn delete(self, io: &dyn Io) -> io::Result<()> {
        for ext in ["log", "index", "timeindex"] {
            io.remove_file(&self.log_path.with_extension(ext))?;
        }
        Ok(())
    }
}

/// A batch in the write-behind tail, in two pieces so that producing costs no copy:
/// `head` is the broker's copy of the batch header with its offsets patched in, `body`
/// the rest, still in the request's own buffer (the CRC does not cover the patched
/// fields). A batch the broker rewrote whole (LogAppendTime) is all `head`.
struct TailBatch {
    pos: u64,
    head: Bytes,
    body: Bytes,
}

impl TailBatch {
    fn len(&self) -> u64 {
        (self.head.len() + self.body.len()) as u64
    }

    fn end(&self) -> u64 {
        self.pos + self.len()
    }
}

/// Which of a segment's files a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Log,
    OffsetIndex,
    TimeIndex,
}

/// One write of a round: `bufs` go to `file` at `pos`, back to back.
pub struct FileWrite {
    pub file: FileRef,
    pub pos: u64,
    pub bufs: Vec<Bytes>,
    pub(crate) segment: Offset,
    pub(crate) target: Target,
}

impl FileWrite {
    pub fn len(&self) -> u64 {
        self.bufs.iter().map(|b| b.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes on the calling thread, gathering small buffers into one write each
    /// `STAGING_BYTES` (positional I/O has no vectored write in std).
    pub fn run_blocking(&self) -> io::Result<()> {
        /// Large enough that a round costs few syscalls, small enough to stay in cache.
        const STAGING_BYTES: usize = 1 << 20;
        let mut pos = self.pos;
        let mut staging: Vec<u8> = Vec::new();
        for b in &self.bufs {
            if staging.is_empty() && b.len() >= STAGING_BYTES {
                self.file.write_all_at(b, pos)?;
                pos += b.len() as u64;
                continue;
            }
            staging.extend_from_slice(b);
            if staging.len() >= STAGING_BYTES {
                self.file.write_all_at(&staging, pos)?;
                pos += staging.len() as u64;
                staging.clear();
            }
        }
        if !staging.is_empty() {
            self.file.write_all_at(&staging, pos)?;
        }
        Ok(())
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
}

/// The outcome of a read step.
pub enum ReadStep {
    /// Whole batches (possibly none).
    Done(Bytes),
    /// Read this range of the file and continue with [`crate::Log::read_continue`].
    Disk(DiskRead),
}

pub struct DiskRead {
    pub file: FileRef,
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

/// How many leading bytes of `buf` are whole batches within `max_bytes` (KIP-74: the
/// first batch counts even when larger, with `min_one`).
fn whole_batches(buf: &[u8], max_bytes: usize, min_one: bool) -> Whole {
    let mut end = 0usize;
    while let Ok(h) = BatchHeader::parse(&buf[end..]) {
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
