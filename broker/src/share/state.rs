//! The share coordinator: every share-partition's durable state, kept in
//! `__share_group_state` (Kafka's ShareCoordinator and its persister, inside one
//! broker). A share-partition's key is Kafka's `group:topicId:partition`; its record
//! is replaced by every change (the topic is compacted), and the latest is its state.
//!
//! Record layout (big-endian; ours, versioned): key = version i16 (0), group (i16
//! length + bytes), topic id (16 bytes), partition i32; value = version i16 (0),
//! snapshot epoch i64, state epoch i32, start offset i64, then a count i32 of
//! (first i64, last i64, state i8, delivery count i16) runs. A null value removes the
//! share-partition (its group was deleted).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_storage::{batch, Durability};
use uuid::Uuid;

use super::partition::{Snapshot, StateRange};
use super::SHARE_STATE_TOPIC;
use crate::coordinator::{kafka_partition_for, replay, Coordinator, Host};
use crate::group::records::{put_string, Reader};
use crate::partition::TopicPartition;

/// How long a state write waits to be durable on the in-sync replicas (as the other
/// coordinators' writes).
const STATE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most runs one record may hold when decoded: a share-partition has at most
/// `group.share.partition.max.record.locks` offsets in flight, far fewer runs.
const RUNS_MAX: i32 = 1 << 20;

/// Which share-partition: a group's view of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShareKey {
    pub group: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

impl ShareKey {
    /// Kafka's `SharePartitionKey` as a coordinator key: what places it.
    pub fn coordinator_key(&self) -> String {
        format!("{}:{}:{}", self.group, self.topic_id, self.partition)
    }
}

/// A share-partition's state as stored: the snapshot and its epoch (each write of a
/// share-partition has a higher one, so a write that arrives late never replaces a
/// newer state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub snapshot_epoch: i64,
    pub snapshot: Snapshot,
}

pub(crate) struct ShareCoordinator {
    states: RefCell<HashMap<ShareKey, Stored>>,
    partitions: i32,
}

impl Coordinator for ShareCoordinator {
    const TOPIC: &'static str = SHARE_STATE_TOPIC;

    fn partition_for(key: &str, partitions: i32) -> i32 {
        kafka_partition_for(key, partitions)
    }

    async fn load(&self, host: &impl Host, partitions: &[TopicPartition]) -> Result<(), String> {
        for tp in partitions {
            replay(host, tp, |h, batch| {
                if h.compression() != 0 || h.is_control() {
                    return;
                }
                let mut states = self.states.borrow_mut();
                let _ = batch::for_each_record(&batch[batch::BATCH_HEADER_LEN..], |r| {
                    let Some(key) = r.key.and_then(decode_key) else {
                        return Ok(());
                    };
                    match r.value.map(decode_value) {
                        Some(Some(stored)) => {
                            states.insert(key, stored);
                        }
                        Some(None) => {}
                        None => {
                            states.remove(&key);
                        }
                    }
                    Ok(())
                });
            })
            .await?;
        }
        Ok(())
    }

    fn tick(&self, _host: &impl Host) {}
}

impl ShareCoordinator {
    pub fn new(partitions: i32) -> ShareCoordinator {
        ShareCoordinator {
            states: RefCell::new(HashMap::new()),
            partitions,
        }
    }

    pub fn partition_of(&self, key: &ShareKey) -> TopicPartition {
        TopicPartition::new(
            SHARE_STATE_TOPIC,
            Self::partition_for(&key.coordinator_key(), self.partitions),
        )
    }

    /// Kafka's ReadShareGroupState: the stored state, None for a share-partition
    /// never written.
    pub fn read(&self, key: &ShareKey) -> Option<Stored> {
        self.states.borrow().get(key).cloned()
    }

