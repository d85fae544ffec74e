//! The coordinator's operations, run on the shard that owns the group's
//! `__consumer_offsets` partition. Each takes the request as decoded and returns the
//! response to send; joins and syncs may park until the rebalance moves on.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_storage::batch::{self, BATCH_HEADER_LEN};
use sluice_storage::{BatchHeader, Offset};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::records::{self, Committed, OffsetsRecord, StoredGroup, StoredMember};
use super::{Group, GroupState, JoinWaiter, Member, ID_LEN_MAX, MEMBER_ID_PREFIX_LEN_MAX, OFFSET_METADATA_MAX_BYTES};
use crate::shard::{now_ms, AckLevel, Shard, TopicPartition};

/// Kafka's `offsets.commit.timeout.ms`: how long a commit waits to be durable.
const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Work for a group's coordinator, sent to the shard that owns the group.
pub enum GroupOp {
    Join {
        request: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
        reply: oneshot::Sender<JoinGroupResponse>,
    },
    Sync {
        request: SyncGroupRequest,
        version: i16,
        reply: oneshot::Sender<SyncGroupResponse>,
    },
    Heartbeat {
        request: HeartbeatRequest,
        reply: oneshot::Sender<HeartbeatResponse>,
    },
    Leave {
        request: LeaveGroupRequest,
        version: i16,
        reply: oneshot::Sender<LeaveGroupResponse>,
    },
    Commit {
        commit: OffsetCommit,
        reply: oneshot::Sender<Vec<Vec<i16>>>,
    },
    FetchOffsets {
        topics: Option<Vec<(String, Vec<i32>)>>,
        reply: oneshot::Sender<Vec<FetchedOffsets>>,
    },
    Describe {
        reply: oneshot::Sender<DescribedGroup>,
    },
    Delete {
        reply: oneshot::Sender<i16>,
    },
    DeleteOffsets {
        topics: Vec<(String, Vec<i32>)>,
        reply: oneshot::Sender<Result<Vec<Vec<i16>>, i16>>,
    },
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

/// An answer now, or one that arrives when the rebalance moves on.
enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn join_error(version: i16, error: ResponseError, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error.code())
        .with_generation_id(-1)
        .with_protocol_name(if version >= 7 { None } else { Some(StrBytes::default()) })
        .with_member_id(str(member_id))
}

fn sync_error(error: ResponseError) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(error.code())
}

impl Shard {
    /// The `__consumer_offsets` partition, and so the shard, of a group.
    pub fn group_partition(&self, group: &str) -> TopicPartition {
        let partition = super::partition_for(group, self.cluster.offsets_partitions);
        TopicPartition {
            topic: crate::OFFSETS_TOPIC.to_string(),
            partition,
        }
    }

    pub async fn serve_group(self: &Rc<Self>, group_id: String, op: GroupOp) {
        match op {
            GroupOp::Join {
                request,
                version,
                client_id,
                client_host,
                reply,
            } => {
                let answer = match self.join(&group_id, request, version, client_id, client_host) {
                    Reply::Now(r) => r,
                    Reply::Later(rx) => rx
                        .await
                        .unwrap_or_else(|_| join_error(version, ResponseError::UnknownMemberId, "")),
                };
                let _ = reply.send(answer);
            }
            GroupOp::Sync {
                request,
                version,
                reply,
            } => {
                let answer = match self.sync(&group_id, request, version) {
                    Reply::Now(r) => r,
                    Reply::Later(rx) => rx
                        .await
                        .unwrap_or_else(|_| sync_error(ResponseError::RebalanceInProgress)),
                };
                let _ = reply.send(answer);
            }
            GroupOp::Heartbeat { request, reply } => {
                let _ = reply.send(HeartbeatResponse::default().with_error_code(self.heartbeat(&group_id, &request)));
            }
            GroupOp::Leave {
                request,
                version,
                reply,
            } => {
                let _ = reply.send(self.leave(&group_id, request, version));
            }
            GroupOp::Commit { commit, reply } => {
                let _ = reply.send(self.commit_offsets(&group_id, commit).await);
            }
            GroupOp::FetchOffsets { topics, reply } => {
                let _ = reply.send(self.fetch_offsets(&group_id, topics));
            }
            GroupOp::Describe { reply } => {
                let _ = reply.send(self.describe_group(&group_id));
            }
            GroupOp::Delete { reply } => {
                let _ = reply.send(self.delete_group(&group_id).await);
            }
            GroupOp::DeleteOffsets { topics, reply } => {
                let _ = reply.send(self.delete_offsets(&group_id, topics).await);
            }
        }
    }

