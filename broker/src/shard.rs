//! A shard: one pinned thread running a tokio current-thread runtime, owning a fixed
//! subset of partitions (DESIGN.md, "Thread-per-core").
//!
//! What a shard holds: its partitions (the broker's view of each log, see
//! `partition`), the storage manager that runs their logs' I/O, the coordinators it
//! hosts (groups today), a snapshot of cluster metadata kept current by the
//! controller's watch, and its own counters. Only the owning shard touches these, so
//! they live in plain `RefCell`s with no lock; a borrow never spans an `.await`.
//!
//! Work for another shard travels as a [`ShardCall`] over a bounded channel: a closure
//! the target shard runs. `router` is the one place that decides where work runs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use kafka_protocol::ResponseError;
use sluice_controller::{BrokerInfo, ClusterMetadata, Controller, TopicMetadata};
use sluice_storage::{Appended, Durability, LogManager, Offset};
use tokio::sync::{mpsc, watch};

use crate::config::BrokerConfig;
use crate::coordinator::{Coordinator, Host};
use crate::group::coordinator::GroupCoordinator;
use crate::group::GroupConfig;
use crate::metrics::{PartitionStats, ShardMetrics, ShardSnapshot};
use crate::partition::{append_error, Partition, ReadBound, TopicPartition};
use crate::share::state::ShareCoordinator;
use crate::txn::coordinator::TxnCoordinator;
use crate::txn::TxnConfig;
use crate::{now_ms, topic_config};

/// Depth of each shard's inbox. Enough for every connection of a busy peer to have a
/// few requests queued; beyond it senders wait, which is the backpressure we want.
pub const INBOX_DEPTH: usize = 1024;

/// The most bytes one read of an internal topic returns (coordinator replay).
const REPLAY_READ_BYTES: usize = 1 << 20;

/// How far a shard has brought its partitions in line with the controller's metadata.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub revision: u64,
    /// Why applying that revision failed on this shard, if it did.
    pub failure: Option<String>,
}

/// State every shard shares; immutable after start-up, so `Arc` without a lock.
pub struct Cluster {
    pub config: BrokerConfig,
    /// This broker as it registered: its node id, endpoint, rack and incarnation.
    pub me: BrokerInfo,
    pub controller: Arc<dyn Controller>,
    pub peers: Vec<mpsc::Sender<ShardCall>>,
    pub shutdown: watch::Receiver<bool>,
    /// Partitions of `__consumer_offsets`, which place groups on shards.
    pub offsets_partitions: i32,
    pub groups: GroupConfig,
    /// Partitions of `__transaction_state`, which place transactional ids on shards.
    pub txn_partitions: i32,
    pub txns: TxnConfig,
    /// Partitions of `__share_group_state`, which place share-partitions' state.
    pub share_partitions: i32,
    /// The storage backend each shard starts its own instance of.
    pub engine: sluice_storage::Engine,
    /// Direct I/O for log files (and each shard's chunk cache), or buffered.
    pub io_options: sluice_storage::io::IoOptions,
    /// Connection limits and the request-bytes budget, across every shard.
    pub limits: Arc<crate::limits::Limits>,
    /// Each shard's applied metadata revision, so an admin change can answer once
    /// every shard has opened (or removed) its partitions.
    pub applied: Vec<watch::Sender<Applied>>,
    /// The thread compacted partitions are cleaned on (None with log.cleaner.enable=false).
    pub cleaner: Option<sluice_storage::cleaner::CleanerThread>,
}

impl Cluster {
    /// The shard that owns a partition. Consecutive partitions of a topic land on
    /// consecutive shards, so a topic spreads evenly.
    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        let h = crc32c::crc32c(topic.as_bytes()) as usize;
        h.wrapping_add(partition as usize) % self.peers.len()
    }

    /// The partition of coordinator `C`'s internal topic that `key` lives in.
    pub fn coordinator_partition<C: Coordinator>(&self, key: &str) -> TopicPartition {
        let partitions = match C::TOPIC {
            TxnCoordinator::TOPIC => self.txn_partitions,
            ShareCoordinator::TOPIC => self.share_partitions,
            _ => self.offsets_partitions,
        };
        TopicPartition::new(C::TOPIC, C::partition_for(key, partitions))
    }

    /// The shard hosting `key`'s state for coordinator `C`: the owner of the
    /// partition of `C`'s internal topic that the key lives in.
    pub fn coordinator_shard<C: Coordinator>(&self, key: &str) -> usize {
        let tp = self.coordinator_partition::<C>(key);
        self.owner_of(&tp.topic, tp.partition)
    }
}

