//! Cluster metadata: the live brokers, the topics, their partitions (replicas, leader,
//! leader epoch, in-sync replicas), topic ids and per-topic configs, and the cluster
//! id. This crate knows cluster state, never sockets (DESIGN.md, "Controller").
//!
//! The [`Controller`] trait is the one interface to cluster state. Changes are async
//! (a backend waits for its disk or its consensus store without blocking the caller's
//! thread) and every change, made here or by another broker, reaches every watcher of
//! [`Controller::watch`] as a new immutable [`ClusterMetadata`] snapshot (an `Arc`)
//! with a higher `revision`. Brokers keep the latest snapshot per shard, so the
//! produce and fetch paths read metadata without a lock, and reconcile what they run
//! with what the snapshot says (desired state in, actual state reconciled).
//!
//! The `local` backend persists to one file in the data directory, written atomically
//! (write, fsync, rename, fsync the directory) on tokio's blocking pool; its one broker
//! leads every partition. The `etcd` backend (cluster mode, `ETCD.md`) keeps the same
//! state in etcd, changes it only with compare-and-swap transactions, and feeds the
//! same watch from etcd's.

pub mod etcd;
pub mod local;
pub mod names;
pub mod placement;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use uuid::Uuid;

pub use etcd::{EtcdConfig, EtcdController};
pub use local::LocalController;
pub use names::validate_topic_name;

/// A live broker: how clients reach it, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Kafka's `node.id`.
    pub id: i32,
    /// The advertised listener clients are sent to.
    pub host: String,
    pub port: u16,
    /// Kafka's `broker.rack`, for rack-aware replica placement.
    #[serde(default)]
    pub rack: Option<String>,
    /// New for every start of the broker process, so a restarted broker can tell its own
    /// dead registration from another live broker that has its node id.
    #[serde(default)]
    pub incarnation: Uuid,
}

/// No leader: Kafka's `-1` (the partition is offline).
pub const NO_LEADER: i32 = -1;

/// One partition's placement and leadership (Kafka's `PartitionRegistration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The brokers that hold the partition; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// The broker that serves it, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped by every change of leader, so requests and brokers can tell a stale
    /// leader from the current one (KIP-101, KIP-320).
    pub leader_epoch: i32,
    /// The replicas that hold every committed record (the in-sync replicas): the
    /// leader's high watermark waits for them, and leadership moves only among them.
    pub isr: Vec<i32>,
    /// Bumped by every change of this state (leader, ISR or replicas).
    pub partition_epoch: i32,
    /// A reassignment under way (KIP-455): replicas joining (they copy the leader and
    /// must be in sync before it completes) and replicas leaving once it does. While it
    /// runs, `replicas` holds the target replicas followed by those leaving.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<i32>,
}

impl PartitionState {
    /// A new partition led by its preferred replica, every replica in sync (they are
    /// all empty, as in Kafka).
    pub fn new(replicas: Vec<i32>) -> PartitionState {
        let leader = replicas.first().copied().unwrap_or(NO_LEADER);
        PartitionState {
            isr: replicas.clone(),
            replicas,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// The replicas a reassignment under way ends with (all of them when none is).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|id| !self.removing.contains(id))
            .collect()
    }

    /// Starts moving the partition to `target` (KIP-455): the new replicas join at
    /// once as followers; [`PartitionState::advance_reassignment`] finishes the move
    /// when they are in sync. A `target` equal to the current replicas cancels a move
    /// under way (the joining replicas leave again).
    pub fn reassign(&self, target: &[i32]) -> PartitionState {
        let current = self.target_replicas();
        let original: Vec<i32> = if self.adding.is_empty() && self.removing.is_empty() {
            current.clone()
        } else {
            // The replicas before the move under way: those not being added.
            self.replicas
                .iter()
                .copied()
                .filter(|id| !self.adding.contains(id))
                .collect()
        };
        let mut next = self.clone();
        next.adding = target.iter().copied().filter(|id| !original.contains(id)).collect();
        next.removing = original.iter().copied().filter(|id| !target.contains(id)).collect();
        next.replicas = target.to_vec();
        next.replicas.extend(next.removing.iter().copied());
        next.isr.retain(|id| next.replicas.contains(id));
        next.partition_epoch += 1;
        next
    }

    /// A reassignment whose target replicas are all in sync completes: the leaving
    /// replicas go, and leadership moves to the first in-sync target replica when the
    /// leader is leaving. None while the move waits (or when there is none).
    pub fn advance_reassignment(&self) -> Option<PartitionState> {
        if self.adding.is_empty() && self.removing.is_empty() {
            return None;
        }
        let target = self.target_replicas();
        if !target.iter().all(|id| self.isr.contains(id)) {
            return None;
        }
        let mut next = self.clone();
        next.replicas = target.clone();
        next.isr.retain(|id| target.contains(id));
        next.adding.clear();
        next.removing.clear();
        if !target.contains(&self.leader) {
            next.leader = *next.isr.first()?;
            next.leader_epoch += 1;
        }
        next.partition_epoch += 1;
        Some(next)
    }
}

/// One topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    /// Kafka's topic id (KIP-516): stable for the topic's life, new if it is recreated.
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Topic-level overrides, by Kafka's config names; unset keys take broker defaults.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// Internal topics (`__consumer_offsets`) are flagged as such in Metadata answers.
    #[serde(default)]
    pub internal: bool,
    /// Each partition's placement and leadership, by partition index.
    #[serde(default)]
    pub assignments: Vec<PartitionState>,
}

