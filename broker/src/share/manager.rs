//! The share-partitions a shard hosts (Kafka's SharePartitionManager): one per (share
//! group, partition this shard owns), loaded from the share coordinator on first use,
//! changed by ShareFetch and ShareAcknowledge, and written back to the coordinator
//! whenever an acknowledgement, a release or an expired lock changed it (acquisitions
//! alone are not written: after a crash an acquired record is simply available again).
//! Also the share sessions of the clients connected to this shard.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_storage::{BatchHeader, Offset, ReadError};
use tokio::sync::{Notify, OnceCell};
use uuid::Uuid;

use super::partition::{AckError, Acquired, ArchivedRecord, SharePartition};
use super::state::{ShareKey, Stored};
use super::{AutoOffsetReset, GroupSettings};
use crate::partition::{ReadBound, TopicPartition};
use crate::shard::Shard;

/// Most passes of one fetch over a share-partition whose read handed out nothing
/// because another member had just taken those records (the next pass reads on from
/// the new position).
const ACQUIRE_PASSES_MAX: usize = 4;

/// One share-partition hosted here.
pub(crate) struct Entry {
    pub key: ShareKey,
    pub tp: TopicPartition,
    state: OnceCell<RefCell<SharePartition>>,
    /// The epoch of the last snapshot sent to the coordinator.
    snapshot_epoch: Cell<i64>,
    /// Fetches waiting for records to become available here.
    waiters: RefCell<Vec<Weak<Notify>>>,
}

impl Entry {
    fn new(group: &str, tp: &TopicPartition, topic_id: Uuid) -> Rc<Entry> {
        Rc::new(Entry {
            key: ShareKey {
                group: group.to_string(),
                topic_id,
                partition: tp.partition,
            },
            tp: tp.clone(),
            state: OnceCell::new(),
            snapshot_epoch: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        })
    }

    fn state(&self) -> Option<&RefCell<SharePartition>> {
        self.state.get()
    }

    /// Registers a waiting fetch, woken when records come back (released, expired).
    pub fn watch(&self, waker: &Arc<Notify>) {
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| w.strong_count() > 0);
        if !waiters.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(waker))) {
            waiters.push(Arc::downgrade(waker));
        }
    }

    fn wake(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            if let Some(n) = w.upgrade() {
                n.notify_one();
            }
        }
    }
}

/// A client's share session (KIP-932): the partitions it fetches from this broker and
/// the epoch its next request must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub partitions: Vec<(Uuid, i32)>,
    pub next_epoch: i32,
    pub touched_ms: i64,
}

/// What one partition's ShareFetch or ShareAcknowledge did.
#[derive(Debug, Clone, Default)]
pub struct PartitionResult {
    pub error: Option<ResponseError>,
    pub ack_error: Option<ResponseError>,
    pub records: Bytes,
    pub acquired: Vec<Acquired>,
}

#[derive(Default)]
pub(crate) struct ShareManager {
    entries: RefCell<HashMap<(String, TopicPartition), Rc<Entry>>>,
    pub sessions: RefCell<HashMap<(String, String), Session>>,
    /// Connections to share coordinators on other brokers.
    pub peers: super::persister::Peers,
    /// Per share group: records handed out, acknowledged, archived and dead-lettered
    /// here, for the metrics.
    counters: RefCell<HashMap<String, ShareCounters>>,
}

/// One share-partition as the metrics show it.
#[derive(Debug, Clone)]
pub struct SharePartitionStats {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub start_offset: i64,
    pub in_flight: u64,
    pub backlog: u64,
}

/// A shard's share-partitions and per-group counters.
#[derive(Debug, Clone, Default)]
pub struct ShareStats {
    pub partitions: Vec<SharePartitionStats>,
    pub counters: HashMap<String, ShareCounters>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ShareCounters {
    pub acquired: u64,
    pub redelivered: u64,
    pub acknowledged: u64,
    pub archived: u64,
    pub dead_lettered: u64,
}

impl ShareCounters {
    pub fn add(&mut self, other: &ShareCounters) {
        self.acquired += other.acquired;
        self.redelivered += other.redelivered;
        self.acknowledged += other.acknowledged;
        self.archived += other.archived;
        self.dead_lettered += other.dead_lettered;
    }
}

impl ShareManager {
    /// The share-partition of `group` on `tp` (owned by this shard), loaded from the
    /// share coordinator (or started per `share.auto.offset.reset`) on first use.
    pub async fn get(
        &self,
        shard: &Rc<Shard>,
        group: &str,
        tp: &TopicPartition,
        topic_id: Uuid,
    ) -> Result<Rc<Entry>, ResponseError> {
        let entry = {
            let mut entries = self.entries.borrow_mut();
            let entry = entries
                .entry((group.to_string(), tp.clone()))
                .or_insert_with(|| Entry::new(group, tp, topic_id));
            if entry.key.topic_id != topic_id {
                // The topic was deleted and created again under its name.
                *entry = Entry::new(group, tp, topic_id);
            }
            entry.clone()
        };
        entry.state.get_or_try_init(|| load(shard, &entry)).await?;
        Ok(entry)
    }

