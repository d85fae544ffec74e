//! SyncGroup: the leader hands in every member's assignment; each member gets its own.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::ResponseError;

use super::{ask_coordinator, Handler, RequestContext};
use crate::group::coordinator::GroupOp;
use crate::shard::Shard;

pub(crate) struct SyncGroupHandler;

impl Handler for SyncGroupHandler {
    type Request = SyncGroupRequest;
    type Response = SyncGroupResponse;
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: SyncGroupRequest) -> Option<SyncGroupResponse> {
        let group_id = request.group_id.to_string();
        let version = ctx.version();
        let answer = ask_coordinator(&shard, &group_id, |reply| GroupOp::Sync {
            request,
            version,
            reply,
        })
        .await;
        Some(answer.unwrap_or_else(|| {
            SyncGroupResponse::default().with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }))
    }
}
