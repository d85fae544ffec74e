//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, KIP-734), earliest local
//! (-4, KIP-405: the same as earliest without tiered storage), and by timestamp
//! through the time index.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::{error_code, Handler, RequestContext};
use crate::shard::{OffsetOutcome, OffsetQuery, Shard, ShardCall, TopicPartition};

pub(crate) struct ListOffsetsHandler;

impl Handler for ListOffsetsHandler {
    type Request = ListOffsetsRequest;
    type Response = ListOffsetsResponse;
    const VERSIONS: (i16, i16) = (1, 10);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: ListOffsetsRequest) -> Option<ListOffsetsResponse> {
        let metadata = shard.controller().metadata();
        let unknown = OffsetOutcome {
            error: Some(ResponseError::UnknownTopicOrPartition),
            offset: -1,
            timestamp: -1,
        };
        let mut outcomes = Vec::new();
        let mut items = Vec::new();
        let mut slots = Vec::new();
        for topic in &request.topics {
            let name = topic.name.as_str();
            let known = metadata.topic(name).map(|t| t.partitions);
            for p in &topic.partitions {
                if known.is_some_and(|n| (0..n).contains(&p.partition_index)) {
                    let tp = TopicPartition {
                        topic: name.to_string(),
                        partition: p.partition_index,
                    };
                    slots.push(outcomes.len());
                    items.push((
                        shard.cluster.owner_of(name, p.partition_index),
                        OffsetQuery {
                            tp,
                            timestamp: p.timestamp,
                        },
                    ));
                }
                outcomes.push(unknown);
            }
        }
        let answers = shard
            .fan_out(items, |items, reply| ShardCall::ListOffsets { items, reply })
            .await;
        for (slot, answer) in slots.into_iter().zip(answers) {
            if let Some(answer) = answer {
                outcomes[slot] = answer;
            }
        }
        let mut outcomes = outcomes.into_iter();
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let o = outcomes.next().unwrap_or(unknown);
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error_code(o.error))
                            .with_offset(o.offset)
                            .with_timestamp(o.timestamp)
                            // The field exists from v4; encoding it earlier is an error.
                            .with_leader_epoch(if ctx.version() >= 4 { 0 } else { -1 })
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