    /// Applies a partition's acknowledgement batches (first, last, types) for `member`;
    /// the first batch that fails stops it and gives the partition's error. Writes the
    /// new state to the coordinator before answering.
    pub async fn acknowledge(
        &self,
        shard: &Rc<Shard>,
        entry: &Rc<Entry>,
        member: &str,
        batches: &[(i64, i64, Vec<i8>)],
        settings: &GroupSettings,
    ) -> Option<ResponseError> {
        let sp = entry.state()?;
        let mut error = None;
        let mut archived = Vec::new();
        let mut applied = false;
        {
            let mut sp = sp.borrow_mut();
            let mut counters = ShareCounters::default();
            for (first, last, types) in batches {
                match sp.acknowledge(member, *first, *last, types, &settings.limits) {
                    Ok(a) => {
                        applied = true;
                        counters.acknowledged += (*last - *first + 1) as u64;
                        archived.extend(a);
                    }
                    Err(e) => {
                        error = Some(match e {
                            AckError::InvalidRecordState => ResponseError::InvalidRecordState,
                            AckError::InvalidRequest => ResponseError::InvalidRequest,
                        });
                        break;
                    }
                }
            }
            counters.archived += archived.len() as u64;
            self.count(&entry.key.group, counters);
        }
        if !applied {
            return error;
        }
        entry.wake();
        self.dead_letter(shard, entry, archived, settings);
        match persist(shard, entry).await {
            Ok(()) => error,
            Err(e) => Some(e),
        }
    }

    /// Hands out to `member` what the log holds for it: reads from the first record
    /// available again (or the end), acquires, and returns the batches that hold the
    /// acquired records. Registers `waker` with the partition and the share-partition
    /// so that a waiting fetch wakes on new records and on records coming back.
    #[allow(clippy::too_many_arguments)]
    pub async fn acquire(
        &self,
        shard: &Rc<Shard>,
        entry: &Rc<Entry>,
        member: &Rc<str>,
        settings: &GroupSettings,
        records_max: usize,
        bytes_max: usize,
        waker: &Arc<Notify>,
    ) -> Result<(Bytes, Vec<Acquired>), ResponseError> {
        let Some(sp) = entry.state() else {
            return Err(ResponseError::CoordinatorLoadInProgress);
        };
        entry.watch(waker);
        for _ in 0..ACQUIRE_PASSES_MAX {
            let (from, read) = {
                let mut partitions = shard.partitions.borrow_mut();
                let p = partitions
                    .get_mut(&entry.tp)
                    .ok_or(ResponseError::UnknownTopicOrPartition)?;
                p.watch(waker);
                let offsets = p.offsets();
                let mut sp = sp.borrow_mut();
                sp.move_start(offsets.log_start.value());
                if !sp.can_acquire(&settings.limits) {
                    return Ok((Bytes::new(), Vec::new()));
                }
                let from = sp.next_fetch_offset();
                let bound = if settings.read_committed {
                    ReadBound::LastStable
                } else {
                    ReadBound::HighWatermark
                };
                (from, p.read(Offset(from), bytes_max, bound))
            };
            let records = match read.await {
                Ok(r) => r,
                Err(ReadError::OffsetOutOfRange { .. }) => continue,
                Err(ReadError::Io(e)) => {
                    tracing::error!(topic = %entry.tp.topic, partition = entry.tp.partition, "share read failed: {e}");
                    return Err(ResponseError::KafkaStorageError);
                }
            };
            if records.is_empty() {
                return Ok((Bytes::new(), Vec::new()));
            }
            // read_committed: records of aborted transactions are never delivered
            // (archived as gaps, as control records are).
            let aborted = match (settings.read_committed, batch_ranges(&records, &[]).last()) {
                (true, Some(&(_, last, _))) => {
                    let partitions = shard.partitions.borrow();
                    partitions
                        .get(&entry.tp)
                        .map(|p| p.log().aborted_overlapping(Offset(from), Offset(last)))
                        .unwrap_or_default()
                }
                _ => Vec::new(),
            };
            let batches = batch_ranges(&records, &aborted);
            let acquired = {
                let mut sp = sp.borrow_mut();
                sp.acquire(member, &batches, records_max, crate::now_ms(), &settings.limits)
            };
            if acquired.is_empty() {
                if sp.borrow().next_fetch_offset() == from {
                    return Ok((Bytes::new(), Vec::new()));
                }
                continue;
            }
            let mut counters = ShareCounters::default();
            for a in &acquired {
                let n = (a.last - a.first + 1) as u64;
                counters.acquired += n;
                if a.delivery_count > 1 {
                    counters.redelivered += n;
                }
            }
            self.count(&entry.key.group, counters);
            return Ok((holding(records, &acquired), acquired));
        }
        Ok((Bytes::new(), Vec::new()))
    }

