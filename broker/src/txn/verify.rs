//! KIP-890 part 1, the leader's defence against hanging transactions: before a
//! partition takes the first transactional batch of a producer's transaction, the
//! leader asks the transaction's coordinator whether the partition was added to it
//! (AddPartitionsToTxn v4 with `verify_only`), in place when this broker coordinates the
//! id, over the wire otherwise. A batch a late or zombie producer sends after its
//! transaction ended is refused with INVALID_TXN_STATE instead of opening a transaction
//! no marker will ever close; a fenced producer's is INVALID_PRODUCER_EPOCH, as the
//! partition itself answers older epochs. When the coordinator cannot be asked, the batch gets
//! NOT_ENOUGH_REPLICAS, retriable, as Kafka answers.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::coordinator::TxnCoordinator;
use crate::partition::TopicPartition;
use crate::peer::Peer;
use crate::router;
use crate::shard::Shard;

/// The first AddPartitionsToTxn version with `verify_only`.
const VERIFY_VERSION: i16 = 4;

/// Whether `tp` is in the ongoing transaction of `transactional_id` under
/// `producer` (id, epoch).
pub async fn verify(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer: (i64, i16),
    tp: &TopicPartition,
) -> Result<(), ResponseError> {
    let metadata = shard.metadata();
    let coordinator = shard.cluster.coordinator_partition::<TxnCoordinator>(transactional_id);
    let Some(leader) = metadata
        .partition(&coordinator.topic, coordinator.partition)
        .map(|s| s.leader)
    else {
        return Err(ResponseError::NotEnoughReplicas);
    };
    let outcome = if shard.leads(&metadata, leader) {
        let id = transactional_id.to_string();
        let parts = vec![(tp.topic.clone(), tp.partition)];
        router::ask::<TxnCoordinator, _, _, _>(shard, transactional_id, move |s| async move {
            s.txns.verify(&id, producer, &parts).into_iter().next().flatten()
        })
        .await
        .and_then(|e| e.map_or(Ok(()), Err))
    } else {
        verify_remote(shard, leader, transactional_id, producer, tp).await
    };
    outcome.map_err(|e| match e {
        ResponseError::InvalidTxnState | ResponseError::InvalidProducerIdMapping => ResponseError::InvalidTxnState,
        // An older epoch than the coordinator's: the partition's own answer to a
        // fenced producer (fatal for the client, as Kafka's).
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        _ => ResponseError::NotEnoughReplicas,
    })
}

async fn verify_remote(
    shard: &Rc<Shard>,
    leader: i32,
    transactional_id: &str,
    producer: (i64, i16),
    tp: &TopicPartition,
) -> Result<(), ResponseError> {
    let metadata = shard.metadata();
    let broker = metadata.brokers.get(&leader).ok_or(ResponseError::NotEnoughReplicas)?;
    let request =
        AddPartitionsToTxnRequest::default().with_transactions(vec![AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(transactional_id.to_string())))
            .with_producer_id(ProducerId(producer.0))
            .with_producer_epoch(producer.1)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(tp.topic.clone())))
                .with_partitions(vec![tp.partition])])]);
    let mut peer = Peer::connect(
        (broker.host.clone(), broker.port),
        format!("sluice-txn-verify-{}", shard.cluster.me.id),
    )
    .await
    .map_err(|_| ResponseError::NotEnoughReplicas)?;
    let response = peer
        .call(&request, VERIFY_VERSION)
        .await
        .map_err(|_| ResponseError::NotEnoughReplicas)?;
    if response.error_code != 0 {
        return Err(ResponseError::try_from_code(response.error_code).unwrap_or(ResponseError::UnknownServerError));
    }
    let code = response
        .results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .flat_map(|t| t.results_by_partition.iter())
        .map(|p| p.partition_error_code)
        .find(|c| *c != 0);
    match code {
        None => Ok(()),
        Some(c) => Err(ResponseError::try_from_code(c).unwrap_or(ResponseError::UnknownServerError)),
    }
}