    fn join(
        &self,
        group_id: &str,
        request: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
    ) -> Reply<JoinGroupResponse> {
        let config = &self.cluster.groups;
        let member_id = request.member_id.to_string();
        let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
        if group_id.is_empty()
            || group_id.len() > ID_LEN_MAX
            || instance_id.as_ref().is_some_and(|i| i.len() > ID_LEN_MAX)
        {
            return Reply::Now(join_error(version, ResponseError::InvalidGroupId, &member_id));
        }
        let session = request.session_timeout_ms;
        if session < config.session_timeout_ms_min || session > config.session_timeout_ms_max {
            return Reply::Now(join_error(version, ResponseError::InvalidSessionTimeout, &member_id));
        }
        let protocol_type = request.protocol_type.to_string();
        let protocols: Vec<(String, Bytes)> = request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        if protocol_type.is_empty() || protocols.is_empty() {
            return Reply::Now(join_error(
                version,
                ResponseError::InconsistentGroupProtocol,
                &member_id,
            ));
        }
        let now = Instant::now();
        let now_wall = now_ms();
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if !member_id.is_empty() {
                return Reply::Now(join_error(version, ResponseError::UnknownMemberId, &member_id));
            }
            groups.insert(group_id.to_string(), Group::new(group_id, now_wall));
        }
        let Some(group) = groups.get_mut(group_id) else {
            return Reply::Now(join_error(version, ResponseError::CoordinatorNotAvailable, &member_id));
        };
        if group.state == GroupState::Dead {
            return Reply::Now(join_error(version, ResponseError::CoordinatorNotAvailable, &member_id));
        }
        if !group.accepts(&protocol_type, &protocols) {
            return Reply::Now(join_error(
                version,
                ResponseError::InconsistentGroupProtocol,
                &member_id,
            ));
        }
        let rebalance_timeout = Duration::from_millis(
            if version == 0 {
                session
            } else {
                request.rebalance_timeout_ms
            }
            .max(0) as u64,
        );
        let new_member = |id: String, reply: Option<JoinWaiter>| Member {
            id,
            instance_id: instance_id.clone(),
            client_id: client_id.clone(),
            client_host: client_host.clone(),
            session_timeout: Duration::from_millis(session as u64),
            rebalance_timeout,
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: reply,
            sync_waiter: None,
            heartbeat_deadline: now + Duration::from_millis(session as u64),
        };

        // A known static member's instance id must come with its current member id.
        if let Some(instance) = &instance_id {
            if let Some(current) = group.static_members.get(instance) {
                if !member_id.is_empty() && *current != member_id {
                    return Reply::Now(join_error(version, ResponseError::FencedInstanceId, &member_id));
                }
            }
        }