    /// Releases what `member` holds on every share-partition of `group` here (its
    /// share session closed).
    pub fn release_member(&self, shard: &Rc<Shard>, group: &str, member: &str) {
        let entries: Vec<Rc<Entry>> = self
            .entries
            .borrow()
            .iter()
            .filter(|((g, _), _)| g == group)
            .map(|(_, e)| e.clone())
            .collect();
        let settings = GroupSettings::resolve(shard.config(), &shard.metadata(), group);
        for entry in entries {
            let Some(sp) = entry.state() else { continue };
            let (changed, archived) = sp.borrow_mut().release_member(member, &settings.limits);
            if changed {
                self.changed_in_background(shard, &entry, archived, &settings);
            }
        }
    }

    /// Every TICK: releases expired locks (and archives records at their delivery
    /// limit), and drops share-partitions whose partition left this shard.
    pub fn tick(&self, shard: &Rc<Shard>) {
        let now = crate::now_ms();
        let entries: Vec<Rc<Entry>> = {
            let partitions = shard.partitions.borrow();
            let mut entries = self.entries.borrow_mut();
            entries.retain(|(_, tp), _| partitions.contains_key(tp));
            entries.values().cloned().collect()
        };
        let metadata = shard.metadata();
        for entry in entries {
            let Some(sp) = entry.state() else { continue };
            if sp.borrow().next_deadline_ms().is_none_or(|d| d > now) {
                continue;
            }
            let settings = GroupSettings::resolve(shard.config(), &metadata, &entry.key.group);
            let (changed, archived) = sp.borrow_mut().expire_locks(now, &settings.limits);
            if changed {
                self.changed_in_background(shard, &entry, archived, &settings);
            }
        }
        // Sessions idle for longer than any member's session are gone with it.
        let idle_max = shard.config().group_share_session_timeout_ms as i64 * 2;
        self.sessions.borrow_mut().retain(|_, s| now - s.touched_ms < idle_max);
    }

    fn changed_in_background(
        &self,
        shard: &Rc<Shard>,
        entry: &Rc<Entry>,
        archived: Vec<ArchivedRecord>,
        settings: &GroupSettings,
    ) {
        self.count(
            &entry.key.group,
            ShareCounters {
                archived: archived.len() as u64,
                ..Default::default()
            },
        );
        entry.wake();
        self.dead_letter(shard, entry, archived, settings);
        let (shard, entry) = (shard.clone(), entry.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = persist(&shard, &entry).await {
                tracing::warn!(share = %entry.key.coordinator_key(), "cannot write share state: {e:?}");
            }
        });
    }

    /// Writes archived records to the group's dead-letter topic, when it has one.
    fn dead_letter(
        &self,
        shard: &Rc<Shard>,
        entry: &Rc<Entry>,
        archived: Vec<ArchivedRecord>,
        settings: &GroupSettings,
    ) {
        let Some(topic) = settings.dlq_topic.clone() else {
            return;
        };
        if archived.is_empty() {
            return;
        }
        self.count(
            &entry.key.group,
            ShareCounters {
                dead_lettered: archived.len() as u64,
                ..Default::default()
            },
        );
        super::dlq::spawn(
            shard,
            entry.tp.clone(),
            entry.key.group.clone(),
            topic,
            settings.dlq_copy_record,
            archived,
        );
    }

    fn count(&self, group: &str, add: ShareCounters) {
        self.counters
            .borrow_mut()
            .entry(group.to_string())
            .or_default()
            .add(&add);
    }

    /// Every share-partition hosted here and every group's counters, for the metrics.
    /// A share-partition's backlog is what it could hand out now: records available
    /// again and records below the high watermark never handed out.
    pub fn stats(&self, high_watermark: impl Fn(&TopicPartition) -> Option<i64>) -> ShareStats {
        let partitions = self
            .entries
            .borrow()
            .iter()
            .filter_map(|((group, tp), e)| {
                let sp = e.state()?.borrow();
                let unread = high_watermark(tp).map_or(0, |hw| (hw - sp.end()).max(0)) as u64;
                Some(SharePartitionStats {
                    group: group.clone(),
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    start_offset: sp.start(),
                    in_flight: sp.acquired() as u64,
                    backlog: sp.available() as u64 + unread,
                })
            })
            .collect();
        ShareStats {
            partitions,
            counters: self.counters.borrow().clone(),
        }
    }
}

