//! OffsetFetch: one group (v1–7) or several (v8+, KIP-709); the named partitions, or
//! every partition the group committed when none are named. With `require_stable`
//! (KIP-447) a partition whose offset a transaction has committed but not yet decided
//! is UNSTABLE_OFFSET_COMMIT (retriable), so a consumer never starts from an offset
//! that an abort would take back.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{ask_group, Handler, RequestContext};
use crate::group::api::FetchedOffsets;
use crate::shard::Shard;

pub(crate) struct OffsetFetchHandler;

impl Handler for OffsetFetchHandler {
    type Request = OffsetFetchRequest;
    type Response = OffsetFetchResponse;
    // v10 names topics by id only; served once topic ids are routed.
    const VERSIONS: (i16, i16) = (1, 9);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: OffsetFetchRequest) -> Option<OffsetFetchResponse> {
        if ctx.version() < 8 {
            let topics = request.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let group_id = request.group_id.to_string();
            let (fetched, error) = fetch(&shard, &group_id, topics, request.require_stable).await;
            let topics = fetched
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_error_code(unstable_code(&p))
                                .with_partition_index(p.partition)
                                .with_committed_offset(if p.offset == UNSTABLE { -1 } else { p.offset })
                                .with_committed_leader_epoch(p.leader_epoch)
                                .with_metadata(p.metadata.map(StrBytes::from_string))
                        })
                        .collect();
                    OffsetFetchResponseTopic::default()
                        .with_name(name(t.topic))
                        .with_partitions(partitions)
                })
                .collect();
            return Some(
                OffsetFetchResponse::default()
                    .with_topics(topics)
                    .with_error_code(error),
            );
        }
        let mut groups = Vec::new();
        for group in request.groups {
            let topics = group.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let (fetched, error) = fetch(&shard, &group.group_id, topics, request.require_stable).await;
            let topics = fetched
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartitions::default()
                                .with_error_code(unstable_code(&p))
                                .with_partition_index(p.partition)
                                .with_committed_offset(if p.offset == UNSTABLE { -1 } else { p.offset })
                                .with_committed_leader_epoch(p.leader_epoch)
                                .with_metadata(p.metadata.map(StrBytes::from_string))
                        })
                        .collect();
                    OffsetFetchResponseTopics::default()
                        .with_name(name(t.topic))
                        .with_partitions(partitions)
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(group.group_id.0.clone()))
                    .with_topics(topics)
                    .with_error_code(error),
            );
        }
        Some(OffsetFetchResponse::default().with_groups(groups))
    }
}

fn name(topic: String) -> TopicName {
    TopicName(StrBytes::from_string(topic))
}

/// An unstable offset is answered as offset -2 by [`fetch`]; on the wire it is -1 with
/// UNSTABLE_OFFSET_COMMIT.
const UNSTABLE: i64 = -2;

fn unstable_code(p: &crate::group::api::PartitionOffset) -> i16 {
    if p.offset == UNSTABLE {
        kafka_protocol::ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}

async fn fetch(
    shard: &Rc<Shard>,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> (Vec<FetchedOffsets>, i16) {
    let group = group_id.to_string();
    let answer = ask_group(shard, group_id, move |s| async move {
        let mut fetched = s.groups.committed(&group, topics);
        if require_stable {
            for t in &mut fetched {
                for p in &mut t.partitions {
                    if s.groups.has_pending_txn_offset(&group, &t.topic, p.partition) {
                        p.offset = UNSTABLE;
                    }
                }
            }
        }
        fetched
    })
    .await;
    let answer = answer.map(|mut fetched| {
        for t in &mut fetched {
            for p in &mut t.partitions {
                if p.offset == UNSTABLE {
                    p.metadata = None;
                }
            }
        }
        fetched
    });
    match answer {
        Ok(fetched) => (fetched, 0),
        Err(e) => (Vec::new(), e.code()),
    }
}
