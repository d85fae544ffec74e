//! Metadata: the live brokers, topics and each partition's leader, epoch, replicas and
//! in-sync replicas, from this shard's snapshot of the controller's metadata; creates
//! unknown topics when the client allows it and the broker is configured to
//! (`auto.create.topics.enable`).

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_controller::{ClusterMetadata, TopicMetadata, NO_LEADER};

use super::{Handler, RequestContext};
use crate::admin;
use crate::shard::Shard;

pub(crate) struct MetadataHandler;

impl Handler for MetadataHandler {
    type Request = MetadataRequest;
    type Response = MetadataResponse;
    const VERSIONS: (i16, i16) = (0, 13);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: MetadataRequest) -> Option<MetadataResponse> {
        let mut topics = Vec::new();
        match request.topics {
            None => {
                let metadata = shard.metadata();
                for topic in metadata.topics.values() {
                    topics.push(describe(topic, &metadata));
                }
            }
            Some(requested) => {
                // v0 requests could not opt out of auto-creation; the field defaults to true.
                let may_create = request.allow_auto_topic_creation && shard.config().auto_create_topics;
                for wanted in requested {
                    topics.push(match wanted.name {
                        Some(name) => lookup_by_name(&shard, name.as_str(), may_create).await,
                        None => lookup_by_id(&shard, wanted.topic_id),
                    });
                }
            }
        }
        // The snapshot after any auto-creation, so the new topic's leaders are listed.
        let metadata = shard.metadata();
        let brokers = metadata
            .brokers
            .values()
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(b.port as i32)
                    .with_rack(b.rack.clone().map(StrBytes::from_string))
            })
            .collect();
        Some(
            MetadataResponse::default()
                .with_brokers(brokers)
                .with_cluster_id(Some(StrBytes::from_string(metadata.cluster_id.clone())))
                .with_controller_id(BrokerId(super::controller_for_clients(&shard, &metadata)))
                .with_topics(topics),
        )
    }
}

async fn lookup_by_name(shard: &Rc<Shard>, name: &str, may_create: bool) -> MetadataResponseTopic {
    let metadata = shard.metadata();
    if let Some(topic) = metadata.topic(name) {
        return describe(topic, &metadata);
    }
    if let Err(why) = sluice_controller::validate_topic_name(name) {
        tracing::debug!("metadata for invalid topic name: {why}");
        return missing(Some(name), ResponseError::InvalidTopicException);
    }
    if !may_create {
        return missing(Some(name), ResponseError::UnknownTopicOrPartition);
    }
    let partitions = shard.config().num_partitions;
    let replication_factor = shard.config().default_replication_factor;
    match admin::create_topic(shard, name, partitions, replication_factor, Default::default(), None).await {
        Ok(topic) => describe(&topic, &shard.metadata()),
        Err(admin::AdminError {
            code: ResponseError::TopicAlreadyExists,
            ..
        }) => {
            let metadata = shard.metadata();
            match metadata.topic(name) {
                Some(topic) => describe(topic, &metadata),
                None => missing(Some(name), ResponseError::LeaderNotAvailable),
            }
        }
        Err(e) => {
            tracing::warn!(topic = name, "auto-creation failed: {}", e.message);
            missing(Some(name), e.code)
        }
    }
}

fn lookup_by_id(shard: &Rc<Shard>, id: uuid::Uuid) -> MetadataResponseTopic {
    let metadata = shard.metadata();
    match metadata.topic_by_id(id) {
        Some(topic) => describe(topic, &metadata),
        None => missing(None, ResponseError::UnknownTopicId).with_topic_id(id),
    }
}

fn missing(name: Option<&str>, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
}

/// A topic's partitions as Kafka lists them: LEADER_NOT_AVAILABLE for one without a
/// leader, and the replicas on brokers that are not live as offline.
fn describe(topic: &TopicMetadata, metadata: &ClusterMetadata) -> MetadataResponseTopic {
    let ids = |ids: &[i32]| ids.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
    let partitions = (0..topic.partitions)
        .map(|p| {
            let Some(state) = topic.partition(p).filter(|s| s.leader != NO_LEADER) else {
                let replicas = topic.partition(p).map(|s| ids(&s.replicas)).unwrap_or_default();
                let isr = topic.partition(p).map(|s| ids(&s.isr)).unwrap_or_default();
                return MetadataResponsePartition::default()
                    .with_isr_nodes(isr)
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(NO_LEADER))
                    .with_leader_epoch(topic.partition(p).map_or(-1, |s| s.leader_epoch))
                    .with_offline_replicas(replicas.iter().copied().filter(|id| !metadata.is_live(id.0)).collect())
                    .with_replica_nodes(replicas);
            };
            let offline: Vec<i32> = state
                .replicas
                .iter()
                .copied()
                .filter(|id| !metadata.is_live(*id))
                .collect();
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(state.leader))
                .with_leader_epoch(state.leader_epoch)
                .with_replica_nodes(ids(&state.replicas))
                .with_isr_nodes(ids(&state.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.internal)
        .with_partitions(partitions)
}
