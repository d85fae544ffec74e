//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::ResponseError;

use super::{ask_coordinator, Handler, RequestContext};
use crate::group::coordinator::GroupOp;
use crate::shard::Shard;

pub(crate) struct HeartbeatHandler;

impl Handler for HeartbeatHandler {
    type Request = HeartbeatRequest;
    type Response = HeartbeatResponse;
    const VERSIONS: (i16, i16) = (0, 4);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: HeartbeatRequest) -> Option<HeartbeatResponse> {
        let group_id = request.group_id.to_string();
        let answer = ask_coordinator(&shard, &group_id, |reply| GroupOp::Heartbeat { request, reply }).await;
        Some(answer.unwrap_or_else(|| {
            HeartbeatResponse::default().with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }))
    }
}
