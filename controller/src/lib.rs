//! Cluster metadata: the topics, their partitions, topic ids and per-topic configs, and
//! the cluster id. This crate knows cluster state, never sockets (DESIGN.md,
//! "Controller").
//!
//! Readers take an immutable [`ClusterMetadata`] snapshot (an `Arc`), so a metadata
//! request never waits on a writer and no shard holds a lock while it works. Writers go
//! through a [`Controller`]; the `local` backend persists to one file in the data
//! directory, written atomically (write, fsync, rename, fsync the directory). The etcd
//! backend of cluster mode implements the same trait with compare-and-swap.

pub mod local;
pub mod names;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;
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

/// What every controller backend offers the broker.
pub trait Controller: Send + Sync {
    /// The current metadata; cheap (an `Arc` clone).
    fn metadata(&self) -> Arc<ClusterMetadata>;
    /// Creates a topic and persists it before returning.
    fn create_topic(&self, topic: NewTopic) -> Result<TopicMetadata, ControllerError>;
    /// Deletes a topic and persists that before returning.
    fn delete_topic(&self, name: &str) -> Result<TopicMetadata, ControllerError>;
    /// Grows a topic to `partitions` partitions (never shrinks, as in Kafka).
    fn create_partitions(&self, name: &str, partitions: i32) -> Result<TopicMetadata, ControllerError>;
    /// Reserves `count` producer ids for this broker, persisted before returning, so
    /// no id is handed out twice even across crashes (Kafka's ProducerIdManager).
    fn allocate_producer_ids(&self, count: i64) -> Result<std::ops::Range<i64>, ControllerError>;
}
