//! EndTxn (KIP-98): commit or abort. The coordinator makes the outcome durable
//! (PrepareCommit / PrepareAbort), writes the markers to every partition of the
//! transaction, then records it complete; the answer comes once the outcome is durable
//! and, usually, the markers are written. v5 (KIP-890 part 2, an epoch bump per
//! transaction) is not served.

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::{fenced_for, Handler, RequestContext};
use crate::router;
use crate::shard::Shard;
use crate::txn::coordinator::TxnCoordinator;

pub(crate) struct EndTxnHandler;

impl Handler for EndTxnHandler {
    type Request = EndTxnRequest;
    type Response = EndTxnResponse;
    const VERSIONS: (i16, i16) = (0, 4);

    async fn handle(shard: Rc<Shard>, ctx: RequestContext, request: EndTxnRequest) -> Option<EndTxnResponse> {
        let id = request.transactional_id.to_string();
        let producer = (request.producer_id.0, request.producer_epoch);
        let commit = request.committed;
        let key = id.clone();
        let error = router::ask::<TxnCoordinator, _, _, _>(&shard, &key, move |s| async move {
            s.txns.end(&s, &id, producer, commit).await
        })
        .await
        .and_then(|r| r)
        .err();
        Some(EndTxnResponse::default().with_error_code(fenced_for(ctx.version(), 2, error)))
    }
}
