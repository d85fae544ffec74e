//! WriteTxnMarkers (v1; inter-broker): a transaction coordinator on another broker asks
//! this one, the leader of some partitions, to append COMMIT or ABORT markers to them.
//! Each partition's marker goes through the routing seam to its owning shard and is
//! answered once every in-sync replica has it.

use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use sluice_storage::{ControlType, Marker};

use super::{error_code, Handler, RequestContext};
use crate::partition::TopicPartition;
use crate::router;
use crate::shard::Shard;
use crate::txn::markers::{MarkerOp, WRITE_TXN_MARKERS_VERSION};

pub(crate) struct WriteTxnMarkersHandler;

impl Handler for WriteTxnMarkersHandler {
    type Request = WriteTxnMarkersRequest;
    type Response = WriteTxnMarkersResponse;
    const VERSIONS: (i16, i16) = (WRITE_TXN_MARKERS_VERSION, WRITE_TXN_MARKERS_VERSION);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: WriteTxnMarkersRequest,
    ) -> Option<WriteTxnMarkersResponse> {
        let mut markers = Vec::with_capacity(request.markers.len());
        for m in request.markers {
            let marker = Marker {
                producer_id: m.producer_id.0,
                producer_epoch: m.producer_epoch,
                control: if m.transaction_result {
                    ControlType::Commit
                } else {
                    ControlType::Abort
                },
                coordinator_epoch: m.coordinator_epoch,
            };
            let items: Vec<(TopicPartition, ())> = m
                .topics
                .iter()
                .flat_map(|t| {
                    t.partition_indexes
                        .iter()
                        .map(|p| (TopicPartition::new(t.name.as_str(), *p), ()))
                })
                .collect();
            let mut outcomes = router::route(&shard, MarkerOp { marker }, items).await.into_iter();
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(*p)
                                .with_error_code(error_code(outcomes.next().flatten()))
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(partitions)
                })
                .collect();
            markers.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(topics),
            );
        }
        Some(WriteTxnMarkersResponse::default().with_markers(markers))
    }
}
