//! ListGroups: every group of every shard, filtered by state (v4+, KIP-518) and type
//! (v5+, KIP-848; every group here is "classic").

use std::rc::Rc;

use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse};
use tokio::sync::oneshot;

use super::{Handler, RequestContext};
use crate::shard::{Shard, ShardCall};

pub(crate) struct ListGroupsHandler;

impl Handler for ListGroupsHandler {
    type Request = ListGroupsRequest;
    type Response = ListGroupsResponse;
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: ListGroupsRequest) -> Option<ListGroupsResponse> {
        let mut answers = Vec::new();
        for target in 0..shard.cluster.peers.len() {
            let (reply, answer) = oneshot::channel();
            let this = shard.clone();
            tokio::task::spawn_local(async move { this.route(target, ShardCall::ListGroups { reply }).await });
            answers.push(answer);
        }
        let wanted = |filter: &[kafka_protocol::protocol::StrBytes], value: &str| {
            filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
        };
        let mut groups = Vec::new();
        for answer in answers {
            for g in answer.await.unwrap_or_default() {
                if wanted(&request.states_filter, &g.group_state) && wanted(&request.types_filter, &g.group_type) {
                    groups.push(g);
                }
            }
        }
        Some(ListGroupsResponse::default().with_groups(groups))
    }
}
