//! DescribeShareGroupOffsets (KIP-932): each share-partition's start offset (SPSO), as
//! `kafka-share-groups.sh --describe` shows it. Sent to the group's coordinator; the
//! start offsets come from the share coordinators of each partition. Without topics,
//! the topics the group's members subscribe to; a partition the group never read
//! answers start offset -1.

use std::rc::Rc;

use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup as Group, DescribeShareGroupOffsetsResponsePartition as Partition,
    DescribeShareGroupOffsetsResponseTopic as Topic,
};
use kafka_protocol::messages::{DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ask_group, Handler, RequestContext};
use crate::shard::Shard;
use crate::share::persister;
use crate::share::state::ShareKey;

pub(crate) struct DescribeShareGroupOffsetsHandler;

impl Handler for DescribeShareGroupOffsetsHandler {
    type Request = DescribeShareGroupOffsetsRequest;
    type Response = DescribeShareGroupOffsetsResponse;
    const VERSIONS: (i16, i16) = (0, 0);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: DescribeShareGroupOffsetsRequest,
    ) -> Option<DescribeShareGroupOffsetsResponse> {
        let mut groups = Vec::new();
        for wanted in request.groups {
            let group_id = wanted.group_id.to_string();
            let key = group_id.clone();
            let id = group_id.clone();
            let found = ask_group(&shard, &key, move |s| async move { s.share_group(&id) }).await;
            let group = match found {
                Ok(g) => g,
                Err(e) => {
                    groups.push(
                        Group::default()
                            .with_group_id(wanted.group_id)
                            .with_error_code(e.code()),
                    );
                    continue;
                }
            };
            let metadata = shard.metadata();
            let asked: Vec<(String, Vec<i32>)> = match wanted.topics {
                Some(topics) => topics
                    .into_iter()
                    .map(|t| (t.topic_name.to_string(), t.partitions))
                    .collect(),
                None => {
                    let mut names: Vec<String> = group
                        .iter()
                        .flat_map(|g| g.members.values().flat_map(|m| m.subscribed.iter().cloned()))
                        .collect();
                    names.sort();
                    names.dedup();
                    names
                        .into_iter()
                        .filter_map(|n| metadata.topic(&n).map(|t| (n, (0..t.partitions).collect())))
                        .collect()
                }
            };
            let mut topics = Vec::new();
            for (name, partitions) in asked {
                let Some(topic) = metadata.topic(&name) else {
                    topics.push(
                        Topic::default()
                            .with_topic_name(TopicName(StrBytes::from_string(name)))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|p| {
                                        Partition::default()
                                            .with_partition_index(p)
                                            .with_start_offset(-1)
                                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                                    })
                                    .collect(),
                            ),
                    );
                    continue;
                };
                let mut out = Vec::new();
                for p in partitions {
                    let key = ShareKey {
                        group: group_id.clone(),
                        topic_id: topic.id,
                        partition: p,
                    };
                    let answer = Partition::default().with_partition_index(p).with_leader_epoch(-1);
                    out.push(match persister::read(&shard, key).await {
                        Ok(Some(stored)) => answer.with_start_offset(stored.snapshot.start),
                        Ok(None) => answer.with_start_offset(-1),
                        Err(e) => answer.with_start_offset(-1).with_error_code(e.code()),
                    });
                }
                topics.push(
                    Topic::default()
                        .with_topic_name(TopicName(StrBytes::from_string(name)))
                        .with_topic_id(topic.id)
                        .with_partitions(out),
                );
            }
            groups.push(Group::default().with_group_id(wanted.group_id).with_topics(topics));
        }
        Some(DescribeShareGroupOffsetsResponse::default().with_groups(groups))
    }
}
