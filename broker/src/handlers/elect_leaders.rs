//! ElectLeaders (KIP-183, KIP-460): move a partition's leadership to its preferred
//! replica, or give a leaderless partition a leader from outside the in-sync set
//! (unclean: records only the lost replicas had are gone). Each partition's election is
//! a compare-and-swap of its state in the controller; the answer per partition is
//! Kafka's: none, ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE,
//! ELIGIBLE_LEADERS_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PARTITION.

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_controller::Election;

use super::{Handler, RequestContext};
use crate::admin::AdminError;
use crate::shard::Shard;

pub(crate) struct ElectLeadersHandler;

impl Handler for ElectLeadersHandler {
    type Request = ElectLeadersRequest;
    type Response = ElectLeadersResponse;
    // v1 added election_type and the top-level error, v2 is flexible.
    const VERSIONS: (i16, i16) = (0, 2);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: ElectLeadersRequest,
    ) -> Option<ElectLeadersResponse> {
        let kind = match request.election_type {
            0 => Election::Preferred,
            1 if ctx.version() >= 1 => Election::Unclean,
            _ => {
                return Some(ElectLeadersResponse::default().with_error_code(ResponseError::InvalidRequest.code()));
            }
        };
        let metadata = shard.metadata();
        // Null names every partition of every topic (Kafka's "all partitions").
        let wanted: Vec<(String, Vec<i32>)> = match &request.topic_partitions {
            Some(topics) => topics
                .iter()
                .map(|t| (t.topic.to_string(), t.partitions.clone()))
                .collect(),
            None => metadata
                .topics
                .values()
                .map(|t| (t.name.clone(), (0..t.partitions).collect()))
                .collect(),
        };
        let mut results = Vec::new();
        for (topic, partitions) in wanted {
            let mut answers = Vec::new();
            for partition in partitions {
                let known = metadata.partition(&topic, partition).is_some();
                let outcome = if known {
                    shard
                        .controller()
                        .elect_leader(&topic, partition, kind)
                        .await
                        .map(|_| ())
                        .map_err(AdminError::from)
                } else {
                    Err(AdminError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no partition {topic}-{partition}"),
                    ))
                };
                let (code, message) = match outcome {
                    Ok(()) => (0, None),
                    Err(e) => (e.code.code(), Some(StrBytes::from_string(e.message))),
                };
                answers.push(
                    PartitionResult::default()
                        .with_partition_id(partition)
                        .with_error_code(code)
                        .with_error_message(message),
                );
            }
            results.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(topic)))
                    .with_partition_result(answers),
            );
        }
        Some(ElectLeadersResponse::default().with_replica_election_results(results))
    }
}
