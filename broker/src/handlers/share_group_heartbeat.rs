//! ShareGroupHeartbeat (KIP-932): a share consumer joins (epoch 0), stays (its epoch),
//! or leaves (-1) its share group; the answer carries its assignment when it changed.

use std::rc::Rc;

use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ask_group, Handler, RequestContext};
use crate::shard::Shard;
use crate::share::group::Beat;
use crate::share::GroupSettings;

pub(crate) struct ShareGroupHeartbeatHandler;

impl Handler for ShareGroupHeartbeatHandler {
    type Request = ShareGroupHeartbeatRequest;
    type Response = ShareGroupHeartbeatResponse;
    const VERSIONS: (i16, i16) = (1, 1);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: ShareGroupHeartbeatRequest,
    ) -> Option<ShareGroupHeartbeatResponse> {
        let group_id = request.group_id.to_string();
        let refused = |e: ResponseError, why: &str| {
            Some(
                ShareGroupHeartbeatResponse::default()
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(why.to_string()))),
            )
        };
        if group_id.is_empty() {
            return refused(ResponseError::InvalidGroupId, "the group id is empty");
        }
        if request.member_epoch > 0 && request.member_id.is_empty() {
            return refused(ResponseError::InvalidRequest, "a member id is required");
        }
        let beat = Beat {
            member_id: request.member_id.to_string(),
            member_epoch: request.member_epoch,
            rack_id: request.rack_id.as_ref().map(|r| r.to_string()),
            subscribed: request
                .subscribed_topic_names
                .map(|names| names.iter().map(|n| n.to_string()).collect()),
            client_id: ctx.client_id(),
            client_host: format!("/{}", ctx.peer.ip()),
        };
        let key = group_id.clone();
        let answer = ask_group(&shard, &key, move |s| async move { s.share_heartbeat(&group_id, beat) })
            .await
            .and_then(|r| r);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return refused(e, &e.to_string()),
        };
        let metadata = shard.metadata();
        let settings = GroupSettings::resolve(shard.config(), &metadata, &key);
        let assignment = answer.assignment.map(|a| {
            Assignment::default().with_topic_partitions(
                a.into_iter()
                    .filter_map(|(topic, partitions)| {
                        let id = metadata.topic(&topic)?.id;
                        Some(TopicPartitions::default().with_topic_id(id).with_partitions(partitions))
                    })
                    .collect(),
            )
        });
        Some(
            ShareGroupHeartbeatResponse::default()
                .with_member_id(Some(StrBytes::from_string(answer.member_id)))
                .with_member_epoch(answer.member_epoch)
                .with_heartbeat_interval_ms(settings.heartbeat_interval_ms)
                .with_assignment(assignment),
        )
    }
}
