//! A shard's storage manager (Redpanda's log manager, one per core): it owns the
//! partition logs of its shard, runs their write rounds, flush policy and reads through
//! the shard's I/O backend, and gives the broker one call per operation:
//!
//! - [`PartitionLog::append`] validates and appends a batch and returns an
//!   [`AppendReceipt`] whose [`AppendReceipt::wait`] resolves when the batch is as safe
//!   as asked ([`Durability`]): in the file, or on stable storage.
//! - [`PartitionLog::read`] returns whole batches, from the write-behind tail in memory
//!   or from the files, waiting for the disk without blocking the shard.
//!
//! Write rounds (write-behind and group commit): appends queue their log; the manager's
//! task takes every queued log, asks each for everything appended since its last round
//! (and an fdatasync when an acks=all append or a due `flush.ms` / `flush.messages`
//! asks), submits all of it to the backend as one round (one io_uring submission), and
//! publishes how far each log is written and durable. Appends that arrive meanwhile
//! join the next round, so under load one write and one sync cover many requests.
//!
//! A log whose write or sync fails refuses every later append and fails every waiting
//! receipt (KAFKA_STORAGE_ERROR upstream) rather than acknowledge data it cannot vouch
//! for.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{watch, Notify};

use crate::io::{Io, WriteRound};
use crate::log::{
    finish_read, AppendError, AppendInfo, DeleteRecordsError, Deleted, Log, LogConfig, ReadError, ReadParts,
    RoundParts, WriteReceipt,
};
use crate::offset::{Flushed, LogOffsets, LogStart, Offset, Written};

/// Appended bytes a log may hold in memory before even acks=0 appends wait for a write
/// round: at 600 MB/s this is ~25 ms of writes, and with a shard's few hot partitions
/// it keeps the write-behind tails well inside the broker's memory target.
const UNWRITTEN_BYTES_MAX: u64 = 16 << 20;

/// How often the manager looks for logs whose `flush.ms` has come due. Kafka's log
/// flusher checks every `log.flush.scheduler.interval.ms`; 100 ms keeps a small
/// `flush.ms` honest at no measurable cost.
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Write rounds that could not open a file are logged at most once per 10 s.
static OPEN_FAILURES: crate::sparse::Sparse = crate::sparse::Sparse::new(10_000);

/// How often a log that found the disk full tries its write again.
const NO_SPACE_RETRY: Duration = Duration::from_millis(500);

/// Free space below which a log that found the disk full, with nothing left to
/// write, still refuses appends.
const NO_SPACE_FREE_MIN: u64 = 4 << 20;

/// How safe an appended batch must be before its receipt resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// In the log (readable) only: acks=0, and group metadata whose loss costs a
    /// rebalance. The receipt still waits when the log's unwritten tail is over its
    /// bound (backpressure).
    Appended,
    /// In the file, so a killed broker process keeps it (acks=1).
    Written,
    /// On stable storage (acks=all with fsync): the next round's fdatasync.
    Synced,
}

/// How far a log is written and durable, published to waiting receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    written: Written,
    flushed: Flushed,
    /// A write or sync failed: the log takes no more writes.
    failed: bool,
    /// Bumped each time a round finds the disk full: receipts waiting then fail (the
    /// log keeps their batches and writes them once there is room).
    refused: u64,
}

/// A receipt resolved with this error: the write or sync behind it failed.
#[derive(Debug, Error)]
#[error("the write or sync of this batch failed")]
pub struct WriteFailed;

/// Resolves when an appended batch is as safe as its append asked.
pub struct AppendReceipt {
    progress: watch::Receiver<Progress>,
    target: Offset,
    synced: bool,
    /// [`Progress::refused`] when the batch was appended.
    refused: u64,
}

impl AppendReceipt {
    pub async fn wait(mut self) -> Result<(), WriteFailed> {
        let (target, synced, refused) = (self.target, self.synced, self.refused);
        let covered = |p: &Progress| {
            p.failed
                || p.refused != refused
                || if synced {
                    p.flushed.offset() >= target
                } else {
                    p.written.offset() >= target
                }
        };
        match self.progress.wait_for(covered).await {
            Ok(p) if !p.failed && p.refused == refused => Ok(()),
            _ => Err(WriteFailed),
        }
    }
}