impl TopicMetadata {
    /// A partition's placement and leadership.
    pub fn partition(&self, index: i32) -> Option<&PartitionState> {
        usize::try_from(index).ok().and_then(|i| self.assignments.get(i))
    }
}

/// A consistent view of the cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Kafka's 22-character cluster id, chosen once and kept across restarts.
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// The first producer id not yet handed out (KIP-98); ids are never reused.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Grows with every change, so a watcher can tell whether it has seen one.
    #[serde(default)]
    pub revision: u64,
    /// The live brokers, by node id: a broker is here while its registration lasts.
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// The broker running the controller duty, or [`NO_LEADER`] while none does.
    #[serde(default)]
    pub controller_id: i32,
    /// Dynamic broker configs (AlterConfigs on a BROKER resource), by Kafka's names:
    /// under [`CLUSTER_DEFAULT`] the cluster-wide defaults, under a node id as a
    /// string that broker's own. They win over the brokers' static configs.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Group configs (IncrementalAlterConfigs on a GROUP resource, KIP-848/932), by
    /// group id and Kafka's names.
    #[serde(default)]
    pub group_configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// Whose dynamic configs a change replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigEntity {
    /// A broker ([`CLUSTER_DEFAULT`] or a node id).
    Broker,
    /// A group, by its id.
    Group,
}

impl ConfigEntity {
    /// The entity kind's name in etcd keys.
    pub fn key_name(self) -> &'static str {
        match self {
            ConfigEntity::Broker => "broker_configs",
            ConfigEntity::Group => "group_configs",
        }
    }
}

impl ClusterMetadata {
    /// The dynamic configs of every entity of a kind.
    pub fn entity_configs(&self, kind: ConfigEntity) -> &BTreeMap<String, BTreeMap<String, String>> {
        match kind {
            ConfigEntity::Broker => &self.broker_configs,
            ConfigEntity::Group => &self.group_configs,
        }
    }

    pub fn entity_configs_mut(&mut self, kind: ConfigEntity) -> &mut BTreeMap<String, BTreeMap<String, String>> {
        match kind {
            ConfigEntity::Broker => &mut self.broker_configs,
            ConfigEntity::Group => &mut self.group_configs,
        }
    }
}

/// The entity of cluster-wide dynamic broker configs (Kafka's `<default>`, an empty
/// BROKER resource name).
pub const CLUSTER_DEFAULT: &str = "";

impl ClusterMetadata {
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name)
    }

    /// The topic with this id (the APIs that name topics by id: Fetch v13+, the share
    /// and KIP-848 APIs). A scan: callers that look up many ids build a map once.
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&TopicMetadata> {
        self.topics.values().find(|t| t.id == id)
    }

    /// A partition's placement and leadership.
    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionState> {
        self.topic(topic).and_then(|t| t.partition(index))
    }

    /// Whether broker `id` is live (registered) in this snapshot.
    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.contains_key(&id)
    }
}

/// ElectLeaders' two kinds (KIP-460).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Give leadership to the first replica, if it is live and in sync.
    Preferred,
    /// Give a leaderless partition a leader even from outside the in-sync set (records
    /// only the old in-sync replicas had are lost): Kafka's unclean election.
    Unclean,
}

