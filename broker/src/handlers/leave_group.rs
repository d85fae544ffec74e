//! LeaveGroup: one member (v0–2) or a batch identified by member or instance id (v3+,
//! KIP-345), each answered with its own error.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{ask_group, error_code, Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct LeaveGroupHandler;

impl Handler for LeaveGroupHandler {
    type Request = LeaveGroupRequest;
    type Response = LeaveGroupResponse;
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: LeaveGroupRequest) -> Option<LeaveGroupResponse> {
        let version = ctx.version();
        let group_id = request.group_id.to_string();
        let members: Vec<(String, Option<String>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let asked = members.clone();
        let key = group_id.clone();
        let result = ask_group(
            &shard,
            &key,
            move |s| async move { s.groups.leave(&*s, &group_id, &asked) },
        )
        .await
        .unwrap_or_else(Err);
        let errors = match result {
            Ok(errors) => errors,
            Err(e) => return Some(LeaveGroupResponse::default().with_error_code(e.code())),
        };
        if version < 3 {
            let top = errors.first().copied().flatten();
            return Some(LeaveGroupResponse::default().with_error_code(error_code(top)));
        }
        let responses = members
            .into_iter()
            .zip(errors)
            .map(|((member_id, instance_id), error)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_group_instance_id(instance_id.map(StrBytes::from_string))
                    .with_error_code(error_code(error))
            })
            .collect();
        Some(LeaveGroupResponse::default().with_members(responses))
    }
}