        if member_id.is_empty() {
            if group.members.len() >= config.size_max {
                return Reply::Now(join_error(version, ResponseError::GroupMaxSizeReached, &member_id));
            }
            let prefix = instance_id.as_deref().unwrap_or(&client_id);
            let prefix = &prefix[..prefix.floor_char_boundary(MEMBER_ID_PREFIX_LEN_MAX)];
            let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
            if let Some(instance) = &instance_id {
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    return replace_static_member(group, &old_id, new_id, new_member, version, now_wall);
                }
                group.static_members.insert(instance.clone(), new_id.clone());
            } else if version >= 4 {
                // KIP-394: hand out an id first; the member joins again with it.
                group
                    .pending_members
                    .insert(new_id.clone(), now + Duration::from_millis(session as u64));
                return Reply::Now(join_error(version, ResponseError::MemberIdRequired, &new_id));
            }
            let (tx, rx) = oneshot::channel();
            group.members.insert(
                new_id.clone(),
                new_member(new_id, Some(JoinWaiter { version, reply: tx })),
            );
            group.protocol_type.get_or_insert(protocol_type);
            prepare_rebalance(group, &self.cluster.groups, now, now_wall, true);
            maybe_complete_join(group, now, now_wall);
            return Reply::Later(rx);
        }

        if group.pending_members.remove(&member_id).is_some() {
            if group.members.len() >= config.size_max {
                return Reply::Now(join_error(version, ResponseError::GroupMaxSizeReached, &member_id));
            }
            let (tx, rx) = oneshot::channel();
            group.members.insert(
                member_id.clone(),
                new_member(member_id, Some(JoinWaiter { version, reply: tx })),
            );
            group.protocol_type.get_or_insert(protocol_type);
            prepare_rebalance(group, &self.cluster.groups, now, now_wall, true);
            maybe_complete_join(group, now, now_wall);
            return Reply::Later(rx);
        }

        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        let state = group.state;
        let generation = group.generation;
        let Some(member) = group.members.get_mut(&member_id) else {
            return Reply::Now(join_error(version, ResponseError::UnknownMemberId, &member_id));
        };
        let unchanged = member.protocols == protocols;
        member.protocols = protocols;
        member.session_timeout = Duration::from_millis(session as u64);
        member.rebalance_timeout = rebalance_timeout;
        member.heartbeat_deadline = now + member.session_timeout;
        let current_answer = unchanged
            && generation > 0
            && match state {
                GroupState::CompletingRebalance => true,
                GroupState::Stable => !is_leader,
                _ => false,
            };
        if current_answer {
            return Reply::Now(join_answer(group, &member_id, version));
        }
        let (tx, rx) = oneshot::channel();
        if let Some(old) = member.join_waiter.replace(JoinWaiter { version, reply: tx }) {
            let _ = old
                .reply
                .send(join_error(old.version, ResponseError::UnknownMemberId, &member_id));
        }
        prepare_rebalance(group, &self.cluster.groups, now, now_wall, false);
        maybe_complete_join(group, now, now_wall);
        Reply::Later(rx)
    }

    fn sync(&self, group_id: &str, request: SyncGroupRequest, version: i16) -> Reply<SyncGroupResponse> {
        let member_id = request.member_id.to_string();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return Reply::Now(sync_error(ResponseError::UnknownMemberId));
        };
        if let Err(e) = check_member(group, &member_id, request.group_instance_id.as_deref()) {
            return Reply::Now(sync_error(e));
        }
        if request.generation_id != group.generation {
            return Reply::Now(sync_error(ResponseError::IllegalGeneration));
        }
        let type_mismatch = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_deref() != Some(&**t));
        let name_mismatch = request
            .protocol_name
            .as_ref()
            .is_some_and(|n| group.protocol.as_deref() != Some(&**n));
        if type_mismatch || name_mismatch {
            return Reply::Now(sync_error(ResponseError::InconsistentGroupProtocol));
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => Reply::Now(sync_error(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => Reply::Now(sync_error(ResponseError::RebalanceInProgress)),
            GroupState::Stable => {
                let assignment = group
                    .members
                    .get(&member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Reply::Now(sync_answer(group, assignment, version))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = group.members.get_mut(&member_id) {
                    m.sync_waiter = Some(tx);
                }
                if group.leader.as_deref() == Some(member_id.as_str()) {
                    for m in group.members.values_mut() {
                        m.assignment = request
                            .assignments
                            .iter()
                            .find(|a| *a.member_id == *m.id)
                            .map(|a| a.assignment.clone())
                            .unwrap_or_default();
                    }
                    group.set_state(GroupState::Stable, now_ms());
                    let stored = stored_group(group);
                    let answers: Vec<_> = group
                        .members
                        .values_mut()
                        .filter_map(|m| m.sync_waiter.take().map(|w| (w, m.assignment.clone())))
                        .collect();
                    for (waiter, assignment) in answers {
                        let _ = waiter.send(sync_answer(group, assignment, version));
                    }
                    drop(groups);
                    self.store_group(group_id, Some(&stored));
                }
                Reply::Later(rx)
            }
        }
    }

    fn heartbeat(&self, group_id: &str, request: &HeartbeatRequest) -> i16 {
        let member_id = request.member_id.to_string();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if let Err(e) = check_member(group, &member_id, request.group_instance_id.as_deref()) {
            return e.code();
        }
        if request.generation_id != group.generation {
            return ResponseError::IllegalGeneration.code();
        }
        let state = group.state;
        if let Some(m) = group.members.get_mut(&member_id) {
            m.heartbeat_deadline = Instant::now() + m.session_timeout;
        }
        match state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            GroupState::Empty | GroupState::Dead => ResponseError::UnknownMemberId.code(),
            _ => 0,
        }
    }

    fn leave(&self, group_id: &str, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let identities: Vec<(String, Option<String>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let now = Instant::now();
        let now_wall = now_ms();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return LeaveGroupResponse::default().with_error_code(ResponseError::UnknownMemberId.code());
        };
        let mut results = Vec::new();
        let mut removed_any = false;
        for (member_id, instance_id) in identities {
            let resolved = match &instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    Some(current) if member_id.is_empty() || *current == member_id => Ok(current.clone()),
                    Some(_) => Err(ResponseError::FencedInstanceId),
                    None => Err(ResponseError::UnknownMemberId),
                },
                None if group.members.contains_key(&member_id) => Ok(member_id.clone()),
                None => Err(ResponseError::UnknownMemberId),
            };
            let error = match resolved {
                Ok(id) => {
                    remove_member(group, &id);
                    removed_any = true;
                    0
                }
                Err(e) => e.code(),
            };
            results.push(
                MemberResponse::default()
                    .with_member_id(str(&member_id))
                    .with_group_instance_id(instance_id.map(|s| str(&s)))
                    .with_error_code(error),
            );
        }
        if removed_any {
            member_left(group, &self.cluster.groups, now, now_wall);
        }
        let top = if version < 3 {
            results.first().map(|r| r.error_code).unwrap_or(0)
        } else {
            0
        };
        let mut response = LeaveGroupResponse::default().with_error_code(top);
        if version >= 3 {
            response = response.with_members(results);
        }
        response
    }

    async fn commit_offsets(self: &Rc<Self>, group_id: &str, commit: OffsetCommit) -> Vec<Vec<i16>> {
        let metadata = self.controller().metadata();
        let mut errors: Vec<Vec<i16>> = commit.topics.iter().map(|(_, parts)| vec![0; parts.len()]).collect();
        let group_error = self.check_commit(group_id, &commit);
        let now_wall = now_ms();
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for (t, (topic, parts)) in commit.topics.iter().enumerate() {
            let known = metadata.topic(topic).map(|m| m.partitions);
            for (
                i,
                PartitionOffset {
                    partition,
                    offset,
                    leader_epoch: epoch,
                    metadata: meta,
                },
            ) in parts.iter().enumerate()
            {
                let error = if let Err(e) = group_error {
                    Some(e)
                } else if !known.is_some_and(|n| (0..n).contains(partition)) {
                    Some(ResponseError::UnknownTopicOrPartition)
                } else if meta.as_ref().is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES) {
                    Some(ResponseError::OffsetMetadataTooLarge)
                } else {
                    None
                };
                match error {
                    Some(e) => errors[t][i] = e.code(),
                    None => {
                        let committed = Committed {
                            offset: *offset,
                            leader_epoch: *epoch,
                            metadata: meta.clone().unwrap_or_default(),
                            commit_timestamp_ms: now_wall,
                        };
                        records.push((
                            records::offset_key(group_id, topic, *partition),
                            Some(records::offset_value(&committed)),
                        ));
                        accepted.push((t, i, topic.clone(), *partition, committed));
                    }
                }
            }
        }
        if accepted.is_empty() {
            return errors;
        }
        let positions: Vec<(usize, usize)> = accepted.iter().map(|(t, i, ..)| (*t, *i)).collect();
        // The cache changes in the same step as the append, so pipelined commits land in
        // log order even when their durability waits finish in another order.
        let apply = |shard: &Self| {
            let mut groups = shard.groups.borrow_mut();
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now_wall));
            for (_, _, topic, partition, committed) in accepted {
                group.offsets.insert((topic, partition), committed);
            }
        };
        if let Err(e) = self.persist(group_id, &records, true, apply).await {
            for (t, i) in positions {
                errors[t][i] = e.code();
            }
        }
        errors
    }

    /// The group-level checks of OffsetCommit (Kafka's `handleCommitOffsets`).
    fn check_commit(&self, group_id: &str, commit: &OffsetCommit) -> Result<(), ResponseError> {
        if group_id.is_empty() || group_id.len() > ID_LEN_MAX {
            return Err(ResponseError::InvalidGroupId);
        }
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            // A "simple" commit (no membership) creates the group; a member's needs one.
            return if commit.generation < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if commit.generation < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        check_member(group, &commit.member_id, commit.instance_id.as_deref())?;
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if commit.generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if let Some(m) = group.members.get_mut(&commit.member_id) {
            // A commit is proof of life, as a heartbeat is.
            m.heartbeat_deadline = Instant::now() + m.session_timeout;
        }
        Ok(())
    }

    fn fetch_offsets(&self, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Vec<FetchedOffsets> {
        let groups = self.groups.borrow();
        let group = groups.get(group_id);
        let lookup =
            |topic: &str, partition: i32| match group.and_then(|g| g.offsets.get(&(topic.to_string(), partition))) {
                Some(c) => PartitionOffset {
                    partition,
                    offset: c.offset,
                    leader_epoch: c.leader_epoch,
                    metadata: Some(c.metadata.clone()),
                },
                None => PartitionOffset {
                    partition,
                    offset: -1,
                    leader_epoch: -1,
                    metadata: Some(String::new()),
                },
            };
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, parts)| FetchedOffsets {
                    partitions: parts.iter().map(|p| lookup(&topic, *p)).collect(),
                    topic,
                })
                .collect(),
            None => {
                let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
                for (topic, partition) in group.map(|g| g.offsets.keys().collect::<Vec<_>>()).unwrap_or_default() {
                    by_topic.entry(topic.as_str()).or_default().push(*partition);
                }
                by_topic
                    .into_iter()
                    .map(|(topic, mut parts)| {
                        parts.sort_unstable();
                        FetchedOffsets {
                            topic: topic.to_string(),
                            partitions: parts.iter().map(|p| lookup(topic, *p)).collect(),
                        }
                    })
                    .collect()
            }
        }
    }

    fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let groups = self.groups.borrow();
        let Some(group) = groups.get(group_id) else {
            return DescribedGroup::default()
                .with_group_id(GroupId(str(group_id)))
                .with_group_state(str("Dead"));
        };
        let protocol = group.protocol.clone().unwrap_or_default();
        let stable = group.state == GroupState::Stable;
        let members = group
            .members
            .values()
            .map(|m| {
                let mut d = DescribedGroupMember::default()
                    .with_member_id(str(&m.id))
                    .with_group_instance_id(m.instance_id.as_deref().map(str))
                    .with_client_id(str(&m.client_id))
                    .with_client_host(str(&m.client_host));
                // Kafka shows metadata and assignments only once they are settled.
                if stable {
                    d = d
                        .with_member_metadata(m.metadata_for(&protocol))
                        .with_member_assignment(m.assignment.clone());
                }
                d
            })
            .collect();
        DescribedGroup::default()
            .with_group_id(GroupId(str(group_id)))
            .with_group_state(str(group.state.name()))
            .with_protocol_type(str(group.protocol_type.as_deref().unwrap_or_default()))
            .with_protocol_data(str(&protocol))
            .with_members(members)
    }

    /// Every group this shard coordinates, for ListGroups.
    pub fn list_groups(&self) -> Vec<ListedGroup> {
        self.groups
            .borrow()
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(str(&g.id)))
                    .with_protocol_type(str(g.protocol_type.as_deref().unwrap_or_default()))
                    .with_group_state(str(g.state.name()))
                    .with_group_type(str("classic"))
            })
            .collect()
    }

    async fn delete_group(self: &Rc<Self>, group_id: &str) -> i16 {
        let keys = {
            let groups = self.groups.borrow();
            let Some(group) = groups.get(group_id) else {
                return ResponseError::GroupIdNotFound.code();
            };
            if group.state != GroupState::Empty || !group.members.is_empty() {
                return ResponseError::NonEmptyGroup.code();
            }
            group.offsets.keys().cloned().collect::<Vec<_>>()
        };
        let mut tombstones: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys
            .iter()
            .map(|(t, p)| (records::offset_key(group_id, t, *p), None))
            .collect();
        tombstones.push((records::group_key(group_id), None));
        let remove = |shard: &Self| {
            shard.groups.borrow_mut().remove(group_id);
        };
        match self.persist(group_id, &tombstones, true, remove).await {
            Ok(()) => 0,
            Err(e) => e.code(),
        }
    }

    async fn delete_offsets(
        self: &Rc<Self>,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
    ) -> Result<Vec<Vec<i16>>, i16> {
        let (errors, doomed) = {
            let groups = self.groups.borrow();
            let Some(group) = groups.get(group_id) else {
                return Err(ResponseError::GroupIdNotFound.code());
            };
            if group.state != GroupState::Empty && group.protocol_type.as_deref() != Some("consumer") {
                return Err(ResponseError::NonEmptyGroup.code());
            }
            let subscribed = if group.state == GroupState::Empty {
                Some(Vec::new())
            } else {
                group.subscribed_topics()
            };
            let mut doomed = Vec::new();
            let errors = topics
                .iter()
                .map(|(topic, parts)| {
                    parts
                        .iter()
                        .map(|p| match &subscribed {
                            Some(s) if s.contains(topic) => ResponseError::GroupSubscribedToTopic.code(),
                            None => ResponseError::NonEmptyGroup.code(),
                            _ => {
                                doomed.push((topic.clone(), *p));
                                0
                            }
                        })
                        .collect()
                })
                .collect();
            (errors, doomed)
        };
        let tombstones: Vec<_> = doomed
            .iter()
            .map(|(t, p)| (records::offset_key(group_id, t, *p), None))
            .collect();
        if !tombstones.is_empty() {
            let forget = |shard: &Self| {
                if let Some(group) = shard.groups.borrow_mut().get_mut(group_id) {
                    for key in &doomed {
                        group.offsets.remove(key);
                    }
                }
            };
            self.persist(group_id, &tombstones, true, forget)
                .await
                .map_err(|e| e.code())?;
        }
        Ok(errors)
    }

    /// Appends records to the group's `__consumer_offsets` partition; with `durable`,
    /// waits for them to reach the disk (or the configured acks=all policy).
    /// `apply` updates the in-memory state once the records are in the log, before
    /// the wait for the disk.
    async fn persist(
        &self,
        group_id: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
        durable: bool,
        apply: impl FnOnce(&Self),
    ) -> Result<(), ResponseError> {
        let tp = self.group_partition(group_id);
        let pairs: Vec<batch::KeyValue> = records
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let batch = batch::build(&pairs, now_ms());
        let ack = if durable { AckLevel::Durable } else { AckLevel::Written };
        let (outcome, wait) = self.append_local(&tp, &Bytes::from(batch), now_ms(), ack);
        if let Some(error) = outcome.error {
            tracing::error!(
                group = group_id,
                "cannot write to {}-{}: {error:?}",
                tp.topic,
                tp.partition
            );
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        apply(self);
        if let Some(wait) = wait {
            if let Some(error) = self.wait_durable(wait, Instant::now() + OFFSETS_COMMIT_TIMEOUT).await {
                tracing::error!(group = group_id, "commit not durable: {error:?}");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
        }
        Ok(())
    }

    /// Stores a group's metadata (acks=1: a lost write costs a rebalance, not data).
    fn store_group(&self, group_id: &str, stored: Option<&StoredGroup>) {
        let tp = self.group_partition(group_id);
        let key = records::group_key(group_id);
        let value = stored.map(records::group_value);
        let batch = batch::build(&[(Some(&key), value.as_deref())], now_ms());
        let (outcome, _) = self.append_local(&tp, &Bytes::from(batch), now_ms(), AckLevel::None);
        if let Some(error) = outcome.error {
            tracing::warn!(group = group_id, "cannot store group metadata: {error:?}");
        }
    }

    /// Timers: expired sessions and pending ids, join deadlines, and offsets of groups
    /// empty for longer than `offsets.retention.minutes`.
    pub fn tick_groups(&self) {
        let now = Instant::now();
        let now_wall = now_ms();
        let config = &self.cluster.groups;
        let mut emptied = Vec::new();
        let mut expired_groups = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for group in groups.values_mut() {
                group.pending_members.retain(|_, deadline| *deadline > now);
                let expired: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none() && m.heartbeat_deadline <= now)
                    .map(|m| m.id.clone())
                    .collect();
                for id in &expired {
                    tracing::info!(group = %group.id, member = %id, "session expired");
                    remove_member(group, id);
                }
                let was_empty = group.state == GroupState::Empty;
                if !expired.is_empty() {
                    member_left(group, config, now, now_wall);
                }
                maybe_complete_join(group, now, now_wall);
                if !was_empty && group.state == GroupState::Empty {
                    emptied.push((group.id.clone(), stored_group(group)));
                }
                if group.state == GroupState::Empty
                    && group.members.is_empty()
                    && now_wall.saturating_sub(group.state_since_ms) >= config.offsets_retention_ms
                {
                    expired_groups.push(group.id.clone());
                }
            }
        }
        for (id, stored) in emptied {
            self.store_group(&id, Some(&stored));
        }
        for id in expired_groups {
            let keys: Vec<(String, i32)> = self
                .groups
                .borrow()
                .get(&id)
                .map(|g| g.offsets.keys().cloned().collect())
                .unwrap_or_default();
            tracing::info!(group = %id, offsets = keys.len(), "expiring the offsets of a long-empty group");
            let tp = self.group_partition(&id);
            let mut tombstones: Vec<Vec<u8>> = keys.iter().map(|(t, p)| records::offset_key(&id, t, *p)).collect();
            tombstones.push(records::group_key(&id));
            let pairs: Vec<batch::KeyValue> = tombstones.iter().map(|k| (Some(k.as_slice()), None)).collect();
            let (outcome, _) = self.append_local(
                &tp,
                &Bytes::from(batch::build(&pairs, now_wall)),
                now_wall,
                AckLevel::None,
            );
            if outcome.error.is_none() {
                self.groups.borrow_mut().remove(&id);
            }
        }
    }

    /// Rebuilds the groups of every `__consumer_offsets` partition this shard owns by
    /// replaying the partition from its start (later records win; tombstones delete).
    pub fn load_groups(&self) -> Result<(), String> {
        let now = Instant::now();
        let now_wall = now_ms();
        let owned: Vec<TopicPartition> = (0..self.cluster.offsets_partitions)
            .map(|partition| TopicPartition {
                topic: crate::OFFSETS_TOPIC.to_string(),
                partition,
            })
            .filter(|tp| self.cluster.owner_of(&tp.topic, tp.partition) == self.id)
            .collect();
        for tp in owned {
            let mut offset = Offset::ZERO;
            loop {
                let chunk = self
                    .read_local(&tp, offset)
                    .map_err(|e| format!("{}-{}: {e}", tp.topic, tp.partition))?;
                if chunk.is_empty() {
                    break;
                }
                let mut rest = &chunk[..];
                while let Ok(h) = BatchHeader::parse(rest) {
                    if h.size > rest.len() {
                        break;
                    }
                    let (batch, tail) = rest.split_at(h.size);
                    rest = tail;
                    offset = h.next_offset();
                    if h.compression() != 0 || h.is_control() {
                        continue;
                    }
                    let _ = batch::for_each_record(&batch[BATCH_HEADER_LEN..], |r| {
                        if let Some(record) = r.key.and_then(|k| records::decode(k, r.value)) {
                            self.apply_loaded(record, now, now_wall);
                        }
                        Ok(())
                    });
                }
            }
        }
        let count = self.groups.borrow().len();
        if count > 0 {
            tracing::info!(shard = self.id, groups = count, "loaded consumer groups");
        }
        Ok(())
    }

    fn apply_loaded(&self, record: OffsetsRecord, now: Instant, now_wall: i64) {
        let mut groups = self.groups.borrow_mut();
        match record {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(c) => {
                    let g = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(&group, now_wall));
                    g.offsets.insert((topic, partition), c);
                }
                None => {
                    if let Some(g) = groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            OffsetsRecord::Group { group, value: None } => {
                groups.remove(&group);
            }
            OffsetsRecord::Group {
                group,
                value: Some(stored),
            } => {
                let g = groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group, now_wall));
                g.protocol_type = Some(stored.protocol_type);
                g.generation = stored.generation;
                g.protocol = stored.protocol.clone();
                g.leader = stored.leader;
                g.state_since_ms = stored.state_timestamp_ms;
                g.members.clear();
                g.static_members.clear();
                for m in stored.members {
                    if let Some(instance) = &m.group_instance_id {
                        g.static_members.insert(instance.clone(), m.member_id.clone());
                    }
                    let session_timeout = Duration::from_millis(m.session_timeout_ms.max(0) as u64);
                    g.members.insert(
                        m.member_id.clone(),
                        Member {
                            id: m.member_id,
                            instance_id: m.group_instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout,
                            rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                            protocols: vec![(stored.protocol.clone().unwrap_or_default(), m.subscription)],
                            assignment: m.assignment,
                            join_waiter: None,
                            sync_waiter: None,
                            // Restored members get a full session to show up again.
                            heartbeat_deadline: now + session_timeout,
                        },
                    );
                }
                g.state = if g.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
            }
        }
    }
}

