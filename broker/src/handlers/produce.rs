//! Produce: validate and append each partition's batch on its owning shard, then
//! answer per partition (acks=0 gets no answer, acks=all waits for the group commit).

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{error_code, Handler, RequestContext};
use crate::shard::{ProduceItem, ProduceOutcome, Shard, ShardCall, TopicPartition};

pub(crate) struct ProduceHandler;

impl Handler for ProduceHandler {
    type Request = ProduceRequest;
    type Response = ProduceResponse;
    // v13 names topics by id only; Sluice serves names until topic ids are routed.
    const VERSIONS: (i16, i16) = (3, 12);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: ProduceRequest) -> Option<ProduceResponse> {
        let acks = request.acks;
        let metadata = shard.controller().metadata();
        // Each partition's answer is decided here (bad acks, unknown partition) or by its shard.
        let mut early: Vec<Option<ProduceOutcome>> = Vec::new();
        let mut items = Vec::new();
        let mut slots = Vec::new();
        for topic in &request.topic_data {
            let name = topic.name.as_str();
            let known = metadata.topic(name).map(|t| t.partitions);
            for partition in &topic.partition_data {
                let refuse = |code| Some(ProduceOutcome::refused(code));
                let outcome = if !matches!(acks, -1..=1) {
                    refuse(ResponseError::InvalidRequiredAcks)
                } else if !known.is_some_and(|n| (0..n).contains(&partition.index)) {
                    refuse(ResponseError::UnknownTopicOrPartition)
                } else if metadata.topic(name).is_some_and(|t| t.internal) {
                    // Only the broker writes its internal topics, as in Kafka.
                    refuse(ResponseError::InvalidTopicException)
                } else {
                    match &partition.records {
                        None => refuse(ResponseError::CorruptMessage),
                        Some(records) => {
                            let tp = TopicPartition {
                                topic: name.to_string(),
                                partition: partition.index,
                            };
                            let owner = shard.cluster.owner_of(name, partition.index);
                            slots.push(early.len());
                            items.push((
                                owner,
                                ProduceItem {
                                    tp,
                                    records: records.clone(),
                                },
                            ));
                            None
                        }
                    }
                };
                early.push(outcome);
            }
        }
        let timeout_ms = request.timeout_ms;
        let answers = shard
            .fan_out(items, |items, reply| ShardCall::Produce {
                items,
                acks,
                timeout_ms,
                queued_at: tokio::time::Instant::now(),
                reply,
            })
            .await;
        {
            let mut metrics = shard.metrics.borrow_mut();
            for a in answers.iter().flatten() {
                metrics.error(ApiKey::Produce as i16, error_code(a.error));
            }
            for o in early.iter().flatten() {
                metrics.error(ApiKey::Produce as i16, error_code(o.error));
            }
        }
        for (slot, answer) in slots.into_iter().zip(answers) {
            early[slot] = Some(answer.unwrap_or_else(|| ProduceOutcome::refused(ResponseError::NotLeaderOrFollower)));
        }
        if acks == 0 {
            return None;
        }
        let mut outcomes = early.into_iter();
        let responses = request
            .topic_data
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partition_data
                    .iter()
                    .map(|p| {
                        let o = outcomes
                            .next()
                            .flatten()
                            .unwrap_or_else(|| ProduceOutcome::refused(ResponseError::UnknownServerError));
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(error_code(o.error))
                            .with_base_offset(o.base_offset)
                            .with_log_append_time_ms(o.log_append_time_ms)
                            .with_log_start_offset(o.log_start_offset)
                            .with_error_message(o.message.map(StrBytes::from_string))
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(topic.name.clone())
                    .with_partition_responses(partitions)
            })
            .collect();
        Some(ProduceResponse::default().with_responses(responses))
    }
}
