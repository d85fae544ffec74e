//! The broker's view of one partition (Kafka's `Partition.scala`): its log handle, the
//! leader epoch, the high watermark, and the fetches waiting for data. Storage knows
//! the log end and what is durable; the partition decides what consumers may read.
//!
//! On a single node the partition's only replica is this broker, so the high watermark
//! moves to the log end with every append. Replication puts its state here too — the
//! in-sync replica set and each follower's log end, from which the high watermark
//! advances (Kafka's `maybeIncrementLeaderHW`) — and transactions add the last stable
//! offset beside the high watermark.

use std::future::Future;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_storage::{
    AppendError, Appended, BatchError, Durability, HighWatermark, LogEnd, LogStart, Offset, PartitionLog, ReadError,
    SequenceError,
};
use tokio::sync::Notify;
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

/// How far a read may go: consumers read to the high watermark, followers (with
/// replication) to the log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    HighWatermark,
    /// Replication's followers read here; nothing constructs it before they exist.
    #[allow(dead_code)]
    LogEnd,
}

/// The offsets Kafka reports for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub log_start: LogStart,
    pub high_watermark: HighWatermark,
    pub log_end: LogEnd,
}

pub struct Partition {
    /// The topic id of the topic this partition belongs to: a topic deleted and
    /// created again under the same name is another partition.
    pub topic_id: Uuid,
    log: PartitionLog,
    /// Kafka's leader epoch: bumped by every leadership change, as the controller says.
    leader_epoch: i32,
    /// Whether this broker leads the partition (only a leader takes appends and serves
    /// consumers; a follower's log waits for replication).
    leader: bool,
    high_watermark: HighWatermark,
    /// Fetches waiting for data here. Weak, so a finished fetch leaves nothing behind.
    readers: Vec<Weak<Notify>>,
}

impl Partition {
    pub fn new(topic_id: Uuid, log: PartitionLog) -> Partition {
        // The only replica is this broker: everything in the log is committed.
        let high_watermark = HighWatermark(log.offsets().log_end.offset());
        Partition {
            topic_id,
            log,
            leader_epoch: 0,
            leader: false,
            high_watermark,
            readers: Vec::new(),
        }
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Takes or gives up leadership as the controller's metadata says. Fetches waiting
    /// here wake up, so a deposed leader's readers learn it at once.
    pub fn set_leadership(&mut self, leader: bool, epoch: i32) {
        if self.leader != leader || self.leader_epoch != epoch {
            self.leader = leader;
            self.leader_epoch = epoch;
            self.wake_readers();
        }
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let log = self.log.offsets();
        PartitionOffsets {
            log_start: log.log_start,
            high_watermark: self.high_watermark,
            log_end: log.log_end,
        }
    }

    /// Appends a batch (see [`PartitionLog::append`]); the receipt resolves at
    /// `durability`. Fetches waiting here wake up.
    pub fn append(&mut self, records: Bytes, now_ms: i64, durability: Durability) -> Result<Appended, AppendError> {
        let appended = self.log.append(records, now_ms, durability)?;
        if !appended.info.duplicate {
            self.advance_high_watermark();
            self.wake_readers();
        }
        Ok(appended)
    }

    /// A single replica is the whole in-sync set: the high watermark is the log end.
    fn advance_high_watermark(&mut self) {
        let log_end = self.log.offsets().log_end.offset();
        debug_assert!(self.high_watermark.offset() <= log_end);
        self.high_watermark = HighWatermark(log_end);
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
        AppendError::Io(_) | AppendError::Failed => ResponseError::KafkaStorageError,
    }
}
