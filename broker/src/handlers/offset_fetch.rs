//! OffsetFetch: one group (v1–7) or several (v8+, KIP-709); the named partitions, or
//! every partition the group committed when none are named. `require_stable` needs no
//! wait while there are no transactions.

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
            let (fetched, error) = fetch(&shard, &group_id, topics).await;
            let topics = fetched
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p.partition)
                                .with_committed_offset(p.offset)
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
            let (fetched, error) = fetch(&shard, &group.group_id, topics).await;
            let topics = fetched
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(p.partition)
                                .with_committed_offset(p.offset)
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

async fn fetch(
    shard: &Rc<Shard>,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (Vec<FetchedOffsets>, i16) {
    let group = group_id.to_string();
    match ask_group(
        shard,
        group_id,
        move |s| async move { s.groups.committed(&group, topics) },
    )
    .await
    {
        Ok(fetched) => (fetched, 0),
        Err(e) => (Vec::new(), e.code()),
    }
}
