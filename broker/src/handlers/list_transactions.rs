//! ListTransactions (KIP-664; v1 adds KIP-994's duration filter): every transactional
//! id this broker coordinates, filtered by state, producer id and how long its
//! transaction has been open.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use super::{Handler, RequestContext};
use crate::router;
use crate::shard::Shard;
use crate::txn::machine::TxnState;

pub(crate) struct ListTransactionsHandler;

/// Every state name a filter may use.
const STATES: [TxnState; 8] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

impl Handler for ListTransactionsHandler {
    type Request = ListTransactionsRequest;
    type Response = ListTransactionsResponse;
    // v2's id pattern (a regular expression) is not served.
    const VERSIONS: (i16, i16) = (0, 1);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: ListTransactionsRequest,
    ) -> Option<ListTransactionsResponse> {
        let wanted: Vec<String> = request.state_filters.iter().map(|s| s.to_string()).collect();
        let unknown: Vec<StrBytes> = request
            .state_filters
            .iter()
            .filter(|f| !STATES.iter().any(|s| s.name() == f.as_str()))
            .cloned()
            .collect();
        let producers: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
        let now = crate::now_ms();
        let every_shard = router::broadcast(&shard, |s| async move { s.txns.list() }).await;
        let states = every_shard
            .into_iter()
            .flatten()
            .flatten()
            .filter(|m| wanted.is_empty() || wanted.iter().any(|w| w == m.state.name()))
            .filter(|m| producers.is_empty() || producers.contains(&m.producer_id))
            .filter(|m| {
                request.duration_filter < 0
                    || (m.state == TxnState::Ongoing && m.start_ms >= 0 && now - m.start_ms >= request.duration_filter)
            })
            .map(|m| {
                TransactionState::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(m.transactional_id)))
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_transaction_state(StrBytes::from_static_str(m.state.name()))
            })
            .collect();
        Some(
            ListTransactionsResponse::default()
                .with_unknown_state_filters(unknown)
                .with_transaction_states(states),
        )
    }
}