impl PartitionState {
    /// The state after an election of `kind` among the `live` brokers, or why there is
    /// none (Kafka's ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE).
    pub fn elect(
        &self,
        kind: Election,
        live: &std::collections::BTreeSet<i32>,
    ) -> Result<PartitionState, ControllerError> {
        let leader_live = self.leader != NO_LEADER && live.contains(&self.leader);
        let mut next = self.clone();
        match kind {
            Election::Preferred => {
                let preferred = *self
                    .replicas
                    .first()
                    .ok_or(ControllerError::PreferredLeaderNotAvailable)?;
                if preferred == self.leader && leader_live {
                    return Err(ControllerError::ElectionNotNeeded);
                }
                if !live.contains(&preferred) || !self.isr.contains(&preferred) {
                    return Err(ControllerError::PreferredLeaderNotAvailable);
                }
                next.leader = preferred;
            }
            Election::Unclean => {
                if leader_live {
                    return Err(ControllerError::ElectionNotNeeded);
                }
                let in_sync = self.isr.iter().copied().find(|id| live.contains(id));
                let any = self.replicas.iter().copied().find(|id| live.contains(id));
                let chosen = in_sync.or(any).ok_or(ControllerError::EligibleLeadersNotAvailable)?;
                next.leader = chosen;
                if in_sync.is_some() {
                    next.isr.retain(|id| live.contains(id));
                } else {
                    next.isr = vec![chosen];
                }
            }
        }
        next.leader_epoch += 1;
        next.partition_epoch += 1;
        Ok(next)
    }
}

impl PartitionState {
    /// AlterPartitionReassignments' change: a move to `target` (distinct registered
    /// brokers), or with None the cancellation of the move under way.
    pub fn start_reassignment(
        &self,
        target: Option<&[i32]>,
        registered: &std::collections::BTreeSet<i32>,
    ) -> Result<PartitionState, ControllerError> {
        let moving = !(self.adding.is_empty() && self.removing.is_empty());
        let Some(target) = target else {
            if !moving {
                return Err(ControllerError::NoReassignmentInProgress);
            }
            let original: Vec<i32> = self
                .replicas
                .iter()
                .copied()
                .filter(|id| !self.adding.contains(id))
                .collect();
            return Ok(self.reassign(&original));
        };
        let distinct: std::collections::BTreeSet<i32> = target.iter().copied().collect();
        if target.is_empty() || distinct.len() != target.len() {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "replicas {target:?} must be distinct and not empty"
            )));
        }
        if let Some(unknown) = target.iter().find(|id| !registered.contains(id)) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "broker {unknown} is not registered"
            )));
        }
        Ok(self.reassign(target))
    }
}

/// An in-sync set change, and the partition state it was decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsr {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

impl AlterIsr {
    /// The partition state `self` makes of `current`, or why it is refused.
    pub fn apply(&self, current: &PartitionState) -> Result<PartitionState, ControllerError> {
        let stale = current.leader != self.leader
            || current.leader_epoch != self.leader_epoch
            || current.partition_epoch != self.partition_epoch;
        if stale {
            return Err(ControllerError::StalePartitionState {
                leader_epoch: self.leader_epoch,
                partition_epoch: self.partition_epoch,
            });
        }
        // The leader is always in its own in-sync set, and only replicas can be.
        if !self.isr.contains(&self.leader) || self.isr.iter().any(|id| !current.replicas.contains(id)) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "in-sync set {:?} must hold the leader and only replicas of {:?}",
                self.isr, current.replicas
            )));
        }
        let mut next = current.clone();
        next.isr = self.isr.clone();
        next.partition_epoch += 1;
        Ok(next)
    }
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    pub internal: bool,
    /// Replicas chosen by the client (CreateTopics' `assignments`), one list per
    /// partition; None lets the controller place them.
    pub replica_assignments: Option<Vec<Vec<i32>>>,
}

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("invalid number of partitions {0}")]
    InvalidPartitions(i32),
    #[error("invalid replication factor {0}: this cluster has {1} live broker(s)")]
    InvalidReplicationFactor(i16, usize),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("broker {0} is already registered by a live broker (another process has this node id)")]
    DuplicateBroker(i32),
    #[error("the controller store is unavailable: {0}")]
    Unavailable(String),
    #[error("the change raced with another one; try again")]
    Conflict,
    /// An in-sync set change from a leader whose view of the partition is out of date
    /// (Kafka's FENCED_LEADER_EPOCH / INVALID_UPDATE_VERSION for AlterPartition).
    #[error("partition state changed (leader epoch {leader_epoch}, partition epoch {partition_epoch} are stale)")]
    StalePartitionState { leader_epoch: i32, partition_epoch: i32 },
    #[error("the partition already has the leader that election would choose")]
    ElectionNotNeeded,
    #[error("the preferred replica is not live or not in sync")]
    PreferredLeaderNotAvailable,
    #[error("no live replica can lead the partition")]
    EligibleLeadersNotAvailable,
    #[error("no reassignment of this partition is in progress")]
    NoReassignmentInProgress,
    #[error("metadata storage failed: {0}")]
    Storage(#[from] std::io::Error),
    #[error("metadata file is unreadable: {0}")]
    Corrupt(String),
}