    /// Kafka's WriteShareGroupState: stores `stored` unless a newer state is already
    /// stored, and answers once it is durable.
    pub async fn write(&self, host: &impl Host, key: ShareKey, stored: Stored) -> Result<(), ResponseError> {
        if self
            .states
            .borrow()
            .get(&key)
            .is_some_and(|s| s.snapshot_epoch >= stored.snapshot_epoch)
        {
            return Ok(());
        }
        let tp = self.partition_of(&key);
        let (k, v) = (encode_key(&key), encode_value(&stored));
        let batch = Bytes::from(batch::build(
            &[(Some(k.as_slice()), Some(v.as_slice()))],
            crate::now_ms(),
        ));
        let appended = host.append(&tp, batch, Durability::Synced).map_err(|e| {
            tracing::error!(group = %key.group, "cannot write to {SHARE_STATE_TOPIC}: {e:?}");
            match e {
                ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition => {
                    ResponseError::NotCoordinator
                }
                _ => ResponseError::CoordinatorNotAvailable,
            }
        })?;
        // Taken at once, so a later write that overtakes this one's wait is not lost.
        self.states.borrow_mut().insert(key.clone(), stored);
        let what = format!("share state of {}", key.coordinator_key());
        crate::coordinator::wait_durable(host, &tp, appended, STATE_WRITE_TIMEOUT, &what).await
    }

    /// Forgets the share-partitions of `tp`, whose leadership moved away.
    pub fn unload(&self, tp: &TopicPartition) {
        let partitions = self.partitions;
        self.states
            .borrow_mut()
            .retain(|k, _| Self::partition_for(&k.coordinator_key(), partitions) != tp.partition);
    }
}

fn encode_key(key: &ShareKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 2 + key.group.len() + 16 + 4);
    out.extend_from_slice(&0i16.to_be_bytes());
    put_string(&mut out, Some(&key.group));
    out.extend_from_slice(key.topic_id.as_bytes());
    out.extend_from_slice(&key.partition.to_be_bytes());
    out
}

fn decode_key(bytes: &[u8]) -> Option<ShareKey> {
    let mut r = Reader(bytes);
    if r.i16()? != 0 {
        return None;
    }
    let group = r.string()?;
    let hi = r.i64()? as u64;
    let lo = r.i64()? as u64;
    let partition = r.i32()?;
    Some(ShareKey {
        group,
        topic_id: Uuid::from_u64_pair(hi, lo),
        partition,
    })
}

fn encode_value(stored: &Stored) -> Vec<u8> {
    let s = &stored.snapshot;
    let mut out = Vec::with_capacity(26 + s.ranges.len() * 19);
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&stored.snapshot_epoch.to_be_bytes());
    out.extend_from_slice(&s.state_epoch.to_be_bytes());
    out.extend_from_slice(&s.start.to_be_bytes());
    out.extend_from_slice(&(s.ranges.len() as i32).to_be_bytes());
    for run in &s.ranges {
        out.extend_from_slice(&run.first.to_be_bytes());
        out.extend_from_slice(&run.last.to_be_bytes());
        out.push(run.state.code() as u8);
        out.extend_from_slice(&run.delivery_count.to_be_bytes());
    }
    out
}

/// None for a value this version cannot read (it is skipped, not a crash).
fn decode_value(bytes: &[u8]) -> Option<Stored> {
    let mut r = Reader(bytes);
    if r.i16()? != 0 {
        return None;
    }
    let snapshot_epoch = r.i64()?;
    let state_epoch = r.i32()?;
    let start = r.i64()?;
    let count = r.i32()?;
    if !(0..=RUNS_MAX).contains(&count) {
        return None;
    }
    let mut ranges = Vec::new();
    for _ in 0..count {
        let (first, last, state, delivery_count) = (r.i64()?, r.i64()?, r.i8()?, r.i16()?);
        ranges.push(StateRange::from_wire(first, last, state, delivery_count)?);
    }
    Some(Stored {
        snapshot_epoch,
        snapshot: Snapshot {
            state_epoch,
            start,
            ranges,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::share::partition::RecordState;

    #[test]
    fn keys_and_states_round_trip_and_damage_decodes_to_nothing() {
        let key = ShareKey {
            group: "g".into(),
            topic_id: Uuid::new_v4(),
            partition: 3,
        };
        assert_eq!(decode_key(&encode_key(&key)), Some(key.clone()));
        let stored = Stored {
            snapshot_epoch: 7,
            snapshot: Snapshot {
                state_epoch: 1,
                start: 10,
                ranges: vec![
                    StateRange {
                        first: 10,
                        last: 12,
                        state: RecordState::Available,
                        delivery_count: 2,
                    },
                    StateRange {
                        first: 13,
                        last: 13,
                        state: RecordState::Archived,
                        delivery_count: 5,
                    },
                ],
            },
        };
        let bytes = encode_value(&stored);
        assert_eq!(decode_value(&bytes), Some(stored));
        assert_eq!(decode_value(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_key(&[0, 1, 2]), None);
        assert!(key.coordinator_key().starts_with("g:"));
    }
}
