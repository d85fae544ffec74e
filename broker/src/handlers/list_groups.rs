//! ListGroups: every group of every shard, filtered by state (v4+, KIP-518) and type
//! (v5+, KIP-848: "classic" groups, and "share" groups of KIP-932).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Handler, RequestContext};
use crate::router;
use crate::shard::Shard;

pub(crate) struct ListGroupsHandler;

impl Handler for ListGroupsHandler {
    type Request = ListGroupsRequest;
    type Response = ListGroupsResponse;
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: ListGroupsRequest) -> Option<ListGroupsResponse> {
        let answers = router::broadcast(&shard, |s| async move { s.groups.list() }).await;
        let wanted = |filter: &[StrBytes], value: &str| {
            filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
        };
        let str = |s: &str| StrBytes::from_string(s.to_string());
        let mut groups = Vec::new();
        for g in answers.into_iter().flatten().flatten() {
            if wanted(&request.states_filter, g.state) && wanted(&request.types_filter, g.group_type) {
                groups.push(
                    ListedGroup::default()
                        .with_group_id(GroupId(str(&g.group_id)))
                        .with_protocol_type(str(&g.protocol_type))
                        .with_group_state(str(g.state))
                        .with_group_type(str(g.group_type)),
                );
            }
        }
        let shares = router::broadcast(&shard, |s| async move { s.share_group_list() }).await;
        for (group_id, state) in shares.into_iter().flatten().flatten() {
            if wanted(&request.states_filter, state) && wanted(&request.types_filter, "share") {
                groups.push(
                    ListedGroup::default()
                        .with_group_id(GroupId(str(&group_id)))
                        .with_protocol_type(str("share"))
                        .with_group_state(str(state))
                        .with_group_type(str("share")),
                );
            }
        }
        Some(ListGroupsResponse::default().with_groups(groups))
    }
}