/// A change the controller made, and the metadata revision that first holds it.
#[derive(Debug, Clone)]
pub struct Change<T> {
    pub value: T,
    pub revision: u64,
}

/// A controller call in progress: it waits for the backend's storage, never blocks.
pub type ControllerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ControllerError>> + Send + 'a>>;

/// What every controller backend offers the broker.
pub trait Controller: Send + Sync {
    /// The current metadata now, and every change from here on (including those made
    /// by other brokers in a cluster).
    fn watch(&self) -> watch::Receiver<Arc<ClusterMetadata>>;
    /// The current metadata; off the hot path (shards keep their own snapshot).
    fn metadata(&self) -> Arc<ClusterMetadata> {
        self.watch().borrow().clone()
    }
    /// Whether this broker's registration is certainly still live: false from the
    /// moment its session may have ended unseen (etcd unreachable past the lease's
    /// time to live), so a broker cut off from the cluster stops acting as a leader
    /// before another one can have been elected in its place.
    fn session(&self) -> watch::Receiver<bool>;
    /// Creates a topic and persists it before resolving; watchers see it at the
    /// revision of the returned snapshot or later.
    fn create_topic(&self, topic: NewTopic) -> ControllerFuture<'_, Change<TopicMetadata>>;
    /// Deletes a topic and persists that before resolving.
    fn delete_topic(&self, name: &str) -> ControllerFuture<'_, Change<TopicMetadata>>;
    /// Grows a topic to `partitions` partitions (never shrinks, as in Kafka); the new
    /// partitions' replicas as the client chose them, or placed by the controller.
    fn create_partitions(
        &self,
        name: &str,
        partitions: i32,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> ControllerFuture<'_, Change<TopicMetadata>>;
    /// Shrinks a topic back to `partitions` partitions: the undo of a
    /// [`Controller::create_partitions`] whose storage could not be made, so that
    /// Metadata never lists a partition that does not exist. Never a client's request
    /// (Kafka never shrinks a topic).
    fn remove_partitions(&self, name: &str, partitions: i32) -> ControllerFuture<'_, Change<TopicMetadata>>;
    /// Replaces a topic's config overrides (AlterConfigs, IncrementalAlterConfigs);
    /// the caller has validated them.
    fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> ControllerFuture<'_, Change<TopicMetadata>>;
    /// Replaces the dynamic configs of a broker entity ([`CLUSTER_DEFAULT`] or a node
    /// id) or of a group; an empty set removes them.
    fn alter_entity_configs(
        &self,
        kind: ConfigEntity,
        entity: &str,
        configs: BTreeMap<String, String>,
    ) -> ControllerFuture<'_, Change<()>>;
    /// Reserves `count` producer ids for this broker, persisted before resolving, so
    /// no id is handed out twice even across crashes (Kafka's ProducerIdManager).
    fn allocate_producer_ids(&self, count: i64) -> ControllerFuture<'_, std::ops::Range<i64>>;
    /// Kafka's AlterPartition: the leader of `topic`/`partition` changes the in-sync set
    /// to `isr`. Refused with [`ControllerError::StalePartitionState`] unless the
    /// partition still has this leader epoch and partition epoch (so a deposed leader,
    /// or one that has not seen the last change, changes nothing). The new state has
    /// the partition epoch bumped.
    fn alter_isr(
        &self,
        topic: &str,
        partition: i32,
        expected: AlterIsr,
    ) -> ControllerFuture<'_, Change<PartitionState>>;
    /// ElectLeaders for one partition (KIP-460).
    fn elect_leader(&self, topic: &str, partition: i32, kind: Election)
        -> ControllerFuture<'_, Change<PartitionState>>;
    /// AlterPartitionReassignments for one partition (KIP-455): start moving it to
    /// `target` replicas, or with None cancel the move under way.
    fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> ControllerFuture<'_, Change<PartitionState>>;
    /// Leaves the cluster cleanly (a registration is dropped at once rather than when
    /// its session times out).
    fn shutdown(&self) -> ControllerFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}
