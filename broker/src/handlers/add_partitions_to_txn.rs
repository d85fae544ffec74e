//! AddPartitionsToTxn (KIP-98): a transactional producer names the partitions it is
//! about to write before it writes them, so its coordinator knows where the markers
//! go. v0–3 carry one transaction from a client; v4+ (KIP-890) batch several and may
//! only verify (`verify_only`) that partitions are in their ongoing transaction.
//! Partitions that do not exist are UNKNOWN_TOPIC_OR_PARTITION and the rest of the
//! request OPERATION_NOT_ATTEMPTED, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TransactionalId};
use kafka_protocol::ResponseError;

use super::{error_code, Handler, RequestContext};
use crate::router;
use crate::shard::Shard;
use crate::txn::coordinator::TxnCoordinator;

pub(crate) struct AddPartitionsToTxnHandler;

/// One transaction's partitions, each with its outcome.
async fn add(
    shard: &Rc<Shard>,
    id: TransactionalId,
    producer: (i64, i16),
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let metadata = shard.metadata();
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    let unknown: Vec<bool> = partitions
        .iter()
        .map(|(t, p)| !metadata.topic(t).is_some_and(|m| (0..m.partitions).contains(p)))
        .collect();
    let errors: Vec<Option<ResponseError>> = if unknown.iter().any(|u| *u) {
        unknown
            .iter()
            .map(|u| {
                Some(if *u {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::OperationNotAttempted
                })
            })
            .collect()
    } else {
        let key = id.to_string();
        let parts = partitions.clone();
        let answer = router::ask::<TxnCoordinator, _, _, _>(shard, &key, move |s| async move {
            let id = id.to_string();
            if verify_only {
                s.txns.verify(&id, producer, &parts)
            } else {
                let outcome = s.txns.add_partitions(&s, &id, producer, &parts).await.err();
                vec![outcome; parts.len()]
            }
        })
        .await;
        match answer {
            Ok(errors) => errors,
            Err(e) => vec![Some(e); partitions.len()],
        }
    };
    let mut errors = errors.into_iter();
    topics
        .iter()
        .map(|t| {
            let results = t
                .partitions
                .iter()
                .map(|p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(error_code(errors.next().flatten()))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(results)
        })
        .collect()
}

impl Handler for AddPartitionsToTxnHandler {
    type Request = AddPartitionsToTxnRequest;
    type Response = AddPartitionsToTxnResponse;
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: AddPartitionsToTxnRequest,
    ) -> Option<AddPartitionsToTxnResponse> {
        if ctx.version() <= 3 {
            let producer = (request.v3_and_below_producer_id.0, request.v3_and_below_producer_epoch);
            let mut results = add(
                &shard,
                request.v3_and_below_transactional_id,
                producer,
                &request.v3_and_below_topics,
                false,
            )
            .await;
            if ctx.version() < 2 {
                // KIP-588: clients before v2 know INVALID_PRODUCER_EPOCH only.
                for t in &mut results {
                    for p in &mut t.results_by_partition {
                        if p.partition_error_code == ResponseError::ProducerFenced.code() {
                            p.partition_error_code = ResponseError::InvalidProducerEpoch.code();
                        }
                    }
                }
            }
            return Some(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results));
        }
        let mut out = Vec::with_capacity(request.transactions.len());
        for txn in request.transactions {
            let producer = (txn.producer_id.0, txn.producer_epoch);
            let id = txn.transactional_id.clone();
            let results = add(&shard, txn.transactional_id, producer, &txn.topics, txn.verify_only).await;
            out.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(id)
                    .with_topic_results(results),
            );
        }
        Some(AddPartitionsToTxnResponse::default().with_results_by_transaction(out))
    }
}
