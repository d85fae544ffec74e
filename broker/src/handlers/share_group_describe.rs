//! ShareGroupDescribe (KIP-932): each share group's state, epochs and members with
//! their subscriptions and assignments. A group that is not a share group gets
//! GROUP_ID_NOT_FOUND, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::messages::share_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
use kafka_protocol::messages::{ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ask_group, Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct ShareGroupDescribeHandler;

impl Handler for ShareGroupDescribeHandler {
    type Request = ShareGroupDescribeRequest;
    type Response = ShareGroupDescribeResponse;
    const VERSIONS: (i16, i16) = (1, 1);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: ShareGroupDescribeRequest,
    ) -> Option<ShareGroupDescribeResponse> {
        let str = |s: &str| StrBytes::from_string(s.to_string());
        let mut groups = Vec::with_capacity(request.group_ids.len());
        for id in request.group_ids {
            let group_id = id.to_string();
            let key = group_id.clone();
            let found = ask_group(&shard, &key, move |s| async move { s.share_group(&group_id) }).await;
            let described = DescribedGroup::default().with_group_id(id.clone());
            let group = match found {
                Ok(Some(g)) => g,
                Ok(None) => {
                    groups.push(
                        described
                            .with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(str("no such share group")))
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
            let members = group
                .members
                .values()
                .map(|m| {
                    let assigned = m
                        .assignment
                        .iter()
                        .filter_map(|(topic, partitions)| {
                            let t = metadata.topic(topic)?;
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(t.id)
                                    .with_topic_name(TopicName(str(topic)))
                                    .with_partitions(partitions.clone()),
                            )
                        })
                        .collect();
                    Member::default()
                        .with_member_id(str(&m.member_id))
                        .with_rack_id(m.rack_id.as_deref().map(str))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(str(&m.client_id))
                        .with_client_host(str(&m.client_host))
                        .with_subscribed_topic_names(m.subscribed.iter().map(|t| TopicName(str(t))).collect())
                        .with_assignment(Assignment::default().with_topic_partitions(assigned))
                })
                .collect();
            groups.push(
                described
                    .with_group_state(str(group.state()))
                    .with_group_epoch(group.group_epoch)
                    .with_assignment_epoch(group.group_epoch)
                    .with_assignor_name(str("simple"))
                    .with_members(members)
                    .with_authorized_operations(i32::MIN),
            );
        }
        Some(ShareGroupDescribeResponse::default().with_groups(groups))
    }
}
