//! InitProducerId (KIP-98, KIP-360). Without a transactional id: a fresh producer id at
//! epoch 0 for every call (idempotent producers; Java clients since 3.0 and
//! kafka-python 3 enable idempotence by default). With one: the transaction
//! coordinator of that id answers with its producer id under the next epoch, aborting
//! a transaction left open and fencing any older producer of the id.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::router;
use crate::shard::Shard;
use crate::txn::coordinator::TxnCoordinator;

pub(crate) struct InitProducerIdHandler;

impl Handler for InitProducerIdHandler {
    type Request = InitProducerIdRequest;
    type Response = InitProducerIdResponse;
    // v6 adds two-phase-commit fields (KIP-939).
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: InitProducerIdRequest,
    ) -> Option<InitProducerIdResponse> {
        let answer = match request.transactional_id.as_ref().filter(|id| !id.is_empty()) {
            Some(id) => {
                let id = id.to_string();
                let timeout_ms = request.transaction_timeout_ms;
                let client = (request.producer_id.0, request.producer_epoch);
                let key = id.clone();
                router::ask::<TxnCoordinator, _, _, _>(&shard, &key, move |s| async move {
                    s.txns.clone().init(&s, &id, timeout_ms, client).await
                })
                .await
                .and_then(|r| r)
                .map_err(|e| match e {
                    // Clients before v4 know no PRODUCER_FENCED (KIP-588).
                    ResponseError::ProducerFenced if ctx.version() < 4 => ResponseError::InvalidProducerEpoch,
                    e => e,
                })
            }
            None => match shard.next_producer_id().await {
                Ok(id) => Ok((id, 0)),
                Err(e) => {
                    tracing::error!("cannot reserve producer ids: {e}");
                    Err(ResponseError::KafkaStorageError)
                }
            },
        };
        Some(match answer {
            Ok((id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(error) => InitProducerIdResponse::default()
                .with_error_code(error.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        })
    }
}
