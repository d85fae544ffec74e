//! Writing a transaction's markers (Kafka's `TransactionMarkerChannelManager`): one
//! COMMIT or ABORT control batch in every partition the transaction touched. Partitions
//! this broker leads are written in place through the routing seam ([`MarkerOp`], the
//! same work a WriteTxnMarkers request does); for the others one WriteTxnMarkers v1
//! request goes to each leader. A marker is acknowledged once every in-sync replica
//! has it (as acks=all), and a marker in `__consumer_offsets` makes the transaction's
//! offset commits visible to the group (or drops them).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_controller::NO_LEADER;
use sluice_storage::{ControlType, Durability, Marker};

use crate::group::OFFSETS_TOPIC;
use crate::partition::TopicPartition;
use crate::peer::Peer;
use crate::router::{self, PartitionOp};
use crate::shard::Shard;

/// How long one marker waits to be durable on the in-sync replicas.
const MARKER_TIMEOUT: Duration = Duration::from_secs(5);
/// The only WriteTxnMarkers version (Kafka 4 removed v0).
pub const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// Appends one marker to each partition of a request, on the shard that owns them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MarkerOp {
    pub marker: Marker,
}

impl PartitionOp for MarkerOp {
    type Item = ();
    type Outcome = Option<ResponseError>;
    const API: ApiKey = ApiKey::WriteTxnMarkers;

    fn refused(error: ResponseError) -> Option<ResponseError> {
        Some(error)
    }

    /// Every marker is appended first and then waited for together, so one group
    /// commit (one fdatasync) covers all of this shard's partitions.
    async fn serve(self, shard: Rc<Shard>, items: Vec<(TopicPartition, ())>) -> Vec<Option<ResponseError>> {
        let waits = items.into_iter().map(|(tp, ())| {
            let appended = shard.append_marker(&tp, &self.marker, Durability::Synced);
            let shard = shard.clone();
            async move {
                let appended = appended.map_err(|(e, _)| e)?;
                durable(&shard, &tp, appended).await?;
                if tp.topic == OFFSETS_TOPIC {
                    shard
                        .groups
                        .complete_txn(&tp, self.marker.producer_id, self.marker.control == ControlType::Commit);
                }
                Ok::<(), ResponseError>(())
            }
        });
        futures_util::future::join_all(waits)
            .await
            .into_iter()
            .map(|r| r.err())
            .collect()
    }
}

/// Waits until an appended marker is on every in-sync replica (as acks=all).
async fn durable(shard: &Shard, tp: &TopicPartition, appended: sluice_storage::Appended) -> Result<(), ResponseError> {
    let target = appended.info.last_offset.plus(1);
    let durable = async {
        if let Some(receipt) = appended.receipt {
            receipt.wait().await.map_err(|_| ResponseError::KafkaStorageError)?;
        }
        shard.committed(tp, target).await
    };
    match tokio::time::timeout(MARKER_TIMEOUT, durable).await {
        Ok(result) => result,
        Err(_) => Err(ResponseError::RequestTimedOut),
    }
}

/// Writes `marker` to every partition in `partitions` that still exists; an error
/// names what is left to do (the caller retries later).
pub async fn write(shard: &Rc<Shard>, marker: Marker, partitions: &BTreeSet<(String, i32)>) -> Result<(), String> {
    let metadata = shard.metadata();
    let mut local = Vec::new();
    let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, partition) in partitions {
        // A deleted topic (or partition) needs no marker: nothing can read it.
        let Some(state) = metadata
            .topic(topic)
            .filter(|t| (0..t.partitions).contains(partition))
            .and_then(|t| t.partition(*partition))
        else {
            continue;
        };
        if state.leader == NO_LEADER {
            return Err(format!("{topic}-{partition} has no leader"));
        }
        if shard.leads(&metadata, state.leader) {
            local.push((TopicPartition::new(topic, *partition), ()));
        } else {
            remote
                .entry(state.leader)
                .or_default()
                .push((topic.clone(), *partition));
        }
    }
    let mut failures = Vec::new();
    let names: Vec<String> = local.iter().map(|(tp, ())| tp.dir_name()).collect();
    for (name, outcome) in names.iter().zip(router::route(shard, MarkerOp { marker }, local).await) {
        if let Some(e) = outcome {
            failures.push(format!("{name}: {e:?}"));
        }
    }
    for (leader, parts) in remote {
        if let Err(e) = write_remote(shard, leader, marker, &parts).await {
            failures.push(format!("broker {leader}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// One WriteTxnMarkers request to the leader of `parts`.
async fn write_remote(shard: &Rc<Shard>, leader: i32, marker: Marker, parts: &[(String, i32)]) -> Result<(), String> {
    let metadata = shard.metadata();
    let broker = metadata.brokers.get(&leader).ok_or("not a live broker")?;
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for (topic, partition) in parts {
        match topics.last_mut() {
            Some(t) if t.name.as_str() == topic => t.partition_indexes.push(*partition),
            _ => topics.push(
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partition_indexes(vec![*partition]),
            ),
        }
    }
    let request = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(marker.producer_id))
        .with_producer_epoch(marker.producer_epoch)
        .with_transaction_result(marker.control == ControlType::Commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(topics)]);
    let address = (broker.host.clone(), broker.port);
    let mut peer = Peer::connect(address, format!("sluice-txn-markers-{}", shard.cluster.me.id))
        .await
        .map_err(|e| e.to_string())?;
    let response = peer
        .call(&request, WRITE_TXN_MARKERS_VERSION)
        .await
        .map_err(|e| e.to_string())?;
    let errors: Vec<String> = response
        .markers
        .iter()
        .flat_map(|m| m.topics.iter())
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .filter(|(_, p)| p.error_code != 0)
        .map(|(t, p)| format!("{}-{}: error {}", t.name.as_str(), p.partition_index, p.error_code))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join(", "))
    }
}