/// A member id (and instance id, if given) must match a current member.
fn check_member(group: &Group, member_id: &str, instance_id: Option<&str>) -> Result<(), ResponseError> {
    if let Some(instance) = instance_id {
        if let Some(current) = group.static_members.get(instance) {
            if current != member_id {
                return Err(ResponseError::FencedInstanceId);
            }
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    Ok(())
}

fn remove_member(group: &mut Group, member_id: &str) {
    if let Some(m) = group.members.shift_remove(member_id) {
        if let Some(instance) = &m.instance_id {
            if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
                group.static_members.remove(instance);
            }
        }
        if let Some(w) = m.join_waiter {
            let _ = w
                .reply
                .send(join_error(w.version, ResponseError::UnknownMemberId, member_id));
        }
        if let Some(w) = m.sync_waiter {
            let _ = w.send(sync_error(ResponseError::UnknownMemberId));
        }
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
}

/// After members left: a settled group rebalances; a rebalancing one may now be done.
fn member_left(group: &mut Group, config: &super::GroupConfig, now: Instant, now_wall: i64) {
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            if group.members.is_empty() {
                group.generation += 1;
                group.protocol = None;
                group.leader = None;
                group.set_state(GroupState::Empty, now_wall);
            } else {
                prepare_rebalance(group, config, now, now_wall, false);
            }
        }
        GroupState::PreparingRebalance => maybe_complete_join(group, now, now_wall),
        _ => {}
    }
}