/// An append's outcome: what the producer is told, and, unless nothing needs waiting
/// for, the receipt to await before telling it.
pub struct Appended {
    pub info: AppendInfo,
    pub receipt: Option<AppendReceipt>,
}

/// What one write round did, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct RoundStats {
    pub logs: usize,
    pub bytes: u64,
    pub synced: bool,
    pub took: Duration,
}

struct Managed {
    log: RefCell<Log>,
    progress: watch::Sender<Progress>,
    /// In the manager's queue for the next round.
    queued: Cell<bool>,
    /// The next round must also sync this log.
    sync_wanted: Cell<bool>,
    deleted: Cell<bool>,
    /// A round holding this log's writes is under way.
    in_flight: Cell<bool>,
    /// The disk was full at the last write: appends are refused until a write (tried
    /// again every [`NO_SPACE_RETRY`]) finds room.
    no_space: Cell<Option<Instant>>,
}

impl Managed {
    /// The disk had no room for this log: appends are refused until a retry finds some.
    /// A receipt for everything below `target`, written (or synced, with `synced`).
    fn receipt(&self, target: Offset, synced: bool) -> AppendReceipt {
        AppendReceipt {
            progress: self.progress.subscribe(),
            target,
            synced,
            refused: self.progress.borrow().refused,
        }
    }

    fn mark_full(&self, log: &Log, e: &dyn std::fmt::Display) {
        if self.no_space.replace(Some(Instant::now())).is_none() {
            tracing::warn!(log = %log.dir().display(), "the disk is full, the partition refuses writes until there is room: {e}");
        }
    }
}

/// What the manager and its logs' handles share.
struct Shared {
    io: Rc<dyn Io>,
    queue: RefCell<Vec<Rc<Managed>>>,
    /// Logs whose round could not be handed out (a file would not open): queued again
    /// by the flush timer.
    deferred: RefCell<Vec<Rc<Managed>>>,
    /// Reads from the files in flight at once: a quarter of the descriptor budget.
    reads: tokio::sync::Semaphore,
    /// Logs one round takes: all of them, unless a descriptor budget bounds the files
    /// a round may hold open until it completes (a log file each, and a sealed
    /// segment's two indexes), to an eighth of it; the rest go next round.
    logs_per_round: usize,
    wake: Notify,
}

impl Shared {
    fn enqueue(&self, log: &Rc<Managed>) {
        if !log.queued.replace(true) {
            self.queue.borrow_mut().push(log.clone());
            self.wake.notify_one();
        }
    }
}

/// Told about every write round (the broker feeds its fsync-latency metric from it).
type RoundObserver = Box<dyn Fn(RoundStats)>;

/// A shard's storage manager; see the module comment.
pub struct LogManager {
    shared: Rc<Shared>,
    /// Every open log, for the flush timer and the final flush.
    logs: RefCell<Vec<Weak<Managed>>>,
    observer: RefCell<Option<RoundObserver>>,
}

/// The handle the broker keeps for one partition's log.
#[derive(Clone)]
pub struct PartitionLog {
    log: Rc<Managed>,
    shared: Rc<Shared>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl LogManager {
    /// A manager for the logs of one shard, on the shard's own backend.
    pub fn new(io: Rc<dyn Io>) -> Rc<LogManager> {
        let budget = io.budget().map(|b| b.files().stats().budget);
        let reads = budget.map_or(tokio::sync::Semaphore::MAX_PERMITS, |b| (b / 4).max(1));
        Rc::new(LogManager {
            shared: Rc::new(Shared {
                reads: tokio::sync::Semaphore::new(reads),
                logs_per_round: budget.map_or(usize::MAX, |b| (b / 8).max(1)),
                io,
                queue: RefCell::new(Vec::new()),
                deferred: RefCell::new(Vec::new()),
                wake: Notify::new(),
            }),
            logs: RefCell::new(Vec::new()),
            observer: RefCell::new(None),
        })
    }

    /// The backend's name, for logs and metrics.
    pub fn engine(&self) -> &'static str {
        self.shared.io.name()
    }

    /// Whether this shard's log files use direct I/O.
    pub fn direct_io(&self) -> bool {
        self.shared.io.direct_io()
    }

