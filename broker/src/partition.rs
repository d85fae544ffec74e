//! The broker's view of one partition (Kafka's `Partition.scala`): its log handle, the
//! leader epoch, the high watermark, and the fetches waiting for data. Storage knows
//! the log end and what is durable; the partition decides what consumers may read.
//!
//! A leader tracks each follower's log end (reported by the offset of its fetches) and
//! advances the high watermark to the smallest log end of the in-sync set (Kafka's
//! `maybeIncrementLeaderHW`); with the leader alone in sync that is its own log end,
//! at every append. It decides which followers have fallen behind or caught up, and the
//! shard asks the controller to change the in-sync set. A follower's high watermark is
//! what its leader last said, capped by its own log end. The last stable offset is the
//! high watermark held below the first batch of the oldest open transaction (KIP-98).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_controller::{AlterIsr, PartitionState};
use sluice_storage::{
    AppendError, Appended, BatchError, Durability, HighWatermark, LogEnd, LogStart, Offset, PartitionLog, ReadError,
    SequenceError,
};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_string(),
            partition,
        }
    }

    /// The partition's directory under the data directory, as Kafka names it.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

/// How far a read may go: consumers read to the high watermark (`read_uncommitted`) or
/// the last stable offset (`read_committed`), followers to the log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    HighWatermark,
    LastStable,
    LogEnd,
}

/// The offsets Kafka reports for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: LogStart,
    /// The first offset of the oldest open transaction, capped by the high watermark:
    /// `read_committed` consumers read below it.
    pub last_stable: Offset,
    pub high_watermark: HighWatermark,
    pub log_end: LogEnd,
}

/// What a leader knows of one follower (Kafka's `Replica` state).
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// The follower's log end: the offset of its latest fetch. Unknown (zero) until it
    /// fetches under this leadership.
    log_end: Offset,
    /// How far its log is on its disk, as its latest fetch said (at most `log_end`): the
    /// high watermark waits for this. A follower that syncs reports it apart from its
    /// log end, so it can fetch more while a sync is under way; see `replication`.
    durable: Offset,
    /// When the follower last had everything the leader had (Kafka's
    /// `lastCaughtUpTimeMs`): it leaves the in-sync set when this is too long ago.
    caught_up_ms: i64,
    /// The leader's log end at the follower's previous fetch, and when that was: a
    /// fetch that reaches it proves the follower was caught up then.
    leader_end_at_last_fetch: Offset,
    last_fetch_ms: i64,
}

/// Where acks=all writes wait: the high watermark and the leadership it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub high_watermark: Offset,
    pub leader_epoch: i32,
    pub leader: bool,
}

pub struct Partition {
    /// The topic id of the topic this partition belongs to: a topic deleted and
    /// created again under the same name is another partition.
    pub topic_id: Uuid,
    log: PartitionLog,
    /// This broker's node id.
    me: i32,
    /// The partition's replicas, leader, epochs and in-sync set as the controller last
    /// said (the committed state; the in-sync set only changes through the controller).
    state: PartitionState,
    /// Whether this broker leads the partition (only a leader takes appends and serves
    /// consumers; a follower's log is written by its fetcher).
    leader: bool,
    high_watermark: HighWatermark,
    /// The leader's view of its followers, reset by every leadership change.
    followers: BTreeMap<i32, Follower>,
    /// A follower whose leader epoch changed must find where its log diverges from the
    /// new leader's before it fetches (KIP-101).
    pub needs_truncation: bool,
    /// An in-sync set change sent to the controller and not yet seen back.
    pub isr_change_pending: bool,
    /// `min.insync.replicas` of the topic: acks=all needs this many in sync.
    pub min_insync_replicas: i32,
    /// The high watermark the checkpoint file holds.
    checkpointed: Offset,
    /// Fetches waiting for data here. Weak, so a finished fetch leaves nothing behind.
    readers: Vec<Weak<Notify>>,
    commit: watch::Sender<Commit>,
}

/// The high watermark checkpoint in a partition's directory (Kafka keeps one
/// `replication-offset-checkpoint` per data directory; one file per partition keeps a
/// shard's partitions apart).
const HIGH_WATERMARK_CHECKPOINT: &str = "high-watermark";

/// The checkpoint's one line: the mark in 20 digits and the CRC-32C of those digits.
fn checkpoint_line(mark: i64) -> String {
    let digits = format!("{:020}", mark.max(0));
    format!("{digits} {:08x}\n", crc32c::crc32c(digits.as_bytes()))
}

