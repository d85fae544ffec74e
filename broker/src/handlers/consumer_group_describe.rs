//! ConsumerGroupDescribe (KIP-848): each consumer group's state, epochs, assignor and
//! members with their subscriptions, assignments and target assignments. A group that
//! is not a KIP-848 group gets GROUP_ID_NOT_FOUND, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ask_group, Handler, RequestContext};
use crate::group::consumer;
use crate::shard::Shard;

pub(crate) struct ConsumerGroupDescribeHandler;

impl Handler for ConsumerGroupDescribeHandler {
    type Request = ConsumerGroupDescribeRequest;
    type Response = ConsumerGroupDescribeResponse;
    const VERSIONS: (i16, i16) = (0, 1);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: ConsumerGroupDescribeRequest,
    ) -> Option<ConsumerGroupDescribeResponse> {
        let str = |s: &str| StrBytes::from_string(s.to_string());
        let mut groups = Vec::with_capacity(request.group_ids.len());
        for id in request.group_ids {
            let group_id = id.to_string();
            let key = group_id.clone();
            let found = ask_group(&shard, &key, move |s| async move { s.groups.consumer_group(&group_id) }).await;
            let described = DescribedGroup::default().with_group_id(id.clone());
            let group = match found {
                Ok(Some(g)) => g,
                Ok(None) => {
                    groups.push(
                        described
                            .with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(str("not a consumer group")))
                            .with_group_state(str("Dead")),
                    );
                    continue;
                }
                Err(e) => {
                    groups.push(described.with_error_code(e.code()));
                    continue;
                }
            };
            let metadata = shard.metadata();
            let wire = |a: &consumer::Assignment| {
                Assignment::default().with_topic_partitions(
                    a.iter()
                        .filter_map(|(topic, partitions)| {
                            let t = metadata.topic(topic)?;
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(t.id)
                                    .with_topic_name(TopicName(str(topic)))
                                    .with_partitions(partitions.iter().copied().collect()),
                            )
                        })
                        .collect(),
                )
            };
            let members = group
                .members
                .values()
                .map(|m| {
                    Member::default()
                        .with_member_id(str(&m.member_id))
                        .with_instance_id(m.instance_id.as_deref().map(str))
                        .with_rack_id(m.rack_id.as_deref().map(str))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(str(&m.client_id))
                        .with_client_host(str(&m.client_host))
                        .with_subscribed_topic_names(m.subscribed_names.iter().map(|t| TopicName(str(t))).collect())
                        .with_subscribed_topic_regex(m.subscribed_regex.as_deref().map(str))
                        .with_assignment(wire(&m.assigned))
                        .with_target_assignment(wire(&group.target.get(&m.member_id).cloned().unwrap_or_default()))
                        // 0: a classic member (of an upgraded group), 1: a consumer one.
                        .with_member_type(if m.classic.is_some() { 0 } else { 1 })
                })
                .collect();
            groups.push(
                described
                    .with_group_state(str(group.state()))
                    .with_group_epoch(group.group_epoch)
                    .with_assignment_epoch(group.assignment_epoch)
                    .with_assignor_name(str(group.assignor()))
                    .with_members(members)
                    .with_authorized_operations(i32::MIN),
            );
        }
        Some(ConsumerGroupDescribeResponse::default().with_groups(groups))
    }
}
