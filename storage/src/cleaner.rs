//! The log cleaner (Kafka's `cleanup.policy=compact`): keeps the latest record of every
//! key, removes tombstones older than `delete.retention.ms`, drops the records of
//! aborted transactions, and keeps every offset where it was (gaps are allowed, as in
//! Kafka).
//!
//! A pass has three parts. [`crate::Log::cleaning_job`] (on the shard) decides whether
//! the log is due (its dirty ratio, `min.compaction.lag.ms`, `max.compaction.lag.ms`)
//! and hands out the closed segments to clean, as shared file handles. [`clean`] (on a
//! cleaner thread, never on a shard) builds the key → latest offset map from the dirty
//! segments, then rewrites every segment of the job into `cleaned/` beside the log,
//! with the same base offsets and fresh indexes, and syncs them.
//! [`crate::Log::install_cleaned`] (back on the shard) swaps them in.
//!
//! The swap is crash-safe: the cleaned files are complete and synced before a `COMPLETE`
//! marker is written (and synced) in `cleaned/`; then each file is renamed over its
//! original. A log that opens with `cleaned/` finishes the renames if the marker is
//! there and discards the directory if not, so a crash leaves the old segment or the
//! new one, never neither. A cleaned file only replaces a segment that still exists,
//! so a segment retention deleted meanwhile never comes back.
//!
//! Each cleaned segment keeps its last batch (emptied of records if none survive), so
//! consecutive segments still meet exactly and the log's gap check at open holds.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use crate::compression;
use crate::io::handles::Handle;
use crate::io::{FileRef, Io};
use crate::log::DECOMPRESSED_BATCH_MAX;
use crate::offset::Offset;
use crate::segment::Segment;
use crate::txn::AbortedTxn;

