//! How a share-partition reaches its share coordinator (Kafka's Persister): on this
//! broker through the shard that hosts the key, on another broker with Kafka's
//! ReadShareGroupState / WriteShareGroupState requests. One connection per peer broker
//! per shard, used by one request at a time in the order the requests were made (a
//! FIFO lock), so a share-partition's writes arrive in order.
//!
//! Each state carries its snapshot epoch (ours, not in Kafka's schema) as tagged field
//! [`SNAPSHOT_EPOCH_TAG`], so a late retry never replaces a newer state.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::read_share_group_state_request::{PartitionData as ReadPartition, ReadStateData};
use kafka_protocol::messages::write_share_group_state_request::{
    PartitionData as WritePartition, StateBatch as WriteBatch, WriteStateData,
};
use kafka_protocol::messages::{ReadShareGroupStateRequest, WriteShareGroupStateRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;

use super::partition::{Snapshot, StateRange};
use super::state::{ShareCoordinator, ShareKey, Stored};
use crate::peer::Peer;
use crate::router;
use crate::shard::Shard;

/// The tagged field that carries a state's snapshot epoch between brokers.
pub const SNAPSHOT_EPOCH_TAG: i32 = 0x5100;

/// Connections to the brokers that host share coordinators, by node id.
#[derive(Default)]
pub(crate) struct Peers {
    peers: RefCell<HashMap<i32, Rc<Mutex<Option<Peer>>>>>,
}

/// Where the key's share coordinator is: this broker, or another (its node id).
fn coordinator_of(shard: &Shard, key: &ShareKey) -> Result<Option<i32>, ResponseError> {
    let tp = shard
        .cluster
        .coordinator_partition::<ShareCoordinator>(&key.coordinator_key());
    let metadata = shard.metadata();
    let state = metadata
        .partition(&tp.topic, tp.partition)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    if shard.leads(&metadata, state.leader) {
        return Ok(None);
    }
    if !metadata.brokers.contains_key(&state.leader) {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    Ok(Some(state.leader))
}

/// ReadShareGroupState: the stored state, None for a share-partition never written.
pub(crate) async fn read(shard: &Rc<Shard>, key: ShareKey) -> Result<Option<Stored>, ResponseError> {
    let Some(node) = coordinator_of(shard, &key)? else {
        let at = key.coordinator_key();
        return router::ask::<ShareCoordinator, _, _, _>(shard, &at, move |s| async move { s.share_state.read(&key) })
            .await;
    };
    let request = ReadShareGroupStateRequest::default()
        .with_group_id(StrBytes::from_string(key.group.clone()))
        .with_topics(vec![ReadStateData::default()
            .with_topic_id(key.topic_id)
            .with_partitions(vec![ReadPartition::default().with_partition(key.partition)])]);
    let response = call(shard, node, |peer| {
        Box::pin(async move { peer.call(&request, 0).await })
    })
    .await?;
    let p = response
        .results
        .first()
        .and_then(|r| r.partitions.first())
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    if p.error_code != 0 {
        return Err(error_of(p.error_code));
    }
    if p.state_epoch < 0 {
        return Ok(None);
    }
    let ranges = p
        .state_batches
        .iter()
        .filter_map(|b| StateRange::from_wire(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count))
        .collect();
    Ok(Some(Stored {
        snapshot_epoch: snapshot_epoch_of(&p.unknown_tagged_fields).unwrap_or(0),
        snapshot: Snapshot {
            state_epoch: p.state_epoch,
            start: p.start_offset,
            ranges,
        },
    }))
}

/// WriteShareGroupState: stores the state (unless a newer one is stored) and answers
/// once it is durable.
pub(crate) async fn write(shard: &Rc<Shard>, key: ShareKey, stored: Stored) -> Result<(), ResponseError> {
    let Some(node) = coordinator_of(shard, &key)? else {
        let at = key.coordinator_key();
        return router::ask::<ShareCoordinator, _, _, _>(shard, &at, move |s| async move {
            s.share_state.write(s.as_ref(), key, stored).await
        })
        .await?;
    };
    let s = &stored.snapshot;
    let partition = WritePartition::default()
        .with_partition(key.partition)
        .with_state_epoch(s.state_epoch)
        .with_leader_epoch(-1)
        .with_start_offset(s.start)
        .with_state_batches(
            s.ranges
                .iter()
                .map(|r| {
                    WriteBatch::default()
                        .with_first_offset(r.first)
                        .with_last_offset(r.last)
                        .with_delivery_state(r.state.code())
                        .with_delivery_count(r.delivery_count)
                })
                .collect(),
        )
        .with_unknown_tagged_fields(snapshot_epoch_field(stored.snapshot_epoch));
    let request = WriteShareGroupStateRequest::default()
        .with_group_id(StrBytes::from_string(key.group.clone()))
        .with_topics(vec![WriteStateData::default()
            .with_topic_id(key.topic_id)
            .with_partitions(vec![partition])]);
    let response = call(shard, node, |peer| {
        Box::pin(async move { peer.call(&request, 0).await })
    })
    .await?;
    let code = response
        .results
        .first()
        .and_then(|r| r.partitions.first())
        .map_or(ResponseError::CoordinatorNotAvailable.code(), |p| p.error_code);
    if code != 0 {
        return Err(error_of(code));
    }
    Ok(())
}

type Call<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<T>> + 'a>>;

/// Runs one request on this shard's connection to `node` (made on first use and again
/// after a failure); a broken connection is COORDINATOR_NOT_AVAILABLE (retried).
async fn call<T>(
    shard: &Rc<Shard>,
    node: i32,
    request: impl for<'a> FnOnce(&'a mut Peer) -> Call<'a, T>,
) -> Result<T, ResponseError> {
    let slot = shard.shares.peers.peers.borrow_mut().entry(node).or_default().clone();
    let mut connection = slot.lock().await;
    if connection.is_none() {
        let broker = shard
            .metadata()
            .brokers
            .get(&node)
            .map(|b| (b.host.clone(), b.port))
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        let client_id = format!("sluice-share-{}", shard.cluster.me.id);
        *connection = Some(Peer::connect(broker, client_id).await.map_err(|e| {
            tracing::warn!(node, "cannot reach the share coordinator: {e}");
            ResponseError::CoordinatorNotAvailable
        })?);
    }
    let Some(peer) = connection.as_mut() else {
        return Err(ResponseError::CoordinatorNotAvailable);
    };
    match request(peer).await {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::warn!(node, "share coordinator request failed: {e}");
            *connection = None;
            Err(ResponseError::CoordinatorNotAvailable)
        }
    }
}

fn error_of(code: i16) -> ResponseError {
    ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError)
}

pub fn snapshot_epoch_field(epoch: i64) -> BTreeMap<i32, Bytes> {
    [(SNAPSHOT_EPOCH_TAG, Bytes::copy_from_slice(&epoch.to_be_bytes()))].into()
}

pub fn snapshot_epoch_of(fields: &BTreeMap<i32, Bytes>) -> Option<i64> {
    let b = fields.get(&SNAPSHOT_EPOCH_TAG)?;
    Some(i64::from_be_bytes(b.as_ref().try_into().ok()?))
}