/// The mark of a checkpoint line, when it checks out; a bare number (the format before
/// the checksum) is taken as it is.
fn parse_checkpoint(text: &str) -> Option<i64> {
    let mut fields = text.split_whitespace();
    let digits = fields.next()?;
    match fields.next() {
        None => digits.parse().ok(),
        Some(crc) => {
            let crc = u32::from_str_radix(crc, 16).ok()?;
            (crc == crc32c::crc32c(digits.as_bytes()))
                .then(|| digits.parse().ok())
                .flatten()
        }
    }
}

/// Writes the high watermark checkpoint of the partition in `dir` in place (see
/// [`Partition::checkpoint_high_watermark`]).
fn write_checkpoint(dir: &std::path::Path, mark: Offset) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(HIGH_WATERMARK_CHECKPOINT))?;
    let line = checkpoint_line(mark.value());
    file.write_all_at(line.as_bytes(), 0)?;
    // A file from before the fixed width may be longer.
    if file.metadata()?.len() != line.len() as u64 {
        file.set_len(line.len() as u64)?;
    }
    Ok(())
}

impl Partition {
    pub fn new(topic_id: Uuid, log: PartitionLog, me: i32) -> Partition {
        // The high watermark last checkpointed (within the log), else the log start:
        // until this broker learns more nothing beyond it is known to be committed. A
        // leader alone in its in-sync set moves the mark to its log end at once.
        let offsets = log.offsets();
        let checkpoint = std::fs::read_to_string(log.dir().join(HIGH_WATERMARK_CHECKPOINT))
            .ok()
            .and_then(|t| parse_checkpoint(&t))
            .map(Offset);
        let high_watermark = HighWatermark(
            checkpoint
                .unwrap_or(offsets.log_start.offset())
                .clamp(offsets.log_start.offset(), offsets.log_end.offset()),
        );
        if checkpoint.is_none() {
            // Made now, with the partition's other files, so that its first checkpoint
            // writes in place: made then, 10,000 new partitions created 10,000 files
            // while they took their first records, and ext4's inode allocation took
            // half of both shards' CPU. A failure leaves it to the first checkpoint.
            let _ = write_checkpoint(&log.dir(), high_watermark.offset());
        }
        Partition {
            topic_id,
            log,
            me,
            state: PartitionState::new(Vec::new()),
            leader: false,
            high_watermark,
            followers: BTreeMap::new(),
            needs_truncation: false,
            isr_change_pending: false,
            min_insync_replicas: 1,
            checkpointed: high_watermark.offset(),
            readers: Vec::new(),
            commit: watch::channel(Commit {
                high_watermark: high_watermark.offset(),
                leader_epoch: -1,
                leader: false,
            })
            .0,
        }
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.leader_epoch
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Takes the controller's state of the partition: leadership (`leader`: whether this
    /// broker leads it and may act on that), epochs and the in-sync set. Fetches waiting
    /// here wake up, so a deposed leader's readers learn it at once. Returns whether this
    /// broker took leadership under a new epoch (a leader election it won).
    pub fn set_state(&mut self, state: &PartitionState, leader: bool, now_ms: i64) -> std::io::Result<bool> {
        let epoch_changed = state.leader_epoch != self.state.leader_epoch;
        let role_changed = leader != self.leader;
        if !leader && (epoch_changed || role_changed) {
            self.needs_truncation = true;
        }
        if leader && (epoch_changed || role_changed) {
            self.log.become_leader(state.leader_epoch)?;
            // Every follower starts over: its log end is unknown until it fetches, and
            // the in-sync ones count as caught up now (Kafka's `makeLeader`).
            self.followers = state
                .replicas
                .iter()
                .filter(|&&id| id != self.me)
                .map(|&id| {
                    let follower = Follower {
                        log_end: Offset::ZERO,
                        durable: Offset::ZERO,
                        caught_up_ms: if state.isr.contains(&id) { now_ms } else { 0 },
                        leader_end_at_last_fetch: Offset::ZERO,
                        last_fetch_ms: 0,
                    };
                    (id, follower)
                })
                .collect();
            self.needs_truncation = false;
        }
        if leader && !(epoch_changed || role_changed) && state.replicas != self.state.replicas {
            // A reassignment added or removed replicas under this leadership.
            self.followers.retain(|id, _| state.replicas.contains(id));
            for &id in state.replicas.iter().filter(|&&id| id != self.me) {
                self.followers.entry(id).or_insert(Follower {
                    log_end: Offset::ZERO,
                    durable: Offset::ZERO,
                    caught_up_ms: 0,
                    leader_end_at_last_fetch: Offset::ZERO,
                    last_fetch_ms: 0,
                });
            }
        }
        if state.partition_epoch != self.state.partition_epoch || epoch_changed {
            self.isr_change_pending = false;
        }
        self.state = state.clone();
        self.leader = leader;
        if leader {
            self.advance_high_watermark();
        }
        if epoch_changed || role_changed {
            self.wake_readers();
        }
        self.publish_commit();
        Ok(leader && epoch_changed)
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let log = self.log.offsets();
        PartitionOffsets {
            log_start: log.log_start,
            last_stable: self.last_stable_offset(),
            high_watermark: self.high_watermark,
            log_end: log.log_end,
        }
    }

    /// Kafka's last stable offset: the high watermark, or the first offset of the
    /// oldest transaction still open if that is lower.
    pub fn last_stable_offset(&self) -> Offset {
        let mark = self.high_watermark.offset();
        self.log.first_unstable_offset().map_or(mark, |first| first.min(mark))
    }

    /// Appends a transaction marker (see [`PartitionLog::append_marker`]); fetches
    /// waiting here wake up (the last stable offset may have moved).
    pub fn append_marker(
        &mut self,
        marker: &sluice_storage::Marker,
        now_ms: i64,
        durability: Durability,
    ) -> Result<Appended, AppendError> {
        let appended = self.log.append_marker(marker, now_ms, durability)?;
        self.advance_high_watermark();
        self.wake_readers();
        Ok(appended)
    }

    /// The in-sync replicas as the controller last committed them.
    pub fn isr(&self) -> &[i32] {
        &self.state.isr
    }

    /// Appends a producer's batch (see [`PartitionLog::append`]); the receipt resolves
    /// at `durability`. Fetches waiting here wake up.
    pub fn append(&mut self, records: Bytes, now_ms: i64, durability: Durability) -> Result<Appended, AppendError> {
        let appended = self.log.append(records, now_ms, durability)?;
        if !appended.info.duplicate {
            self.advance_high_watermark();
            self.wake_readers();
        }
        Ok(appended)
    }

    /// A follower's append of its leader's batches, and the leader's high watermark.
    pub fn append_replicated(
        &mut self,
        records: &Bytes,
        leader_high_watermark: Offset,
        now_ms: i64,
        durability: Durability,
    ) -> Result<Option<sluice_storage::AppendReceipt>, AppendError> {
        let receipt = self.log.append_replicated(records, now_ms, durability)?;
        let log_end = self.log.offsets().log_end.offset();
        let high_watermark = HighWatermark(leader_high_watermark.min(log_end));
        if high_watermark != self.high_watermark {
            self.high_watermark = high_watermark;
            self.publish_commit();
        }
        Ok(receipt)
    }

    /// A follower fetched from `offset` (so its log ends there) with `durable` of it on
    /// its disk: recorded, and the high watermark advanced if it can. Returns false for
    /// a broker that is no replica.
    pub fn follower_fetched(&mut self, follower: i32, offset: Offset, durable: Offset, now_ms: i64) -> bool {
        let leader_end = self.log.offsets().log_end.offset();
        let Some(f) = self.followers.get_mut(&follower) else {
            return false;
        };
        f.log_end = offset.min(leader_end);
        f.durable = durable.min(f.log_end);
        if offset >= leader_end {
            f.caught_up_ms = now_ms;
        } else if offset >= f.leader_end_at_last_fetch {
            f.caught_up_ms = f.caught_up_ms.max(f.last_fetch_ms);
        }
        f.leader_end_at_last_fetch = leader_end;
        f.last_fetch_ms = now_ms;
        self.advance_high_watermark();
        true
    }

    /// The in-sync set this leader wants now, if it differs from the committed one:
    /// followers not caught up for `lag_max_ms` leave (Kafka's `maybeShrinkIsr`),
    /// followers that reached the high watermark and this leadership's first offset
    /// join (`maybeExpandIsr`).
    pub fn wanted_isr(&self, now_ms: i64, lag_max_ms: i64) -> Option<AlterIsr> {
        if !self.leader || self.isr_change_pending {
            return None;
        }
        let epoch_start = self.log.latest_epoch().map_or(Offset::ZERO, |e| e.start);
        let mut isr: Vec<i32> = self
            .state
            .replicas
            .iter()
            .copied()
            .filter(|id| {
                if *id == self.me {
                    return true;
                }
                let Some(f) = self.followers.get(id) else {
                    return false;
                };
                if self.state.isr.contains(id) {
                    now_ms - f.caught_up_ms <= lag_max_ms
                } else {
                    f.last_fetch_ms > 0
                        && f.durable >= self.high_watermark.offset()
                        && f.log_end >= epoch_start
                        && now_ms - f.caught_up_ms <= lag_max_ms
                }
            })
            .collect();
        let mut current = self.state.isr.clone();
        isr.sort_unstable();
        current.sort_unstable();
        if isr == current {
            return None;
        }
        Some(AlterIsr {
            leader: self.me,
            leader_epoch: self.state.leader_epoch,
            partition_epoch: self.state.partition_epoch,
            isr,
        })
    }

    /// On a leader: the records its furthest-behind follower lacks (0 without any).
    pub fn follower_lag(&self) -> Option<i64> {
        if !self.leader {
            return None;
        }
        let log_end = self.log.offsets().log_end.offset();
        let lags = self.followers.values().map(|f| log_end.value() - f.log_end.value());
        Some(lags.max().unwrap_or(0))
    }

    /// The leader's high watermark: the smallest durable log end of the in-sync set. It never
    /// moves back, and a follower whose log end is not known yet holds it where it is.
    fn advance_high_watermark(&mut self) {
        if !self.leader {
            return;
        }
        let mut mark = self.log.offsets().log_end.offset();
        for id in &self.state.isr {
            if *id == self.me {
                continue;
            }
            match self.followers.get(id) {
                Some(f) => mark = mark.min(f.durable),
                None => return,
            }
        }
        if mark > self.high_watermark.offset() {
            self.high_watermark = HighWatermark(mark);
            self.wake_readers();
            self.publish_commit();
        }
    }

    fn publish_commit(&self) {
        let commit = Commit {
            high_watermark: self.high_watermark.offset(),
            leader_epoch: self.state.leader_epoch,
            leader: self.leader,
        };
        self.commit.send_if_modified(|c| {
            let changed = *c != commit;
            *c = commit;
            changed
        });
    }

    /// Where acks=all appends wait for their batch to be committed.
    pub fn commits(&self) -> watch::Receiver<Commit> {
        self.commit.subscribe()
    }

    /// Starts a read of whole batches from `offset` up to `bound`; the future holds no
    /// borrow of the partition, so the caller can let go of its table while it waits.
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        bound: ReadBound,
    ) -> impl Future<Output = Result<Bytes, ReadError>> + 'static {
        let upto = match bound {
            ReadBound::HighWatermark => self.high_watermark.offset(),
            ReadBound::LastStable => self.last_stable_offset(),
            ReadBound::LogEnd => self.log.offsets().log_end.offset(),
        };
        let log = self.log.clone();
        async move { log.read(offset, max_bytes, true, upto).await }
    }

    /// Wakes `waker` when data is next appended here (a long-polling fetch).
    pub fn watch(&mut self, waker: &Arc<Notify>) {
        self.readers.retain(|r| r.strong_count() > 0);
        if !self
            .readers
            .iter()
            .any(|r| std::ptr::eq(r.as_ptr(), Arc::as_ptr(waker)))
        {
            self.readers.push(Arc::downgrade(waker));
        }
    }

    pub fn wake_readers(&mut self) {
        for reader in self.readers.drain(..) {
            if let Some(n) = reader.upgrade() {
                n.notify_one();
            }
        }
    }

    /// Writes the high watermark checkpoint if the mark moved since the last one (Kafka's
    /// `replica.high.watermark.checkpoint.interval.ms` task), in place: one line of a
    /// fixed width with its checksum, so the file never changes length and no new file
    /// is made. (A temporary file renamed over it cost a new inode per partition every
    /// 5 s: with 10,000 partitions, ext4's inode allocation was a third of the broker's
    /// CPU.) Not synced: a checkpoint older than the truth is only a lower mark, which
    /// is safe, and one that does not check out is ignored (the log start then).
    pub fn checkpoint_high_watermark(&mut self) -> std::io::Result<()> {
        let mark = self.high_watermark.offset();
        if mark == self.checkpointed {
            return Ok(());
        }
        write_checkpoint(&self.log.dir(), mark)?;
        self.checkpointed = mark;
        Ok(())
    }

    /// Truncation done: the follower's log now agrees with its leader's.
    pub fn truncated(&mut self) {
        self.needs_truncation = false;
        let log_end = self.log.offsets().log_end.offset();
        if self.high_watermark.offset() > log_end {
            self.high_watermark = HighWatermark(log_end);
            self.publish_commit();
        }
    }
}

