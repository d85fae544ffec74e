//! What the group coordinator takes and answers, in its own terms: the handlers
//! translate the wire (every version of JoinGroup, SyncGroup, ...) to and from these,
//! so the state machine never sees a wire type.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::records::StoredGroup;
use super::Ticket;

/// A JoinGroup, as the machine needs it (the same for every version).
#[derive(Debug, Clone)]
pub(crate) struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub client_id: String,
    pub client_host: String,
    /// The request's version: v0 has no rebalance timeout (the session timeout
    /// serves), v4+ first gets a member id to join with (KIP-394), v9+ lets a restarted
    /// static leader skip the assignment (KIP-814).
    pub version: i16,
}

/// A JoinGroup's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    /// None on errors.
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol; the leader's answer only.
    pub members: Vec<JoinedMember>,
    pub skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

impl JoinResult {
    pub fn failed(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

/// A SyncGroup, as the machine needs it.
#[derive(Debug, Clone)]
pub(crate) struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment: (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn failed(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            ..SyncResult::default()
        }
    }
}

/// An answer now, or later under the ticket the request was parked with.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply<T> {
    Now(T),
    Parked,
}

/// The answer to a parked request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    Join(JoinResult),
    Sync(SyncResult),
}

/// What the coordinator must do after a call.
#[derive(Default)]
pub(crate) struct Outbox {
    pub answers: Vec<(Ticket, Answer)>,
    /// Group metadata to store in `__consumer_offsets` (a settled or emptied group).
    pub stores: Vec<(String, StoredGroup)>,
}

/// An OffsetCommit as the coordinator needs it (the same shape for every version).
pub struct OffsetCommit {
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub topics: Vec<(String, Vec<PartitionOffset>)>,
}

/// One partition's offset, as committed or as fetched.
pub struct PartitionOffset {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The committed offsets of one topic, answered to OffsetFetch.
pub struct FetchedOffsets {
    pub topic: String,
    /// Offset and leader epoch are -1 where nothing was committed.
    pub partitions: Vec<PartitionOffset>,
}

/// A group as DescribeGroups shows it.
pub(crate) struct GroupDescription {
    /// Kafka's state name; "Dead" for a group that does not exist.
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

pub(crate) struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Shown only once the group is Stable, as Kafka does.
    pub metadata: Option<Bytes>,
    pub assignment: Option<Bytes>,
}

/// A group as ListGroups shows it.
pub(crate) struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic", or "consumer" for a KIP-848 group.
    pub group_type: &'static str,
}
