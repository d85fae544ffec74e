//! OffsetCommit: members commit with their generation; a group without members accepts
//! "simple" commits with generation -1. Answered once the offsets are durable in
//! `__consumer_offsets`.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{ask_group, error_code, Handler, RequestContext};
use crate::group::api::{OffsetCommit, PartitionOffset};
use crate::shard::Shard;

pub(crate) struct OffsetCommitHandler;

impl Handler for OffsetCommitHandler {
    type Request = OffsetCommitRequest;
    type Response = OffsetCommitResponse;
    // v10 names topics by id only (KIP-848 era); served once topic ids are routed.
    const VERSIONS: (i16, i16) = (2, 9);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: OffsetCommitRequest) -> Option<OffsetCommitResponse> {
        let group_id = request.group_id.to_string();
        let commit = OffsetCommit {
            generation: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            topics: request
                .topics
                .iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| PartitionOffset {
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        })
                        .collect();
                    (t.name.to_string(), parts)
                })
                .collect(),
        };
        let key = group_id.clone();
        let errors = ask_group(&shard, &key, move |s| async move {
            s.groups.commit(&*s, &group_id, commit).await
        })
        .await;
        let topics = request
            .topics
            .iter()
            .enumerate()
            .map(|(t, topic)| {
                let partitions = topic
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let code = match &errors {
                            Ok(e) => error_code(e.get(t).and_then(|v| v.get(i)).copied().flatten()),
                            Err(e) => e.code(),
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        Some(OffsetCommitResponse::default().with_topics(topics))
    }
}
