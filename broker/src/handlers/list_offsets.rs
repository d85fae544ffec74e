//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, KIP-734), earliest local
//! (-4, KIP-405: the same as earliest without tiered storage), and by timestamp
//! through the time index.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::{error_code, Handler, RequestContext};
use crate::partition::TopicPartition;
use crate::router::{self, PartitionOp};
use crate::shard::Shard;

pub(crate) struct ListOffsetsHandler;

/// ListOffsets' special timestamps (KIP-79, KIP-734, KIP-405).
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;

#[derive(Debug, Clone, Copy)]
pub struct OffsetOutcome {
    pub error: Option<ResponseError>,
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

/// One request's lookups, as the partitions' owning shards run them: latest is the
/// last stable offset for `read_committed` (isolation level 1), else the high watermark.
#[derive(Clone, Copy)]
pub(crate) struct ListOffsetsOp {
    read_committed: bool,
}

impl PartitionOp for ListOffsetsOp {
    /// The timestamp asked for (or one of the special ones), and the leader epoch the
    /// client believes current (KIP-320; -1: unchecked).
    type Item = (i64, i32);
    type Outcome = OffsetOutcome;
    const API: ApiKey = ApiKey::ListOffsets;

    fn current_leader_epoch(item: &(i64, i32)) -> Option<i32> {
        Some(item.1)
    }

    fn refused(error: ResponseError) -> OffsetOutcome {
        OffsetOutcome {
            error: Some(error),
            offset: -1,
            timestamp: -1,
            leader_epoch: -1,
        }
    }

    async fn serve(self, shard: Rc<Shard>, items: Vec<(TopicPartition, (i64, i32))>) -> Vec<OffsetOutcome> {
        let partitions = shard.partitions.borrow();
        items
            .into_iter()
            .map(|(tp, (timestamp, _))| {
                let Some(p) = partitions.get(&tp) else {
                    return Self::refused(ResponseError::UnknownTopicOrPartition);
                };
                let offsets = p.offsets();
                let found = match timestamp {
                    LATEST_TIMESTAMP if self.read_committed => Ok(Some((offsets.last_stable, -1))),
                    LATEST_TIMESTAMP => Ok(Some((offsets.high_watermark.offset(), -1))),
                    EARLIEST_TIMESTAMP | EARLIEST_LOCAL_TIMESTAMP => Ok(Some((offsets.log_start.offset(), -1))),
                    MAX_TIMESTAMP => Ok(p.log().max_timestamp()),
                    ts if ts < 0 => return Self::refused(ResponseError::InvalidRequest),
                    ts => p.log().offset_for_timestamp(ts),
                };
                match found {
                    Ok(Some((offset, timestamp))) => OffsetOutcome {
                        error: None,
                        offset: offset.value(),
                        timestamp,
                        leader_epoch: p.leader_epoch(),
                    },
                    // Nothing at or after the timestamp: Kafka's answer has no epoch either.
                    Ok(None) => OffsetOutcome {
                        error: None,
                        offset: -1,
                        timestamp: -1,
                        leader_epoch: -1,
                    },
                    Err(e) => {
                        tracing::error!(topic = %tp.topic, partition = tp.partition, "offset lookup failed: {e}");
                        Self::refused(ResponseError::KafkaStorageError)
                    }
                }
            })
            .collect()
    }
}

impl Handler for ListOffsetsHandler {
    type Request = ListOffsetsRequest;
    type Response = ListOffsetsResponse;
    const VERSIONS: (i16, i16) = (1, 10);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: ListOffsetsRequest) -> Option<ListOffsetsResponse> {
        let items = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
                    (tp, (p.timestamp, p.current_leader_epoch))
                })
            })
            .collect();
        let op = ListOffsetsOp {
            read_committed: request.isolation_level == 1,
        };
        let outcomes = router::route(&shard, op, items).await;
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
                            .unwrap_or_else(|| ListOffsetsOp::refused(ResponseError::UnknownServerError));
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error_code(o.error))
                            .with_offset(o.offset)
                            .with_timestamp(o.timestamp)
                            // The field exists from v4; encoding it earlier is an error.
                            .with_leader_epoch(if ctx.version() >= 4 { o.leader_epoch } else { -1 })
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        Some(ListOffsetsResponse::default().with_topics(topics))
    }
}
