//! DescribeCluster (KIP-700): the cluster id, the broker running the controller duty,
//! and every live broker, from this shard's metadata snapshot. Sluice has no separate
//! controller nodes to describe (KIP-919's endpoint type 2): etcd plays that part.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct DescribeClusterHandler;

/// KIP-919's endpoint types: brokers, or the KRaft controllers.
const ENDPOINT_TYPE_BROKERS: i8 = 1;

/// Kafka's "authorized operations were not asked for".
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

impl Handler for DescribeClusterHandler {
    type Request = DescribeClusterRequest;
    type Response = DescribeClusterResponse;
    const VERSIONS: (i16, i16) = (0, 2);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: DescribeClusterRequest,
    ) -> Option<DescribeClusterResponse> {
        if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
            return Some(
                DescribeClusterResponse::default()
                    .with_error_code(ResponseError::UnsupportedEndpointType.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Sluice brokers describe brokers only; the controller is etcd",
                    )))
                    .with_endpoint_type(request.endpoint_type)
                    .with_controller_id(BrokerId(-1))
                    .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED),
            );
        }
        let metadata = shard.metadata();
        let brokers = metadata
            .brokers
            .values()
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(b.port as i32)
                    .with_rack(b.rack.clone().map(StrBytes::from_string))
            })
            .collect();
        Some(
            DescribeClusterResponse::default()
                .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
                .with_cluster_id(StrBytes::from_string(metadata.cluster_id.clone()))
                .with_controller_id(BrokerId(super::controller_for_clients(&shard, &metadata)))
                .with_brokers(brokers)
                .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED),
        )
    }
}
