//! Topic creation and deletion: the controller records the change, every shard sees it
//! through the controller's watch and opens (or deletes) the logs it owns, and the
//! answer waits until every shard has.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use sluice_controller::{ControllerError, NewTopic, TopicMetadata};

use crate::shard::Shard;
use crate::topic_config;

#[derive(Debug)]
pub struct AdminError {
    pub code: ResponseError,
    pub message: String,
}

impl AdminError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> Self {
        AdminError {
            code,
            message: message.into(),
        }
    }
}

impl From<ControllerError> for AdminError {
    fn from(e: ControllerError) -> Self {
        let code = match &e {
            ControllerError::TopicExists(_) => ResponseError::TopicAlreadyExists,
            ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            ControllerError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
            ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            ControllerError::InvalidReplicationFactor(..) => ResponseError::InvalidReplicationFactor,
            ControllerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            ControllerError::Unavailable(_) | ControllerError::Conflict => ResponseError::RequestTimedOut,
            ControllerError::DuplicateBroker(_) => ResponseError::InconsistentClusterId,
            ControllerError::StalePartitionState { .. } => ResponseError::FencedLeaderEpoch,
            ControllerError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
            ControllerError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
            ControllerError::EligibleLeadersNotAvailable => ResponseError::EligibleLeadersNotAvailable,
            ControllerError::NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
            ControllerError::Storage(_) | ControllerError::Corrupt(_) => ResponseError::KafkaStorageError,
        };
        AdminError {
            code,
            message: e.to_string(),
        }
    }
}

/// Checks a topic's requested configs against what Sluice knows.
pub fn validate_configs(configs: &BTreeMap<String, String>) -> Result<(), AdminError> {
    for (key, value) in configs {
        topic_config::validate(key, value).map_err(|m| AdminError::new(ResponseError::InvalidConfig, m))?;
    }
    Ok(())
}

pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
    replica_assignments: Option<Vec<Vec<i32>>>,
) -> Result<TopicMetadata, AdminError> {
    let topic = NewTopic {
        name: name.to_string(),
        partitions,
        replication_factor,
        configs,
        internal: false,
        replica_assignments,
    };
    create(shard, topic).await
}

/// Creates a topic (a client's, or an internal one such as `__consumer_offsets`) and
/// answers once every shard has opened its partitions.
pub async fn create(shard: &Rc<Shard>, topic: NewTopic) -> Result<TopicMetadata, AdminError> {
    validate_configs(&topic.configs)?;
    let (name, partitions, internal) = (topic.name.clone(), topic.partitions, topic.internal);
    let change = shard.controller().create_topic(topic).await?;
    if let Err(e) = applied_everywhere(shard, change.revision).await {
        undo_if_storage_failed(shard, &name, &e, "the topic", shard.controller().delete_topic(&name)).await;
        return Err(e);
    }
    tracing::info!(topic = name, partitions, internal, "created topic");
    Ok(change.value)
}

/// After a change whose storage a shard could not create (out of descriptors or
/// disk), writes `undo` (removing what the change added), so that Metadata never
/// lists a partition that does not exist and the shards drop what they made.
async fn undo_if_storage_failed(
    shard: &Rc<Shard>,
    topic: &str,
    failure: &AdminError,
    what: &str,
    undo: sluice_controller::ControllerFuture<'_, sluice_controller::Change<TopicMetadata>>,
) {
    if failure.code != ResponseError::KafkaStorageError {
        return;
    }
    tracing::warn!(
        topic,
        "creating the storage of {what} failed, removing it again: {}",
        failure.message
    );
    match undo.await {
        Ok(undone) => {
            let _ = applied_everywhere(shard, undone.revision).await;
        }
        Err(e) => tracing::error!(topic, "cannot remove {what} again: {e}"),
    }
}

/// Adds partitions to a topic; the shards that own the new ones open their logs.
pub async fn create_partitions(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    assignments: Option<Vec<Vec<i32>>>,
) -> Result<TopicMetadata, AdminError> {
    // What the undo goes back to, should the new partitions' storage fail. (Another
    // CreatePartitions of the same topic racing this one is not told apart.)
    let before = shard.controller().metadata().topic(name).map_or(0, |t| t.partitions);
    let change = shard
        .controller()
        .create_partitions(name, partitions, assignments)
        .await?;
    if let Err(e) = applied_everywhere(shard, change.revision).await {
        let undo = shard.controller().remove_partitions(name, before);
        undo_if_storage_failed(shard, name, &e, "the new partitions", undo).await;
        return Err(e);
    }
    tracing::info!(topic = name, partitions, "added partitions");
    Ok(change.value)
}

pub async fn delete_topic(shard: &Rc<Shard>, name: &str) -> Result<TopicMetadata, AdminError> {
    let change = shard.controller().delete_topic(name).await?;
    applied_everywhere(shard, change.revision).await?;
    tracing::info!(topic = name, "deleted topic");
    Ok(change.value)
}

/// Waits until every shard has applied metadata `revision` (opened or removed its
/// partitions), so a client that was told a topic exists can use it at once through
/// any shard; the error of a shard that could not apply it, once every shard has tried
/// (so that an undo written next finds every shard done with the failed revision).
pub(crate) async fn applied_everywhere(shard: &Shard, revision: u64) -> Result<(), AdminError> {
    let mut failed = None;
    for applied in &shard.cluster.applied {
        let mut watch = applied.subscribe();
        let mut shutdown = shard.cluster.shutdown.clone();
        let reached = tokio::select! {
            reached = watch.wait_for(|a| a.revision >= revision) => reached.map(|a| a.clone()),
            _ = shutdown.changed() => {
                return Err(AdminError::new(ResponseError::BrokerNotAvailable, "broker is shutting down"))
            }
        };
        match reached {
            Ok(a) if a.revision == revision && a.failure.is_some() => {
                let why = a.failure.unwrap_or_default();
                failed.get_or_insert(AdminError::new(ResponseError::KafkaStorageError, why));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(AdminError::new(
                    ResponseError::BrokerNotAvailable,
                    "broker is shutting down",
                ))
            }
        }
    }
    failed.map_or(Ok(()), Err)
}
