//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455): move a
//! partition's replicas to other brokers. The new replicas join at once as followers and
//! copy the leader; when all of them are in sync the controller duty completes the move
//! (the leaving replicas go, and leadership moves if the leader was leaving). A null
//! replica list cancels a move under way.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::admin::AdminError;
use crate::shard::Shard;

pub(crate) struct AlterPartitionReassignmentsHandler;

impl Handler for AlterPartitionReassignmentsHandler {
    type Request = AlterPartitionReassignmentsRequest;
    type Response = AlterPartitionReassignmentsResponse;
    const VERSIONS: (i16, i16) = (0, 0);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: AlterPartitionReassignmentsRequest,
    ) -> Option<AlterPartitionReassignmentsResponse> {
        let metadata = shard.metadata();
        let mut responses = Vec::new();
        for topic in &request.topics {
            let name = topic.name.as_str();
            let mut partitions = Vec::new();
            for p in &topic.partitions {
                let target: Option<Vec<i32>> = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
                let outcome = match metadata.topic(name) {
                    None => Err(AdminError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic {name}"),
                    )),
                    Some(t) if t.partition(p.partition_index).is_none() => Err(AdminError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no partition {name}-{}", p.partition_index),
                    )),
                    Some(_) => shard
                        .controller()
                        .reassign(name, p.partition_index, target)
                        .await
                        .map(|_| ())
                        .map_err(AdminError::from),
                };
                let (code, message) = match outcome {
                    Ok(()) => (0, None),
                    Err(e) => (e.code.code(), Some(StrBytes::from_string(e.message))),
                };
                partitions.push(
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(message),
                );
            }
            responses.push(
                ReassignableTopicResponse::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions),
            );
        }
        Some(AlterPartitionReassignmentsResponse::default().with_responses(responses))
    }
}

pub(crate) struct ListPartitionReassignmentsHandler;

impl Handler for ListPartitionReassignmentsHandler {
    type Request = ListPartitionReassignmentsRequest;
    type Response = ListPartitionReassignmentsResponse;
    const VERSIONS: (i16, i16) = (0, 0);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: ListPartitionReassignmentsRequest,
    ) -> Option<ListPartitionReassignmentsResponse> {
        let metadata = shard.metadata();
        let wanted: Vec<(String, Option<Vec<i32>>)> = match &request.topics {
            Some(topics) => topics
                .iter()
                .map(|t| (t.name.to_string(), Some(t.partition_indexes.clone())))
                .collect(),
            None => metadata.topics.keys().map(|n| (n.clone(), None)).collect(),
        };
        let ids = |v: &[i32]| v.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
        let mut topics = Vec::new();
        for (name, indexes) in wanted {
            let Some(topic) = metadata.topic(&name) else { continue };
            let partitions: Vec<OngoingPartitionReassignment> = topic
                .assignments
                .iter()
                .enumerate()
                .filter(|(i, _)| indexes.as_ref().is_none_or(|w| w.contains(&(*i as i32))))
                .filter(|(_, s)| !(s.adding.is_empty() && s.removing.is_empty()))
                .map(|(i, s)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i as i32)
                        .with_replicas(ids(&s.replicas))
                        .with_adding_replicas(ids(&s.adding))
                        .with_removing_replicas(ids(&s.removing))
                })
                .collect();
            if !partitions.is_empty() {
                topics.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(partitions),
                );
            }
        }
        Some(ListPartitionReassignmentsResponse::default().with_topics(topics))
    }
}
