//! JoinGroup: forwarded to the group's coordinator, where it may wait for the whole
//! join phase of a rebalance (see `group`).

use std::rc::Rc;

use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::ResponseError;

use super::{ask_coordinator, Handler, RequestContext};
use crate::group::coordinator::GroupOp;
use crate::shard::Shard;

pub(crate) struct JoinGroupHandler;

impl Handler for JoinGroupHandler {
    type Request = JoinGroupRequest;
    type Response = JoinGroupResponse;
    const VERSIONS: (i16, i16) = (0, 9);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: JoinGroupRequest) -> Option<JoinGroupResponse> {
        let group_id = request.group_id.to_string();
        let version = ctx.version();
        let client_id = ctx.client_id();
        // Kafka reports a member's host as "/" followed by its address.
        let client_host = format!("/{}", ctx.peer.ip());
        let answer = ask_coordinator(&shard, &group_id, |reply| GroupOp::Join {
            request,
            version,
            client_id,
            client_host,
            reply,
        })
        .await;
        Some(answer.unwrap_or_else(|| {
            JoinGroupResponse::default()
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_generation_id(-1)
        }))
    }
}