/// Loads a share-partition's state from the share coordinator; a share-partition
/// never seen starts at the log start or end (`share.auto.offset.reset`) and that
/// start is written at once, so a restart does not move it.
async fn load(shard: &Rc<Shard>, entry: &Rc<Entry>) -> Result<RefCell<SharePartition>, ResponseError> {
    let loaded = async {
        super::ensure_share_state_topic(shard).await?;
        until_coordinated(|| super::persister::read(shard, entry.key.clone())).await
    };
    // A client cannot act on the coordinator's errors here (librdkafka surfaces them
    // to the application): a share-partition that cannot load yet is unknown.
    let stored = loaded.await.map_err(|e| {
        tracing::warn!(share = %entry.key.coordinator_key(), "cannot load share state: {e:?}");
        ResponseError::UnknownServerError
    })?;
    let offsets = shard
        .partitions
        .borrow()
        .get(&entry.tp)
        .map(|p| p.offsets())
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    let fresh = stored.is_none();
    let mut sp = match stored {
        Some(stored) => {
            entry.snapshot_epoch.set(stored.snapshot_epoch);
            SharePartition::from_snapshot(&stored.snapshot)
        }
        None => {
            let settings = GroupSettings::resolve(shard.config(), &shard.metadata(), &entry.key.group);
            SharePartition::new(match settings.auto_offset_reset {
                AutoOffsetReset::Earliest => offsets.log_start.value(),
                AutoOffsetReset::Latest => offsets.high_watermark.value(),
            })
        }
    };
    sp.move_start(offsets.log_start.value());
    if fresh {
        write(shard, entry, sp.snapshot()).await?;
    }
    Ok(RefCell::new(sp))
}

/// Sends the share-partition's state to the share coordinator and waits until it is
/// durable.
async fn persist(shard: &Rc<Shard>, entry: &Rc<Entry>) -> Result<(), ResponseError> {
    let Some(sp) = entry.state() else { return Ok(()) };
    let snapshot = sp.borrow().snapshot();
    write(shard, entry, snapshot).await
}

async fn write(
    shard: &Rc<Shard>,
    entry: &Rc<Entry>,
    snapshot: super::partition::Snapshot,
) -> Result<(), ResponseError> {
    let epoch = entry.snapshot_epoch.get() + 1;
    entry.snapshot_epoch.set(epoch);
    let stored = Stored {
        snapshot_epoch: epoch,
        snapshot,
    };
    until_coordinated(|| super::persister::write(shard, entry.key.clone(), stored.clone())).await
}

/// How long a share-partition waits for its share coordinator to load (its
/// `__share_group_state` partition was just created, or is being replayed).
const COORDINATOR_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `ask` until the share coordinator answers (not loading, not moving), for up to
/// [`COORDINATOR_WAIT`].
async fn until_coordinated<T, F, Fut>(mut ask: F) -> Result<T, ResponseError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ResponseError>>,
{
    let deadline = tokio::time::Instant::now() + COORDINATOR_WAIT;
    loop {
        match ask().await {
            Err(
                e @ (ResponseError::CoordinatorLoadInProgress
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::NotCoordinator),
            ) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// (first offset, last offset, not to deliver) of every whole batch in `records`: a
/// control batch, or a batch of one of the `aborted` transactions, is not delivered.
fn batch_ranges(records: &[u8], aborted: &[sluice_storage::AbortedTxn]) -> Vec<(i64, i64, bool)> {
    let mut out = Vec::new();
    let mut rest = records;
    while let Ok(h) = BatchHeader::parse(rest) {
        if h.size > rest.len() {
            break;
        }
        let in_aborted = h.is_transactional()
            && aborted.iter().any(|a| {
                a.producer_id == h.producer_id && a.first_offset <= h.base_offset && h.base_offset < a.last_offset
            });
        out.push((
            h.base_offset.value(),
            h.last_offset().value(),
            h.is_control() || in_aborted,
        ));
        rest = &rest[h.size..];
    }
    out
}

/// The run of whole batches in `records` that hold any acquired offset.
fn holding(records: Bytes, acquired: &[Acquired]) -> Bytes {
    let (Some(first), Some(last)) = (acquired.first().map(|a| a.first), acquired.last().map(|a| a.last)) else {
        return Bytes::new();
    };
    let (mut from, mut to, mut pos) = (None, 0usize, 0usize);
    while let Ok(h) = BatchHeader::parse(&records[pos..]) {
        if h.size > records.len() - pos {
            break;
        }
        let (base, end) = (h.base_offset.value(), h.last_offset().value());
        if end >= first && base <= last {
            from.get_or_insert(pos);
            to = pos + h.size;
        }
        pos += h.size;
    }
    match from {
        Some(from) => records.slice(from..to),
        None => Bytes::new(),
    }
}