/// Where a shard stands with a coordinator partition it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hosting {
    /// Replaying the partition's log; requests get COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    Ready,
}

/// Work for a shard, run there with the shard in hand.
pub struct ShardCall {
    /// The API whose work this is, for the cross-shard queue-time metric.
    pub api: Option<i16>,
    pub queued_at: tokio::time::Instant,
    pub run: Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>,
}

impl ShardCall {
    pub fn new<F, Fut>(api: Option<i16>, run: F) -> ShardCall
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        ShardCall {
            api,
            queued_at: tokio::time::Instant::now(),
            run: Box::new(move |shard| Box::pin(run(shard))),
        }
    }
}

pub struct Shard {
    pub id: usize,
    pub cluster: Arc<Cluster>,
    /// The controller's metadata as this shard last applied it.
    metadata: RefCell<Arc<ClusterMetadata>>,
    pub(crate) partitions: RefCell<HashMap<TopicPartition, Partition>>,
    /// Runs the write rounds and reads of this shard's logs.
    pub logs: Rc<LogManager>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
    /// The transactional ids this shard coordinates.
    pub txns: Rc<TxnCoordinator>,
    /// The share groups this shard coordinates (membership and assignment).
    pub share_groups: RefCell<HashMap<String, crate::share::group::ShareGroup>>,
    /// The share-partitions' durable state this shard coordinates.
    pub share_state: ShareCoordinator,
    /// The share-partitions of the partitions this shard owns, and share sessions.
    pub shares: crate::share::manager::ShareManager,
    /// The coordinator partitions (`__consumer_offsets`, `__transaction_state`) this
    /// shard owns and this broker leads, and whether their state is loaded.
    coordinating: RefCell<HashMap<TopicPartition, Hosting>>,
    /// Whether this broker's controller session certainly lasts (see [`Shard::leads`]).
    session: RefCell<bool>,
    /// The leaders this shard runs a replica fetcher for (see `replication`).
    pub(crate) fetchers: RefCell<std::collections::HashSet<i32>>,
    /// Per transactional producer id, the turn its produce requests take while their
    /// partitions are verified with the coordinator (KIP-890): FIFO, so a request
    /// waiting on a verification never lets a later one overtake it.
    txn_append_turns: RefCell<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Producer ids reserved from the controller and not yet handed out.
    producer_ids: RefCell<std::ops::Range<i64>>,
    /// This shard's own counters; a scrape sums every shard's.
    pub metrics: Rc<RefCell<ShardMetrics>>,
    /// Directories of partitions whose creation failed and that could not be removed
    /// then (no descriptor left to list them): removed again at every metadata change.
    orphans: RefCell<Vec<std::path::PathBuf>>,
}

/// Why an append was refused: Kafka's error, a message for the client, and the
/// batch's records that caused it (KIP-467's `record_errors`).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: ResponseError,
    pub message: Option<String>,
    pub record_errors: Vec<i32>,
}

impl Refusal {
    pub fn new(code: ResponseError, message: Option<String>) -> Refusal {
        Refusal {
            code,
            message,
            record_errors: Vec::new(),
        }
    }
}

