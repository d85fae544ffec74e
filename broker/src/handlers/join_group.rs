//! JoinGroup: forwarded to the group's coordinator, where it may wait for the whole
//! join phase of a rebalance (see `group`).

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{ask_group, Handler, RequestContext};
use crate::group::api::{JoinRequest, JoinResult};
use crate::shard::Shard;

pub(crate) struct JoinGroupHandler;

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Handler for JoinGroupHandler {
    type Request = JoinGroupRequest;
    type Response = JoinGroupResponse;
    const VERSIONS: (i16, i16) = (0, 9);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: JoinGroupRequest) -> Option<JoinGroupResponse> {
        let group_id = request.group_id.to_string();
        let version = ctx.version();
        let join = JoinRequest {
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            client_id: ctx.client_id(),
            // Kafka reports a member's host as "/" followed by its address.
            client_host: format!("/{}", ctx.peer.ip()),
            version,
        };
        let key = group_id.clone();
        let result = ask_group(&shard, &key, move |s| async move {
            s.groups.join(&*s, &group_id, join).await
        })
        .await
        .unwrap_or_else(|e| JoinResult::failed(e, ""));
        Some(response(result, version))
    }
}

fn response(result: JoinResult, version: i16) -> JoinGroupResponse {
    // Errors carry a null protocol name from v7 (nullable there), an empty one before.
    let protocol_name = match result.protocol_name {
        Some(name) => Some(str(&name)),
        None if version >= 7 => None,
        None => Some(StrBytes::default()),
    };
    let members = result
        .members
        .iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str(&m.member_id))
                .with_group_instance_id(m.instance_id.as_deref().map(str))
                .with_metadata(m.metadata.clone())
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(result.error.map(|e| e.code()).unwrap_or(0))
        .with_generation_id(result.generation)
        .with_protocol_type(result.protocol_type.as_deref().map(str))
        .with_protocol_name(protocol_name)
        .with_leader(str(&result.leader))
        .with_member_id(str(&result.member_id))
        .with_skip_assignment(result.skip_assignment)
        .with_members(members)
}
