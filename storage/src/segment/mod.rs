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

use bytes::Bytes;

use crate::io::handles::Handle;
use crate::io::{FileRef, Io, RoundWrite};

use crate::batch::{for_each_record, BatchHeader, BATCH_HEADER_LEN};
use crate::index::{IndexFile, OffsetEntry, TimeEntry};
use crate::offset::Offset;

mod clean;
mod read;
mod recovery;

pub use clean::CleanEnd;
pub use read::{DiskRead, ReadCursor, ReadStep};

/// Kafka names segment files by base offset, zero-padded to 20 digits so they sort.
pub fn file_name(base: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base.0)
}

/// What a file of a deleted segment is renamed to end with before it is unlinked
/// (Kafka's `.deleted`); a log removes any it finds when it opens.
pub const DELETED_SUFFIX: &str = ".deleted";

pub struct Segment {
    base_offset: Offset,
    /// Opened on use and closed while idle (the shard's descriptor budget).
    log: Handle,
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
    /// The log rolled past this segment: once all of it is written, the file gives
    /// back what it holds past its end (direct I/O's padding and preallocation).
    sealed: bool,
}

impl Segment {
    pub fn create(io: &dyn Io, dir: &Path, base_offset: Offset, now_ms: i64) -> io::Result<Segment> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = io.handle(&log_path, true, true)?;
        log.file()?.set_len(0)?;
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
            sealed: false,
        })
    }

    /// Opens an existing segment. After a crash the active (last) segment is scanned in
    /// full: a crash may have left a torn batch at its tail, which is cut off, and its
    /// indexes are rebuilt from what survives. After a clean shutdown (`clean`, the
    /// log's [`CleanEnd`]) it is opened as a closed segment is, from its indexes, when
    /// its file is as the record says. A closed segment keeps its indexes when they are
    /// consistent with the log, and is rebuilt by a scan when they are not; after a
    /// clean shutdown that check reads only the segment's end, not every indexed batch.
    pub fn open(
        io: &dyn Io,
        dir: &Path,
        base_offset: Offset,
        is_active: bool,
        clean: Option<&CleanEnd>,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = io.handle(&log_path, true, false)?;
        let offset_index = IndexFile::open(io, &dir.join(file_name(base_offset, "index")))?;
        let time_index = IndexFile::open(io, &dir.join(file_name(base_offset, "timeindex")))?;
        let file_len = log.file()?.size()?;
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
            sealed: !is_active,
        };
        if is_active {
            let recorded = clean.filter(|c| c.base_offset == base_offset && c.size == file_len);
            match recorded {
                Some(end) if segment.ends_as_recorded(end)? => {
                    segment.next_offset = end.next_offset;
                    segment.max_timestamp = end.max_timestamp;
                    segment.bytes_since_index_entry = end.bytes_since_index_entry;
                }
                _ => segment.recover(index_interval_bytes)?,
            }
        } else {
            // After a clean shutdown a few headers at the end; after a crash the CRCs
            // of the batches after the last index entry, and every entry's header.
            let end = match clean {
                Some(_) if segment.indexes_plausible()? => segment.headers_end()?,
                Some(_) => None,
                None => match segment.intact_end()? {
                    Some(next) if segment.indexes_agree_with_log()? => Some(next),
                    _ => None,
                },
            };
            match end {
                Some(next) => {
                    segment.next_offset = next;
                    segment.max_timestamp = segment
                        .time_index
                        .last()
                        .map(|e| (e.timestamp, base_offset.plus(e.relative_offset as i64)));
                }
                // A torn or corrupt tail (a crash during a round that was never
                // acknowledged), or indexes that do not match: scan and rebuild.
                _ => {
                    segment.recover(index_interval_bytes)?;
                    segment.seal();
                    segment.write_blocking()?;
                }
            }
        }
        Ok(segment)
    }

    /// Where the active segment ends, for the log's [`CleanEnd`] at a clean shutdown
    /// (after the final flush and trim). Its index entries, which an active segment
    /// otherwise keeps in memory until it is sealed, are written to their files first
    /// (without a sync: a crash that loses some leaves a plausible prefix, or entries
    /// that fail the open's check, and either way nothing wrong is trusted).
    pub fn clean_end(&mut self) -> io::Result<CleanEnd> {
        if let Some((pos, bytes)) = self.offset_index.take_unwritten() {
            self.offset_index.file()?.write_all_at(&bytes, pos)?;
            self.offset_index.wrote(bytes.len() as u64);
        }
        if let Some((pos, bytes)) = self.time_index.take_unwritten() {
            self.time_index.file()?.write_all_at(&bytes, pos)?;
            self.time_index.wrote(bytes.len() as u64);
        }
        Ok(CleanEnd {
            base_offset: self.base_offset,
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            bytes_since_index_entry: self.bytes_since_index_entry,
        })
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

    /// The log file's handle (the cleaner reads closed segments through it).
    pub fn log_file(&self) -> Handle {
        self.log.clone()
    }

    /// Whether `file` is this segment's log file (and not one it replaced).
    pub fn holds(&self, file: &Handle) -> bool {
        self.log.same(file)
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
        self.sealed = true;
        self.trim_if_done();
    }

    /// A sealed segment whose every byte is in the file gives back what the file
    /// holds past its end.
    fn trim_if_done(&self) {
        if self.sealed {
            self.trim();
        }
    }

    /// Gives back what the log file holds past the segment's end (direct I/O's block
    /// padding and preallocation), once every appended byte is in the file. Failing to
    /// is harmless: the padding is zeros, which a reopened log cuts off like a torn tail.
    pub fn trim(&self) {
        if self.written >= self.size {
            // Opened again if the budget closed it (which cuts nothing).
            if let Err(e) = self.log.file().and_then(|log| log.trim()) {
                tracing::debug!(segment = %self.log_path.display(), error = %e, "could not trim a segment file");
            }
        }
    }

    /// Bytes appended but not yet known to be in the file.
    pub fn unwritten_bytes(&self) -> u64 {
        self.size - self.written
    }

    /// Hands everything not yet given to a write round to one: the tail as one
    /// vectored write, and, once the segment is sealed, the entries of both indexes
    /// not yet in their files. An active segment's indexes stay in memory: opening a
    /// log always rebuilds its active segment's indexes from the log, so writing them
    /// earlier would only cost two more files open and two more writes a round per
    /// partition. Fails, giving nothing, when a file cannot be opened (out of
    /// descriptors): the next round tries again.
    pub fn take_writes(&mut self, out: &mut Vec<FileWrite>) -> io::Result<()> {
        let log = if self.submitted < self.size {
            Some(self.log.file()?)
        } else {
            None
        };
        let (offset_index, time_index) = if self.sealed {
            (
                self.offset_index.file_if_unwritten()?,
                self.time_index.file_if_unwritten()?,
            )
        } else {
            (None, None)
        };
        if let Some(log) = log {
            let first = self.tail.partition_point(|b| b.pos < self.submitted);
            let mut bufs = Vec::with_capacity(2 * (self.tail.len() - first));
            for batch in self.tail.iter().skip(first) {
                bufs.push(batch.head.clone());
                if !batch.body.is_empty() {
                    bufs.push(batch.body.clone());
                }
            }
            out.push(FileWrite {
                file: log,
                pos: self.submitted,
                bufs,
                segment: self.base_offset,
                target: Target::Log,
            });
            self.submitted = self.size;
        }
        // (Entries are taken only when their file is: an active segment keeps them.)
        if let Some((file, (pos, bytes))) = offset_index.and_then(|f| Some((f, self.offset_index.take_unwritten()?))) {
            out.push(FileWrite {
                file,
                pos,
                bufs: vec![bytes],
                segment: self.base_offset,
                target: Target::OffsetIndex,
            });
        }
        if let Some((file, (pos, bytes))) = time_index.and_then(|f| Some((f, self.time_index.take_unwritten()?))) {
            out.push(FileWrite {
                file,
                pos,
                bufs: vec![bytes],
                segment: self.base_offset,
                target: Target::TimeIndex,
            });
        }
        Ok(())
    }

    /// Writes everything pending on the calling thread (start-up and tests).
    pub fn write_blocking(&mut self) -> io::Result<()> {
        let mut writes = Vec::new();
        self.take_writes(&mut writes)?;
        for w in writes {
            let (target, len) = (w.target, w.len());
            w.into_round(false).run_blocking()?;
            self.wrote(target, len);
        }
        Ok(())
    }

    /// Whether everything appended was already handed to a write round (a sealed
    /// segment's index entries too).
    pub fn fully_submitted(&self) -> bool {
        self.submitted >= self.size
            && (!self.sealed || (self.offset_index.fully_submitted() && self.time_index.fully_submitted()))
    }

    /// A write round put `len` bytes into one of this segment's files.
    pub fn wrote(&mut self, target: Target, len: u64) {
        match target {
            Target::Log => {
                self.written = (self.written + len).min(self.size);
                while self.tail.front().is_some_and(|b| b.end() <= self.written) {
                    self.tail.pop_front();
                }
                self.trim_if_done();
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
            self.log.file()?.read_exact_at(&mut buf[..from_file], pos)?;
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
    /// The files whose data a flush must make durable (opened again if the budget
    /// closed them: fdatasync through a new descriptor covers what an old one wrote).
    pub fn sync_handles(&self, with_indexes: bool) -> io::Result<Vec<FileRef>> {
        let mut files = vec![self.log.file()?];
        if with_indexes {
            files.push(self.offset_index.file()?);
            files.push(self.time_index.file()?);
        }
        Ok(files)
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

    /// Visits every batch header in file order, with the marker type of control batches
    /// (read from their first record, which is a few bytes long).
    pub fn visit_batches(
        &self,
        mut visit: impl FnMut(&BatchHeader, Option<crate::txn::ControlType>),
    ) -> io::Result<()> {
        /// A control batch is one short record; anything longer is not one we wrote.
        const CONTROL_BATCH_MAX: usize = 256;
        let mut pos = 0;
        while let Some(h) = self.header_at(pos)? {
            let control = if h.is_control() && h.size <= CONTROL_BATCH_MAX {
                let mut buf = vec![0u8; h.size];
                self.read_at(&mut buf, pos)?;
                crate::txn::control_type(&buf)
            } else {
                None
            };
            visit(&h, control);
            pos += h.size as u64;
        }
        Ok(())
    }

    /// Position of the first batch that holds an offset at or after `offset`.
    pub fn position_of(&self, offset: Offset) -> io::Result<Option<u64>> {
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

    /// Cuts the log file at `len` (a truncation; the log is reopened afterwards, which
    /// rebuilds the indexes). Everything appended must already be in the file.
    pub fn truncate_file(&self, len: u64) -> io::Result<()> {
        if self.written < self.size {
            return Err(io::Error::other("truncating a segment with unwritten appends"));
        }
        let log = self.log.file()?;
        log.set_len(len)?;
        log.sync_data()
    }

    /// Removes the segment's files off the hot path (retention, DeleteRecords): each is
    /// renamed to `<name>.deleted` at once, so a reopened log never sees it, and
    /// unlinked in the background. Returns the bytes the segment held.
    pub fn delete_later(self, io: &dyn Io) -> io::Result<u64> {
        for ext in ["log", "index", "timeindex", crate::txn::TXN_INDEX_EXTENSION] {
            let path = self.log_path.with_extension(ext);
            let mut doomed = path.clone().into_os_string();
            doomed.push(DELETED_SUFFIX);
            let doomed = PathBuf::from(doomed);
            match io.rename(&path, &doomed) {
                Ok(()) => io.remove_file_later(&doomed)?,
                // An index that was never written (the transaction index usually).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.size)
    }

    /// Removes the segment's files.
    pub fn delete(self, io: &dyn Io) -> io::Result<()> {
        for ext in ["log", "index", "timeindex", crate::txn::TXN_INDEX_EXTENSION] {
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

    /// This write as part of a round, synced after it when `sync`.
    pub fn into_round(self, sync: bool) -> RoundWrite {
        RoundWrite {
            file: self.file,
            pos: self.pos,
            bufs: self.bufs,
            sync,
        }
    }
}