impl Shard {
    /// Must run inside the shard's runtime: an io_uring backend creates its ring there.
    pub fn new(id: usize, cluster: Arc<Cluster>) -> Shard {
        let io = cluster.engine.start_with(cluster.io_options).unwrap_or_else(|e| {
            tracing::warn!(
                shard = id,
                "cannot start this shard's {} backend ({e}); using positional I/O",
                cluster.engine.name()
            );
            Rc::new(sluice_storage::io::Positional::new())
        });
        let logs = LogManager::new(io);
        let metrics = Rc::new(RefCell::new(ShardMetrics::default()));
        let observed = metrics.clone();
        logs.observe(move |round| {
            if round.synced {
                observed.borrow_mut().fsync.observe(round.took);
            }
        });
        let metadata = cluster.controller.metadata();
        Shard {
            id,
            groups: GroupCoordinator::new(cluster.groups.clone(), cluster.offsets_partitions),
            txns: Rc::new(TxnCoordinator::new(cluster.txns.clone(), cluster.txn_partitions)),
            share_groups: RefCell::new(HashMap::new()),
            share_state: ShareCoordinator::new(cluster.share_partitions),
            shares: Default::default(),
            cluster,
            coordinating: RefCell::new(HashMap::new()),
            metadata: RefCell::new(metadata),
            partitions: RefCell::new(HashMap::new()),
            logs,
            fetchers: RefCell::new(std::collections::HashSet::new()),
            session: RefCell::new(true),
            producer_ids: RefCell::new(0..0),
            txn_append_turns: RefCell::new(HashMap::new()),
            metrics,
            orphans: RefCell::new(Vec::new()),
        }
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.cluster.config
    }

    pub fn controller(&self) -> &dyn Controller {
        self.cluster.controller.as_ref()
    }

    /// This shard's metadata snapshot: an `Arc` clone, no lock.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// Whether this broker leads `state`'s partition in `metadata`: the leader named is
    /// this node, this broker's registration (this very process's) is live, and its
    /// session certainly still lasts. A broker that lost its registration, or cannot
    /// tell (cut off from etcd past its lease), leads nothing: another may lead by now.
    pub fn leads(&self, metadata: &ClusterMetadata, leader: i32) -> bool {
        leader == self.cluster.me.id
            && *self.session.borrow()
            && metadata
                .brokers
                .get(&leader)
                .is_some_and(|b| b.incarnation == self.cluster.me.incarnation)
    }

