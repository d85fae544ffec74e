//! Cluster metadata: the topics, their partitions, topic ids and per-topic configs, and
//! the cluster id. This crate knows cluster state, never sockets (DESIGN.md,
//! "Controller").
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
//! (write, fsync, rename, fsync the directory) on tokio's blocking pool. The etcd
//! backend of cluster mode implements the same trait with compare-and-swap and feeds
//! the same watch from etcd's.

pub mod local;
pub mod names;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use uuid::Uuid;

pub use local::LocalController;
pub use names::validate_topic_name;

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
}

impl ClusterMetadata {
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name)
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
    #[error("invalid replication factor {0}: this cluster has {1} broker(s)")]
    InvalidReplicationFactor(i16, usize),
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
    /// Creates a topic and persists it before resolving; watchers see it at the
    /// revision of the returned snapshot or later.
    fn create_topic(&self, topic: NewTopic) -> ControllerFuture<'_, Change<TopicMetadata>>;
    /// Deletes a topic and persists that before resolving.
    fn delete_topic(&self, name: &str) -> ControllerFuture<'_, Change<TopicMetadata>>;
    /// Grows a topic to `partitions` partitions (never shrinks, as in Kafka).
    fn create_partitions(&self, name: &str, partitions: i32) -> ControllerFuture<'_, Change<TopicMetadata>>;
    /// Reserves `count` producer ids for this broker, persisted before resolving, so
    /// no id is handed out twice even across crashes (Kafka's ProducerIdManager).
    fn allocate_producer_ids(&self, count: i64) -> ControllerFuture<'_, std::ops::Range<i64>>;
}
