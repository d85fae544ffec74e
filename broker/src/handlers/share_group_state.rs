//! ReadShareGroupState and WriteShareGroupState (KIP-932): the share coordinator's
//! inter-broker API. A partition's leader on another broker reads and writes its
//! share-partitions' state here when this broker leads their `__share_group_state`
//! partition. Our snapshot epoch rides in a tagged field (see `share::persister`).

use std::rc::Rc;

use kafka_protocol::messages::read_share_group_state_response::{
    PartitionResult as ReadResult, ReadStateResult, StateBatch as ReadBatch,
};
use kafka_protocol::messages::write_share_group_state_response::{PartitionResult as WriteResult, WriteStateResult};
use kafka_protocol::messages::{
    ReadShareGroupStateRequest, ReadShareGroupStateResponse, WriteShareGroupStateRequest, WriteShareGroupStateResponse,
};
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::router;
use crate::shard::Shard;
use crate::share::partition::{Snapshot, StateRange};
use crate::share::persister::{snapshot_epoch_field, snapshot_epoch_of};
use crate::share::state::{ShareCoordinator, ShareKey, Stored};

pub(crate) struct ReadShareGroupStateHandler;
pub(crate) struct WriteShareGroupStateHandler;

impl Handler for ReadShareGroupStateHandler {
    type Request = ReadShareGroupStateRequest;
    type Response = ReadShareGroupStateResponse;
    const VERSIONS: (i16, i16) = (0, 0);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: ReadShareGroupStateRequest,
    ) -> Option<ReadShareGroupStateResponse> {
        let group = request.group_id.to_string();
        let mut results = Vec::new();
        for topic in request.topics {
            let mut partitions = Vec::new();
            for p in topic.partitions {
                let key = ShareKey {
                    group: group.clone(),
                    topic_id: topic.topic_id,
                    partition: p.partition,
                };
                let at = key.coordinator_key();
                let read =
                    router::ask::<ShareCoordinator, _, _, _>(
                        &shard,
                        &at,
                        move |s| async move { s.share_state.read(&key) },
                    )
                    .await;
                let result = ReadResult::default().with_partition(p.partition);
                partitions.push(match read {
                    Ok(Some(stored)) => result
                        .with_state_epoch(stored.snapshot.state_epoch)
                        .with_start_offset(stored.snapshot.start)
                        .with_state_batches(
                            stored
                                .snapshot
                                .ranges
                                .iter()
                                .map(|r| {
                                    ReadBatch::default()
                                        .with_first_offset(r.first)
                                        .with_last_offset(r.last)
                                        .with_delivery_state(r.state.code())
                                        .with_delivery_count(r.delivery_count)
                                })
                                .collect(),
                        )
                        .with_unknown_tagged_fields(snapshot_epoch_field(stored.snapshot_epoch)),
                    // Never written: state epoch -1.
                    Ok(None) => result.with_state_epoch(-1).with_start_offset(-1),
                    Err(e) => result.with_error_code(e.code()),
                });
            }
            results.push(
                ReadStateResult::default()
                    .with_topic_id(topic.topic_id)
                    .with_partitions(partitions),
            );
        }
        Some(ReadShareGroupStateResponse::default().with_results(results))
    }
}

impl Handler for WriteShareGroupStateHandler {
    type Request = WriteShareGroupStateRequest;
    type Response = WriteShareGroupStateResponse;
    const VERSIONS: (i16, i16) = (0, 0);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: WriteShareGroupStateRequest,
    ) -> Option<WriteShareGroupStateResponse> {
        let group = request.group_id.to_string();
        let mut results = Vec::new();
        for topic in request.topics {
            let mut partitions = Vec::new();
            for p in topic.partitions {
                let key = ShareKey {
                    group: group.clone(),
                    topic_id: topic.topic_id,
                    partition: p.partition,
                };
                let ranges: Option<Vec<StateRange>> = p
                    .state_batches
                    .iter()
                    .map(|b| StateRange::from_wire(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count))
                    .collect();
                let result = WriteResult::default().with_partition(p.partition);
                let Some(ranges) = ranges else {
                    partitions.push(result.with_error_code(ResponseError::InvalidRequest.code()));
                    continue;
                };
                let snapshot = Snapshot {
                    state_epoch: p.state_epoch,
                    start: p.start_offset,
                    ranges,
                };
                let tagged = snapshot_epoch_of(&p.unknown_tagged_fields);
                let at = key.coordinator_key();
                let written = router::ask::<ShareCoordinator, _, _, _>(&shard, &at, move |s| async move {
                    // A writer that sends no snapshot epoch (not Sluice) replaces the state.
                    let snapshot_epoch =
                        tagged.unwrap_or_else(|| s.share_state.read(&key).map_or(1, |st| st.snapshot_epoch + 1));
                    let stored = Stored {
                        snapshot_epoch,
                        snapshot,
                    };
                    s.share_state.write(s.as_ref(), key, stored).await
                })
                .await
                .and_then(|r| r);
                partitions.push(match written {
                    Ok(()) => result,
                    Err(e) => result.with_error_code(e.code()),
                });
            }
            results.push(
                WriteStateResult::default()
                    .with_topic_id(topic.topic_id)
                    .with_partitions(partitions),
            );
        }
        Some(WriteShareGroupStateResponse::default().with_results(results))
    }
}
