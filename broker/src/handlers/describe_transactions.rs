//! DescribeTransactions (KIP-664): each transactional id's state as its coordinator
//! holds it; an id this broker does not coordinate is NOT_COORDINATOR, an unknown one
//! TRANSACTIONAL_ID_NOT_FOUND.

use std::rc::Rc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::router;
use crate::shard::Shard;
use crate::txn::coordinator::TxnCoordinator;

pub(crate) struct DescribeTransactionsHandler;

impl Handler for DescribeTransactionsHandler {
    type Request = DescribeTransactionsRequest;
    type Response = DescribeTransactionsResponse;
    const VERSIONS: (i16, i16) = (0, 0);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: DescribeTransactionsRequest,
    ) -> Option<DescribeTransactionsResponse> {
        let mut states = Vec::with_capacity(request.transactional_ids.len());
        for id in request.transactional_ids {
            let key = id.to_string();
            let found = router::ask::<TxnCoordinator, _, _, _>(&shard, &key, {
                let key = key.clone();
                move |s| async move { s.txns.describe(&key) }
            })
            .await
            .and_then(|m| m.ok_or(ResponseError::TransactionalIdNotFound));
            states.push(match found {
                Ok(m) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (topic, partition) in &m.partitions {
                        match topics.last_mut() {
                            Some(t) if t.topic.as_str() == topic => t.partitions.push(*partition),
                            _ => topics.push(
                                TopicData::default()
                                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                                    .with_partitions(vec![*partition]),
                            ),
                        }
                    }
                    TransactionState::default()
                        .with_transactional_id(id)
                        .with_transaction_state(StrBytes::from_static_str(m.state.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.producer_epoch)
                        .with_topics(topics)
                }
                Err(e) => TransactionState::default()
                    .with_transactional_id(id)
                    .with_error_code(e.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1),
            });
        }
        Some(DescribeTransactionsResponse::default().with_transaction_states(states))
    }
}
