//! DescribeGroups: state, protocol and members of each group.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ask_group, Handler, RequestContext};
use crate::group::api::GroupDescription;
use crate::shard::Shard;

pub(crate) struct DescribeGroupsHandler;

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Handler for DescribeGroupsHandler {
    type Request = DescribeGroupsRequest;
    type Response = DescribeGroupsResponse;
    const VERSIONS: (i16, i16) = (0, 6);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: DescribeGroupsRequest,
    ) -> Option<DescribeGroupsResponse> {
        let mut groups = Vec::new();
        for group_id in request.groups {
            let id = group_id.to_string();
            let described = ask_group(&shard, &group_id, move |s| async move { s.groups.describe(&id) }).await;
            let described = match described {
                Ok(described) => described,
                Err(e) => {
                    groups.push(
                        DescribedGroup::default()
                            .with_group_id(group_id.clone())
                            .with_error_code(e.code()),
                    );
                    continue;
                }
            };
            let mut answer = describe(&group_id, described);
            // KIP-1043: from v6 a group that does not exist is an error, not a Dead group.
            if ctx.version() >= 6 && &*answer.group_state == "Dead" {
                answer = answer
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_string(format!("group {} not found", &*group_id))));
            }
            groups.push(answer);
        }
        Some(DescribeGroupsResponse::default().with_groups(groups))
    }
}

fn describe(group_id: &GroupId, d: GroupDescription) -> DescribedGroup {
    let members = d
        .members
        .into_iter()
        .map(|m| {
            let mut member = DescribedGroupMember::default()
                .with_member_id(str(&m.member_id))
                .with_group_instance_id(m.instance_id.as_deref().map(str))
                .with_client_id(str(&m.client_id))
                .with_client_host(str(&m.client_host));
            if let Some(metadata) = m.metadata {
                member = member.with_member_metadata(metadata);
            }
            if let Some(assignment) = m.assignment {
                member = member.with_member_assignment(assignment);
            }
            member
        })
        .collect();
    let described = DescribedGroup::default()
        .with_group_id(group_id.clone())
        .with_group_state(str(d.state));
    if d.state == "Dead" {
        return described;
    }
    described
        .with_protocol_type(str(&d.protocol_type))
        .with_protocol_data(str(&d.protocol))
        .with_members(members)
}