    /// Calls `observe` after every write round.
    pub fn observe(&self, observe: impl Fn(RoundStats) + 'static) {
        *self.observer.borrow_mut() = Some(Box::new(observe));
    }

    /// Opens (or creates) the log in `dir`, recovering its active segment.
    pub fn open(&self, dir: &Path, config: LogConfig, now_ms: i64) -> io::Result<PartitionLog> {
        let log = Log::open_with(self.shared.io.clone(), dir, config, now_ms)?;
        let (progress, _) = watch::channel(Progress {
            written: log.written(),
            flushed: log.flushed(),
            failed: false,
            refused: 0,
        });
        let managed = Rc::new(Managed {
            log: RefCell::new(log),
            progress,
            queued: Cell::new(false),
            sync_wanted: Cell::new(false),
            deleted: Cell::new(false),
            in_flight: Cell::new(false),
            no_space: Cell::new(None),
        });
        let mut logs = self.logs.borrow_mut();
        // Dropped logs are forgotten each time the list doubles: opening 10,000 logs
        // at start-up must not walk the list 10,000 times.
        if logs.len() >= 64 && logs.len().is_power_of_two() {
            logs.retain(|l| l.strong_count() > 0);
        }
        logs.push(Rc::downgrade(&managed));
        Ok(PartitionLog {
            log: managed,
            shared: self.shared.clone(),
        })
    }

