//! Metadata: brokers, topics and partition leaders; creates unknown topics when the
//! client allows it and the broker is configured to (`auto.create.topics.enable`).

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_controller::TopicMetadata;

use super::{Handler, RequestContext};
use crate::admin;
use crate::shard::Shard;

pub(crate) struct MetadataHandler;

impl Handler for MetadataHandler {
    type Request = MetadataRequest;
    type Response = MetadataResponse;
    const VERSIONS: (i16, i16) = (0, 13);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: MetadataRequest) -> Option<MetadataResponse> {
        let node_id = shard.config().node_id;
        let (host, port) = shard.cluster.advertised.clone();
        let mut topics = Vec::new();
        match request.topics {
            None => {
                for topic in shard.metadata().topics.values() {
                    topics.push(describe(topic, node_id));
                }
            }
            Some(requested) => {
                // v0 requests could not opt out of auto-creation; the field defaults to true.
                let may_create = request.allow_auto_topic_creation && shard.config().auto_create_topics;
                for wanted in requested {
                    topics.push(match wanted.name {
                        Some(name) => lookup_by_name(&shard, name.as_str(), may_create, node_id).await,
                        None => lookup_by_id(&shard, wanted.topic_id, node_id),
                    });
                }
            }
        }
        let broker = MetadataResponseBroker::default()
            .with_node_id(BrokerId(node_id))
            .with_host(StrBytes::from_string(host))
            .with_port(port as i32);
        Some(
            MetadataResponse::default()
                .with_brokers(vec![broker])
                .with_cluster_id(Some(StrBytes::from_string(shard.metadata().cluster_id.clone())))
                .with_controller_id(BrokerId(node_id))
                .with_topics(topics),
        )
    }
}

async fn lookup_by_name(shard: &Rc<Shard>, name: &str, may_create: bool, node_id: i32) -> MetadataResponseTopic {
    if let Some(topic) = shard.metadata().topic(name) {
        return describe(topic, node_id);
    }
    if let Err(why) = sluice_controller::validate_topic_name(name) {
        tracing::debug!("metadata for invalid topic name: {why}");
        return missing(Some(name), ResponseError::InvalidTopicException);
    }
    if !may_create {
        return missing(Some(name), ResponseError::UnknownTopicOrPartition);
    }
    let partitions = shard.config().num_partitions;
    match admin::create_topic(shard, name, partitions, 1, Default::default()).await {
        Ok(topic) => describe(&topic, node_id),
        Err(admin::AdminError {
            code: ResponseError::TopicAlreadyExists,
            ..
        }) => match shard.metadata().topic(name) {
            Some(topic) => describe(topic, node_id),
            None => missing(Some(name), ResponseError::LeaderNotAvailable),
        },
        Err(e) => {
            tracing::warn!(topic = name, "auto-creation failed: {}", e.message);
            missing(Some(name), e.code)
        }
    }
}

fn lookup_by_id(shard: &Rc<Shard>, id: uuid::Uuid, node_id: i32) -> MetadataResponseTopic {
    let metadata = shard.metadata();
    match metadata.topics.values().find(|t| t.id == id) {
        Some(topic) => describe(topic, node_id),
        None => missing(None, ResponseError::UnknownTopicId).with_topic_id(id),
    }
}

fn missing(name: Option<&str>, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(StrBytes::from_string(n.to_string()))))
}

fn describe(topic: &TopicMetadata, node_id: i32) -> MetadataResponseTopic {
    let partitions = (0..topic.partitions)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(node_id)])
                .with_isr_nodes(vec![BrokerId(node_id)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.internal)
        .with_partitions(partitions)
}
