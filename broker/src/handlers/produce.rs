//! Produce: validate and append each partition's batch on its owning shard, then
//! answer per partition (acks=0 gets no answer, acks=1 waits for the write, acks=all
//! for the group commit's fdatasync and for every in-sync replica to have the batch).
//!
//! The path of a batch: `connection` frames and decodes the request, this handler
//! routes it (`router::route`: partitions on the connection's shard are served in
//! place), [`ProduceOp::serve`] appends each batch to its `partition` (storage
//! validates it and puts it in the log's in-memory tail) and awaits the receipts the
//! shard's `LogManager` resolves when its write round is done.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_controller::TopicMetadata;
use sluice_storage::{BatchHeader, Durability};

use super::{error_code, moved_leader, Handler, RequestContext};
use crate::now_ms;
use crate::partition::TopicPartition;
use crate::router::{self, PartitionOp};
use crate::shard::Shard;

pub(crate) struct ProduceHandler;

#[derive(Debug, Clone)]
pub struct ProduceOutcome {
    pub error: Option<ResponseError>,
    pub message: Option<String>,
    /// Indexes (within the batch) of the records that caused `error`.
    pub record_errors: Vec<i32>,
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

impl ProduceOutcome {
    fn failed(error: ResponseError, message: Option<String>) -> Self {
        ProduceOutcome {
            error: Some(error),
            message,
            record_errors: Vec::new(),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// One request's appends, as its partitions' owning shards run them.
#[derive(Debug, Clone)]
pub(crate) struct ProduceOp {
    acks: i16,
    timeout_ms: i32,
    /// The transactional producer's id, whose coordinator verifies the partitions
    /// of a transaction's first batches (KIP-890).
    transactional_id: Option<String>,
}

impl PartitionOp for ProduceOp {
    /// The partition's records field; None is refused as corrupt.
    type Item = Option<Bytes>;
    type Outcome = ProduceOutcome;
    const API: ApiKey = ApiKey::Produce;

    fn refused(error: ResponseError) -> ProduceOutcome {
        ProduceOutcome::failed(error, None)
    }

    fn admit(&self, topic: &TopicMetadata, records: &Option<Bytes>) -> Result<(), ResponseError> {
        if topic.internal {
            // Only the broker writes its internal topics, as in Kafka.
            return Err(ResponseError::InvalidTopicException);
        }
        if records.is_none() {
            return Err(ResponseError::CorruptMessage);
        }
        Ok(())
    }

    async fn serve(self, shard: Rc<Shard>, items: Vec<(TopicPartition, Option<Bytes>)>) -> Vec<ProduceOutcome> {
        let now = now_ms();
        let durability = match self.acks {
            0 => Durability::Appended,
            1 => Durability::Written,
            _ => Durability::Synced,
        };
        let mut outcomes = Vec::with_capacity(items.len());
        let mut receipts = Vec::new();
        let mut commits = Vec::new();
        let (turn, refused) = self.verify_transaction(&shard, &items).await;
        for (i, (tp, records)) in items.into_iter().enumerate() {
            if let Some(error) = refused.get(i).copied().flatten() {
                outcomes.push(ProduceOutcome::failed(error, None));
                continue;
            }
            let outcome = match shard.append(&tp, records.unwrap_or_default(), now, durability) {
                Ok(appended) => {
                    if let Some(receipt) = appended.receipt {
                        receipts.push((outcomes.len(), receipt));
                    }
                    if self.acks == -1 {
                        commits.push((outcomes.len(), tp, appended.info.last_offset.plus(1)));
                    }
                    let info = appended.info;
                    ProduceOutcome {
                        error: None,
                        message: None,
                        record_errors: Vec::new(),
                        base_offset: info.base_offset.value(),
                        log_append_time_ms: info.log_append_time_ms.unwrap_or(-1),
                        log_start_offset: info.log_start_offset.value(),
                    }
                }
                Err(refusal) => ProduceOutcome {
                    record_errors: refusal.record_errors,
                    ..ProduceOutcome::failed(refusal.code, refusal.message)
                },
            };
            outcomes.push(outcome);
        }
        drop(turn);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.timeout_ms.max(0) as u64);
        for (i, receipt) in receipts {
            let error = match tokio::time::timeout_at(deadline, receipt.wait()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => ResponseError::KafkaStorageError,
                Err(_) => ResponseError::RequestTimedOut,
            };
            outcomes[i] = ProduceOutcome::failed(error, None);
        }
        // acks=all: every in-sync replica has the batch (the high watermark passed it).
        for (i, tp, target) in commits {
            if outcomes[i].error.is_some() {
                continue;
            }
            let error = match tokio::time::timeout_at(deadline, shard.committed(&tp, target)).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => ResponseError::RequestTimedOut,
            };
            outcomes[i] = ProduceOutcome::failed(error, None);
        }
        outcomes
    }
}

impl ProduceOp {
    /// KIP-890: a transactional producer's batch for a partition where it has no
    /// transaction open is verified with its coordinator first. Returns the producer's
    /// append turn (held from before the verification until the appends are done, so
    /// requests append in the order they came) and, per item, the error of a batch
    /// that failed verification.
    async fn verify_transaction(
        &self,
        shard: &Rc<Shard>,
        items: &[(TopicPartition, Option<Bytes>)],
    ) -> (Option<tokio::sync::OwnedMutexGuard<()>>, Vec<Option<ResponseError>>) {
        let header = |records: &Option<Bytes>| {
            records
                .as_ref()
                .and_then(|b| BatchHeader::parse(b).ok())
                .filter(|h| h.is_transactional() && !h.is_control() && h.producer_id >= 0)
        };
        // Only a transactional producer's requests are looked into.
        let Some(id) = &self.transactional_id else {
            return (None, Vec::new());
        };
        let Some(first) = items.iter().find_map(|(_, r)| header(r)) else {
            return (None, Vec::new());
        };
        let producer = (first.producer_id, first.producer_epoch);
        // Wait for earlier requests of this producer, then verify holding the turn.
        let turn = shard.txn_append_turn(producer.0).lock_owned().await;
        let mut refused = vec![None; items.len()];
        let checks = items
            .iter()
            .enumerate()
            .filter(|(_, (tp, r))| header(r).is_some() && !shard.has_open_transaction(tp, producer.0))
            .map(|(i, (tp, _))| async move { (i, crate::txn::verify::verify(shard, id, producer, tp).await) });
        for (i, outcome) in futures_util::future::join_all(checks).await {
            refused[i] = outcome.err();
        }
        (Some(turn), refused)
    }
}

impl Handler for ProduceHandler {
    type Request = ProduceRequest;
    type Response = ProduceResponse;
    // v13 names topics by id only; Sluice serves names until topic ids are routed.
    const VERSIONS: (i16, i16) = (3, 12);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: ProduceRequest) -> Option<ProduceResponse> {
        let acks = request.acks;
        let items: Vec<(TopicPartition, Option<Bytes>)> = request
            .topic_data
            .iter()
            .flat_map(|t| {
                t.partition_data
                    .iter()
                    .map(|p| (TopicPartition::new(t.name.as_str(), p.index), p.records.clone()))
            })
            .collect();
        let outcomes = if matches!(acks, -1..=1) {
            let op = ProduceOp {
                acks,
                timeout_ms: request.timeout_ms,
                transactional_id: request.transactional_id.as_ref().map(|t| t.to_string()),
            };
            router::route(&shard, op, items).await
        } else {
            items
                .iter()
                .map(|_| ProduceOp::refused(ResponseError::InvalidRequiredAcks))
                .collect()
        };
        {
            let mut metrics = shard.metrics.borrow_mut();
            for o in &outcomes {
                metrics.error(ApiKey::Produce as i16, error_code(o.error));
            }
        }
        if acks == 0 {
            return None;
        }
        let metadata = shard.metadata();
        let mut moved_to = std::collections::BTreeSet::new();
        let mut outcomes = outcomes.into_iter();
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
                            .unwrap_or_else(|| ProduceOutcome::failed(ResponseError::UnknownServerError, None));
                        let moved = moved_leader(&metadata, o.error, topic.name.as_str(), p.index);
                        let leader = moved.map_or_else(LeaderIdAndEpoch::default, |(id, epoch)| {
                            moved_to.insert(id);
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(id))
                                .with_leader_epoch(epoch)
                        });
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_current_leader(leader)
                            .with_error_code(error_code(o.error))
                            .with_base_offset(o.base_offset)
                            .with_log_append_time_ms(o.log_append_time_ms)
                            .with_log_start_offset(o.log_start_offset)
                            .with_record_errors(
                                o.record_errors
                                    .iter()
                                    .map(|i| {
                                        BatchIndexAndErrorMessage::default()
                                            .with_batch_index(*i)
                                            .with_batch_index_error_message(Some(StrBytes::from_static_str(
                                                "compacted topic cannot accept message without key",
                                            )))
                                    })
                                    .collect(),
                            )
                            .with_error_message(o.message.map(StrBytes::from_string))
                    })
                    .collect();
                TopicProduceResponse::default()
                    .with_name(topic.name.clone())
                    .with_partition_responses(partitions)
            })
            .collect();
        // KIP-951: the brokers named as new leaders, so the client need not ask Metadata.
        let node_endpoints = moved_to
            .into_iter()
            .filter_map(|id| metadata.brokers.get(&id))
            .map(|b| {
                NodeEndpoint::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(b.port as i32)
                    .with_rack(b.rack.clone().map(StrBytes::from_string))
            })
            .collect();
        Some(
            ProduceResponse::default()
                .with_responses(responses)
                .with_node_endpoints(node_endpoints),
        )
    }
}
