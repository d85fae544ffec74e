//! A partition log: an ordered run of segments with the offsets storage knows (log
//! start, log end, and how far the files are written and durable), append with
//! validation, reads by offset and by timestamp, rolling, recovery at open, and the
//! write-round bookkeeping behind write-behind appends and group commit.
//!
//! The log is synchronous and does no I/O on its hot path: appends go to the active
//! segment's in-memory tail, [`Log::take_writes`] hands out what a write round must
//! write, and reads are steps that either answer from memory or name a file range.
//! The shard's [`crate::LogManager`] runs the rounds and the reads through the
//! shard's I/O backend; nothing outside storage sees a step or a round.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use futures_util::FutureExt;
use thiserror::Error;

use crate::batch::{self, BatchError, BatchHeader, TimestampType};
use crate::cleaner::{self, CleanJob, Cleaned, CompactionConfig, SourceSegment};
use crate::compression;
use crate::epoch::EpochCache;
use crate::io::{same_file, FileRef, Io, Positional, WriteRound};
use crate::offset::{Flushed, LogEnd, LogOffsets, LogStart, Offset, Written};
use crate::producer::{ProducerState, SequenceCheck, SequenceError};
use crate::retention::{self, SegmentSummary};
use crate::segment::{CleanEnd, DiskRead, FileWrite, ReadStep, Segment, Target};
use crate::snapshot;
use crate::txn::{self, AbortedTxn, Marker, Transactions};

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
    /// `retention.ms`: closed segments whose newest record is older go; negative keeps
    /// them (Sluice's default: two weeks; Kafka's: 7 days).
    pub retention_ms: i64,
    /// `retention.bytes`: the oldest closed segments go while the log is larger;
    /// negative puts no bound on size (Kafka's default).
    pub retention_bytes: i64,
    /// `cleanup.policy` includes `delete` (retention applies).
    pub cleanup_delete: bool,
    /// `cleanup.policy` includes `compact` (the cleaner keeps the latest value per key,
    /// and records without a key are refused).
    pub cleanup_compact: bool,
    /// `compression.type`: the codec batches are rewritten to on append, or None for
    /// `producer` (kept as sent, Kafka's default).
    pub compression: Option<i16>,
    /// What the cleaner honours when `cleanup_compact` is set.
    pub compaction: CompactionConfig,
}

/// The most a batch's records may decompress to when storage must look inside (a
/// compacted topic's keys, recompression, cleaning): bounds the memory one request can
/// take. Kafka's batches are at most `max.message.bytes` (1 MiB by default) compressed;
/// real data compresses well under 100×.
pub const DECOMPRESSED_BATCH_MAX: usize = 128 << 20;

/// Sluice's default `retention.ms`: two weeks, as its users asked (Kafka's is 7 days).
pub const RETENTION_MS_DEFAULT: i64 = 14 * 24 * 3600 * 1000;

/// Kafka's default `segment.bytes`.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Kafka's default `message.max.bytes` (and topic `max.message.bytes`): 1 MiB plus the
/// record batch overhead.
pub const MESSAGE_MAX_BYTES_DEFAULT: usize = 1_048_588;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: MESSAGE_MAX_BYTES_DEFAULT,
            timestamp_type: TimestampType::CreateTime,
            flush_messages: u64::MAX,
            flush_ms: i64::MAX,
            retention_ms: RETENTION_MS_DEFAULT,
            retention_bytes: -1,
            cleanup_delete: true,
            cleanup_compact: false,
            compression: None,
            compaction: CompactionConfig::default(),
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
    /// A non-transactional batch from a producer whose transaction is open here
    /// (Kafka's InvalidTxnStateException: INVALID_TXN_STATE).
    #[error("producer {0} has a transaction open in this partition; its batch must be transactional")]
    NotTransactional(i64),
    /// Records without a key sent to a compacted topic (INVALID_RECORD, with these
    /// records' indexes in the batch as per-record errors).
    #[error("a compacted topic needs a key on every record; {} records have none", .0.len())]
    KeylessRecords(Vec<i32>),
    /// An earlier write or sync of this log failed: what is in its files is unknown, so
    /// it takes no more writes rather than acknowledge data it cannot vouch for.
    #[error("an earlier write or sync of this log failed; it takes no more writes")]
    Failed,
    /// The disk is full: the log takes writes again once a write finds room.
    #[error("the disk holding this log is full")]
    NoSpace,
}

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("offset {requested} is outside {log_start}..={log_end}")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: LogStart,
        log_end: LogEnd,
    },
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// What a retention pass or DeleteRecords removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deleted {
    pub segments: usize,
    pub bytes: u64,
}

/// DeleteRecords asked for an offset past what may be deleted (Kafka's OFFSET_OUT_OF_RANGE).
#[derive(Debug, Error)]
pub enum DeleteRecordsError {
    #[error("offset {requested} is past the high watermark {limit}")]
    OutOfRange { requested: Offset, limit: Offset },
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
    pub log_start_offset: LogStart,
    pub record_count: i32,
    /// An idempotent producer's retry of a batch already in the log: nothing was
    /// written, and the offsets are the original's.
    pub duplicate: bool,
}

/// One log's part of a write round: everything appended since its last round, as one
/// vectored write per file, and (when the round syncs) an fdatasync of every file that
/// holds data not yet durable. It holds no reference to the log, so the round can run
/// while the log keeps taking appends; those join the next round (group commit).
pub struct WriteJob {
    writes: Vec<FileWrite>,
    /// Files to fdatasync once every write is done; empty unless the round syncs.
    syncs: Vec<FileRef>,
    /// The log's directory, when a new segment's directory entry must be synced too.
    dir: Option<PathBuf>,
    upto: Offset,
    sync: bool,
}

/// What the log needs to hear back about a round, kept apart from the job's buffers.
#[derive(Debug, Clone)]
pub struct WriteReceipt {
    writes: Vec<(Offset, Target, u64)>,
    upto: Offset,
    sync: bool,
}

impl WriteReceipt {
    /// Every offset below this is in the file (and durable if the round synced).
    pub fn upto(&self) -> Offset {
        self.upto
    }

    pub fn synced(&self) -> bool {
        self.sync
    }
}