    /// Runs the shard's write rounds, its flush timer and the backend's driver until
    /// `stop` completes. Reads need it running too (io_uring completions are reaped by
    /// the driver).
    pub async fn run(self: Rc<Self>, stop: impl Future<Output = ()>) {
        let driver = async {
            match self.shared.io.driver() {
                Some(driver) => driver.await,
                None => std::future::pending().await,
            }
        };
        let rounds = async {
            let mut flush_check = tokio::time::interval(FLUSH_CHECK_INTERVAL);
            flush_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    _ = flush_check.tick() => self.queue_due_flushes(),
                }
                self.round().await;
            }
        };
        tokio::select! {
            _ = driver => {}
            _ = rounds => {}
            _ = stop => {}
        }
    }

    /// One write round over every queued log; see the module comment.
    async fn round(&self) {
        let now = now_ms();
        let mut round = WriteRound::default();
        let mut jobs: Vec<(Rc<Managed>, WriteReceipt, RoundParts)> = Vec::new();
        let queued = {
            let mut queue = self.shared.queue.borrow_mut();
            let take = queue.len().min(self.shared.logs_per_round);
            if take < queue.len() {
                self.shared.wake.notify_one();
            }
            queue.drain(..take).collect::<Vec<_>>()
        };
        for managed in queued {
            managed.queued.set(false);
            if managed.deleted.get() || managed.progress.borrow().failed {
                continue;
            }
            let job = {
                let mut log = managed.log.borrow_mut();
                let sync = managed.sync_wanted.take() || log.flush_due(now);
                match log.take_writes(sync) {
                    Ok(job) => job,
                    Err(e) => {
                        // Out of descriptors, most likely: nothing was handed out, and
                        // the flush timer brings the log back for another try.
                        if let Some(unlogged) = OPEN_FAILURES.due() {
                            tracing::warn!(log = %log.dir().display(), unlogged_since_last = unlogged, "cannot open a segment file to write it, will retry: {e}");
                        }
                        managed.sync_wanted.set(sync);
                        self.shared.deferred.borrow_mut().push(managed.clone());
                        None
                    }
                }
            };
            if let Some(job) = job {
                managed.in_flight.set(true);
                let receipt = job.receipt();
                let parts = job.add_to(&mut round);
                jobs.push((managed, receipt, parts));
            }
        }
        if jobs.is_empty() {
            return;
        }
        let (bytes, synced) = (round.bytes(), round.syncs());
        let started = Instant::now();
        let outcome = self.shared.io.write_round(round).await;
        if let Some(observe) = self.observer.borrow().as_ref() {
            observe(RoundStats {
                logs: jobs.len(),
                bytes,
                synced,
                took: started.elapsed(),
            });
        }
        let now = now_ms();
        for (managed, receipt, parts) in jobs {
            managed.in_flight.set(false);
            let write_errors: Vec<&io::Error> = parts
                .writes
                .clone()
                .filter_map(|i| outcome.writes.get(i).and_then(|r| r.as_ref().err()))
                .collect();
            let dir_error = parts
                .dir
                .and_then(|d| outcome.dirs.get(d).and_then(|r| r.as_ref().err()));
            if managed.deleted.get() {
                continue;
            }
            let missing = parts.writes.end > outcome.writes.len() || parts.dir.is_some_and(|d| d >= outcome.dirs.len());
            let mut log = managed.log.borrow_mut();
            let full = !write_errors.is_empty()
                && dir_error.is_none()
                && write_errors.iter().all(|e| crate::io::out_of_space(e));
            let failure = write_errors
                .first()
                .copied()
                .or(dir_error)
                .map(|e| e.to_string())
                .or_else(|| missing.then(|| "the backend lost part of a round".to_string()));
            match failure {
                None => {
                    log.complete_writes(&receipt, now);
                    let (written, flushed) = (log.written(), log.flushed());
                    managed.progress.send_modify(|p| {
                        p.written = written;
                        p.flushed = flushed;
                    });
                    if managed.no_space.take().is_some() {
                        tracing::info!(log = %log.dir().display(), "the disk has room again: the partition takes writes");
                    }
                }
                Some(e) if full => {
                    // Nothing is lost: the batches stay in memory and the next try
                    // writes them from where the file's whole batches end. Waiting
                    // producers are told now (KAFKA_STORAGE_ERROR) rather than at
                    // their timeout, and appends are refused until there is room.
                    log.rewind_writes();
                    managed.mark_full(&log, &e);
                    managed.progress.send_modify(|p| p.refused += 1);
                    if receipt.synced() {
                        managed.sync_wanted.set(true);
                    }
                }
                Some(e) => {
                    tracing::error!(log = %log.dir().display(), "write or fdatasync failed, the partition now refuses writes: {e}");
                    managed.progress.send_modify(|p| p.failed = true);
                }
            }
        }
    }

    fn queue_due_flushes(&self) {
        for managed in std::mem::take(&mut *self.shared.deferred.borrow_mut()) {
            self.shared.enqueue(&managed);
        }
        let now = now_ms();
        let mut logs = self.logs.borrow_mut();
        logs.retain(|l| l.strong_count() > 0);
        for managed in logs.iter().filter_map(Weak::upgrade) {
            if managed.deleted.get() {
                continue;
            }
            if let Some(since) = managed.no_space.get() {
                if since.elapsed() >= NO_SPACE_RETRY {
                    self.retry_after_no_space(&managed);
                }
                continue;
            }
            if !managed.log.borrow().flush_due(now) {
                continue;
            }
            managed.sync_wanted.set(true);
            self.shared.enqueue(&managed);
        }
    }

    /// A log that found the disk full: its held-back batches are written again (the
    /// round's outcome says whether there was room); with none, it takes appends
    /// again once the filesystem has room.
    fn retry_after_no_space(&self, managed: &Rc<Managed>) {
        let log = managed.log.borrow();
        if log.unwritten_bytes() > 0 || managed.sync_wanted.get() {
            managed.no_space.set(Some(Instant::now()));
            drop(log);
            self.shared.enqueue(managed);
            return;
        }
        match crate::io::disk_space(log.dir()) {
            Ok((_, free)) if free >= NO_SPACE_FREE_MIN => {
                managed.no_space.set(None);
                tracing::info!(log = %log.dir().display(), "the disk has room again: the partition takes writes");
            }
            _ => managed.no_space.set(Some(Instant::now())),
        }
    }

    /// Writes and syncs every log on the calling thread; called once at shutdown after
    /// connections have drained. A round still in flight is written again (same
    /// bytes, same place), so nothing depends on it finishing.
    pub fn flush_all(&self) {
        let now = now_ms();
        for managed in self.logs.borrow().iter().filter_map(Weak::upgrade) {
            if managed.deleted.get() {
                continue;
            }
            let mut log = managed.log.borrow_mut();
            match log.flush_now(now) {
                Ok(()) => {
                    log.trim_active();
                    if let Err(e) = log.close_clean() {
                        // The next open scans the active segment instead.
                        tracing::warn!(log = %log.dir().display(), "could not record a clean shutdown: {e}");
                    }
                }
                Err(e) => tracing::error!(log = %log.dir().display(), "final flush failed: {e}"),
            }
        }
    }
}

