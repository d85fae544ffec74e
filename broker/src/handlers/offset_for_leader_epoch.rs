//! OffsetForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ended in the leader's
//! log. Followers ask it before fetching under a new leader, to cut a divergent tail;
//! consumers ask it after a leader change to detect truncation. Answered by the
//! partition's leader from its leader epoch cache.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::{error_code, Handler, RequestContext};
use crate::partition::TopicPartition;
use crate::router::{self, PartitionOp};
use crate::shard::Shard;

pub(crate) struct OffsetForLeaderEpochHandler;

#[derive(Debug, Clone, Copy)]
pub struct EpochOutcome {
    pub error: Option<ResponseError>,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

#[derive(Clone, Copy)]
pub(crate) struct OffsetForLeaderEpochOp;

impl PartitionOp for OffsetForLeaderEpochOp {
    /// The epoch asked about, and the leader epoch the asker believes current.
    type Item = (i32, i32);
    type Outcome = EpochOutcome;
    const API: ApiKey = ApiKey::OffsetForLeaderEpoch;

    fn current_leader_epoch(item: &(i32, i32)) -> Option<i32> {
        Some(item.1)
    }

    fn refused(error: ResponseError) -> EpochOutcome {
        EpochOutcome {
            error: Some(error),
            leader_epoch: -1,
            end_offset: -1,
        }
    }

    async fn serve(self, shard: Rc<Shard>, items: Vec<(TopicPartition, (i32, i32))>) -> Vec<EpochOutcome> {
        let partitions = shard.partitions.borrow();
        items
            .into_iter()
            .map(|(tp, (epoch, _))| {
                let Some(p) = partitions.get(&tp) else {
                    return Self::refused(ResponseError::UnknownTopicOrPartition);
                };
                // UNDEFINED (-1, -1) when the log has no epoch that old or newer.
                let (leader_epoch, end_offset) = p
                    .log()
                    .end_offset_for_epoch(epoch)
                    .map_or((-1, -1), |(e, o)| (e, o.value()));
                EpochOutcome {
                    error: None,
                    leader_epoch,
                    end_offset,
                }
            })
            .collect()
    }
}

impl Handler for OffsetForLeaderEpochHandler {
    type Request = OffsetForLeaderEpochRequest;
    type Response = OffsetForLeaderEpochResponse;
    // v2 added current_leader_epoch (KIP-320), v3 replica_id, v4 is flexible.
    const VERSIONS: (i16, i16) = (2, 4);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: OffsetForLeaderEpochRequest,
    ) -> Option<OffsetForLeaderEpochResponse> {
        let items = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    let tp = TopicPartition::new(t.topic.as_str(), p.partition);
                    (tp, (p.leader_epoch, p.current_leader_epoch))
                })
            })
            .collect();
        let outcomes = router::route(&shard, OffsetForLeaderEpochOp, items).await;
        let mut outcomes = outcomes.into_iter();
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let o = outcomes
                            .next()
                            .unwrap_or_else(|| OffsetForLeaderEpochOp::refused(ResponseError::UnknownServerError));
                        EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_error_code(error_code(o.error))
                            .with_leader_epoch(o.leader_epoch)
                            .with_end_offset(o.end_offset)
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic.topic.clone())
                    .with_partitions(partitions)
            })
            .collect();
        Some(OffsetForLeaderEpochResponse::default().with_topics(topics))
    }
}
