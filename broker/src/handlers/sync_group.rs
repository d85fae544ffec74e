//! SyncGroup: the leader hands in every member's assignment; each member gets its own.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{ask_group, Handler, RequestContext};
use crate::group::api::{SyncRequest, SyncResult};
use crate::shard::Shard;

pub(crate) struct SyncGroupHandler;

impl Handler for SyncGroupHandler {
    type Request = SyncGroupRequest;
    type Response = SyncGroupResponse;
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: SyncGroupRequest) -> Option<SyncGroupResponse> {
        let group_id = request.group_id.to_string();
        let sync = SyncRequest {
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            generation: request.generation_id,
            protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
            protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
            assignments: request
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
        };
        let key = group_id.clone();
        let result = ask_group(&shard, &key, move |s| async move {
            s.groups.sync(&*s, &group_id, sync).await
        })
        .await
        .unwrap_or_else(SyncResult::failed);
        let str = |s: String| StrBytes::from_string(s);
        Some(
            SyncGroupResponse::default()
                .with_error_code(result.error.map(|e| e.code()).unwrap_or(0))
                .with_protocol_type(result.protocol_type.map(str))
                .with_protocol_name(result.protocol_name.map(str))
                .with_assignment(result.assignment),
        )
    }
}