    /// Brings the shard's partitions in line with `metadata` (opens the logs of the
    /// partitions it owns that have a replica on this broker, removes those of deleted
    /// topics and of replicas moved away, takes or gives up leadership and the
    /// coordinator state that goes with it) and makes it the shard's snapshot. Returns
    /// what failed, if anything did.
    pub fn apply_metadata(self: &Rc<Self>, metadata: Arc<ClusterMetadata>) -> Result<(), String> {
        let me = self.cluster.me.id;
        let mut failures = Vec::new();
        self.remove_orphans();
        let doomed: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(tp, p)| {
                !metadata.topic(&tp.topic).is_some_and(|t| {
                    t.id == p.topic_id
                        && t.partition(tp.partition)
                            .is_some_and(|s| s.partition_epoch < 0 || s.replicas.contains(&me))
                })
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in doomed {
            let removed = self.partitions.borrow_mut().remove(&tp);
            if let Some(mut p) = removed {
                p.wake_readers();
                if let Err(e) = p.log().delete() {
                    failures.push(format!("{}: {e}", p.log().dir().display()));
                }
            }
        }
        for topic in metadata.topics.values() {
            if let Err(e) = self.open_topic(&metadata, topic) {
                failures.push(e);
            }
        }
        let now = now_ms();
        let mut topic_configs: HashMap<&str, (sluice_storage::LogConfig, i32)> = HashMap::new();
        for (tp, p) in self.partitions.borrow_mut().iter_mut() {
            if let Some(topic) = metadata.topic(&tp.topic) {
                // Config changes (AlterConfigs, topic or broker) apply to open logs at once.
                let (config, min_isr) = topic_configs.entry(topic.name.as_str()).or_insert_with(|| {
                    let values = topic_config::topic_values(self.config(), &metadata, topic);
                    (
                        topic_config::log_config(&values),
                        topic_config::min_insync_replicas(&values),
                    )
                });
                p.log().set_config(config.clone());
                p.min_insync_replicas = *min_isr;
            }
            if let Some(state) = metadata.partition(&tp.topic, tp.partition) {
                match p.set_state(state, self.leads(&metadata, state.leader), now) {
                    Ok(true) => self.metrics.borrow_mut().leader_elections += 1,
                    Ok(false) => {}
                    Err(e) => failures.push(format!("{}: {e}", p.log().dir().display())),
                }
            }
        }
        crate::replication::follow_leaders(self, &metadata);
        self.follow_coordinator_leadership(&metadata);
        *self.metadata.borrow_mut() = metadata;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// Loads the state of each coordinator partition (`__consumer_offsets`,
    /// `__transaction_state`) this shard owns that this broker has come to lead, and
    /// forgets that of the ones it no longer leads (a group or a transactional id moves
    /// with its partition's leadership, as in Kafka).
    fn follow_coordinator_leadership(self: &Rc<Self>, metadata: &ClusterMetadata) {
        let mut led = Vec::new();
        for name in [GroupCoordinator::TOPIC, TxnCoordinator::TOPIC, ShareCoordinator::TOPIC] {
            let Some(topic) = metadata.topic(name) else {
                continue;
            };
            for p in 0..topic.partitions {
                let tp = TopicPartition::new(name, p);
                if self.cluster.owner_of(name, p) == self.id
                    && topic.partition(p).is_some_and(|s| self.leads(metadata, s.leader))
                    && self.partitions.borrow().contains_key(&tp)
                {
                    led.push(tp);
                }
            }
        }
        let lost: Vec<TopicPartition> = self
            .coordinating
            .borrow()
            .keys()
            .filter(|tp| !led.contains(tp))
            .cloned()
            .collect();
        for tp in lost {
            self.coordinating.borrow_mut().remove(&tp);
            match tp.topic.as_str() {
                GroupCoordinator::TOPIC => {
                    self.groups.unload(&tp);
                    let partitions = self.cluster.offsets_partitions;
                    self.share_groups
                        .borrow_mut()
                        .retain(|g, _| GroupCoordinator::partition_for(g, partitions) != tp.partition);
                }
                ShareCoordinator::TOPIC => self.share_state.unload(&tp),
                _ => self.txns.unload(&tp),
            }
            tracing::info!(shard = self.id, topic = %tp.topic, partition = tp.partition, "no longer coordinating this partition's keys");
        }
        for tp in led {
            if self.coordinating.borrow().contains_key(&tp) {
                continue;
            }
            self.coordinating.borrow_mut().insert(tp.clone(), Hosting::Loading);
            let shard = self.clone();
            tokio::task::spawn_local(async move {
                let tps = std::slice::from_ref(&tp);
                let loaded = match tp.topic.as_str() {
                    GroupCoordinator::TOPIC => shard.groups.load(shard.as_ref(), tps).await,
                    ShareCoordinator::TOPIC => shard.share_state.load(shard.as_ref(), tps).await,
                    _ => shard.txns.load(shard.as_ref(), tps).await,
                };
                let mut coordinating = shard.coordinating.borrow_mut();
                match loaded {
                    // Still ours (leadership may have moved on while it loaded).
                    Ok(()) if coordinating.get(&tp) == Some(&Hosting::Loading) => {
                        coordinating.insert(tp.clone(), Hosting::Ready);
                        tracing::debug!(shard = shard.id, topic = %tp.topic, partition = tp.partition, "coordinating");
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::error!(shard = shard.id, topic = %tp.topic, partition = tp.partition, "cannot load coordinator state: {e}");
                        coordinating.remove(&tp);
                    }
                }
            });
        }
    }

    /// Whether this shard can answer for a key of coordinator `C` in `tp`: Kafka's
    /// NOT_COORDINATOR when this broker does not lead it, COORDINATOR_LOAD_IN_PROGRESS
    /// while its state is replayed.
    pub fn coordinator_status(&self, tp: &TopicPartition) -> Result<(), ResponseError> {
        match self.coordinating.borrow().get(tp) {
            Some(Hosting::Ready) => Ok(()),
            Some(Hosting::Loading) => Err(ResponseError::CoordinatorLoadInProgress),
            _ => Err(ResponseError::NotCoordinator),
        }
    }

    /// Whether coordinator partitions this shard leads are still loading.
    pub fn coordinators_loading(&self) -> bool {
        self.coordinating.borrow().values().any(|h| *h == Hosting::Loading)
    }

    /// Opens (creating where new) the logs of `topic` this shard owns. All or nothing:
    /// when one cannot be opened, those this call opened are closed again (and removed
    /// when they were new), so a failed topic holds no descriptors and no directories
    /// and the controller can still write the change that removes it.
    fn open_topic(&self, metadata: &ClusterMetadata, topic: &TopicMetadata) -> Result<(), String> {
        let mut done = Vec::new();
        let result = self.open_topic_partitions(metadata, topic, &mut done);
        if result.is_err() {
            for (tp, made) in done {
                let Some(p) = self.partitions.borrow_mut().remove(&tp) else {
                    continue;
                };
                if made {
                    let _ = p.log().delete();
                }
            }
            self.remove_orphans();
        }
        result
    }

    /// Removes the directories failed creations left, except any a partition now uses.
    fn remove_orphans(&self) {
        let partitions = self.partitions.borrow();
        self.orphans.borrow_mut().retain(|dir| {
            if partitions.values().any(|p| p.log().dir() == dir.as_path()) {
                return false;
            }
            match std::fs::remove_dir_all(dir) {
                Ok(()) => false,
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            }
        });
    }

    fn open_topic_partitions(
        &self,
        metadata: &ClusterMetadata,
        topic: &TopicMetadata,
        done: &mut Vec<(TopicPartition, bool)>,
    ) -> Result<(), String> {
        let log_config = topic_config::log_config(&topic_config::topic_values(self.config(), metadata, topic));
        for partition in 0..topic.partitions {
            if self.cluster.owner_of(&topic.name, partition) != self.id {
                continue;
            }
            let placed_here = topic
                .partition(partition)
                .is_some_and(|s| s.replicas.contains(&self.cluster.me.id));
            if !placed_here {
                continue;
            }
            let tp = TopicPartition::new(&topic.name, partition);
            if self.partitions.borrow().contains_key(&tp) {
                continue;
            }
            let dir = self.config().data_dir.join(tp.dir_name());
            let existed = dir.exists();
            let opened = claim_dir(&dir, topic.id).and_then(|()| self.logs.open(&dir, log_config.clone(), now_ms()));
            let log = match opened {
                Ok(log) => log,
                Err(e) => {
                    // What this attempt made goes again, once the partitions opened
                    // before it are closed (with no descriptor left even listing the
                    // directory fails; then the next metadata change tries again).
                    if !existed {
                        self.orphans.borrow_mut().push(dir.clone());
                    }
                    return Err(format!("{}: {e}", dir.display()));
                }
            };
            self.partitions
                .borrow_mut()
                .insert(tp.clone(), Partition::new(topic.id, log, self.cluster.me.id));
            done.push((tp, !existed));
        }
        Ok(())
    }

    /// Follows the controller's watch: applies every new metadata revision and
    /// publishes how far this shard got. A change of this broker's session applies the
    /// same metadata again (leadership depends on it).
    pub async fn follow_metadata(self: Rc<Self>) {
        let mut watch = self.cluster.controller.watch();
        let mut session = self.cluster.controller.session();
        loop {
            let metadata = watch.borrow_and_update().clone();
            let valid = *session.borrow_and_update();
            let session_changed = valid != *self.session.borrow();
            *self.session.borrow_mut() = valid;
            if metadata.revision != self.metadata.borrow().revision || session_changed {
                let revision = metadata.revision;
                let failure = self.apply_metadata(metadata).err();
                if let Some(why) = &failure {
                    tracing::error!(shard = self.id, revision, "cannot apply metadata: {why}");
                }
                if let Some(applied) = self.cluster.applied.get(self.id) {
                    applied.send_replace(Applied { revision, failure });
                }
            }
            tokio::select! {
                changed = watch.changed() => if changed.is_err() { return },
                changed = session.changed() => if changed.is_err() {
                    // A backend without sessions: only metadata changes from here on.
                    if watch.changed().await.is_err() { return }
                },
            }
        }
    }

    /// One retention pass over this shard's partitions (`log.retention.check.interval.ms`):
    /// each log deletes the closed segments its topic's `retention.ms`,
    /// `retention.bytes` and log start let go, below its high watermark.
    pub fn apply_retention(&self) {
        let now = now_ms();
        let mut deleted = sluice_storage::Deleted::default();
        for (tp, p) in self.partitions.borrow().iter() {
            match p.log().apply_retention(now, p.offsets().high_watermark.offset()) {
                Ok(d) if d.segments > 0 => {
                    tracing::info!(
                        topic = %tp.topic,
                        partition = tp.partition,
                        segments = d.segments,
                        bytes = d.bytes,
                        log_start = p.offsets().log_start.value(),
                        "retention deleted old segments"
                    );
                    deleted.segments += d.segments;
                    deleted.bytes += d.bytes;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(topic = %tp.topic, partition = tp.partition, "retention failed: {e}"),
            }
        }
        let mut metrics = self.metrics.borrow_mut();
        metrics.retention_deleted_segments += deleted.segments as u64;
        metrics.retention_deleted_bytes += deleted.bytes;
    }

    /// One cleaner pass over this shard's compacted partitions
    /// (`log.cleaner.backoff.ms`): each that is due is cleaned on the cleaner thread,
    /// one at a time, below its high watermark.
    pub async fn clean_compacted(&self) {
        let Some(cleaner) = self.cluster.cleaner.clone() else {
            return;
        };
        let due: Vec<(TopicPartition, sluice_storage::PartitionLog, Offset)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(_, p)| p.log().config().cleanup_compact)
            .map(|(tp, p)| (tp.clone(), p.log().clone(), p.offsets().high_watermark.offset()))
            .collect();
        let config = self.config();
        let map_entries = (config.log_cleaner_dedupe_buffer_size / 24).max(1) as usize;
        let rate = config.log_cleaner_io_max_bytes_per_second;
        for (tp, log, upto) in due {
            let started = std::time::Instant::now();
            match log.clean(&cleaner, upto, map_entries, rate).await {
                Ok(Some(reclaimed)) => {
                    let took = started.elapsed();
                    tracing::info!(topic = %tp.topic, partition = tp.partition, reclaimed, ?took, "cleaned a compacted partition");
                    let mut metrics = self.metrics.borrow_mut();
                    metrics.cleaner_runs += 1;
                    metrics.cleaner_reclaimed_bytes += reclaimed;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(topic = %tp.topic, partition = tp.partition, "cleaning failed: {e}"),
            }
        }
    }

    /// Sends `call` to another shard's inbox. A closed inbox means shutdown; the
    /// dropped call's reply channel tells the caller.
    pub async fn send(&self, shard: usize, call: ShardCall) {
        if let Some(peer) = self.cluster.peers.get(shard) {
            let _ = peer.send(call).await;
        }
    }

    /// Runs a call that arrived in this shard's inbox.
    pub async fn serve(self: Rc<Self>, call: ShardCall) {
        if let Some(api) = call.api {
            self.metrics
                .borrow_mut()
                .queue_time
                .entry(api)
                .or_default()
                .observe(call.queued_at.elapsed());
        }
        (call.run)(self).await;
    }

    /// The durability an append asked for, under this broker's policy: acks=all syncs
    /// only with `--acks-all-fsync` (Kafka's `flush.messages=1`); otherwise it waits as
    /// acks=1 does.
    fn durability(&self, wanted: Durability) -> Durability {
        match wanted {
            Durability::Synced if !self.config().acks_all_fsync => Durability::Written,
            other => other,
        }
    }

    /// Appends one batch to a partition this shard owns.
    pub fn append(
        &self,
        tp: &TopicPartition,
        records: Bytes,
        now_ms: i64,
        durability: Durability,
    ) -> Result<Appended, Refusal> {
        let acks_all = durability == Durability::Synced;
        let durability = self.durability(durability);
        let mut partitions = self.partitions.borrow_mut();
        let Some(p) = partitions.get_mut(tp) else {
            return Err(Refusal::new(ResponseError::UnknownTopicOrPartition, None));
        };
        if !p.is_leader() {
            return Err(Refusal::new(ResponseError::NotLeaderOrFollower, None));
        }
        // acks=all needs enough replicas in sync to be worth writing (Kafka checks
        // before the append, and again when the batch is committed).
        if acks_all && (p.isr().len() as i32) < p.min_insync_replicas {
            return Err(Refusal::new(
                ResponseError::NotEnoughReplicas,
                Some(format!(
                    "{} in-sync replica(s), min.insync.replicas is {}",
                    p.isr().len(),
                    p.min_insync_replicas
                )),
            ));
        }
        let len = records.len();
        match p.append(records, now_ms, durability) {
            Ok(appended) => {
                if !appended.info.duplicate {
                    let mut metrics = self.metrics.borrow_mut();
                    let io = metrics.topic(&tp.topic);
                    io.bytes_in += len as u64;
                    io.records_in += appended.info.record_count.max(0) as u64;
                }
                Ok(appended)
            }
            Err(e) => Err(Refusal {
                code: append_error(&e),
                message: Some(e.to_string()),
                record_errors: match e {
                    sluice_storage::AppendError::KeylessRecords(indexes) => indexes,
                    _ => Vec::new(),
                },
            }),
        }
    }

    /// Appends a transaction marker to a partition this shard owns and leads (as
    /// acks=all: the in-sync set must be large enough).
    pub fn append_marker(
        &self,
        tp: &TopicPartition,
        marker: &sluice_storage::Marker,
        durability: Durability,
    ) -> Result<Appended, (ResponseError, Option<String>)> {
        let durability = self.durability(durability);
        let mut partitions = self.partitions.borrow_mut();
        let Some(p) = partitions.get_mut(tp) else {
            return Err((ResponseError::UnknownTopicOrPartition, None));
        };
        if !p.is_leader() {
            return Err((ResponseError::NotLeaderOrFollower, None));
        }
        if (p.isr().len() as i32) < p.min_insync_replicas {
            return Err((ResponseError::NotEnoughReplicas, None));
        }
        p.append_marker(marker, now_ms(), durability)
            .map_err(|e| (append_error(&e), Some(e.to_string())))
    }

    /// Waits until everything before `target` in `tp` is committed (the high watermark
    /// passed it) under the leadership that took the append: acks=all's answer. A
    /// leadership change first is NOT_LEADER_OR_FOLLOWER (the batch may be truncated
    /// away); an in-sync set that shrank below `min.insync.replicas` meanwhile is
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND, as in Kafka. The caller bounds the wait.
    pub async fn committed(&self, tp: &TopicPartition, target: Offset) -> Result<(), ResponseError> {
        let (mut commits, epoch) = match self.partitions.borrow().get(tp) {
            Some(p) => (p.commits(), p.leader_epoch()),
            None => return Err(ResponseError::NotLeaderOrFollower),
        };
        let reached = commits
            .wait_for(|c| !c.leader || c.leader_epoch != epoch || c.high_watermark >= target)
            .await
            .map(|c| *c)
            .map_err(|_| ResponseError::NotLeaderOrFollower)?;
        if !reached.leader || reached.leader_epoch != epoch {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        match self.partitions.borrow().get(tp) {
            Some(p) if (p.isr().len() as i32) < p.min_insync_replicas => {
                Err(ResponseError::NotEnoughReplicasAfterAppend)
            }
            Some(_) => Ok(()),
            None => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// The append turn of a transactional producer (see `txn_append_turns`); turns no
    /// request holds are dropped as others are taken.
    pub fn txn_append_turn(&self, producer_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.txn_append_turns.borrow_mut();
        turns.retain(|_, t| Arc::strong_count(t) > 1);
        turns.entry(producer_id).or_default().clone()
    }

    /// Whether `producer_id` has a transaction open in `tp` (so its batches there
    /// need no verification).
    pub fn has_open_transaction(&self, tp: &TopicPartition, producer_id: i64) -> bool {
        self.partitions
            .borrow()
            .get(tp)
            .is_some_and(|p| p.log().has_open_transaction(producer_id))
    }

    /// The next producer id: from this shard's block, reserving a new block from the
    /// controller when it is used up (each reservation is a metadata write, so a block
    /// amortises it over many producers; a block a shard does not finish is skipped,
    /// never reused).
    pub async fn next_producer_id(&self) -> Result<i64, sluice_controller::ControllerError> {
        /// Ids reserved per round trip to the controller.
        const PRODUCER_ID_BLOCK: i64 = 1000;
        if self.producer_ids.borrow().is_empty() {
            let block = self.controller().allocate_producer_ids(PRODUCER_ID_BLOCK).await?;
            let mut ids = self.producer_ids.borrow_mut();
            if ids.is_empty() {
                *ids = block;
            }
        }
        let mut ids = self.producer_ids.borrow_mut();
        let id = ids.start;
        ids.start += 1;
        Ok(id)
    }

    /// Runs this shard's coordinators' timers.
    pub fn tick_coordinators(self: &Rc<Self>) {
        self.groups.tick(self.as_ref());
        self.txns.maintain(self);
        self.shares.tick(self);
        self.expire_share_members();
    }

    /// Counters plus every partition's offsets and every group's state.
    pub fn snapshot(&self) -> ShardSnapshot {
        let partitions = self
            .partitions
            .borrow()
            .iter()
            .map(|(tp, p)| {
                let o = p.offsets();
                PartitionStats {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    log_start_offset: o.log_start.value(),
                    high_watermark: o.high_watermark.value(),
                    last_stable_offset: o.last_stable.value(),
                    log_end_offset: o.log_end.value(),
                    size_bytes: p.log().size_bytes(),
                    segments: p.log().segment_count(),
                    follower_lag: p.follower_lag(),
                    dirty_ratio: p.log().config().cleanup_compact.then(|| p.log().dirty_ratio()),
                    refusing: p.log().refusing(),
                }
            })
            .collect();
        ShardSnapshot {
            engine: self.logs.engine(),
            direct_io: self.logs.direct_io(),
            queued_request_bytes: self.cluster.limits.request_bytes_in_use(),
            metrics: self.metrics.borrow().clone(),
            partitions,
            groups: self.groups.stats(),
            transactions_open: self.txns.open_count(),
            transactions_committed: self.txns.outcomes.get().0,
            transactions_aborted: self.txns.outcomes.get().1,
            shares: self.shares.stats(|tp| {
                self.partitions
                    .borrow()
                    .get(tp)
                    .map(|p| p.offsets().high_watermark.value())
            }),
            share_groups: self
                .share_groups
                .borrow()
                .values()
                .map(|g| (g.group_id.clone(), g.members.len()))
                .collect(),
        }
    }
}

/// Kafka's `partition.metadata`: the id of the topic a partition directory belongs to.
const PARTITION_METADATA: &str = "partition.metadata";

/// Makes `dir` the directory of a partition of topic `topic_id`. A directory left by an
/// earlier topic of the same name (deleted and created again while this broker was
/// away) is emptied first, so the new topic never serves the old one's records.
fn claim_dir(dir: &std::path::Path, topic_id: uuid::Uuid) -> std::io::Result<()> {
    let file = dir.join(PARTITION_METADATA);
    let wanted = format!("version: 0\ntopic_id: {topic_id}\n");
    match std::fs::read_to_string(&file) {
        Ok(found) if found == wanted => return Ok(()),
        Ok(found) => {
            tracing::warn!(dir = %dir.display(), found = found.trim(), "removing the data of an earlier topic of this name");
            std::fs::remove_dir_all(dir)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("partition.metadata.tmp");
    std::fs::write(&tmp, wanted)?;
    std::fs::rename(&tmp, &file)
}

impl Host for Shard {
    fn metadata(&self) -> Arc<ClusterMetadata> {
        Shard::metadata(self)
    }

    fn append(&self, tp: &TopicPartition, batch: Bytes, durability: Durability) -> Result<Appended, ResponseError> {
        Shard::append(self, tp, batch, now_ms(), durability).map_err(|r| r.code)
    }

    async fn committed(&self, tp: &TopicPartition, target: Offset) -> Result<(), ResponseError> {
        Shard::committed(self, tp, target).await
    }

    async fn read(&self, tp: &TopicPartition, offset: Offset) -> Result<Bytes, String> {
        let read = match self.partitions.borrow().get(tp) {
            // To the log end, as Kafka loads a coordinator partition: a new leader's log
            // holds everything acknowledged, while its high watermark may still wait
            // for followers to fetch.
            Some(p) => p.read(offset, REPLAY_READ_BYTES, ReadBound::LogEnd),
            None => return Ok(Bytes::new()),
        };
        read.await.map_err(|e| e.to_string())
    }
}