/// The directory cleaned segments are written to before the swap.
pub const CLEANED_DIR: &str = "cleaned";
/// Present in [`CLEANED_DIR`] once its files are complete and may replace the originals.
pub const COMPLETE_MARKER: &str = "COMPLETE";
/// The checkpoint of where the dirty part of the log starts.
pub const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// The settings of a compacted topic that cleaning reads, by Kafka's names.
#[derive(Debug, Clone, Copy)]
pub struct CompactionConfig {
    /// `delete.retention.ms`: how long a tombstone stays after it was written.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log with dirty data older than this is cleaned even
    /// below its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: the share of dirty bytes that makes a log due.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

/// One closed segment as the job sees it.
#[derive(Clone)]
pub struct SourceSegment {
    pub base: Offset,
    pub file: Handle,
    pub size: u64,
    pub next: Offset,
}

/// A cleaning pass over one log, handed from the shard to a cleaner thread.
#[derive(Clone)]
pub struct CleanJob {
    pub dir: PathBuf,
    /// Every closed segment from the log start to the end of the dirty part.
    pub segments: Vec<SourceSegment>,
    /// The map is built from records at and after this offset (the dirty part).
    pub first_dirty: Offset,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    pub index_interval_bytes: u64,
    /// Aborted transactions overlapping the job: their records are dropped.
    pub aborted: Vec<AbortedTxn>,
    /// Entries the key map may hold (`log.cleaner.dedupe.buffer.size` / 24 bytes).
    pub map_entries_max: usize,
    /// Throttle (`log.cleaner.io.max.bytes.per.second`); None for no limit.
    pub bytes_per_second: Option<f64>,
}

/// What a pass produced, for [`crate::Log::install_cleaned`].
pub struct Cleaned {
    /// The sources cleaned, to check at install that they are still the log's.
    pub sources: Vec<SourceSegment>,
    /// Where the next pass's dirty part starts.
    pub cleaned_upto: Offset,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A 128-bit hash of a key: the map holds hashes, not keys (Kafka's cleaner holds a
/// 16-byte MD5), so its memory per key is fixed whatever the key's size.
fn key_hash(key: &[u8]) -> u128 {
    let mut a = DefaultHasher::new();
    0u8.hash(&mut a);
    key.hash(&mut a);
    let mut b = DefaultHasher::new();
    1u8.hash(&mut b);
    key.hash(&mut b);
    ((a.finish() as u128) << 64) | b.finish() as u128
}

/// Reads a segment's batches in order, a chunk at a time.
struct BatchReader {
    /// Held open for the pass over the segment.
    file: FileRef,
    size: u64,
    pos: u64,
}

/// A batch is read whole; larger ones than this are not Kafka batches.
const BATCH_READ_MAX: usize = 64 << 20;

impl BatchReader {
    fn next_batch(&mut self) -> io::Result<Option<Bytes>> {
        if self.pos + BATCH_HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let mut head = vec![0u8; BATCH_HEADER_LEN];
        self.file.read_exact_at(&mut head, self.pos)?;
        let header = BatchHeader::parse(&head).map_err(io::Error::other)?;
        if header.size > BATCH_READ_MAX || self.pos + header.size as u64 > self.size {
            return Err(io::Error::other("a batch runs past its segment"));
        }
        let mut whole = head;
        whole.resize(header.size, 0);
        self.file
            .read_exact_at(&mut whole[BATCH_HEADER_LEN..], self.pos + BATCH_HEADER_LEN as u64)?;
        self.pos += header.size as u64;
        Ok(Some(Bytes::from(whole)))
    }
}

fn is_aborted(aborted: &[AbortedTxn], header: &BatchHeader) -> bool {
    header.is_transactional()
        && !header.is_control()
        && aborted.iter().any(|a| {
            a.producer_id == header.producer_id
                && a.first_offset <= header.base_offset
                && header.base_offset <= a.last_offset
        })
}

/// Sleeps as needed to keep `done` bytes since `started` under the throttle.
fn throttle(limit: Option<f64>, started: Instant, done: u64) {
    if let Some(rate) = limit.filter(|r| *r > 0.0 && r.is_finite()) {
        let due = Duration::from_secs_f64(done as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Runs a pass: reads the job's segments and writes their cleaned copies into
/// `cleaned/`, synced; the log is not touched (see [`crate::Log::install_cleaned`]).
pub fn clean(io: &dyn Io, job: &CleanJob) -> io::Result<Cleaned> {
    let started = Instant::now();
    let mut read_bytes = 0u64;
    // 1. The latest offset of every key in the dirty part, until the map is full.
    let mut latest: HashMap<u128, i64> = HashMap::new();
    let mut cleaned_upto = job.first_dirty;
    for segment in job.segments.iter().filter(|s| s.next > job.first_dirty) {
        if latest.len() >= job.map_entries_max {
            break;
        }
        let mut reader = BatchReader {
            file: segment.file.file()?,
            size: segment.size,
            pos: 0,
        };
        while let Some(bytes) = reader.next_batch()? {
            let header = BatchHeader::parse(&bytes).map_err(io::Error::other)?;
            if header.is_control() || header.next_offset() <= job.first_dirty || is_aborted(&job.aborted, &header) {
                continue;
            }
            let records = compression::records_of(&bytes, &header, DECOMPRESSED_BATCH_MAX).map_err(io::Error::other)?;
            batch::for_each_record(&records, |r| {
                if let Some(key) = r.key {
                    latest.insert(key_hash(key), header.base_offset.0 + r.offset_delta);
                }
                Ok(())
            })
            .map_err(io::Error::other)?;
        }
        read_bytes += segment.size;
        throttle(job.bytes_per_second, started, read_bytes);
        cleaned_upto = segment.next;
    }
    let sources: Vec<SourceSegment> = job.segments.iter().filter(|s| s.base < cleaned_upto).cloned().collect();
    // 2. Every segment up to there, rewritten.
    let out_dir = job.dir.join(CLEANED_DIR);
    if io.list(&out_dir).is_ok() {
        io.remove_dir_all(&out_dir)?;
    }
    io.create_dir_all(&out_dir)?;
    let tombstone_horizon = job.now_ms.saturating_sub(job.delete_retention_ms);
    let (mut bytes_before, mut bytes_after) = (0, 0);
    for source in &sources {
        let mut out = Segment::create(io, &out_dir, source.base, job.now_ms)?;
        let mut reader = BatchReader {
            file: source.file.file()?,
            size: source.size,
            pos: 0,
        };
        let mut pending = reader.next_batch()?;
        while let Some(bytes) = pending.take() {
            pending = reader.next_batch()?;
            let is_last = pending.is_none();
            let header = BatchHeader::parse(&bytes).map_err(io::Error::other)?;
            let kept = if header.is_control() {
                Some(bytes.clone())
            } else {
                let aborted = is_aborted(&job.aborted, &header);
                let records =
                    compression::records_of(&bytes, &header, DECOMPRESSED_BATCH_MAX).map_err(io::Error::other)?;
                let (mut body, mut count, mut all) = (Vec::new(), 0i32, 0i32);
                batch::for_each_record(&records, |r| {
                    all += 1;
                    let offset = header.base_offset.0 + r.offset_delta;
                    let superseded = r
                        .key
                        .is_some_and(|k| latest.get(&key_hash(k)).is_some_and(|l| *l > offset));
                    let expired_tombstone = r.value.is_none() && header.max_timestamp < tombstone_horizon;
                    if !(aborted || superseded || expired_tombstone) {
                        body.extend_from_slice(r.raw);
                        count += 1;
                    }
                    Ok(())
                })
                .map_err(io::Error::other)?;
                if count == all {
                    Some(bytes.clone())
                } else if count > 0 || is_last {
                    // The last batch stays even when emptied, so the segment still
                    // ends where it ended.
                    Some(Bytes::from(compression::rebuild(
                        &bytes,
                        &body,
                        count,
                        header.compression(),
                    )?))
                } else {
                    None
                }
            };
            if let Some(batch) = kept {
                let h = BatchHeader::parse(&batch).map_err(io::Error::other)?;
                out.append(batch, Bytes::new(), &h, job.index_interval_bytes);
                if out.unwritten_bytes() > 4 << 20 {
                    out.write_blocking()?;
                }
            }
        }
        out.seal();
        out.write_blocking()?;
        for file in out.sync_handles(true)? {
            file.sync_data()?;
        }
        bytes_before += source.size;
        bytes_after += out.size();
        read_bytes += source.size;
        throttle(job.bytes_per_second, started, read_bytes);
    }
    io.sync_dir(&out_dir)?;
    Ok(Cleaned {
        sources,
        cleaned_upto,
        bytes_before,
        bytes_after,
    })
}

/// Finishes or discards a swap a crash interrupted (see the module comment): with the
/// marker every cleaned file replaces its original, if the original still exists.
pub fn recover(io: &dyn Io, dir: &Path) -> io::Result<()> {
    let cleaned = dir.join(CLEANED_DIR);
    let Ok(names) = io.list(&cleaned) else {
        return Ok(());
    };
    if names.iter().any(|n| n == COMPLETE_MARKER) {
        swap_in(io, dir, &names)?;
    }
    io.remove_dir_all(&cleaned)
}

/// Renames every cleaned file over its original, the log file of each segment last
/// (so a segment's indexes are in place before its log is).
pub(crate) fn swap_in(io: &dyn Io, dir: &Path, names: &[String]) -> io::Result<()> {
    let cleaned = dir.join(CLEANED_DIR);
    let present = io.list(dir)?;
    let mut names: Vec<&String> = names.iter().filter(|n| *n != COMPLETE_MARKER).collect();
    names.sort_by_key(|n| (n.ends_with(".log"), n.to_string()));
    for name in names {
        let stem = name.split('.').next().unwrap_or_default();
        let original_exists = present
            .iter()
            .any(|p| p.split('.').next() == Some(stem) && p.ends_with(".log"));
        if original_exists {
            io.rename(&cleaned.join(name), &dir.join(name))?;
        }
    }
    io.sync_dir(dir)
}

/// Writes the marker that makes `cleaned/` installable, synced.
pub fn mark_complete(io: &dyn Io, dir: &Path) -> io::Result<()> {
    let cleaned = dir.join(CLEANED_DIR);
    let marker = io.open(&cleaned.join(COMPLETE_MARKER), true)?;
    marker.sync_data()?;
    io.sync_dir(&cleaned)
}

/// The dirty part's start, from its checkpoint.
pub fn load_checkpoint(io: &dyn Io, dir: &Path) -> Option<Offset> {
    crate::retention::load_offset(io, &dir.join(CHECKPOINT_FILE))
}

pub fn store_checkpoint(io: &dyn Io, dir: &Path, offset: Offset) -> io::Result<()> {
    crate::retention::store_offset(io, dir, CHECKPOINT_FILE, offset)
}

type Work = (CleanJob, tokio::sync::oneshot::Sender<io::Result<Cleaned>>);

/// The cleaner thread every shard hands its passes to (Kafka's `log.cleaner.threads`,
/// one): passes read and write files with plain positional I/O off the shards.
#[derive(Clone)]
pub struct CleanerThread {
    tx: std::sync::mpsc::Sender<Work>,
}

impl CleanerThread {
    pub fn start() -> io::Result<CleanerThread> {
        let (tx, rx) = std::sync::mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("sluice-cleaner".into())
            .spawn(move || {
                for (job, reply) in rx {
                    let _ = reply.send(clean(&crate::io::Positional::new(), &job));
                }
            })?;
        Ok(CleanerThread { tx })
    }

    /// Runs `job` on the cleaner thread and waits for it without blocking.
    pub async fn run(&self, job: CleanJob) -> io::Result<Cleaned> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((job, reply))
            .map_err(|_| io::Error::other("the cleaner thread stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the cleaner thread stopped"))?
    }
}