impl PartitionLog {
    /// Validates a producer's batch, assigns its offsets and appends it: readable at
    /// once, written by the next round. The receipt resolves at `durability` (and is
    /// there even for [`Durability::Appended`] when the log's unwritten tail is over its
    /// bound). A retried duplicate of an idempotent producer waits like a new batch.
    pub fn append(&self, records: Bytes, now_ms: i64, durability: Durability) -> Result<Appended, AppendError> {
        self.append_with(now_ms, durability, |log| log.append(records, now_ms))
    }

    /// Appends a transaction marker ([`Log::append_marker`]), with a receipt as
    /// [`PartitionLog::append`] gives.
    pub fn append_marker(
        &self,
        marker: &crate::txn::Marker,
        now_ms: i64,
        durability: Durability,
    ) -> Result<Appended, AppendError> {
        self.append_with(now_ms, durability, |log| log.append_marker(marker, now_ms))
    }

    fn append_with(
        &self,
        now_ms: i64,
        durability: Durability,
        append: impl FnOnce(&mut Log) -> Result<crate::log::AppendInfo, AppendError>,
    ) -> Result<Appended, AppendError> {
        self.takes_appends()?;
        let mut log = self.log.log.borrow_mut();
        let info = match append(&mut log) {
            Ok(info) => info,
            Err(e) => return Err(self.append_failed(&log, e)),
        };
        let synced = durability == Durability::Synced;
        if synced || log.flush_due(now_ms) {
            self.log.sync_wanted.set(true);
        }
        let must_wait = durability != Durability::Appended || log.unwritten_bytes() > UNWRITTEN_BYTES_MAX;
        drop(log);
        self.shared.enqueue(&self.log);
        let receipt = must_wait.then(|| self.log.receipt(info.last_offset.plus(1), synced));
        Ok(Appended { info, receipt })
    }