/// Moves the group into PreparingRebalance (if it is not already there).
fn prepare_rebalance(group: &mut Group, config: &super::GroupConfig, now: Instant, now_wall: i64, new_member: bool) {
    let timeout = group
        .members
        .values()
        .map(|m| m.rebalance_timeout)
        .max()
        .unwrap_or_default();
    match group.state {
        GroupState::PreparingRebalance => {
            // A member arriving during a new group's initial delay extends the delay.
            if new_member && group.join_not_before.is_some() {
                let deadline = group.join_deadline.unwrap_or(now);
                group.join_not_before = Some((now + config.initial_rebalance_delay).min(deadline));
            }
            return;
        }
        GroupState::CompletingRebalance => {
            for m in group.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(sync_error(ResponseError::RebalanceInProgress));
                }
            }
        }
        _ => {}
    }
    let was_empty = group.state == GroupState::Empty;
    group.join_deadline = Some(now + timeout);
    group.join_not_before = was_empty.then(|| (now + config.initial_rebalance_delay).min(now + timeout));
    group.set_state(GroupState::PreparingRebalance, now_wall);
}

/// Ends the join phase when everyone has rejoined (and any initial delay has passed),
/// or when the rebalance timeout is up; members that did not rejoin are dropped.
fn maybe_complete_join(group: &mut Group, now: Instant, now_wall: i64) {
    if group.state != GroupState::PreparingRebalance {
        return;
    }
    let all_joined = group.pending_members.is_empty() && group.members.values().all(|m| m.join_waiter.is_some());
    let delay_over = group.join_not_before.is_none_or(|t| now >= t);
    let deadline_passed = group.join_deadline.is_some_and(|d| now >= d);
    if !(all_joined && delay_over || deadline_passed) {
        return;
    }
    let absent: Vec<String> = group
        .members
        .values()
        .filter(|m| m.join_waiter.is_none())
        .map(|m| m.id.clone())
        .collect();
    for id in absent {
        remove_member(group, &id);
    }
    group.pending_members.clear();
    group.join_deadline = None;
    group.join_not_before = None;
    group.generation += 1;
    if group.members.is_empty() {
        group.protocol = None;
        group.leader = None;
        group.set_state(GroupState::Empty, now_wall);
        return;
    }
    group.protocol = group.select_protocol();
    if !group.leader.as_ref().is_some_and(|l| group.members.contains_key(l)) {
        group.leader = group.members.keys().next().cloned();
    }
    group.set_state(GroupState::CompletingRebalance, now_wall);
    let ids: Vec<String> = group.members.keys().cloned().collect();
    for id in ids {
        let Some(waiter) = group.members.get_mut(&id).and_then(|m| {
            m.heartbeat_deadline = now + m.session_timeout;
            m.join_waiter.take()
        }) else {
            continue;
        };
        let _ = waiter.reply.send(join_answer(group, &id, waiter.version));
    }
}