/// Where a job's parts landed in a [`WriteRound`], to read their outcomes back.
pub struct RoundParts {
    pub writes: Range<usize>,
    pub dir: Option<usize>,
}

impl WriteJob {
    pub fn receipt(&self) -> WriteReceipt {
        WriteReceipt {
            writes: self.writes.iter().map(|w| (w.segment, w.target, w.len())).collect(),
            upto: self.upto,
            sync: self.sync,
        }
    }

    /// Bytes this job writes.
    pub fn bytes(&self) -> u64 {
        self.writes.iter().map(FileWrite::len).sum()
    }

    /// Adds the job to a shard's round: each written file with its sync behind its
    /// write when it needs one, then the files that only need a sync, then the
    /// directory.
    pub fn add_to(self, round: &mut WriteRound) -> RoundParts {
        let first = round.writes.len();
        let mut syncs_alone = self.syncs;
        for w in self.writes {
            let before = syncs_alone.len();
            syncs_alone.retain(|f| !same_file(f, &w.file));
            round.writes.push(w.into_round(syncs_alone.len() < before));
        }
        round
            .writes
            .extend(syncs_alone.into_iter().map(|file| crate::io::RoundWrite {
                file,
                pos: 0,
                bufs: Vec::new(),
                sync: true,
            }));
        let dir = self.dir.map(|d| {
            round.dirs.push(d);
            round.dirs.len() - 1
        });
        RoundParts {
            writes: first..round.writes.len(),
            dir,
        }
    }

    /// Runs the job alone on the calling thread: writes, then syncs.
    pub fn run_blocking(self, io: &dyn Io) -> io::Result<()> {
        let mut round = WriteRound::default();
        self.add_to(&mut round);
        let outcome = round.run_blocking(|dir| io.sync_dir(dir));
        outcome.writes.into_iter().chain(outcome.dirs).collect()
    }
}

/// A crash during a round that wrote several segments may keep a later segment and lose
/// the end of an earlier one (each file keeps what reached the disk). Nothing after
/// such a gap was acknowledged (a round acknowledges only when all of it is in), so the
/// segments after it are removed rather than served with a hole before them.
///
/// This assumes consecutive segments meet exactly, which holds while segments only
/// roll and are deleted from the front. Compaction (which may empty a segment's end)
/// must keep that true or replace this check with a recovery-point checkpoint.
/// A log's segments by base offset. Boxed: a B-tree node holds room for eleven
/// values, and most of 10,000 partitions have one segment, so unboxed each log would
/// carry ten empty segments' worth of memory (2.5 KiB).
type Segments = BTreeMap<Offset, Box<Segment>>;

fn drop_after_gap(io: &dyn Io, segments: &mut Segments) -> io::Result<()> {
    let mut expected: Option<Offset> = None;
    let mut gap_at = None;
    for (base, segment) in segments.iter() {
        if expected.is_some_and(|next| next != *base) {
            gap_at = Some(*base);
            break;
        }
        expected = Some(segment.next_offset());
    }
    if let Some(from) = gap_at {
        for (base, segment) in segments.split_off(&from) {
            tracing::warn!(
                segment = base.0,
                after = ?expected,
                "removing a segment that follows a gap left by a crash"
            );
            segment.delete(io)?;
        }
    }
    Ok(())
}

pub struct Log {
    io: Rc<dyn Io>,
    dir: PathBuf,
    config: LogConfig,
    segments: Segments,
    log_start: LogStart,
    written: Written,
    flushed: Flushed,
    /// A new segment file exists whose directory entry has not been synced.
    dir_dirty: bool,
    /// Segments closed since the last flush, whose indexes want syncing with it.
    sealed_since_flush: Vec<Offset>,
    records_since_flush: u64,
    last_flush_ms: i64,
    producers: ProducerState,
    /// The first offset of every leader epoch in the log (KIP-101).
    epochs: EpochCache,
    /// The epoch stamped into appended batches: this broker's leader epoch for the
    /// partition, as [`Log::become_leader`] last set it.
    leader_epoch: i32,
    /// Open and aborted transactions (KIP-98).
    txns: Transactions,
    /// Where the part of the log the cleaner has not compacted yet starts.
    first_dirty: Offset,
    /// The latest append was a follower's copy of its leader's batches: nobody reads
    /// this log, so its writes stay out of the read cache.
    following: bool,
}

/// Segments replayed at open to rebuild producer state when the log has no usable
/// snapshot (one written before snapshots existed, or lost): the active one and the one
/// before it, which hold every batch a producer could still be retrying.
const SEGMENTS_REPLAYED_FOR_PRODUCERS: usize = 2;

/// Producer and transaction state at open: the newest snapshot within the log
/// (`snapshot`), then every batch from its offset on. Segments wholly before that offset
/// give their aborted transactions from their `.txnindex`; the segments replayed
/// rebuild theirs from their batches and rewrite the index where it differs (a torn
/// entry, or one past a truncated tail). Without a snapshot the newest
/// [`SEGMENTS_REPLAYED_FOR_PRODUCERS`] segments are replayed; a transaction open from
/// before them is then taken to start at the first batch seen.
fn recover_producers(
    io: &dyn Io,
    dir: &Path,
    segments: &Segments,
    log_start: Offset,
    log_end: Offset,
    now_ms: i64,
) -> io::Result<(ProducerState, Transactions)> {
    let mut chosen = None;
    for offset in snapshot::list(io, dir)?.into_iter().rev() {
        if offset > log_end || offset < log_start {
            // Past a tail recovery cut, or before a log restarted further on.
            snapshot::remove(io, dir, offset)?;
            continue;
        }
        if chosen.is_none() {
            chosen = snapshot::read(io, dir, offset).map(|(p, t)| (p, t, offset));
        }
    }
    let (mut producers, mut txns, from) = match chosen {
        Some(found) => found,
        None => {
            let from = segments
                .keys()
                .rev()
                .nth(SEGMENTS_REPLAYED_FOR_PRODUCERS - 1)
                .copied()
                .unwrap_or(log_start);
            (ProducerState::default(), Transactions::default(), from)
        }
    };
    let mut from_indexes = Vec::new();
    for (base, segment) in segments {
        let on_disk = txn::read_index(io, dir, *base)?;
        if segment.next_offset() <= from {
            from_indexes.extend(on_disk);
            continue;
        }
        let before: Vec<AbortedTxn> = on_disk.iter().filter(|a| a.last_offset < from).copied().collect();
        let mut rebuilt = before.clone();
        segment.visit_batches(|h, control| {
            if h.base_offset >= from {
                producers.record(h, now_ms);
                rebuilt.extend(txns.record(h, control));
            }
        })?;
        if on_disk != rebuilt {
            txn::write_index(io, dir, *base, &rebuilt)?;
        }
        from_indexes.extend(before);
    }
    txns.load_aborted(from_indexes);
    Ok((producers, txns))
}

