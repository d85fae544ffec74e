//! The classic consumer-group coordinator (Kafka's GroupCoordinator; KIP-62, KIP-345,
//! KIP-394): membership, the rebalance state machine, and committed offsets.
//!
//! A group lives on the shard that owns its `__consumer_offsets` partition
//! (`abs(javaHashCode(group)) % partitions`, as Kafka), so the group's state and the log
//! that persists it are touched by one thread only. In cluster mode the same partition's
//! leadership (decided by etcd) will decide the coordinator.
//!
//! Three layers: `machine` is the pure state machine (no I/O, no clock of its own, no
//! wire types; unit-tested in `tests`), `coordinator` hosts it on a shard (parks the
//! requests that wait for a rebalance, persists to `__consumer_offsets`, replays it at
//! start-up), and the handlers translate the wire to and from the machine's types.
//!
//! States: Empty → PreparingRebalance → CompletingRebalance → Stable, and Dead for a
//! deleted group. A rebalance waits for every known member to rejoin, up to the largest
//! rebalance timeout; a new group first waits `group.initial.rebalance.delay.ms` so that
//! members starting together land in one generation. The leader's assignment is passed
//! through untouched, so every client-side assignor works.

pub mod api;
pub mod consumer;
pub mod coordinator;
pub mod machine;
mod rebalance;
pub mod records;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use tokio::time::Instant;

use records::Committed;

/// Kafka's internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// `__consumer_offsets` as it is created: compacted, internal, with the configured
/// partitions (which place every group, so they never change) and replicas.
pub fn offsets_topic(config: &crate::config::BrokerConfig) -> sluice_controller::NewTopic {
    sluice_controller::NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        partitions: config.offsets_topic_num_partitions,
        replication_factor: config.offsets_topic_replication_factor,
        configs: [
            ("cleanup.policy".to_string(), "compact".to_string()),
            // Kafka's offsets.topic.segment.bytes: segments small enough to roll, so
            // the cleaner can compact them.
            (
                "segment.bytes".to_string(),
                config.offsets_topic_segment_bytes.to_string(),
            ),
        ]
        .into(),
        internal: true,
        replica_assignments: None,
    }
}

/// Group and instance ids are stored as Kafka STRINGs (an i16 length), so longer ones
/// are refused with INVALID_GROUP_ID rather than stored damaged.
pub const ID_LEN_MAX: usize = i16::MAX as usize;

/// Member ids start with the client id; a longer client id is cut to this many bytes.
pub const MEMBER_ID_PREFIX_LEN_MAX: usize = 255;

/// Kafka's `offset.metadata.max.bytes`: a commit's metadata string may be this long.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// The coordinator's settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms` (Kafka: 3000).
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms` (Kafka: 6000).
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms` (Kafka: 1800000).
    pub session_timeout_ms_max: i32,
    /// `group.max.size` (Kafka: unlimited).
    pub size_max: usize,
    /// `offsets.retention.minutes` in ms (Kafka: 7 days): offsets of a group that has
    /// been empty this long are removed.
    pub offsets_retention_ms: i64,
    /// KIP-848 groups: `group.consumer.session.timeout.ms`,
    /// `group.consumer.heartbeat.interval.ms` and `group.consumer.max.size`.
    pub consumer: consumer::ConsumerSettings,
    pub consumer_heartbeat_interval_ms: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka's DescribeGroups and ListGroups use.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A request parked until the rebalance moves on; the coordinator holds the channel
/// that answers it, the machine only its ticket.
pub type Ticket = u64;

/// A join request parked until the join phase completes.
pub(crate) struct JoinWaiter {
    pub version: i16,
    pub ticket: Ticket,
}

pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub join_waiter: Option<JoinWaiter>,
    /// A SyncGroup parked until the leader hands in the assignment.
    pub sync_waiter: Option<Ticket>,
    pub heartbeat_deadline: Instant,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }
}

pub(crate) struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    /// Members in join order (the first becomes leader when a leader is needed).
    pub members: IndexMap<String, Member>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, until their owner joins with them.
    pub pending_members: HashMap<String, Instant>,
    /// KIP-345: group.instance.id → current member id.
    pub static_members: HashMap<String, String>,
    /// The join phase ends at this deadline at the latest...
    pub join_deadline: Option<Instant>,
    /// ...and, for a new group, not before this one.
    pub join_not_before: Option<Instant>,
    pub offsets: HashMap<(String, i32), Committed>,
    /// Wall-clock time of the last state change (stored; drives offset expiry).
    pub state_since_ms: i64,
    /// A group of the KIP-848 consumer protocol (ConsumerGroupHeartbeat): its members
    /// and assignments; None for a classic group.
    pub consumer: Option<consumer::ConsumerGroup>,
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            join_deadline: None,
            join_not_before: None,
            offsets: HashMap::new(),
            state_since_ms: now_ms,
            consumer: None,
        }
    }

    pub fn set_state(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = now_ms;
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|p| self.members.values().all(|m| m.supports(p)))
            .collect();
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n.as_str())) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| c == name) {
                    v.0 += 1;
                }
            }
        }
        // Highest vote wins; on a tie, the first candidate (max_by_key keeps the last max,
        // so iterate in reverse).
        votes.iter().rev().max_by_key(|(n, _)| *n).map(|(_, c)| c.to_string())
    }

    /// Whether a member with these protocols could join: same protocol type, and at
    /// least one protocol shared with every current member.
    pub fn accepts(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols
            .iter()
            .any(|(p, _)| self.members.values().all(|m| m.supports(p)))
    }

    /// Every protocol a subscribed member names as a topic (consumer protocol only).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for m in self.members.values() {
            topics.extend(consumer_subscription_topics(&m.metadata_for(protocol))?);
        }
        Some(topics)
    }
}

/// The topics of a ConsumerProtocolSubscription (any version: all start with version
/// i16 and an array of i16-length strings).
fn consumer_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut b = metadata;
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h.to_vec())
    };
    take(&mut b, 2)?;
    let count = i32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        topics.push(String::from_utf8_lossy(&take(&mut b, len.max(0) as usize)?).into_owned());
    }
    Some(topics)
}

#[cfg(test)]
mod metadata_tests {
    use super::*;

    #[test]
    fn subscription_topics_are_read_from_consumer_metadata() {
        let mut m = vec![0, 1, 0, 0, 0, 2];
        for t in ["orders", "refunds"] {
            m.extend_from_slice(&(t.len() as i16).to_be_bytes());
            m.extend_from_slice(t.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            consumer_subscription_topics(&m),
            Some(vec!["orders".to_string(), "refunds".to_string()])
        );
        assert_eq!(consumer_subscription_topics(&[0]), None);
    }
}
