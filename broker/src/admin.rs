//! Topic creation and deletion across the controller and every shard: the controller
//! records the change, then each shard opens (or deletes) the logs it owns.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use sluice_controller::{ControllerError, NewTopic, TopicMetadata};
use tokio::sync::oneshot;

use crate::shard::{Shard, ShardCall};
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
) -> Result<TopicMetadata, AdminError> {
    validate_configs(&configs)?;
    let topic = shard.controller().create_topic(NewTopic {
        name: name.to_string(),
        partitions,
        replication_factor,
        configs,
        internal: false,
    })?;
    broadcast(shard, |reply| ShardCall::OpenTopic {
        topic: topic.clone(),
        reply,
    })
    .await?;
    tracing::info!(topic = name, partitions, "created topic");
    Ok(topic)
}

/// Adds partitions to a topic; the shards that own the new ones open their logs.
pub async fn create_partitions(shard: &Rc<Shard>, name: &str, partitions: i32) -> Result<TopicMetadata, AdminError> {
    let topic = shard.controller().create_partitions(name, partitions)?;
    broadcast(shard, |reply| ShardCall::OpenTopic {
        topic: topic.clone(),
        reply,
    })
    .await?;
    tracing::info!(topic = name, partitions, "added partitions");
    Ok(topic)
}

pub async fn delete_topic(shard: &Rc<Shard>, name: &str) -> Result<TopicMetadata, AdminError> {
    let topic = shard.controller().delete_topic(name)?;
    broadcast(shard, |reply| ShardCall::DeleteTopic {
        topic: topic.clone(),
        reply,
    })
    .await?;
    tracing::info!(topic = name, "deleted topic");
    Ok(topic)
}

async fn broadcast(
    shard: &Rc<Shard>,
    make: impl Fn(oneshot::Sender<Result<(), String>>) -> ShardCall,
) -> Result<(), AdminError> {
    let mut answers = Vec::new();
    for target in 0..shard.cluster.peers.len() {
        let (reply, answer) = oneshot::channel();
        let call = make(reply);
        let this = shard.clone();
        tokio::task::spawn_local(async move { this.route(target, call).await });
        answers.push(answer);
    }
    for answer in answers {
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(AdminError::new(ResponseError::KafkaStorageError, message)),
            Err(_) => {
                return Err(AdminError::new(
                    ResponseError::BrokerNotAvailable,
                    "broker is shutting down",
                ))
            }
        }
    }
    Ok(())
}