impl Log {
    /// Opens the log in `dir` (created if absent) on plain positional I/O.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> io::Result<Log> {
        Log::open_with(Rc::new(Positional::new()), dir, config, now_ms)
    }

    /// Opens the log in `dir` (created if absent) on `io`, recovering its active segment.
    pub fn open_with(io: Rc<dyn Io>, dir: &Path, config: LogConfig, now_ms: i64) -> io::Result<Log> {
        io.create_dir_all(dir)?;
        // A cleaner's swap that a crash interrupted is finished or undone first.
        cleaner::recover(io.as_ref(), dir)?;
        let mut bases = Vec::new();
        for name in io.list(dir)? {
            if name.ends_with(crate::segment::DELETED_SUFFIX) {
                // A deleted segment's file a crash left before it was unlinked.
                io.remove_file(&dir.join(&name))?;
                continue;
            }
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(Offset(base));
                }
            }
        }
        bases.sort();
        // Taken (and removed) before anything can be appended: see `CleanEnd`.
        let clean = CleanEnd::take(io.as_ref(), dir)?;
        let mut segments = BTreeMap::new();
        for (i, base) in bases.iter().enumerate() {
            let is_active = i + 1 == bases.len();
            let segment = Segment::open(
                io.as_ref(),
                dir,
                *base,
                is_active,
                clean.as_ref(),
                config.index_interval_bytes,
                now_ms,
            )?;
            segments.insert(*base, Box::new(segment));
        }
        drop_after_gap(io.as_ref(), &mut segments)?;
        let dir_dirty = segments.is_empty();
        if segments.is_empty() {
            segments.insert(
                Offset::ZERO,
                Box::new(Segment::create(io.as_ref(), dir, Offset::ZERO, now_ms)?),
            );
        }
        let first_base = *segments.keys().next().unwrap_or(&Offset::ZERO);
        let log_end = segments
            .values()
            .next_back()
            .map(|s| s.next_offset())
            .unwrap_or(first_base);
        // DeleteRecords may have moved the start into the first segment.
        let log_start = retention::load_log_start(io.as_ref(), dir)
            .map_or(first_base, |o| o.max(first_base))
            .min(log_end);
        let (producers, mut txns) = recover_producers(io.as_ref(), dir, &segments, first_base, log_end, now_ms)?;
        txns.forget_before(log_start);
        let epochs = match EpochCache::load(io.as_ref(), dir) {
            Some(mut epochs) => {
                // Recovery may have cut a tail whose epoch the checkpoint recorded.
                if epochs.truncate_from_end(log_end) {
                    epochs.store(io.as_ref(), dir)?;
                }
                epochs
            }
            None => {
                // No checkpoint (a log from before epochs were kept, or a torn one):
                // rebuild it from the epochs stamped in the batch headers.
                let mut epochs = EpochCache::default();
                for segment in segments.values() {
                    segment.visit_headers(|h| {
                        epochs.assign(h.partition_leader_epoch, h.base_offset);
                    })?;
                }
                if log_end > log_start {
                    epochs.store(io.as_ref(), dir)?;
                }
                epochs
            }
        };
        let leader_epoch = epochs.latest().map(|e| e.epoch).unwrap_or(0);
        let first_dirty = cleaner::load_checkpoint(io.as_ref(), dir)
            .unwrap_or(log_start)
            .clamp(log_start, log_end);
        Ok(Log {
            io,
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start: LogStart(log_start),
            written: Written(log_end),
            flushed: Flushed(log_end),
            dir_dirty,
            sealed_since_flush: Vec::new(),
            records_since_flush: 0,
            last_flush_ms: now_ms,
            producers,
            epochs,
            leader_epoch,
            txns,
            first_dirty,
            following: false,
        })
    }

    /// This broker now leads the partition under `epoch`: appends are stamped with it
    /// and the epoch starts at the log end (Kafka's `maybeAssignEpochStartOffset`).
    pub fn become_leader(&mut self, epoch: i32) -> io::Result<()> {
        self.leader_epoch = epoch;
        let log_end = self.log_end().offset();
        if self.epochs.assign(epoch, log_end) {
            self.epochs.store(self.io.as_ref(), &self.dir)?;
        }
        Ok(())
    }

    /// The newest leader epoch in the log and where it starts.
    pub fn latest_epoch(&self) -> Option<crate::epoch::EpochEntry> {
        self.epochs.latest()
    }

    /// OffsetForLeaderEpoch: where `epoch` ended in this log (see
    /// [`EpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        self.epochs.end_offset_for(epoch, self.log_end().offset())
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
            log_end: self.log_end(),
        }
    }

    pub fn log_end(&self) -> LogEnd {
        LogEnd(
            self.active()
                .map(|s| s.next_offset())
                .unwrap_or(self.log_start.offset()),
        )
    }

    /// Every offset below this is in the files.
    pub fn written(&self) -> Written {
        self.written
    }

    /// Every offset below this is on stable storage.
    pub fn flushed(&self) -> Flushed {
        self.flushed
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> Option<&Segment> {
        self.segments.values().next_back().map(|s| &**s)
    }

    /// Validates a producer's batch, assigns its offsets and appends it. On success the
    /// batch is readable; the next write round puts it in the file, and a round that
    /// syncs makes it durable.
    pub fn append(&mut self, records: impl Into<Bytes>, now_ms: i64) -> Result<AppendInfo, AppendError> {
        self.following = false;
        let mut records: Bytes = records.into();
        let mut header = batch::validate_produced(&records, self.config.max_message_bytes)?;
        if self.config.cleanup_compact {
            let keyless = compression::keyless_records(&records, &header, DECOMPRESSED_BATCH_MAX)?;
            if !keyless.is_empty() {
                return Err(AppendError::KeylessRecords(keyless));
            }
        }
        if let Some(codec) = self.config.compression.filter(|c| *c != header.compression()) {
            // The topic's codec, not the producer's (Kafka's compression.type).
            let body = compression::records_of(&records, &header, DECOMPRESSED_BATCH_MAX)?;
            let rebuilt = compression::rebuild(&records, &body, header.record_count, codec)?;
            records = Bytes::from(rebuilt);
            header = BatchHeader::parse(&records)?;
        }
        if !header.is_transactional() && header.producer_id >= 0 && self.txns.is_open(header.producer_id) {
            return Err(AppendError::NotTransactional(header.producer_id));
        }
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
        let base_offset = self.log_end().offset();
        let log_append_time_ms = (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        // Only the header is copied to patch offsets into it; the rest stays where the
        // request put it. LogAppendTime rewrites the CRC, so that batch is copied whole.
        let patched_len = if log_append_time_ms.is_some() {
            records.len()
        } else {
            batch::BATCH_HEADER_LEN.min(records.len())
        };
        let mut head = records[..patched_len].to_vec();
        batch::assign(&mut head, base_offset, self.leader_epoch, log_append_time_ms);
        if self.epochs.assign(self.leader_epoch, base_offset) {
            self.epochs.store(self.io.as_ref(), &self.dir)?;
        }
        let body = records.slice(patched_len..);
        let header = BatchHeader {
            base_offset,
            partition_leader_epoch: self.leader_epoch,
            max_timestamp: log_append_time_ms.unwrap_or(header.max_timestamp),
            ..header
        };
        self.maybe_roll(&header, now_ms)?;
        let index_interval = self.config.index_interval_bytes;
        let Some(active) = self.segments.values_mut().next_back() else {
            return Err(io::Error::other("log has no active segment").into());
        };
        active.append(Bytes::from(head), body, &header, index_interval);
        self.producers.record(&header, now_ms);
        self.txns.record(&header, None);
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

    /// Appends a transaction marker (WriteTxnMarkers): a control batch ending
    /// `marker.producer_id`'s transaction here. A marker of an epoch older than the
    /// producer's is refused as fenced; an ABORT is in the segment's transaction index
    /// (synced) before this returns.
    pub fn append_marker(&mut self, marker: &Marker, now_ms: i64) -> Result<AppendInfo, AppendError> {
        self.producers.check_marker(marker.producer_id, marker.producer_epoch)?;
        let bytes = txn::build_marker(marker, now_ms);
        let header = BatchHeader::parse(&bytes)?;
        let base_offset = self.log_end().offset();
        let mut bytes = bytes;
        batch::assign(&mut bytes, base_offset, self.leader_epoch, None);
        if self.epochs.assign(self.leader_epoch, base_offset) {
            self.epochs.store(self.io.as_ref(), &self.dir)?;
        }
        let header = BatchHeader {
            base_offset,
            partition_leader_epoch: self.leader_epoch,
            ..header
        };
        self.maybe_roll(&header, now_ms)?;
        let index_interval = self.config.index_interval_bytes;
        let Some(active) = self.segments.values_mut().next_back() else {
            return Err(io::Error::other("log has no active segment").into());
        };
        let base = active.base_offset();
        active.append(Bytes::from(bytes), Bytes::new(), &header, index_interval);
        self.producers.record(&header, now_ms);
        if let Some(aborted) = self.txns.record(&header, Some(marker.control)) {
            txn::append_index(self.io.as_ref(), &self.dir, base, &aborted)?;
        }
        self.records_since_flush += 1;
        Ok(AppendInfo {
            base_offset,
            last_offset: base_offset,
            log_append_time_ms: None,
            log_start_offset: self.log_start,
            record_count: 1,
            duplicate: false,
        })
    }

    /// The first offset of the oldest transaction open here: the last stable offset
    /// is at most this.
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.txns.first_unstable()
    }

    /// Whether `producer_id` has a transaction open here.
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.txns.is_open(producer_id)
    }

    /// How many transactions are open here.
    pub fn open_transactions(&self) -> usize {
        self.txns.ongoing_count()
    }

    /// The aborted transactions overlapping `from..=upto`, for a `read_committed` fetch.
    pub fn aborted_overlapping(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        self.txns.aborted_overlapping(from, upto)
    }

    /// Appends batches copied from the leader (a follower's fetch), keeping the
    /// leader's offsets, epochs and timestamps. Each batch must start at the log end and
    /// pass its CRC; a partial batch at the end (the fetch's size limit cut it) is left
    /// for the next fetch. Returns how many bytes were appended.
    pub fn append_replicated(&mut self, records: &Bytes, now_ms: i64) -> Result<usize, AppendError> {
        self.following = true;
        let mut pos = 0;
        while records.len() - pos >= batch::BATCH_HEADER_LEN {
            let header = BatchHeader::parse(&records[pos..])?;
            if records.len() - pos < header.size {
                break;
            }
            let whole = records.slice(pos..pos + header.size);
            if !batch::crc_matches(&whole, &header) {
                return Err(BatchError::Corrupt("CRC mismatch in a replicated batch").into());
            }
            let log_end = self.log_end().offset();
            if header.base_offset != log_end {
                return Err(BatchError::InvalidRecord("a replicated batch does not start at the log end").into());
            }
            self.maybe_roll(&header, now_ms)?;
            if self.epochs.assign(header.partition_leader_epoch, header.base_offset) {
                self.epochs.store(self.io.as_ref(), &self.dir)?;
            }
            let index_interval = self.config.index_interval_bytes;
            let Some(active) = self.segments.values_mut().next_back() else {
                return Err(io::Error::other("log has no active segment").into());
            };
            let control = if header.is_control() {
                txn::control_type(&whole)
            } else {
                None
            };
            let base = active.base_offset();
            active.append(whole, Bytes::new(), &header, index_interval);
            self.producers.record(&header, now_ms);
            if let Some(aborted) = self.txns.record(&header, control) {
                txn::append_index(self.io.as_ref(), &self.dir, base, &aborted)?;
            }
            self.records_since_flush += header.record_count.max(0) as u64;
            pos += header.size;
        }
        Ok(pos)
    }

    /// Removes every batch at or after `offset` (a follower's divergent tail, KIP-101),
    /// with the epochs that began there. The caller makes sure no write round is under
    /// way and everything appended is in the files. The log is opened again from its
    /// files afterwards, so indexes and producer state are rebuilt by recovery.
    pub fn truncate_to(&mut self, offset: Offset, now_ms: i64) -> io::Result<()> {
        if offset >= self.log_end().offset() {
            return Ok(());
        }
        if offset <= self.log_start.offset() {
            return self.truncate_fully_at(offset, now_ms);
        }
        for (_, segment) in self.segments.split_off(&offset) {
            segment.delete(self.io.as_ref())?;
        }
        if let Some(last) = self.segments.values().next_back() {
            if let Some(pos) = last.position_of(offset)? {
                last.truncate_file(pos)?;
            }
        }
        self.epochs.truncate_from_end(offset);
        self.reopen(now_ms)
    }

    /// Empties the log and starts it again at `offset` (a follower whose fetch offset
    /// the leader no longer has, Kafka's `truncateFullyAndStartAt`).
    pub fn truncate_fully_at(&mut self, offset: Offset, now_ms: i64) -> io::Result<()> {
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete(self.io.as_ref())?;
        }
        retention::remove_log_start(self.io.as_ref(), &self.dir)?;
        Segment::create(self.io.as_ref(), &self.dir, offset, now_ms)?;
        self.epochs.clear();
        self.reopen(now_ms)
    }

    fn reopen(&mut self, now_ms: i64) -> io::Result<()> {
        self.epochs.store(self.io.as_ref(), &self.dir)?;
        self.io.sync_dir(&self.dir)?;
        let leader_epoch = self.leader_epoch;
        *self = Log::open_with(self.io.clone(), &self.dir, self.config.clone(), now_ms)?;
        self.leader_epoch = leader_epoch;
        Ok(())
    }

    /// DeleteRecords: moves the log start offset up to `offset` (no further than
    /// `limit`, the high watermark) and deletes the segments wholly below it. The new
    /// start is durable before this returns. Returns the log start.
    pub fn delete_records(&mut self, offset: Offset, limit: Offset) -> Result<LogStart, DeleteRecordsError> {
        let limit = limit.min(self.log_end().offset());
        if offset > limit {
            return Err(DeleteRecordsError::OutOfRange {
                requested: offset,
                limit,
            });
        }
        if offset > self.log_start.offset() {
            retention::store_log_start(self.io.as_ref(), &self.dir, offset)?;
            self.log_start = LogStart(offset);
            self.delete_oldest(|s| s.next_offset() <= offset)?;
            self.forget_before_start()?;
        }
        Ok(self.log_start)
    }

    /// One retention pass (`cleanup.policy` `delete`, see [`retention::deletable`]):
    /// deletes the closed segments that are past `retention.ms` or over
    /// `retention.bytes`, or below the log start, if they lie wholly below `upto`
    /// (the high watermark). Their files are renamed at once and unlinked in the
    /// background, so the shard never waits for the filesystem to free them.
    pub fn apply_retention(&mut self, now_ms: i64, upto: Offset) -> io::Result<Deleted> {
        let summaries: Vec<SegmentSummary> = self
            .segments
            .values()
            .map(|s| SegmentSummary {
                base: s.base_offset(),
                next: s.next_offset(),
                size: s.size(),
                newest_ms: s.max_timestamp().map_or(s.created_ms(), |(ts, _)| ts),
            })
            .collect();
        let verdict = retention::deletable(
            &summaries,
            &retention::Limits {
                now_ms,
                retention_ms: self.config.retention_ms,
                retention_bytes: self.config.retention_bytes,
                delete_policy: self.config.cleanup_delete,
                log_start: self.log_start.offset(),
                upto: upto.min(self.written.offset()),
            },
        );
        let Some(keep_from) = summaries.get(verdict.segments).map(|s| s.base) else {
            return Ok(Deleted::default());
        };
        if verdict.segments == 0 {
            return Ok(Deleted::default());
        }
        let deleted = self.delete_oldest(|s| s.base_offset() < keep_from)?;
        if keep_from > self.log_start.offset() {
            self.log_start = LogStart(keep_from);
        }
        self.forget_before_start()?;
        Ok(deleted)
    }

    /// A cleaning pass this log is due for (`cleanup.policy` compact), or None: the
    /// closed segments wholly below `upto` (the high watermark), the last stable offset
    /// and `min.compaction.lag.ms`, when their dirty share reaches
    /// `min.cleanable.dirty.ratio` or dirty data is older than `max.compaction.lag.ms`.
    pub fn cleaning_job(
        &self,
        now_ms: i64,
        upto: Offset,
        map_entries_max: usize,
        bytes_per_second: Option<f64>,
    ) -> Option<CleanJob> {
        if !self.config.cleanup_compact {
            return None;
        }
        let compaction = self.config.compaction;
        let mut limit = upto.min(self.written.offset());
        if let Some(unstable) = self.first_unstable_offset() {
            limit = limit.min(unstable);
        }
        let lag_horizon = now_ms.saturating_sub(compaction.min_compaction_lag_ms);
        let closed = self.segments.len().saturating_sub(1);
        let candidates: Vec<&Segment> = self
            .segments
            .values()
            .take(closed)
            .take_while(|s| s.next_offset() <= limit)
            .take_while(|s| s.max_timestamp().is_none_or(|(ts, _)| ts <= lag_horizon))
            .map(|s| &**s)
            .collect();
        let first_dirty = self.first_dirty.max(self.log_start.offset());
        let total: u64 = candidates.iter().map(|s| s.size()).sum();
        let dirty: Vec<&&Segment> = candidates.iter().filter(|s| s.next_offset() > first_dirty).collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size()).sum();
        if dirty_bytes == 0 {
            return None;
        }
        let ratio = dirty_bytes as f64 / total.max(1) as f64;
        let overdue_horizon = now_ms.saturating_sub(compaction.max_compaction_lag_ms);
        let overdue = dirty
            .iter()
            .any(|s| s.max_timestamp().is_some_and(|(ts, _)| ts < overdue_horizon));
        if ratio < compaction.min_cleanable_dirty_ratio && !overdue {
            return None;
        }
        Some(CleanJob {
            dir: self.dir.clone(),
            segments: candidates
                .iter()
                .map(|s| SourceSegment {
                    base: s.base_offset(),
                    file: s.log_file(),
                    size: s.size(),
                    next: s.next_offset(),
                })
                .collect(),
            first_dirty,
            now_ms,
            delete_retention_ms: compaction.delete_retention_ms,
            index_interval_bytes: self.config.index_interval_bytes,
            aborted: self.txns.aborted_overlapping(self.log_start.offset(), limit),
            map_entries_max,
            bytes_per_second,
        })
    }

    /// Swaps a finished pass's segments in (see [`cleaner`]), if every segment it
    /// cleaned is still the log's as it was (retention or a truncation may have moved
    /// on meanwhile; the pass is then dropped). Returns the bytes reclaimed.
    pub fn install_cleaned(&mut self, cleaned: Cleaned, now_ms: i64) -> io::Result<Option<u64>> {
        let unchanged = cleaned.sources.iter().all(|s| {
            self.segments
                .get(&s.base)
                .is_some_and(|seg| seg.holds(&s.file) && seg.size() == s.size && seg.next_offset() == s.next)
        }) && self
            .segments
            .keys()
            .next_back()
            .is_some_and(|active| cleaned.sources.iter().all(|s| s.base < *active));
        let out_dir = self.dir.join(cleaner::CLEANED_DIR);
        if !unchanged {
            self.io.remove_dir_all(&out_dir)?;
            return Ok(None);
        }
        cleaner::mark_complete(self.io.as_ref(), &self.dir)?;
        let names = self.io.list(&out_dir)?;
        cleaner::swap_in(self.io.as_ref(), &self.dir, &names)?;
        self.io.remove_dir_all(&out_dir)?;
        for source in &cleaned.sources {
            let segment = Segment::open(
                self.io.as_ref(),
                &self.dir,
                source.base,
                false,
                None,
                self.config.index_interval_bytes,
                now_ms,
            )?;
            self.segments.insert(source.base, Box::new(segment));
        }
        self.first_dirty = cleaned.cleaned_upto;
        cleaner::store_checkpoint(self.io.as_ref(), &self.dir, self.first_dirty)?;
        Ok(Some(cleaned.bytes_before.saturating_sub(cleaned.bytes_after)))
    }

    /// The share of the closed segments' bytes the cleaner has not compacted yet.
    pub fn dirty_ratio(&self) -> f64 {
        let closed = self.segments.len().saturating_sub(1);
        let (mut total, mut dirty) = (0u64, 0u64);
        for s in self.segments.values().take(closed) {
            total += s.size();
            if s.next_offset() > self.first_dirty {
                dirty += s.size();
            }
        }
        if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        }
    }

    /// Deletes the oldest segments while `doomed` says so, never the active one.
    fn delete_oldest(&mut self, doomed: impl Fn(&Segment) -> bool) -> io::Result<Deleted> {
        let mut deleted = Deleted::default();
        while self.segments.len() > 1 {
            let Some(entry) = self.segments.first_entry() else {
                break;
            };
            if !doomed(entry.get()) {
                break;
            }
            let segment = entry.remove();
            self.sealed_since_flush.retain(|b| *b != segment.base_offset());
            deleted.bytes += segment.delete_later(self.io.as_ref())?;
            deleted.segments += 1;
        }
        Ok(deleted)
    }

    /// After the log start moved: epochs, aborted transactions and producer-state
    /// snapshots from before it are forgotten.
    fn forget_before_start(&mut self) -> io::Result<()> {
        let start = self.log_start.offset();
        if self.epochs.truncate_from_start(start) {
            self.epochs.store(self.io.as_ref(), &self.dir)?;
        }
        self.txns.forget_before(start);
        let first_base = self.segments.keys().next().copied().unwrap_or(start);
        for offset in snapshot::list(self.io.as_ref(), &self.dir)? {
            if offset < first_base {
                snapshot::remove(self.io.as_ref(), &self.dir, offset)?;
            }
        }
        Ok(())
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
        // Everything below the new segment, so the next open replays from here.
        snapshot::write(self.io.as_ref(), &self.dir, base, &self.producers, &self.txns)?;
        // Made before the old one is sealed, so a failure (a full disk) leaves the
        // log as it was and the next append tries the roll again.
        let next = Segment::create(self.io.as_ref(), &self.dir, base, now_ms)?;
        if let Some(active) = self.segments.values_mut().next_back() {
            active.seal();
            self.sealed_since_flush.push(active.base_offset());
        }
        self.segments.insert(base, Box::new(next));
        self.dir_dirty = true;
        Ok(())
    }

    /// Reads whole batches from `offset` up to the log end on the calling thread: up to
    /// `max_bytes`, or the first batch alone if it is larger and `min_one` is set.
    /// Tests, benchmarks and tools use this; the broker reads through its shard's
    /// [`crate::LogManager`], which waits for the disk without blocking.
    pub fn read(&self, offset: Offset, max_bytes: usize, min_one: bool) -> Result<Bytes, ReadError> {
        let upto = self.log_end().offset();
        let mut parts = ReadParts::new(offset, max_bytes, upto);
        while let Some((from, room, first_only)) = parts.next_read(min_one) {
            let first = self.read_start(from, room, first_only, upto)?;
            let read_file = |read: &DiskRead| {
                let mut buf = vec![0u8; read.len];
                let result = read
                    .file
                    .file()
                    .and_then(|f| f.read_exact_at(&mut buf, read.pos))
                    .map(|()| Bytes::from(buf));
                std::future::ready(result)
            };
            let done = finish_read(first, read_file, |read, data| self.read_continue(read, data));
            // Every step above is ready at once, so the future completes on its first poll.
            let bytes = match done.now_or_never() {
                Some(result) => result?,
                None => return Err(io::Error::other("a blocking read did not complete").into()),
            };
            parts.add(bytes, |from| self.next_segment_after(from));
        }
        Ok(parts.finish())
    }

    /// The base of the segment after the one holding `offset`, if there is one.
    pub(crate) fn next_segment_after(&self, offset: Offset) -> Option<Offset> {
        self.segments
            .range((Bound::Excluded(offset), Bound::Unbounded))
            .next()
            .map(|(base, _)| *base)
    }

    /// Continues a read with the bytes its last step asked for.
    pub(crate) fn read_continue(&self, read: DiskRead, data: Bytes) -> ReadStep {
        match self.segments.get(&read.cursor.segment) {
            // The cleaner swapped the segment meanwhile: positions in the old file mean
            // nothing in the new one, so the read starts again there (same offsets).
            Some(segment) if !segment.holds(&read.file) => {
                let c = read.cursor;
                let cursor = segment.read_cursor(c.offset, c.max_bytes, c.min_one, c.upto);
                segment.read_step(cursor, None, self.config.index_interval_bytes)
            }
            Some(segment) => segment.read_step(read.cursor, Some(data), self.config.index_interval_bytes),
            // The segment went away meanwhile (the topic was deleted).
            None => ReadStep::Done(Bytes::new()),
        }
    }

    /// Starts a read of whole batches from `offset` that returns no batch starting at
    /// or after `upto`: answers at once from memory, or names the first file range to
    /// read. `offset` must be within the log (log start to log end); reading at or past
    /// `upto` returns nothing, as Kafka does between the high watermark and the log end.
    pub(crate) fn read_start(
        &self,
        offset: Offset,
        max_bytes: usize,
        min_one: bool,
        upto: Offset,
    ) -> Result<ReadStep, ReadError> {
        let log_end = self.log_end();
        if offset < self.log_start.offset() || offset > log_end.offset() {
            return Err(ReadError::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start,
                log_end,
            });
        }
        if offset >= upto.min(log_end.offset()) {
            return Ok(ReadStep::Done(Bytes::new()));
        }
        // The segment holding `offset`, or a later one when that segment ends exactly at
        // `offset` (an empty active segment after a roll, say).
        let holding = self.segments.range(..=offset).next_back();
        let later = self.segments.range((Bound::Excluded(offset), Bound::Unbounded));
        for (_, segment) in holding.into_iter().chain(later) {
            if segment.next_offset() > offset {
                let cursor = segment.read_cursor(offset, max_bytes, min_one, upto);
                return Ok(segment.read_step(cursor, None, self.config.index_interval_bytes));
            }
        }
        Ok(ReadStep::Done(Bytes::new()))
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
            .filter_map(|s| s.max_timestamp())
            .fold(None, |best: Option<(i64, Offset)>, (ts, off)| match best {
                Some((b, _)) if b >= ts => best,
                _ => Some((ts, off)),
            })
            .map(|(ts, off)| (off, ts))
    }

    /// Whether `flush.messages` or `flush.ms` asks for a flush now.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        self.flushed.offset() < self.log_end().offset()
            && (self.records_since_flush >= self.config.flush_messages
                || now_ms.saturating_sub(self.last_flush_ms) >= self.config.flush_ms)
    }

    /// Bytes appended but not yet in the files.
    pub fn unwritten_bytes(&self) -> u64 {
        // Only the newest segments can hold unwritten bytes: rounds write in order.
        // The active one may be empty and new while the one before still waits.
        let mut total = 0;
        for (i, segment) in self.segments.values().rev().enumerate() {
            let bytes = segment.unwritten_bytes();
            if bytes == 0 && i > 0 {
                break;
            }
            total += bytes;
        }
        total
    }

    /// A round writing everything appended since the last one, and with `sync` making
    /// all of it durable; None when there is nothing to do. An error (a file that
    /// cannot be opened: out of descriptors) hands out nothing: the next round asks
    /// again for the same bytes.
    pub fn take_writes(&mut self, sync: bool) -> io::Result<Option<WriteJob>> {
        let taken = self.take_writes_or_fail(sync);
        if taken.is_err() {
            self.rewind_writes();
        }
        taken
    }

    fn take_writes_or_fail(&mut self, sync: bool) -> io::Result<Option<WriteJob>> {
        let upto = self.log_end().offset();
        let mut writes = Vec::new();
        let active_base = self.active().map(Segment::base_offset);
        for segment in self.segments.values_mut().rev() {
            // Every round takes everything, so behind the first segment that had
            // nothing left to give, every segment was given all it had.
            let done = segment.fully_submitted();
            segment.take_writes(&mut writes)?;
            if done && Some(segment.base_offset()) != active_base {
                break;
            }
        }
        for w in &writes {
            if let Some(d) = w.file.direct() {
                d.keep_written(!self.following);
            }
        }
        let sync = sync && (self.flushed.offset() < upto || self.dir_dirty);
        if writes.is_empty() && !sync {
            return Ok(None);
        }
        let mut syncs = Vec::new();
        if sync {
            syncs = self.sync_files()?;
        }
        let dir = (sync && std::mem::take(&mut self.dir_dirty)).then(|| self.dir.clone());
        if sync {
            self.records_since_flush = 0;
        }
        Ok(Some(WriteJob {
            writes,
            syncs,
            dir,
            upto,
            sync,
        }))
    }

    /// Files holding data that is not durable yet.
    fn sync_files(&mut self) -> io::Result<Vec<FileRef>> {
        let mut files = Vec::new();
        for base in &self.sealed_since_flush {
            if let Some(segment) = self.segments.get(base) {
                files.extend(segment.sync_handles(true)?);
            }
        }
        // The segment holding `flushed` and every later one (the active one among them).
        let from = self
            .segments
            .range(..=self.flushed.offset())
            .next_back()
            .map(|(base, _)| *base)
            .unwrap_or(self.log_start.offset());
        for (_, segment) in self.segments.range(from..) {
            files.extend(segment.sync_handles(false)?);
        }
        self.sealed_since_flush.clear();
        Ok(files)
    }

    /// Records that a round finished without error.
    pub fn complete_writes(&mut self, receipt: &WriteReceipt, now_ms: i64) {
        for (base, target, len) in &receipt.writes {
            if let Some(segment) = self.segments.get_mut(base) {
                segment.wrote(*target, *len);
            }
        }
        self.written = self.written.max(Written(receipt.upto));
        if receipt.sync {
            self.flushed = self.flushed.max(Flushed(receipt.upto));
            self.last_flush_ms = now_ms;
        }
        debug_assert!(self.flushed.offset() <= self.written.offset());
        debug_assert!(self.written.offset() <= self.log_end().offset());
    }

    /// Forgets rounds that were handed out but never completed (their engine stopped),
    /// so the next round writes those bytes again.
    pub fn rewind_writes(&mut self) {
        for segment in self.segments.values_mut() {
            segment.rewind();
        }
    }

    /// Writes and syncs everything on the calling thread (shutdown and tests use this).
    pub fn flush_now(&mut self, now_ms: i64) -> io::Result<()> {
        self.rewind_writes();
        self.run_now(true, now_ms)?;
        // A clean shutdown leaves nothing to replay.
        let end = self.log_end().offset();
        snapshot::write(self.io.as_ref(), &self.dir, end, &self.producers, &self.txns)
    }

    /// At shutdown, after the final flush: the active segment's file gives back its
    /// block padding and unused preallocation, so a stopped broker leaves plain files.
    pub fn trim_active(&self) {
        if let Some(segment) = self.segments.values().next_back() {
            segment.trim();
        }
    }

    /// The last step of a clean shutdown, after [`Log::flush_now`] and
    /// [`Log::trim_active`]: records where the active segment ends, so the next open
    /// reads its indexes instead of scanning it ([`CleanEnd`]). The log must take no
    /// more appends afterwards.
    pub fn close_clean(&mut self) -> io::Result<()> {
        if self.unwritten_bytes() > 0 {
            return Ok(());
        }
        match self.segments.values_mut().next_back() {
            Some(segment) => segment.clean_end()?.store(self.io.as_ref(), &self.dir),
            None => Ok(()),
        }
    }

    /// Writes everything pending on the calling thread, without a sync.
    pub fn write_now(&mut self, now_ms: i64) -> io::Result<()> {
        self.run_now(false, now_ms)
    }

    fn run_now(&mut self, sync: bool, now_ms: i64) -> io::Result<()> {
        if let Some(job) = self.take_writes(sync)? {
            let receipt = job.receipt();
            job.run_blocking(self.io.as_ref())?;
            self.complete_writes(&receipt, now_ms);
        }
        Ok(())
    }

    /// Deletes the log's files and its directory; the log holds nothing afterwards.
    pub fn delete(&mut self) -> io::Result<()> {
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete(self.io.as_ref())?;
        }
        self.io.remove_dir_all(&self.dir)
    }
}

