//! A shard: one pinned thread running a tokio current-thread runtime, owning a fixed
//! subset of partitions (DESIGN.md, "Thread-per-core").
//!
//! Only the owning shard touches a partition's log, so the logs live in a plain
//! `RefCell` with no lock; a borrow never spans an `.await`. Work for partitions of
//! other shards travels as a [`ShardCall`] over a bounded channel and comes back on a
//! oneshot. The same code serves a call whether it came from this shard's own
//! connections or from a peer.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_controller::{Controller, TopicMetadata};
use sluice_storage::engine::Engine;
use sluice_storage::{AppendError, BatchError, Log, Offset, ReadError, ReadStep, SequenceError};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::ApiKey;

use crate::config::BrokerConfig;
use crate::group::coordinator::GroupOp;
use crate::group::{Group, GroupConfig};
use crate::metrics::{GroupStats, PartitionStats, ShardMetrics, ShardSnapshot};
use crate::topic_config;

/// Depth of each shard's inbox. Enough for every connection of a busy peer to have a
/// few requests queued; beyond it senders wait, which is the backpressure we want.
pub const INBOX_DEPTH: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// State every shard shares; immutable after start-up, so `Arc` without a lock.
pub struct Cluster {
    pub config: BrokerConfig,
    pub controller: Arc<dyn Controller>,
    /// The address clients are told to use (the advertised listener).
    pub advertised: (String, u16),
    pub peers: Vec<mpsc::Sender<ShardCall>>,
    pub shutdown: watch::Receiver<bool>,
    /// Partitions of `__consumer_offsets`, which place groups on shards.
    pub offsets_partitions: i32,
    pub groups: GroupConfig,
    /// The storage I/O engine every log uses.
    pub io: Arc<dyn sluice_storage::io::Io>,
    /// Producer ids reserved from the controller and not yet handed out. Only
    /// InitProducerId takes this lock, never the produce or fetch path.
    pub producer_ids: std::sync::Mutex<std::ops::Range<i64>>,
}

impl Cluster {
    /// The shard that owns a partition. Consecutive partitions of a topic land on
    /// consecutive shards, so a topic spreads evenly.
    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        let h = crc32c::crc32c(topic.as_bytes()) as usize;
        h.wrapping_add(partition as usize) % self.peers.len()
    }

    /// The shard that coordinates a group: the owner of its offsets partition.
    pub fn group_shard(&self, group: &str) -> usize {
        self.owner_of(
            crate::OFFSETS_TOPIC,
            crate::group::partition_for(group, self.offsets_partitions),
        )
    }
}

pub struct ProduceItem {
    pub tp: TopicPartition,
    pub records: Bytes,
}

#[derive(Debug, Clone)]
pub struct ProduceOutcome {
    pub error: Option<ResponseError>,
    pub message: Option<String>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

impl ProduceOutcome {
    pub fn refused(error: ResponseError) -> Self {
        Self::failed(error, None)
    }

