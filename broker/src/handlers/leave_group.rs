//! LeaveGroup: one member (v0–2) or a batch identified by member or instance id (v3+,
//! KIP-345), each answered with its own error.

use std::rc::Rc;

use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::ResponseError;

use super::{ask_coordinator, Handler, RequestContext};
use crate::group::coordinator::GroupOp;
use crate::shard::Shard;

pub(crate) struct LeaveGroupHandler;

impl Handler for LeaveGroupHandler {
    type Request = LeaveGroupRequest;
    type Response = LeaveGroupResponse;
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: LeaveGroupRequest) -> Option<LeaveGroupResponse> {
        let group_id = request.group_id.to_string();
        let version = ctx.version();
        let answer = ask_coordinator(&shard, &group_id, |reply| GroupOp::Leave {
            request,
            version,
            reply,
        })
        .await;
        Some(answer.unwrap_or_else(|| {
            LeaveGroupResponse::default().with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }))
    }
}
