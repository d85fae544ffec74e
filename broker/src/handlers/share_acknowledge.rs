//! ShareAcknowledge (KIP-932): acknowledgements outside a fetch, within an open share
//! session (epoch 0 cannot open one: INVALID_SHARE_SESSION_EPOCH); -1 closes the
//! session after applying them and releases what the member still holds.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::share_acknowledge_response::{
    LeaderIdAndEpoch, PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use uuid::Uuid;

use super::share_fetch::{
    pass, release_member, step_session, topic_name, AckBatches, ShareItem, ShareOp, SharePartitionId,
};
use super::{Handler, RequestContext};
use crate::shard::Shard;
use crate::share::GroupSettings;

pub(crate) struct ShareAcknowledgeHandler;

impl Handler for ShareAcknowledgeHandler {
    type Request = ShareAcknowledgeRequest;
    type Response = ShareAcknowledgeResponse;
    const VERSIONS: (i16, i16) = (1, 1);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: ShareAcknowledgeRequest,
    ) -> Option<ShareAcknowledgeResponse> {
        let group = request.group_id.as_ref().map(|g| g.to_string()).unwrap_or_default();
        let member = request.member_id.as_ref().map(|m| m.to_string()).unwrap_or_default();
        let refused = |e: ResponseError| Some(ShareAcknowledgeResponse::default().with_error_code(e.code()));
        if group.is_empty() || member.is_empty() {
            return refused(ResponseError::InvalidRequest);
        }
        let epoch = request.share_session_epoch;
        if epoch == 0 {
            return refused(ResponseError::InvalidShareSessionEpoch);
        }
        if let Err(e) = step_session(&shard, &group, &member, epoch, &[], &[]) {
            return refused(e);
        }
        let mut acks: BTreeMap<SharePartitionId, AckBatches> = BTreeMap::new();
        for topic in &request.topics {
            for p in &topic.partitions {
                acks.entry((topic.topic_id, p.partition_index)).or_default().extend(
                    p.acknowledgement_batches
                        .iter()
                        .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone())),
                );
            }
        }
        let op = ShareOp {
            group: group.clone(),
            member: member.clone(),
            settings: GroupSettings::resolve(shard.config(), &shard.metadata(), &group),
            records_max: 0,
            bytes_max: 0,
            waker: Arc::new(Notify::new()),
        };
        let items = acks
            .into_iter()
            .map(|(id, acks)| {
                (
                    id,
                    ShareItem {
                        topic_id: id.0,
                        acks,
                        fetch: false,
                    },
                )
            })
            .collect();
        let results = pass(&shard, &op, items).await;
        if epoch == -1 {
            release_member(&shard, &group, &member).await;
        }
        let metadata = shard.metadata();
        let mut topics: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
        for ((topic_id, partition), r) in results {
            let error = r.error.or(r.ack_error);
            let name = topic_name(&shard, topic_id).unwrap_or_default();
            let leader = metadata
                .partition(&name, partition)
                .map_or((-1, -1), |s| (s.leader, s.leader_epoch));
            topics.entry(topic_id).or_default().push(
                PartitionData::default()
                    .with_partition_index(partition)
                    .with_error_code(error.map_or(0, |e| e.code()))
                    .with_error_message(error.map(|e| StrBytes::from_string(e.to_string())))
                    .with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(leader.0)
                            .with_leader_epoch(leader.1),
                    ),
            );
        }
        Some(
            ShareAcknowledgeResponse::default().with_responses(
                topics
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        ShareAcknowledgeTopicResponse::default()
                            .with_topic_id(topic_id)
                            .with_partitions(partitions)
                    })
                    .collect(),
            ),
        )
    }
}