    /// Why the log refuses appends, if it does: `disk_full` (until a write finds
    /// room) or `io_error` (a failed write or sync: until the broker restarts).
    pub fn refusing(&self) -> Option<&'static str> {
        if self.log.progress.borrow().failed {
            Some("io_error")
        } else if self.log.no_space.get().is_some() {
            Some("disk_full")
        } else {
            None
        }
    }

    /// Whether the log takes appends: not after a failed write or sync, not once
    /// deleted, and not while its disk is full.
    fn takes_appends(&self) -> Result<(), AppendError> {
        if self.log.progress.borrow().failed || self.log.deleted.get() {
            return Err(AppendError::Failed);
        }
        if self.log.no_space.get().is_some() {
            return Err(AppendError::NoSpace);
        }
        Ok(())
    }

    /// What an append that failed means for the log. A disk too full for a segment
    /// roll changed nothing: appends are refused until there is room. Any other I/O
    /// error leaves the file's tail unknown, and like a failed fsync the log takes no
    /// more writes rather than build on it.
    fn append_failed(&self, log: &Log, e: AppendError) -> AppendError {
        let AppendError::Io(io) = &e else {
            return e;
        };
        if crate::io::out_of_space(io) {
            self.log.mark_full(log, io);
            return AppendError::NoSpace;
        }
        tracing::error!(log = %log.dir().display(), "append failed, the partition now refuses writes: {io}");
        self.log.progress.send_modify(|p| p.failed = true);
        e
    }

    /// See [`Log::first_unstable_offset`].
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.log.log.borrow().first_unstable_offset()
    }

    /// See [`Log::has_open_transaction`].
    pub fn has_open_transaction(&self, producer_id: i64) -> bool {
        self.log.log.borrow().has_open_transaction(producer_id)
    }

    /// See [`Log::open_transactions`].
    pub fn open_transactions(&self) -> usize {
        self.log.log.borrow().open_transactions()
    }

    /// See [`Log::aborted_overlapping`].
    pub fn aborted_overlapping(&self, from: Offset, upto: Offset) -> Vec<crate::txn::AbortedTxn> {
        self.log.log.borrow().aborted_overlapping(from, upto)
    }

    /// Reads whole batches from `offset`: up to `max_bytes`, or the first batch alone if
    /// it is larger and `min_one` is set (KIP-74), and no batch that starts at or after
    /// `upto` (the high watermark for consumers, the log end for followers). Data still
    /// in a write-behind tail comes from memory, the rest through the backend.
    pub async fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        min_one: bool,
        upto: Offset,
    ) -> Result<Bytes, ReadError> {
        let io = &self.shared.io;
        let mut parts = ReadParts::new(offset, max_bytes, upto);
        while let Some((from, room, first_only)) = parts.next_read(min_one) {
            let first = self.log.log.borrow().read_start(from, room, first_only, upto)?;
            let bytes = finish_read(
                first,
                |read| {
                    let (handle, pos, len) = (read.file.clone(), read.pos, read.len);
                    async move {
                        // A read holds its file open until it completes: with a
                        // descriptor budget, only so many reads run at once.
                        let _permit = self.shared.reads.acquire().await;
                        let file = handle.file()?;
                        io.read(&file, pos, len).await
                    }
                },
                |read, data| self.log.log.borrow().read_continue(read, data),
            )
            .await?;
            let log = self.log.log.borrow();
            parts.add(bytes, |from| log.next_segment_after(from));
        }
        Ok(parts.finish())
    }

    pub fn offsets(&self) -> LogOffsets {
        self.log.log.borrow().offsets()
    }

    /// Every offset below this is on stable storage.
    pub fn flushed(&self) -> Offset {
        self.log.log.borrow().flushed().offset()
    }

    /// A receipt that resolves once everything appended so far is on stable storage
    /// (the next round syncs the log), or None when it already is.
    pub fn sync(&self) -> Option<AppendReceipt> {
        let log = self.log.log.borrow();
        let target = log.log_end().offset();
        if log.flushed().offset() >= target {
            return None;
        }
        drop(log);
        self.log.sync_wanted.set(true);
        self.shared.enqueue(&self.log);
        Some(self.log.receipt(target, true))
    }

    /// See [`Log::become_leader`].
    pub fn become_leader(&self, epoch: i32) -> io::Result<()> {
        self.log.log.borrow_mut().become_leader(epoch)
    }

    /// The newest leader epoch in the log and where it starts.
    pub fn latest_epoch(&self) -> Option<crate::epoch::EpochEntry> {
        self.log.log.borrow().latest_epoch()
    }

    /// See [`Log::end_offset_for_epoch`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        self.log.log.borrow().end_offset_for_epoch(epoch)
    }

    /// Appends batches copied from the leader ([`Log::append_replicated`]); the receipt
    /// resolves at `durability` once the bytes appended (if any) are as safe.
    pub fn append_replicated(
        &self,
        records: &Bytes,
        now_ms: i64,
        durability: Durability,
    ) -> Result<Option<AppendReceipt>, AppendError> {
        self.takes_appends()?;
        let mut log = self.log.log.borrow_mut();
        let appended = match log.append_replicated(records, now_ms) {
            Ok(n) => n,
            Err(e) => return Err(self.append_failed(&log, e)),
        };
        if appended == 0 {
            return Ok(None);
        }
        let synced = durability == Durability::Synced;
        if synced || log.flush_due(now_ms) {
            self.log.sync_wanted.set(true);
        }
        let must_wait = durability != Durability::Appended || log.unwritten_bytes() > UNWRITTEN_BYTES_MAX;
        let target = log.log_end().offset();
        drop(log);
        self.shared.enqueue(&self.log);
        Ok(must_wait.then(|| self.log.receipt(target, synced)))
    }

    /// Removes every batch at or after `offset` ([`Log::truncate_to`]), or with
    /// `fully` empties the log and restarts it at `offset`. Waits first until no write
    /// round holds the log's bytes; the caller appends nothing meanwhile.
    pub async fn truncate(&self, offset: Offset, fully: bool) -> io::Result<()> {
        let mut progress = self.log.progress.subscribe();
        loop {
            if self.log.deleted.get() || progress.borrow().failed {
                return Err(io::Error::other("the log failed or was deleted"));
            }
            let end = self.log.log.borrow().log_end().offset();
            let quiet = !self.log.queued.get() && !self.log.in_flight.get();
            if quiet && progress.borrow().written.offset() >= end {
                break;
            }
            if !self.log.queued.get() && !self.log.in_flight.get() {
                self.shared.enqueue(&self.log);
            }
            progress
                .changed()
                .await
                .map_err(|_| io::Error::other("the log's manager stopped"))?;
        }
        let now = now_ms();
        let mut log = self.log.log.borrow_mut();
        let result = if fully {
            log.truncate_fully_at(offset, now)
        } else {
            log.truncate_to(offset, now)
        };
        if let Err(e) = &result {
            tracing::error!(log = %log.dir().display(), "truncation failed, the partition now refuses writes: {e}");
            self.log.progress.send_modify(|p| p.failed = true);
            return result;
        }
        let (written, flushed) = (log.written(), log.flushed());
        self.log.progress.send_modify(|p| {
            p.written = written;
            p.flushed = flushed;
        });
        Ok(())
    }

    /// Whether an earlier write or sync failed (the log refuses writes).
    pub fn failed(&self) -> bool {
        self.log.progress.borrow().failed
    }

    /// ListOffsets by timestamp: the first offset whose timestamp is at or after
    /// `timestamp`. Reads index and batch headers synchronously (rare, off the hot path).
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(Offset, i64)>> {
        self.log.log.borrow().offset_for_timestamp(timestamp)
    }

    /// ListOffsets MAX_TIMESTAMP: the largest timestamp and the offset that has it.
    pub fn max_timestamp(&self) -> Option<(Offset, i64)> {
        self.log.log.borrow().max_timestamp()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.log.borrow().size_bytes()
    }

    /// The topic's settings changed (AlterConfigs): the next append, roll and
    /// retention pass use the new ones.
    pub fn set_config(&self, config: LogConfig) {
        self.log.log.borrow_mut().set_config(config);
    }

    pub fn config(&self) -> LogConfig {
        self.log.log.borrow().config().clone()
    }

    /// See [`Log::delete_records`].
    pub fn delete_records(&self, offset: Offset, limit: Offset) -> Result<LogStart, DeleteRecordsError> {
        if self.log.deleted.get() {
            return Err(io::Error::other("the log was deleted").into());
        }
        self.log.log.borrow_mut().delete_records(offset, limit)
    }

    /// One cleaning pass if the log is due for one (see [`Log::cleaning_job`]): the
    /// cleaner thread rewrites the segments while the shard goes on, then they are
    /// swapped in here. Returns the bytes reclaimed, if a pass ran and was installed.
    pub async fn clean(
        &self,
        cleaner: &crate::cleaner::CleanerThread,
        upto: Offset,
        map_entries_max: usize,
        bytes_per_second: Option<f64>,
    ) -> io::Result<Option<u64>> {
        if self.log.deleted.get() {
            return Ok(None);
        }
        let job = self
            .log
            .log
            .borrow()
            .cleaning_job(now_ms(), upto, map_entries_max, bytes_per_second);
        let Some(job) = job else {
            return Ok(None);
        };
        let cleaned = cleaner.run(job).await?;
        if self.log.deleted.get() {
            return Ok(None);
        }
        self.log.log.borrow_mut().install_cleaned(cleaned, now_ms())
    }

    /// See [`Log::dirty_ratio`].
    pub fn dirty_ratio(&self) -> f64 {
        self.log.log.borrow().dirty_ratio()
    }

    /// See [`Log::apply_retention`].
    pub fn apply_retention(&self, now_ms: i64, upto: Offset) -> io::Result<Deleted> {
        if self.log.deleted.get() {
            return Ok(Deleted::default());
        }
        self.log.log.borrow_mut().apply_retention(now_ms, upto)
    }

    pub fn segment_count(&self) -> usize {
        self.log.log.borrow().segment_count()
    }

    pub fn dir(&self) -> std::path::PathBuf {
        self.log.log.borrow().dir().to_path_buf()
    }

    /// Removes the log's files and directory. Rounds already under way write into
    /// unlinked files; the log takes nothing more.
    pub fn delete(&self) -> io::Result<()> {
        self.log.deleted.set(true);
        self.log.progress.send_modify(|p| p.failed = true);
        self.log.log.borrow_mut().delete()
    }
}
