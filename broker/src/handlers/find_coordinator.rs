//! FindCoordinator: this broker coordinates every group (and, once transactions land,
//! every transactional id). v4+ asks for several keys at once (KIP-699).

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct FindCoordinatorHandler;

/// Key types of KIP-98: consumer groups and transactional ids.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

impl Handler for FindCoordinatorHandler {
    type Request = FindCoordinatorRequest;
    type Response = FindCoordinatorResponse;
    const VERSIONS: (i16, i16) = (0, 6);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: FindCoordinatorRequest,
    ) -> Option<FindCoordinatorResponse> {
        let node = BrokerId(shard.config().node_id);
        let (host, port) = shard.cluster.advertised.clone();
        let host = StrBytes::from_string(host);
        let error = match request.key_type {
            KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION => None,
            _ => Some(ResponseError::InvalidRequest),
        };
        if ctx.version() >= 4 {
            let coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| match error {
                    None => Coordinator::default()
                        .with_key(key)
                        .with_node_id(node)
                        .with_host(host.clone())
                        .with_port(port as i32),
                    Some(e) => Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_error_code(e.code()),
                })
                .collect();
            return Some(FindCoordinatorResponse::default().with_coordinators(coordinators));
        }
        Some(match error {
            None => FindCoordinatorResponse::default()
                .with_node_id(node)
                .with_host(host)
                .with_port(port as i32),
            Some(e) => FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1)),
        })
    }
}
