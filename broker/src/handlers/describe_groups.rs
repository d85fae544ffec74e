//! DescribeGroups: state, protocol and members of each group.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ask_coordinator, Handler, RequestContext};
use crate::group::coordinator::GroupOp;
use crate::shard::Shard;

pub(crate) struct DescribeGroupsHandler;

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
            let described = ask_coordinator(&shard, &group_id, |reply| GroupOp::Describe { reply }).await;
            let mut described = described.unwrap_or_else(|| {
                DescribedGroup::default()
                    .with_group_id(group_id.clone())
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            });
            // KIP-1043: from v6 a group that does not exist is an error, not a Dead group.
            if ctx.version() >= 6 && &*described.group_state == "Dead" {
                described = described
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_string(format!("group {} not found", &*group_id))));
            }
            groups.push(described);
        }
        Some(DescribeGroupsResponse::default().with_groups(groups))
    }
}
