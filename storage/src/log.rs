//! A partition log: an ordered run of segments with the offsets Kafka exposes (log
//! start, high watermark, log end), append with validation, reads by offset and by
//! timestamp, rolling, recovery at open, and the flush bookkeeping behind group commit.
//!
//! Worked example of the offsets: after batches of 3 and 2 records into an empty log,
//! `log_start = 0`, `log_end = 5`; on a single node the high watermark equals `log_end`
//! as soon as the append returns; `flushed` trails until a flush covering offset 5
//! completes, and `acks=all` answers wait for exactly that.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::io::{FileRef, Io, Positional};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::batch::{self, BatchError, BatchHeader, TimestampType};
use crate::offset::{LogOffsets, Offset};
use crate::producer::{ProducerState, SequenceCheck, SequenceError};
use crate::segment::Segment;

/// Per-topic settings, named after Kafka's topic configs.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would pass this (Kafka: 1 GiB).
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment this old even if small (Kafka: 7 days).
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes between sparse index entries (Kafka: 4096), which
    /// bounds a lookup's forward scan to about one page of batches.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest batch accepted (Kafka: 1048588).
    pub max_message_bytes: usize,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `flush.messages`: flush after this many records (Kafka default: never).
    pub flush_messages: u64,
    /// `flush.ms`: flush data older than this (Kafka default: never).
    pub flush_ms: i64,
}

/// Kafka's default `segment.bytes`.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Kafka's default `message.max.bytes`: 1 MiB plus the record batch overhead.
pub const MAX_MESSAGE_BYTES_DEFAULT: usize = 1_048_588;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            timestamp_type: TimestampType::CreateTime,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
        }
    }
}

#[derive(Debug, Error)]
pub enum AppendError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("offset {requested} is outside {log_start}..={high_watermark}")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        high_watermark: Offset,
    },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// What a producer is told about its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker's time for LogAppendTime topics, otherwise None (-1 on the wire).
    pub log_append_time_ms: Option<i64>,
    pub log_start_offset: Offset,
    pub record_count: i32,
    /// An idempotent producer's retry of a batch already in the log: nothing was
    /// written, and the offsets are the original's.
    pub duplicate: bool,
}

/// The file handles and target offset of one flush. It holds no reference to the log,
/// so it can run on another thread while the log keeps taking appends (group commit).
pub struct FlushJob {
    files: Vec<FileRef>,
    /// The log's directory, when a new segment's directory entry must be synced too.
    dir: Option<(Arc<dyn Io>, PathBuf)>,
    upto: Offset,
}

impl FlushJob {
    /// fdatasyncs every file; once this returns Ok, every offset below `upto` is durable.
    pub fn run(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some((io, dir)) = &self.dir {
            io.sync_dir(dir)?;
        }
        Ok(())
    }

    pub fn upto(&self) -> Offset {
        self.upto
    }
}

pub struct Log {
    io: Arc<dyn Io>,
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<Offset, Segment>,
    log_start: Offset,
    high_watermark: Offset,
    /// Every offset below this is on stable storage.
    flushed: Offset,
    /// A new segment file exists whose directory entry has not been synced.
    dir_dirty: bool,
    /// Segments closed since the last flush, whose indexes want syncing with it.
    sealed_since_flush: Vec<Offset>,
    records_since_flush: u64,
    last_flush_ms: i64,
    producers: ProducerState,
}

/// Segments replayed at open to rebuild idempotent-producer state: the active one and
/// the one before it, which hold every batch a producer could still be retrying.
const SEGMENTS_REPLAYED_FOR_PRODUCERS: usize = 2;

