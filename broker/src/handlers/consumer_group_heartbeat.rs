//! ConsumerGroupHeartbeat (KIP-848): a consumer of the new group protocol joins (epoch
//! 0), heartbeats with its epoch and what it owns, or leaves (-1; a static member -2).
//! The coordinator assigns partitions itself and answers each member's next step.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{ask_group, Handler, RequestContext};
use crate::group::consumer::{self, ConsumerBeat};
use crate::shard::Shard;

pub(crate) struct ConsumerGroupHeartbeatHandler;

impl Handler for ConsumerGroupHeartbeatHandler {
    type Request = ConsumerGroupHeartbeatRequest;
    type Response = ConsumerGroupHeartbeatResponse;
    const VERSIONS: (i16, i16) = (0, 1);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: ConsumerGroupHeartbeatRequest,
    ) -> Option<ConsumerGroupHeartbeatResponse> {
        let refused = |e: ResponseError, why: String| {
            Some(
                ConsumerGroupHeartbeatResponse::default()
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(why))),
            )
        };
        let group_id = request.group_id.to_string();
        if group_id.is_empty() {
            return refused(ResponseError::InvalidGroupId, "the group id is empty".into());
        }
        let mut member_id = request.member_id.to_string();
        if member_id.is_empty() {
            if request.member_epoch != 0 {
                return refused(ResponseError::UnknownMemberId, "a member id is required".into());
            }
            // v0: the coordinator names new members (v1 clients name themselves).
            member_id = uuid::Uuid::new_v4().simple().to_string();
        }
        let metadata = shard.metadata();
        let name_of = |id: uuid::Uuid| metadata.topic_by_id(id).map(|t| t.name.clone());
        let owned = request.topic_partitions.as_ref().map(|tps| {
            let mut owned = consumer::Assignment::new();
            for tp in tps {
                if let Some(name) = name_of(tp.topic_id) {
                    owned.entry(name).or_default().extend(tp.partitions.iter().copied());
                }
            }
            owned.retain(|_, ps| !ps.is_empty());
            owned
        });
        let beat = ConsumerBeat {
            member_id,
            member_epoch: request.member_epoch,
            instance_id: request.instance_id.as_ref().map(|s| s.to_string()),
            rack_id: request.rack_id.as_ref().map(|s| s.to_string()),
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            subscribed_names: request
                .subscribed_topic_names
                .as_ref()
                .map(|names| names.iter().map(|n| n.to_string()).collect()),
            subscribed_regex: request.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
            server_assignor: request.server_assignor.as_ref().map(|s| s.to_string()),
            owned,
            client_id: ctx.client_id(),
            client_host: format!("/{}", ctx.peer.ip()),
        };
        let key = group_id.clone();
        let answer = ask_group(&shard, &key, move |s| async move {
            s.groups.consumer_heartbeat(s.as_ref(), &group_id, beat)
        })
        .await
        .and_then(|r| r);
        let (answer, interval) = match answer {
            Ok(a) => a,
            Err(e) => return refused(e, e.to_string()),
        };
        let metadata = shard.metadata();
        let assignment = answer.assignment.map(|a| {
            Assignment::default().with_topic_partitions(
                a.into_iter()
                    .filter_map(|(topic, partitions)| {
                        let id = metadata.topic(&topic)?.id;
                        Some(
                            TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(partitions.into_iter().collect()),
                        )
                    })
                    .collect(),
            )
        });
        Some(
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(StrBytes::from_string(answer.member_id)))
                .with_member_epoch(answer.member_epoch)
                .with_heartbeat_interval_ms(interval)
                .with_assignment(assignment),
        )
    }
}