/// The JoinGroup answer for a member of the current generation; the leader also gets
/// every member's metadata for the chosen protocol.
fn join_answer(group: &Group, member_id: &str, version: i16) -> JoinGroupResponse {
    let protocol = group.protocol.clone().unwrap_or_default();
    let is_leader = group.leader.as_deref() == Some(member_id);
    let members = if is_leader {
        group
            .members
            .values()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(str(&m.id))
                    .with_group_instance_id(m.instance_id.as_deref().map(str))
                    .with_metadata(m.metadata_for(&protocol))
            })
            .collect()
    } else {
        Vec::new()
    };
    let _ = version;
    JoinGroupResponse::default()
        .with_generation_id(group.generation)
        .with_protocol_type(group.protocol_type.as_deref().map(str))
        .with_protocol_name(Some(str(&protocol)))
        .with_leader(str(group.leader.as_deref().unwrap_or_default()))
        .with_member_id(str(member_id))
        .with_members(members)
}

fn sync_answer(group: &Group, assignment: Bytes, _version: i16) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_protocol_type(group.protocol_type.as_deref().map(str))
        .with_protocol_name(group.protocol.as_deref().map(str))
        .with_assignment(assignment)
}

/// KIP-345: a static member restarting gets a new member id in place of its old one.
/// With nothing else changed, a settled group keeps its assignment and skips the
/// rebalance; otherwise the group rebalances.
fn replace_static_member(
    group: &mut Group,
    old_id: &str,
    new_id: String,
    new_member: impl Fn(String, Option<JoinWaiter>) -> Member,
    version: i16,
    now_wall: i64,
) -> Reply<JoinGroupResponse> {
    let now = Instant::now();
    let old = group.members.shift_remove(old_id);
    let mut member = new_member(new_id.clone(), None);
    if let Some(instance) = &member.instance_id {
        group.static_members.insert(instance.clone(), new_id.clone());
    }
    let unchanged = old.as_ref().is_some_and(|o| o.protocols == member.protocols);
    if let Some(old) = old {
        member.assignment = old.assignment;
        if let Some(w) = old.join_waiter {
            let _ = w
                .reply
                .send(join_error(w.version, ResponseError::FencedInstanceId, old_id));
        }
        if let Some(w) = old.sync_waiter {
            let _ = w.send(sync_error(ResponseError::FencedInstanceId));
        }
    }
    let was_leader = group.leader.as_deref() == Some(old_id);
    if was_leader {
        group.leader = Some(new_id.clone());
    }
    if group.state == GroupState::Stable && unchanged {
        group.members.insert(new_id.clone(), member);
        let mut answer = join_answer(group, &new_id, version);
        // A restarted static leader gets the member list but must not reassign (v9,
        // KIP-814); older leaders' SyncGroup in a Stable group just returns the current
        // assignment, so either way nothing moves.
        answer.skip_assignment = was_leader && version >= 9;
        return Reply::Now(answer);
    }
    let (tx, rx) = oneshot::channel();
    member.join_waiter = Some(JoinWaiter { version, reply: tx });
    group.members.insert(new_id, member);
    let config = super::GroupConfig {
        initial_rebalance_delay: Duration::ZERO,
        session_timeout_ms_min: 0,
        session_timeout_ms_max: i32::MAX,
        size_max: usize::MAX,
        offsets_retention_ms: i64::MAX,
    };
    prepare_rebalance(group, &config, now, now_wall, false);
    maybe_complete_join(group, now, now_wall);
    Reply::Later(rx)
}

fn stored_group(group: &Group) -> StoredGroup {
    let protocol = group.protocol.clone().unwrap_or_default();
    StoredGroup {
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        generation: group.generation,
        protocol: group.protocol.clone(),
        leader: group.leader.clone(),
        state_timestamp_ms: group.state_since_ms,
        members: group
            .members
            .values()
            .map(|m| StoredMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                session_timeout_ms: m.session_timeout.as_millis() as i32,
                subscription: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}
