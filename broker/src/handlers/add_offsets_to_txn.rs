//! AddOffsetsToTxn (KIP-98): a transactional producer that will commit a group's
//! offsets in its transaction (`send_offsets_to_transaction`) adds the group's
//! `__consumer_offsets` partition to it, so the transaction's marker reaches it.

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{fenced_for, Handler, RequestContext};
use crate::group::coordinator::GroupCoordinator;
use crate::router;
use crate::shard::Shard;
use crate::txn::coordinator::TxnCoordinator;

pub(crate) struct AddOffsetsToTxnHandler;

impl Handler for AddOffsetsToTxnHandler {
    type Request = AddOffsetsToTxnRequest;
    type Response = AddOffsetsToTxnResponse;
    const VERSIONS: (i16, i16) = (0, 4);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: AddOffsetsToTxnRequest,
    ) -> Option<AddOffsetsToTxnResponse> {
        let id = request.transactional_id.to_string();
        let producer = (request.producer_id.0, request.producer_epoch);
        let offsets = shard
            .cluster
            .coordinator_partition::<GroupCoordinator>(request.group_id.as_str());
        let parts = vec![(offsets.topic, offsets.partition)];
        let key = id.clone();
        let error = router::ask::<TxnCoordinator, _, _, _>(&shard, &key, move |s| async move {
            s.txns.add_partitions(&s, &id, producer, &parts).await
        })
        .await
        .and_then(|r| r)
        .err();
        Some(AddOffsetsToTxnResponse::default().with_error_code(fenced_for(ctx.version(), 2, error)))
    }
}