impl Log {
    /// Opens the log in `dir` (created if absent) on plain positional I/O.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> io::Result<Log> {
        Log::open_with(Arc::new(Positional), dir, config, now_ms)
    }

    /// Opens the log in `dir` (created if absent) on `io`, recovering its active segment.
    pub fn open_with(io: Arc<dyn Io>, dir: &Path, config: LogConfig, now_ms: i64) -> io::Result<Log> {
        io.create_dir_all(dir)?;
        let mut bases = Vec::new();
        for name in io.list(dir)? {
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(Offset(base));
                }
            }
        }
        bases.sort();
        let mut segments = BTreeMap::new();
        for (i, base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let segment = Segment::open(io.as_ref(), dir, *base, is_active, config.index_interval_bytes, now_ms)?;
            segments.insert(*base, segment);
        }
        let dir_dirty = segments.is_empty();
        if segments.is_empty() {
            segments.insert(Offset::ZERO, Segment::create(io.as_ref(), dir, Offset::ZERO, now_ms)?);
        }
        let mut producers = ProducerState::default();
        for segment in segments.values().rev().take(SEGMENTS_REPLAYED_FOR_PRODUCERS).rev() {
            segment.visit_headers(|h| producers.record(h, now_ms))?;
        }
        let log_start = *segments.keys().next().unwrap_or(&Offset::ZERO);
        let log_end = segments
            .values()
            .next_back()
            .map(|s| s.next_offset())
            .unwrap_or(log_start);
        Ok(Log {
            io,
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start,
            high_watermark: log_end,
            flushed: log_end,
            dir_dirty,
            sealed_since_flush: Vec::new(),
            records_since_flush: 0,
            last_flush_ms: now_ms,
            producers,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start: self.log_start,
            high_watermark: self.high_watermark,
            log_end: self.log_end(),
        }
    }

    pub fn log_end(&self) -> Offset {
        self.active().map(|s| s.next_offset()).unwrap_or(self.log_start)
    }

    pub fn flushed(&self) -> Offset {
        self.flushed
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> Option<&Segment> {
        self.segments.values().next_back()
    }

    /// Validates a producer's batch, assigns its offsets and appends it. On success the
    /// batch is in the page cache and visible to readers; durability comes with a flush.
    pub fn append(&mut self, records: &mut [u8], now_ms: i64) -> Result<AppendInfo, AppendError> {
        let header = batch::validate_produced(records, self.config.max_message_bytes)?;
        if let SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } = self.producers.check(&header)?
        {
            return Ok(AppendInfo {
                base_offset,
                last_offset,
                log_append_time_ms: None,
                log_start_offset: self.log_start,
                record_count: header.record_count,
                duplicate: true,
            });
        }
        let base_offset = self.log_end();
        let log_append_time_ms = (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        batch::assign(records, base_offset, 0, log_append_time_ms);
        let header = BatchHeader {
            base_offset,
            max_timestamp: log_append_time_ms.unwrap_or(header.max_timestamp),
            ..header
        };
        self.maybe_roll(&header, now_ms)?;
        let index_interval = self.config.index_interval_bytes;
        let Some(active) = self.segments.values_mut().next_back() else {
            return Err(io::Error::other("log has no active segment").into());
        };
        active.append(records, &header, index_interval)?;
        self.producers.record(&header, now_ms);
        self.high_watermark = header.next_offset();
        self.records_since_flush += header.record_count as u64;
        Ok(AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            log_append_time_ms,
            log_start_offset: self.log_start,
            record_count: header.record_count,
            duplicate: false,
        })
    }

    fn maybe_roll(&mut self, header: &BatchHeader, now_ms: i64) -> io::Result<()> {
        let Some(active) = self.active() else {
            return Ok(());
        };
        if active.is_empty() {
            return Ok(());
        }
        let too_big = active.size() + header.size as u64 > self.config.segment_bytes;
        let too_old = now_ms.saturating_sub(active.created_ms()) >= self.config.segment_ms;
        // Index entries hold offsets relative to the base as u32 and positions as u32.
        let offsets_overflow = header.last_offset().0 - active.base_offset().0 > i32::MAX as i64;
        let position_overflow = active.size() + header.size as u64 > u32::MAX as u64;
        if !(too_big || too_old || offsets_overflow || position_overflow) {
            return Ok(());
        }
        let base = header.base_offset;
        if let Some(active) = self.segments.values_mut().next_back() {
            active.seal()?;
            self.sealed_since_flush.push(active.base_offset());
        }
        self.segments
            .insert(base, Segment::create(self.io.as_ref(), &self.dir, base, now_ms)?);
        self.dir_dirty = true;
        Ok(())
    }

    /// Reads whole batches from `offset`: up to `max_bytes`, or the first batch alone if
    /// it is larger and `min_one` is set. Reading at the high watermark returns nothing.
    pub fn read(&self, offset: Offset, max_bytes: usize, min_one: bool) -> Result<Vec<u8>, ReadError> {
        if offset < self.log_start || offset > self.high_watermark {
            return Err(ReadError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start,
                high_watermark: self.high_watermark,
            });
        }
        if offset == self.high_watermark {
            return Ok(Vec::new());
        }
        // The segment holding `offset`, or a later one when that segment ends exactly at
        // `offset` (an empty active segment after a roll, say).
        let holding = self.segments.range(..=offset).next_back();
        let later = self.segments.range((Bound::Excluded(offset), Bound::Unbounded));
        for (_, segment) in holding.into_iter().chain(later) {
            if segment.next_offset() > offset {
                return Ok(segment.read(offset, max_bytes, min_one)?);
            }
        }
        Ok(Vec::new())
    }

    /// ListOffsets by timestamp: the first offset whose timestamp is at or after `timestamp`.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(Offset, i64)>> {
        for segment in self.segments.values() {
            if segment.max_timestamp().is_some_and(|(ts, _)| ts >= timestamp) {
                if let Some(found) = segment.find_timestamp(timestamp)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the largest timestamp and the offset that has it.
    pub fn max_timestamp(&self) -> Option<(Offset, i64)> {
        self.segments
            .values()
            .filter_map(Segment::max_timestamp)
            .fold(None, |best: Option<(i64, Offset)>, (ts, off)| match best {
                Some((b, _)) if b >= ts => best,
                _ => Some((ts, off)),
            })
            .map(|(ts, off)| (off, ts))
    }

    /// Whether `flush.messages` or `flush.ms` asks for a flush now.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        self.flushed < self.log_end()
            && (self.records_since_flush >= self.config.flush_messages
                || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms)
    }

    /// A flush of everything appended so far, or None when all of it is durable.
    pub fn flush_job(&mut self) -> io::Result<Option<FlushJob>> {
        let upto = self.log_end();
        if self.flushed >= upto && !self.dir_dirty {
            return Ok(None);
        }
        let mut files = Vec::new();
        for base in self.sealed_since_flush.drain(..) {
            if let Some(segment) = self.segments.get(&base) {
                files.extend(segment.sync_handles(true));
            }
        }
        let active_base = self.active().map(Segment::base_offset);
        for segment in self.segments.values() {
            if segment.next_offset() > self.flushed || Some(segment.base_offset()) == active_base {
                files.extend(segment.sync_handles(false));
            }
        }
        let dir = std::mem::take(&mut self.dir_dirty).then(|| (self.io.clone(), self.dir.clone()));
        self.records_since_flush = 0;
        Ok(Some(FlushJob { files, dir, upto }))
    }

    /// Records that a flush job finished: offsets below `upto` are durable.
    pub fn complete_flush(&mut self, upto: Offset, now_ms: i64) {
        if upto > self.flushed {
            self.flushed = upto;
        }
        self.last_flush_ms = now_ms;
    }

    /// Flushes synchronously (shutdown uses this).
    pub fn flush_now(&mut self, now_ms: i64) -> io::Result<()> {
        if let Some(job) = self.flush_job()? {
            job.run()?;
            self.complete_flush(job.upto(), now_ms);
        }
        Ok(())
    }

    /// Deletes the log and its directory.
    pub fn delete(self) -> io::Result<()> {
        for (_, segment) in self.segments {
            segment.delete(self.io.as_ref())?;
        }
        self.io.remove_dir_all(&self.dir)
    }
}