/// Kafka's answer for an append that storage refused.
pub fn append_error(e: &AppendError) -> ResponseError {
    match e {
        AppendError::Batch(BatchError::Corrupt(_)) => ResponseError::CorruptMessage,
        AppendError::Batch(BatchError::UnsupportedMagic(_)) => ResponseError::UnsupportedForMessageFormat,
        AppendError::Batch(BatchError::TooLarge { .. }) => ResponseError::MessageTooLarge,
        AppendError::Batch(BatchError::InvalidRecord(_)) => ResponseError::InvalidRecord,
        AppendError::Sequence(SequenceError::Fenced { .. }) => ResponseError::InvalidProducerEpoch,
        AppendError::Sequence(SequenceError::OutOfOrder { .. }) => ResponseError::OutOfOrderSequenceNumber,
        AppendError::NotTransactional(_) => ResponseError::InvalidTxnState,
        AppendError::KeylessRecords(_) => ResponseError::InvalidRecord,
        AppendError::Io(_) | AppendError::Failed | AppendError::NoSpace => ResponseError::KafkaStorageError,
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::{checkpoint_line, parse_checkpoint};

    #[test]
    fn a_checkpoint_reads_back_and_a_damaged_one_is_ignored() {
        for mark in [0, 7, 123_456_789, i64::MAX] {
            assert_eq!(parse_checkpoint(&checkpoint_line(mark)), Some(mark));
        }
        assert_eq!(checkpoint_line(5).len(), checkpoint_line(i64::MAX).len(), "fixed width");
        // A digit changed (a torn write mixing an old line and a new one) fails its check.
        let damaged = checkpoint_line(100_000).replacen("100000", "199999", 1);
        assert_eq!(parse_checkpoint(&damaged), None);
        assert_eq!(parse_checkpoint("garbage"), None);
        // The format before the checksum.
        assert_eq!(parse_checkpoint("42\n"), Some(42));
    }
}

#[cfg(test)]
mod high_watermark_tests {
    use std::rc::Rc;

    use bytes::Bytes;
    use sluice_controller::PartitionState;
    use sluice_storage::{Durability, LogConfig, LogManager, Offset};
    use uuid::Uuid;

    use super::Partition;

    /// With fsync, a follower reports how far its log is on its disk apart from its
    /// fetch offset; acks=all answers (the high watermark) wait for the former.
    #[tokio::test(flavor = "current_thread")]
    async fn the_high_watermark_follows_what_followers_have_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogManager::new(Rc::new(sluice_storage::io::Positional::new()));
        let log = logs.open(dir.path(), LogConfig::default(), 0).unwrap();
        let mut p = Partition::new(Uuid::new_v4(), log, 1);
        p.set_state(&PartitionState::new(vec![1, 2, 3]), true, 0).unwrap();
        let batch = Bytes::from(sluice_storage::batch::build(
            &[(None, Some(b"a")), (None, Some(b"b"))],
            0,
        ));
        p.log().append(batch.clone(), 0, Durability::Appended).unwrap();
        p.log().append(batch, 0, Durability::Appended).unwrap();
        let hw = |p: &Partition| p.offsets().high_watermark.offset();
        assert_eq!(p.offsets().log_end.offset(), Offset(4));

        // Both followers have every record, one has half of them on disk.
        assert!(p.follower_fetched(2, Offset(4), Offset(4), 0));
        assert!(p.follower_fetched(3, Offset(4), Offset(2), 0));
        assert_eq!(hw(&p), Offset(2));
        // Its sync ends: its next fetch says so, with no new records.
        assert!(p.follower_fetched(3, Offset(4), Offset(4), 1));
        assert_eq!(hw(&p), Offset(4));
        // A durable end past the fetch offset counts as the fetch offset, and the mark
        // never moves back.
        assert!(p.follower_fetched(2, Offset(3), Offset(9), 2));
        assert_eq!(hw(&p), Offset(4));
        // A broker that is no replica is refused.
        assert!(!p.follower_fetched(7, Offset(4), Offset(4), 3));
    }
}
