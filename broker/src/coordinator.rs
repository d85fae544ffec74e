//! The seam through which a shard hosts coordinators: the group coordinator today, the
//! transaction coordinator (`__transaction_state`) and the share-group coordinator
//! (`__share_group_state`) next.
//!
//! A coordinator keeps state for keys (group ids, transactional ids) in the log of an
//! internal topic; a key lives in the partition `partition_for(key)` picks, and the
//! shard that owns that partition (in a cluster: the broker that leads it) hosts the
//! key's state. A coordinator sees its partitions only through [`Host`]: it appends the
//! records it built, reads them back at load, and reads cluster metadata. It never
//! sees the shard, sockets or the wire; requests reach it through `router::ask`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_controller::ClusterMetadata;
use sluice_storage::{Appended, Durability, Offset};

use crate::partition::TopicPartition;

/// What a shard gives the coordinators it hosts.
pub(crate) trait Host {
    /// The shard's metadata snapshot.
    fn metadata(&self) -> Arc<ClusterMetadata>;
    /// Appends a batch the coordinator built to one of its partitions on this shard;
    /// the receipt, when there is one, resolves at `durability`.
    fn append(&self, tp: &TopicPartition, batch: Bytes, durability: Durability) -> Result<Appended, ResponseError>;
    /// Resolves when everything before `target` in `tp` is committed (every in-sync
    /// replica has it), as acks=all waits.
    fn committed(&self, tp: &TopicPartition, target: Offset) -> impl Future<Output = Result<(), ResponseError>>;
    /// Whole batches of one of its partitions from `offset` (empty at the end).
    fn read(&self, tp: &TopicPartition, offset: Offset) -> impl Future<Output = Result<Bytes, String>>;
}

/// Keyed state kept in the log of an internal topic.
pub(crate) trait Coordinator {
    /// The internal topic whose log holds the state.
    const TOPIC: &'static str;
    /// The partition of [`Coordinator::TOPIC`] that `key` lives in.
    fn partition_for(key: &str, partitions: i32) -> i32;
    /// Rebuilds the state of `partitions` (those this shard hosts) from their logs.
    fn load(&self, host: &impl Host, partitions: &[TopicPartition]) -> impl Future<Output = Result<(), String>>;
    /// Timers (session expiry, deadlines, expiring old state), every [`TICK`].
    fn tick(&self, host: &impl Host);
}

/// Reads `tp` from its start to its log end through `host` and hands every whole
/// batch (header and bytes) to `visit`, in order: how coordinators replay their state.
pub(crate) async fn replay(
    host: &impl Host,
    tp: &TopicPartition,
    mut visit: impl FnMut(&sluice_storage::BatchHeader, &[u8]),
) -> Result<(), String> {
    let mut offset = Offset::ZERO;
    loop {
        let chunk = host
            .read(tp, offset)
            .await
            .map_err(|e| format!("{}-{}: {e}", tp.topic, tp.partition))?;
        if chunk.is_empty() {
            return Ok(());
        }
        let mut rest = &chunk[..];
        while let Ok(h) = sluice_storage::BatchHeader::parse(rest) {
            if h.size > rest.len() {
                break;
            }
            let (batch, tail) = rest.split_at(h.size);
            rest = tail;
            offset = h.next_offset();
            visit(&h, batch);
        }
    }
}

/// Waits until an append of a coordinator's state is durable and on every in-sync
/// replica (as acks=all, so the key's next coordinator has it), within `timeout`.
/// Kafka's answers for a state write that did not take: NOT_COORDINATOR when the
/// partition's leadership moved, COORDINATOR_NOT_AVAILABLE otherwise (not enough
/// replicas, a storage error, a timeout). `what` names the state in the log line.
pub(crate) async fn wait_durable(
    host: &impl Host,
    tp: &TopicPartition,
    appended: Appended,
    timeout: std::time::Duration,
    what: &str,
) -> Result<(), ResponseError> {
    let target = appended.info.last_offset.plus(1);
    let durable = async {
        if let Some(receipt) = appended.receipt {
            receipt.wait().await.map_err(|_| ResponseError::KafkaStorageError)?;
        }
        host.committed(tp, target).await
    };
    match tokio::time::timeout(timeout, durable).await {
        Ok(Ok(())) => Ok(()),
        outcome => {
            tracing::error!(topic = %tp.topic, partition = tp.partition, "{what} not durable: {outcome:?}");
            Err(match outcome {
                Ok(Err(ResponseError::NotLeaderOrFollower)) => ResponseError::NotCoordinator,
                _ => ResponseError::CoordinatorNotAvailable,
            })
        }
    }
}

/// How often coordinators' timers run. Kafka's purgatory ticks at 200 ms; 100 ms keeps
/// rebalance latency small at a negligible cost.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Java's `String.hashCode` over UTF-16 code units, as Kafka uses to place a key.
pub fn java_hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// Kafka's `partitionFor(key)`: `Utils.abs(hashCode) % partitions`, for groups and
/// transactional ids alike.
pub fn kafka_partition_for(key: &str, partitions: i32) -> i32 {
    let h = java_hash_code(key);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_kafka() {
        assert_eq!(java_hash_code(""), 0);
        assert_eq!(java_hash_code("a"), 97);
        assert_eq!(java_hash_code("ab"), 97 * 31 + 98);
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE in Java; Utils.abs maps it to 0.
        assert_eq!(java_hash_code("polygenelubricants"), i32::MIN);
        assert_eq!(kafka_partition_for("polygenelubricants", 50), 0);
        assert!((0..50).contains(&kafka_partition_for("any group at all", 50)));
    }
}