/// Reads within one segment at most; a read that ends at its segment's end goes on in
/// the next one while room is left. Compacted logs can hold runs of segments that are
/// one empty batch each (the cleaner keeps every segment's last batch), and a client
/// that gets a response with no record in it takes the batch for one too large to
/// fetch (librdkafka doubles its fetch size, then fails), so a response crosses them.
const SEGMENTS_PER_READ_MAX: usize = 64;

/// The pieces of one read that may cross segments, joined at the end.
pub(crate) struct ReadParts {
    parts: Vec<Bytes>,
    next: Offset,
    room: usize,
    upto: Offset,
    more: bool,
}

impl ReadParts {
    pub(crate) fn new(offset: Offset, max_bytes: usize, upto: Offset) -> ReadParts {
        ReadParts {
            parts: Vec::new(),
            next: offset,
            room: max_bytes,
            upto,
            more: true,
        }
    }

    /// Where the next piece starts, the room it has, and whether it may return a first
    /// batch larger than that (only the first piece may, KIP-74).
    pub(crate) fn next_read(&self, min_one: bool) -> Option<(Offset, usize, bool)> {
        let go = self.more && self.parts.len() < SEGMENTS_PER_READ_MAX;
        go.then_some((self.next, self.room, min_one && self.parts.is_empty()))
    }