    fn failed(error: ResponseError, message: Option<String>) -> Self {
        ProduceOutcome {
            error: Some(error),
            message,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

pub struct FetchItem {
    pub tp: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    pub error: Option<ResponseError>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
}

pub struct OffsetQuery {
    pub tp: TopicPartition,
    pub timestamp: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct OffsetOutcome {
    pub error: Option<ResponseError>,
    pub offset: i64,
    pub timestamp: i64,
}

/// ListOffsets' special timestamps (KIP-79, KIP-734, KIP-405).
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

/// Work one shard asks of another.
pub enum ShardCall {
    Produce {
        items: Vec<ProduceItem>,
        acks: i16,
        timeout_ms: i32,
        queued_at: tokio::time::Instant,
        reply: oneshot::Sender<Vec<ProduceOutcome>>,
    },
    Fetch {
        items: Vec<FetchItem>,
        waker: Option<Arc<Notify>>,
        queued_at: tokio::time::Instant,
        reply: oneshot::Sender<Vec<FetchOutcome>>,
    },
    ListOffsets {
        items: Vec<OffsetQuery>,
        reply: oneshot::Sender<Vec<OffsetOutcome>>,
    },
    /// Work for the coordinator of `group_id`, which this shard hosts.
    Group {
        group_id: String,
        op: Box<GroupOp>,
    },
    ListGroups {
        reply: oneshot::Sender<Vec<ListedGroup>>,
    },
    /// Counters and partition and group state, for a scrape.
    Snapshot {
        reply: oneshot::Sender<ShardSnapshot>,
    },
    OpenTopic {
        topic: TopicMetadata,
        reply: oneshot::Sender<Result<(), String>>,
    },
    DeleteTopic {
        topic: TopicMetadata,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// What an append's answer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckLevel {
    /// Nothing (acks=0, and group metadata whose loss costs only a rebalance); the
    /// append still waits when the partition's unwritten tail is over its bound.
    None,
    /// The batch is in the file (acks=1, or acks=all without `--acks-all-fsync`), so a
    /// killed broker process loses nothing that was acknowledged.
    Written,
    /// The batch is on stable storage (acks=all): the next group commit.
    Durable,
}

/// Appended bytes a partition may hold in memory before appends wait for a write
/// round: at 600 MB/s this is ~25 ms of writes, and with a shard's few hot partitions
/// it keeps the write-behind tails well inside the 200 MiB memory target.
const UNWRITTEN_BYTES_MAX: u64 = 16 << 20;

/// An append waiting for a write round (or the group commit) to cover it.
pub struct DurableWait {
    rx: watch::Receiver<Durability>,
    target: Offset,
    durable: bool,
}

/// How far a partition's log is written and durable, published to waiting appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Durability {
    written: Offset,
    flushed: Offset,
    /// A flush failed: the partition takes no more writes (KAFKA_STORAGE_ERROR) rather
    /// than acknowledge data it cannot vouch for.
    failed: bool,
}

struct Partition {
    log: Log,
    /// Fetches waiting for data here. Weak, so a finished fetch leaves nothing behind.
    readers: Vec<Weak<Notify>>,
    durability: watch::Sender<Durability>,
    /// The partition is in the shard's queue for the next write round.
    io_queued: bool,
    /// The next round must also sync it (an acks=all append or a due flush).
    sync_wanted: bool,
}

impl Partition {
    fn wake_readers(&mut self) {
        for reader in self.readers.drain(..) {
            if let Some(n) = reader.upgrade() {
                n.notify_one();
            }
        }
    }
}

pub struct Shard {
    pub id: usize,
    pub cluster: Arc<Cluster>,
    partitions: RefCell<HashMap<TopicPartition, Partition>>,
    /// Partitions with appends waiting for the next write round.
    io_queue: RefCell<Vec<TopicPartition>>,
    io_wake: Notify,
    /// Runs this shard's write rounds and fetch reads (io_uring or positional).
    pub engine: Engine,
    /// The consumer groups this shard coordinates (see `group`).
    pub(crate) groups: RefCell<HashMap<String, Group>>,
    /// This shard's own counters; a scrape sums every shard's.
    pub metrics: RefCell<ShardMetrics>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn append_error(e: &AppendError) -> ResponseError {
    match e {
        AppendError::Batch(BatchError::Corrupt(_)) => ResponseError::CorruptMessage,
        AppendError::Batch(BatchError::UnsupportedMagic(_)) => ResponseError::UnsupportedForMessageFormat,
        AppendError::Batch(BatchError::TooLarge { .. }) => ResponseError::MessageTooLarge,
        AppendError::Batch(BatchError::InvalidRecord(_)) => ResponseError::InvalidRecord,
        AppendError::Sequence(SequenceError::Fenced { .. }) => ResponseError::InvalidProducerEpoch,
        AppendError::Sequence(SequenceError::OutOfOrder { .. }) => ResponseError::OutOfOrderSequenceNumber,
        AppendError::Io(_) => ResponseError::KafkaStorageError,
    }
}

impl Shard {
    /// Must run inside the shard's runtime: an io_uring engine registers its ring there.
    pub fn new(id: usize, cluster: Arc<Cluster>) -> Shard {
        let engine = Engine::for_io(cluster.io.as_ref()).unwrap_or_else(|e| {
            tracing::warn!(
                shard = id,
                "cannot create this shard's io_uring ring ({e}); using positional I/O"
            );
            Engine::Blocking
        });
        Shard {
            id,
            cluster,
            partitions: RefCell::new(HashMap::new()),
            io_queue: RefCell::new(Vec::new()),
            io_wake: Notify::new(),
            engine,
            groups: RefCell::new(HashMap::new()),
            metrics: RefCell::new(ShardMetrics::default()),
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.cluster.config
    }

    pub fn controller(&self) -> &dyn Controller {
        self.cluster.controller.as_ref()
    }

    /// Opens the logs of every partition of `topic` that this shard owns.
    pub fn open_topic(&self, topic: &TopicMetadata) -> Result<(), String> {
        let log_config = topic_config::log_config(self.config(), &topic.configs);
        for partition in 0..topic.partitions {
            if self.cluster.owner_of(&topic.name, partition) != self.id {
                continue;
            }
            let tp = TopicPartition {
                topic: topic.name.clone(),
                partition,
            };
            if self.partitions.borrow().contains_key(&tp) {
                continue;
            }
            let dir = self.config().data_dir.join(format!("{}-{}", topic.name, partition));
            let log = Log::open_with(self.cluster.io.clone(), &dir, log_config.clone(), now_ms())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let (durability, _) = watch::channel(Durability {
                written: log.written(),
                flushed: log.flushed(),
                failed: false,
            });
            self.partitions.borrow_mut().insert(
                tp,
                Partition {
                    log,
                    readers: Vec::new(),
                    durability,
                    io_queued: false,
                    sync_wanted: false,
                },
            );
        }
        Ok(())
    }

    fn delete_topic(&self, topic: &TopicMetadata) -> Result<(), String> {
        let mut removed = Vec::new();
        {
            let mut parts = self.partitions.borrow_mut();
            for partition in 0..topic.partitions {
                let tp = TopicPartition {
                    topic: topic.name.clone(),
                    partition,
                };
                if let Some(mut p) = parts.remove(&tp) {
                    p.wake_readers();
                    removed.push(p.log);
                }
            }
        }
        for log in removed {
            let dir = log.dir().to_path_buf();
            log.delete().map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Sends `call` to the shard that should run it, or runs it here.
    pub async fn route(self: &Rc<Self>, shard: usize, call: ShardCall) {
        if shard == self.id {
            self.serve(call).await;
        } else if let Some(peer) = self.cluster.peers.get(shard) {
            // A closed peer means shutdown; the dropped reply tells the caller.
            let _ = peer.send(call).await;
        }
    }

    /// Splits `items` by owning shard (the `usize` of each pair), sends each shard its
    /// share in one call, and returns the answers in the order of `items`. An answer is
    /// None only when its shard is gone (shutdown).
    pub async fn fan_out<I, O>(
        self: &Rc<Self>,
        items: Vec<(usize, I)>,
        make: impl Fn(Vec<I>, oneshot::Sender<Vec<O>>) -> ShardCall,
    ) -> Vec<Option<O>> {
        let count = items.len();
        let mut by_shard: BTreeMap<usize, (Vec<usize>, Vec<I>)> = BTreeMap::new();
        for (i, (owner, item)) in items.into_iter().enumerate() {
            let entry = by_shard.entry(owner).or_default();
            entry.0.push(i);
            entry.1.push(item);
        }
        let mut pending = Vec::with_capacity(by_shard.len());
        for (owner, (positions, items)) in by_shard {
            let (reply, answer) = oneshot::channel();
            let call = make(items, reply);
            let this = self.clone();
            tokio::task::spawn_local(async move { this.route(owner, call).await });
            pending.push((positions, answer));
        }
        let mut out: Vec<Option<O>> = (0..count).map(|_| None).collect();
        for (positions, answer) in pending {
            if let Ok(results) = answer.await {
                for (i, r) in positions.into_iter().zip(results) {
                    out[i] = Some(r);
                }
            }
        }
        out
    }

    /// Runs one call against this shard's partitions.
    pub async fn serve(self: &Rc<Self>, call: ShardCall) {
        match call {
            ShardCall::Produce {
                items,
                acks,
                timeout_ms,
                queued_at,
                reply,
            } => {
                self.metrics
                    .borrow_mut()
                    .queue_time
                    .entry(ApiKey::Produce as i16)
                    .or_default()
                    .observe(queued_at.elapsed());
                let out = self.produce(items, acks, timeout_ms).await;
                let _ = reply.send(out);
            }
            ShardCall::Fetch {
                items,
                waker,
                queued_at,
                reply,
            } => {
                self.metrics
                    .borrow_mut()
                    .queue_time
                    .entry(ApiKey::Fetch as i16)
                    .or_default()
                    .observe(queued_at.elapsed());
                let _ = reply.send(self.read(items, waker).await);
            }
            ShardCall::ListOffsets { items, reply } => {
                let _ = reply.send(self.list_offsets(items));
            }
            ShardCall::Group { group_id, op } => self.serve_group(group_id, *op).await,
            ShardCall::ListGroups { reply } => {
                let _ = reply.send(self.list_groups());
            }
            ShardCall::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
            ShardCall::OpenTopic { topic, reply } => {
                let _ = reply.send(self.open_topic(&topic));
            }
            ShardCall::DeleteTopic { topic, reply } => {
                let _ = reply.send(self.delete_topic(&topic));
            }
        }
    }

    async fn produce(self: &Rc<Self>, items: Vec<ProduceItem>, acks: i16, timeout_ms: i32) -> Vec<ProduceOutcome> {
        let now = now_ms();
        let ack = match acks {
            0 => AckLevel::None,
            1 => AckLevel::Written,
            _ => AckLevel::Durable,
        };
        let mut outcomes = Vec::with_capacity(items.len());
        let mut waits = Vec::new();
        for item in items {
            let (outcome, wait) = self.append_local(&item.tp, &item.records, now, ack);
            if let Some(wait) = wait {
                waits.push((outcomes.len(), wait));
            }
            outcomes.push(outcome);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms.max(0) as u64);
        for (i, wait) in waits {
            if let Some(error) = self.wait_durable(wait, deadline).await {
                outcomes[i] = ProduceOutcome::refused(error);
            }
        }
        outcomes
    }

    /// Appends one batch to a partition this shard owns and queues the partition for
    /// the next write round. The returned wait resolves when the batch is as safe as
    /// `ack` asks (acks=all syncs only with `--acks-all-fsync`, Kafka's
    /// `flush.messages=1`; otherwise it waits as acks=1 does).
    pub fn append_local(
        &self,
        tp: &TopicPartition,
        records: &Bytes,
        now: i64,
        ack: AckLevel,
    ) -> (ProduceOutcome, Option<DurableWait>) {
        let ack = match ack {
            AckLevel::Durable if !self.config().acks_all_fsync => AckLevel::Written,
            other => other,
        };
        let durable = ack == AckLevel::Durable;
        let mut parts = self.partitions.borrow_mut();
        let Some(p) = parts.get_mut(tp) else {
            return (
                ProduceOutcome::failed(ResponseError::UnknownTopicOrPartition, None),
                None,
            );
        };
        if p.durability.borrow().failed {
            return (ProduceOutcome::failed(ResponseError::KafkaStorageError, None), None);
        }
        match p.log.append(records.clone(), now) {
            Ok(info) => {
                if !info.duplicate {
                    p.wake_readers();
                    let mut metrics = self.metrics.borrow_mut();
                    let io = metrics.topic(&tp.topic);
                    io.bytes_in += records.len() as u64;
                    io.records_in += info.record_count.max(0) as u64;
                }
                p.sync_wanted |= durable || p.log.flush_due(now);
                if !p.io_queued {
                    p.io_queued = true;
                    self.io_queue.borrow_mut().push(tp.clone());
                    self.io_wake.notify_one();
                }
                // A retried duplicate waits for the original's round like a new batch.
                let must_wait = ack != AckLevel::None || p.log.unwritten_bytes() > UNWRITTEN_BYTES_MAX;
                let wait = must_wait.then(|| DurableWait {
                    rx: p.durability.subscribe(),
                    target: info.last_offset.plus(1),
                    durable,
                });
                let outcome = ProduceOutcome {
                    error: None,
                    message: None,
                    base_offset: info.base_offset.value(),
                    log_append_time_ms: info.log_append_time_ms.unwrap_or(-1),
                    log_start_offset: info.log_start_offset.value(),
                };
                (outcome, wait)
            }
            Err(e) => {
                if let AppendError::Io(io) = &e {
                    // The file's tail is now unknown; like a failed fsync, the partition
                    // takes no more writes rather than build on it.
                    tracing::error!(topic = %tp.topic, partition = tp.partition, "append failed, partition now refuses writes: {io}");
                    p.durability.send_modify(|d| d.failed = true);
                }
                (ProduceOutcome::failed(append_error(&e), Some(e.to_string())), None)
            }
        }
    }

    /// Waits until an append is written (or durable, as its wait asks); the error to
    /// report if it is not by `deadline`.
    pub async fn wait_durable(&self, mut wait: DurableWait, deadline: tokio::time::Instant) -> Option<ResponseError> {
        let target = wait.target;
        let durable = wait.durable;
        let covered = |d: &Durability| (if durable { d.flushed } else { d.written }) >= target || d.failed;
        match tokio::time::timeout_at(deadline, wait.rx.wait_for(covered)).await {
            Ok(Ok(d)) if !d.failed => None,
            Ok(_) => Some(ResponseError::KafkaStorageError),
            Err(_) => Some(ResponseError::RequestTimedOut),
        }
    }

    /// Reads whole batches from a partition this shard owns (for internal topics).
    pub fn read_local(&self, tp: &TopicPartition, offset: Offset) -> Result<Bytes, ReadError> {
        let parts = self.partitions.borrow();
        match parts.get(tp) {
            Some(p) => p.log.read(offset, 1 << 20, true),
            None => Ok(Bytes::new()),
        }
    }

    /// Serves fetches of partitions this shard owns, every partition's read at once:
    /// data still in a write-behind tail comes from memory, the rest through the engine.
    async fn read(&self, items: Vec<FetchItem>, waker: Option<Arc<Notify>>) -> Vec<FetchOutcome> {
        futures_util::future::join_all(items.into_iter().map(|item| self.read_one(item, waker.as_ref()))).await
    }

    async fn read_one(&self, item: FetchItem, waker: Option<&Arc<Notify>>) -> FetchOutcome {
        let (mut out, first) = {
            let mut parts = self.partitions.borrow_mut();
            let Some(p) = parts.get_mut(&item.tp) else {
                return FetchOutcome {
                    error: Some(ResponseError::UnknownTopicOrPartition),
                    high_watermark: -1,
                    log_start_offset: -1,
                    ..Default::default()
                };
            };
            if let Some(waker) = waker {
                p.readers.retain(|r| r.strong_count() > 0);
                if !p.readers.iter().any(|r| std::ptr::eq(r.as_ptr(), Arc::as_ptr(waker))) {
                    p.readers.push(Arc::downgrade(waker));
                }
            }
            let offsets = p.log.offsets();
            let out = FetchOutcome {
                error: None,
                high_watermark: offsets.high_watermark.value(),
                log_start_offset: offsets.log_start.value(),
                records: Bytes::new(),
            };
            (out, p.log.read_start(Offset(item.offset), item.max_bytes, true))
        };
        let mut step = match first {
            Ok(step) => step,
            Err(ReadError::OffsetOutOfRange { .. }) => {
                out.error = Some(ResponseError::OffsetOutOfRange);
                return out;
            }
            Err(ReadError::Io(e)) => {
                tracing::error!(topic = %item.tp.topic, partition = item.tp.partition, "read failed: {e}");
                out.error = Some(ResponseError::KafkaStorageError);
                return out;
            }
        };
        loop {
            match step {
                ReadStep::Done(bytes) => {
                    out.records = bytes;
                    return out;
                }
                ReadStep::Disk(read) => {
                    let data = match self.engine.read(&read).await {
                        Ok(data) => data,
                        Err(e) => {
                            tracing::error!(topic = %item.tp.topic, partition = item.tp.partition, "read failed: {e}");
                            out.error = Some(ResponseError::KafkaStorageError);
                            return out;
                        }
                    };
                    let parts = self.partitions.borrow();
                    let Some(p) = parts.get(&item.tp) else {
                        return out;
                    };
                    step = p.log.read_continue(read, data);
                }
            }
        }
    }

    fn list_offsets(&self, items: Vec<OffsetQuery>) -> Vec<OffsetOutcome> {
        let parts = self.partitions.borrow();
        items
            .into_iter()
            .map(|q| {
                let Some(p) = parts.get(&q.tp) else {
                    return OffsetOutcome {
                        error: Some(ResponseError::UnknownTopicOrPartition),
                        offset: -1,
                        timestamp: -1,
                    };
                };
                let offsets = p.log.offsets();
                let found = match q.timestamp {
                    LATEST_TIMESTAMP => Ok(Some((offsets.high_watermark, -1))),
                    EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok(Some((offsets.log_start, -1))),
                    MAX_TIMESTAMP => Ok(p.log.max_timestamp()),
                    ts if ts < 0 => {
                        return OffsetOutcome {
                            error: Some(ResponseError::InvalidRequest),
                            offset: -1,
                            timestamp: -1,
                        }
                    }
                    ts => p.log.offset_for_timestamp(ts),
                };
                match found {
                    Ok(Some((offset, timestamp))) => OffsetOutcome {
                        error: None,
                        offset: offset.value(),
                        timestamp,
                    },
                    Ok(None) => OffsetOutcome {
                        error: None,
                        offset: -1,
                        timestamp: -1,
                    },
                    Err(_) => OffsetOutcome {
                        error: Some(ResponseError::KafkaStorageError),
                        offset: -1,
                        timestamp: -1,
                    },
                }
            })
            .collect()
    }

    /// Write rounds (write-behind and group commit): each round takes every partition
    /// with appends since the last round, hands each one vectored write of everything
    /// it has (and an fdatasync when an acks=all append or a due flush asks) to the
    /// engine, awaits them together, and publishes how far each log is written and
    /// durable. Appends that arrive meanwhile join the next round, so under load one
    /// write and one sync cover many requests.
    pub async fn run_io(self: Rc<Self>) {
        let mut shutdown = self.cluster.shutdown.clone();
        loop {
            tokio::select! {
                _ = self.io_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => self.queue_due_flushes(),
                _ = shutdown.changed() => return,
            }
            let jobs = {
                let now = now_ms();
                let mut parts = self.partitions.borrow_mut();
                let mut jobs = Vec::new();
                for tp in self.io_queue.borrow_mut().drain(..) {
                    let Some(p) = parts.get_mut(&tp) else {
                        continue;
                    };
                    p.io_queued = false;
                    let sync = std::mem::take(&mut p.sync_wanted) || p.log.flush_due(now);
                    if let Some(job) = p.log.take_writes(sync) {
                        jobs.push((tp, job.receipt(), job));
                    }
                }
                jobs
            };
            if jobs.is_empty() {
                continue;
            }
            let engine = &self.engine;
            let rounds = jobs.into_iter().map(|(tp, receipt, job)| async move {
                let started = std::time::Instant::now();
                let result = engine.run(job).await;
                (tp, receipt, result, started.elapsed())
            });
            let done = futures_util::future::join_all(rounds).await;
            let now = now_ms();
            let mut parts = self.partitions.borrow_mut();
            for (tp, receipt, result, took) in done {
                if receipt.synced() {
                    self.metrics.borrow_mut().fsync.observe(took);
                }
                let Some(p) = parts.get_mut(&tp) else {
                    continue;
                };
                match result {
                    Ok(()) => {
                        p.log.complete_writes(&receipt, now);
                        let (written, flushed) = (p.log.written(), p.log.flushed());
                        p.durability.send_modify(|d| {
                            d.written = written;
                            d.flushed = flushed;
                        });
                    }
                    Err(e) => {
                        tracing::error!(topic = %tp.topic, partition = tp.partition, "write or fdatasync failed, partition now refuses writes: {e}");
                        p.durability.send_modify(|d| d.failed = true);
                    }
                }
            }
        }
    }

    fn queue_due_flushes(&self) {
        let now = now_ms();
        let mut parts = self.partitions.borrow_mut();
        let mut queue = self.io_queue.borrow_mut();
        for (tp, p) in parts.iter_mut() {
            if p.log.flush_due(now) {
                p.sync_wanted = true;
                if !p.io_queued {
                    p.io_queued = true;
                    queue.push(tp.clone());
                }
            }
        }
    }

    /// Counters plus every partition's offsets and every group's state.
    pub fn snapshot(&self) -> ShardSnapshot {
        let partitions = self
            .partitions
            .borrow()
            .iter()
            .map(|(tp, p)| {
                let o = p.log.offsets();
                PartitionStats {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    log_start_offset: o.log_start.value(),
                    high_watermark: o.high_watermark.value(),
                    log_end_offset: o.log_end.value(),
                    size_bytes: p.log.size_bytes(),
                    segments: p.log.segment_count(),
                }
            })
            .collect();
        let groups = self
            .groups
            .borrow()
            .values()
            .map(|g| GroupStats {
                group: g.id.clone(),
                state: g.state.name(),
                members: g.members.len(),
                generation: g.generation,
                offsets: g.offsets.iter().map(|((t, p), c)| (t.clone(), *p, c.offset)).collect(),
            })
            .collect();
        ShardSnapshot {
            metrics: self.metrics.borrow().clone(),
            partitions,
            groups,
        }
    }

    /// Writes and syncs every log on the shard's thread; called once at shutdown after
    /// connections have drained. A round still in flight is written again (same bytes,
    /// same place), so nothing depends on it finishing.
    pub fn flush_all(&self) {
        let now = now_ms();
        for (tp, p) in self.partitions.borrow_mut().iter_mut() {
            if let Err(e) = p.log.flush_now(now) {
                tracing::error!(topic = %tp.topic, partition = tp.partition, "final flush failed: {e}");
            }
        }
    }
}
