//! InitProducerId (KIP-98, KIP-360) for idempotent producers: a fresh producer id at
//! epoch 0 for every call, as Kafka does when there is no transactional id. Java
//! clients since 3.0 and kafka-python 3 enable idempotence by default and need this.
//! Transactional ids arrive with the transactions issue.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct InitProducerIdHandler;

impl Handler for InitProducerIdHandler {
    type Request = InitProducerIdRequest;
    type Response = InitProducerIdResponse;
    // v6 adds two-phase-commit fields (KIP-939), which need transactions.
    const VERSIONS: (i16, i16) = (0, 5);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: InitProducerIdRequest,
    ) -> Option<InitProducerIdResponse> {
        let failed = |error: ResponseError| {
            InitProducerIdResponse::default()
                .with_error_code(error.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        };
        if request.transactional_id.as_ref().is_some_and(|id| !id.is_empty()) {
            tracing::debug!("InitProducerId with a transactional id: transactions are not supported yet");
            return Some(failed(ResponseError::InvalidRequest));
        }
        match shard.next_producer_id().await {
            Ok(id) => Some(
                InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(0),
            ),
            Err(e) => {
                tracing::error!("cannot reserve producer ids: {e}");
                Some(failed(ResponseError::KafkaStorageError))
            }
        }
    }
}