    /// Takes a piece. `next_segment` names the base of the segment after the one
    /// holding an offset: only when there is one below the bound, and room is left, are
    /// the piece's batches walked to see whether it ended exactly there (so a read of
    /// the active segment, the hot path, walks nothing).
    pub(crate) fn add(&mut self, bytes: Bytes, next_segment: impl Fn(Offset) -> Option<Offset>) {
        self.room = self.room.saturating_sub(bytes.len());
        let following = next_segment(self.next).filter(|base| *base < self.upto);
        self.more = false;
        if bytes.is_empty() {
            return;
        }
        if let Some(base) = following.filter(|_| self.room >= batch::BATCH_HEADER_LEN) {
            let mut last_next = None;
            let mut rest: &[u8] = &bytes;
            while let Ok(h) = BatchHeader::parse(rest) {
                if h.size > rest.len() {
                    break;
                }
                last_next = Some(h.next_offset());
                rest = &rest[h.size..];
            }
            if last_next == Some(base) {
                self.next = base;
                self.more = true;
            }
        }
        self.parts.push(bytes);
    }

    pub(crate) fn finish(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(self.parts.iter().map(Bytes::len).sum());
                for p in &self.parts {
                    all.extend_from_slice(p);
                }
                all.freeze()
            }
        }
    }
}

/// Runs a read to its end: `first` answers from memory or names a file range, `fetch`
/// reads a range, and `resume` continues with the bytes. The one read loop, whether
/// the bytes come through a shard's backend or from a blocking read.
pub(crate) async fn finish_read<F, Fut>(
    first: ReadStep,
    fetch: F,
    resume: impl Fn(DiskRead, Bytes) -> ReadStep,
) -> io::Result<Bytes>
where
    F: Fn(&DiskRead) -> Fut,
    Fut: Future<Output = io::Result<Bytes>>,
{
    let mut step = first;
    loop {
        match step {
            ReadStep::Done(bytes) => return Ok(bytes),
            ReadStep::Disk(read) => {
                let data = fetch(&read).await?;
                step = resume(read, data);
            }
        }
    }
}
