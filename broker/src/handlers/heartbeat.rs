//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{ask_group, error_code, Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct HeartbeatHandler;

impl Handler for HeartbeatHandler {
    type Request = HeartbeatRequest;
    type Response = HeartbeatResponse;
    const VERSIONS: (i16, i16) = (0, 4);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: HeartbeatRequest) -> Option<HeartbeatResponse> {
        let group_id = request.group_id.to_string();
        let member_id = request.member_id.to_string();
        let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
        let generation = request.generation_id;
        let key = group_id.clone();
        let error = ask_group(&shard, &key, move |s| async move {
            s.groups
                .heartbeat(&group_id, &member_id, instance_id.as_deref(), generation)
        })
        .await
        .unwrap_or_else(Some);
        Some(HeartbeatResponse::default().with_error_code(error_code(error)))
    }
}
