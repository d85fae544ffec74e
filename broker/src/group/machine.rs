//! The classic group protocol as a pure state machine: every call takes the request in
//! the machine's own terms and the current time, changes the groups, and answers now
//! or parks the request under a ticket. Answers to parked requests and group metadata
//! worth storing collect in an [`Outbox`] that the coordinator drains after each call.
//! No I/O, no clock, no channels, no wire types: `tests` drives it directly.
//!
//! Kafka's GroupCoordinator and GroupMetadata are the reference: KIP-62 (rebalance
//! timeout), KIP-345 (static membership), KIP-394 (member id required), KIP-814 (skip
//! assignment), KIP-496 (offset delete).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::api::{
    Answer, DescribedMember, FetchedOffsets, GroupDescription, JoinRequest, JoinResult, ListedGroup, OffsetCommit,
    Outbox, PartitionOffset, Reply, SyncRequest, SyncResult,
};
use super::consumer::{
    ClassicMember, ClassicSnapshot, ConsumerAnswer, ConsumerBeat, ConsumerGroup, ConsumerSettings, Topics,
};
use super::rebalance::{
    check_member, join_answer, maybe_complete_join, member_left, prepare_rebalance, remove_member,
    replace_static_member, stored_group, sync_answer,
};
use super::records::{Committed, OffsetsRecord};
use super::{
    Group, GroupConfig, GroupState, JoinWaiter, Member, Ticket, ID_LEN_MAX, MEMBER_ID_PREFIX_LEN_MAX,
    OFFSET_METADATA_MAX_BYTES,
};

/// Every group one coordinator hosts.
pub(crate) struct Groups {
    groups: HashMap<String, Group>,
    config: GroupConfig,
    outbox: Outbox,
    /// The topics KIP-848 groups can subscribe to, as the coordinator last saw them
    /// (classic members of consumer groups are assigned from these).
    topics: Topics,
}

impl Groups {
    pub fn new(config: GroupConfig) -> Groups {
        Groups {
            groups: HashMap::new(),
            config,
            outbox: Outbox::default(),
            topics: Topics::new(),
        }
    }

    /// The coordinator's view of the subscribable topics.
    pub fn set_topics(&mut self, topics: Topics) {
        self.topics = topics;
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.outbox)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// JoinGroup. A request that waits for the join phase to end is parked under
    /// `ticket`; its answer comes through the outbox.
    pub fn join(
        &mut self,
        group_id: &str,
        request: JoinRequest,
        ticket: Ticket,
        now: Instant,
        now_wall: i64,
    ) -> Reply<JoinResult> {
        let config = &self.config;
        let outbox = &mut self.outbox;
        let member_id = request.member_id.clone();
        let instance_id = request.instance_id.clone();
        let failed = |e| Reply::Now(JoinResult::failed(e, &member_id));
        if group_id.is_empty()
            || group_id.len() > ID_LEN_MAX
            || instance_id.as_ref().is_some_and(|i| i.len() > ID_LEN_MAX)
        {
            return failed(ResponseError::InvalidGroupId);
        }
        let session = request.session_timeout_ms;
        if session < config.session_timeout_ms_min || session > config.session_timeout_ms_max {
            return failed(ResponseError::InvalidSessionTimeout);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return failed(ResponseError::InconsistentGroupProtocol);
        }
        if !self.groups.contains_key(group_id) {
            if !member_id.is_empty() {
                return failed(ResponseError::UnknownMemberId);
            }
            self.groups.insert(group_id.to_string(), Group::new(group_id, now_wall));
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return failed(ResponseError::CoordinatorNotAvailable);
        };
        if group.state == GroupState::Dead {
            return failed(ResponseError::CoordinatorNotAvailable);
        }
        match &mut group.consumer {
            // A KIP-848 group in use takes classic consumers as classic members (the
            // coordinator assigns them too); an empty one becomes a classic group
            // again (its committed offsets stay).
            Some(c) if !c.members.is_empty() => {
                if request.protocol_type != "consumer" {
                    return failed(ResponseError::InconsistentGroupProtocol);
                }
                let member_id = if request.member_id.is_empty() {
                    let prefix = &request.client_id[..request.client_id.len().min(MEMBER_ID_PREFIX_LEN_MAX)];
                    format!("{prefix}-{}", uuid::Uuid::new_v4())
                } else {
                    request.member_id.clone()
                };
                let classic = ClassicMember {
                    protocols: request.protocols.clone(),
                    session_timeout_ms: request.session_timeout_ms,
                };
                let rebalance_timeout = if request.version == 0 {
                    request.session_timeout_ms
                } else {
                    request.rebalance_timeout_ms
                };
                let joined = c.classic_join(
                    &member_id,
                    request.instance_id.as_deref(),
                    classic,
                    rebalance_timeout,
                    (&request.client_id, &request.client_host),
                    now_wall,
                    &self.topics,
                    &config.consumer,
                );
                return Reply::Now(match joined {
                    Ok((generation, protocol)) => JoinResult {
                        error: None,
                        generation,
                        protocol_type: Some("consumer".to_string()),
                        protocol_name: Some(protocol),
                        leader: String::new(),
                        member_id,
                        members: Vec::new(),
                        skip_assignment: false,
                    },
                    Err(e) => JoinResult::failed(e, &member_id),
                });
            }
            Some(_) => {
                group.consumer = None;
                group.protocol_type = None;
            }
            None => {}
        }
        if !group.accepts(&request.protocol_type, &request.protocols) {
            return failed(ResponseError::InconsistentGroupProtocol);
        }
        let version = request.version;
        let rebalance_timeout = Duration::from_millis(
            if version == 0 {
                session
            } else {
                request.rebalance_timeout_ms
            }
            .max(0) as u64,
        );
        let session_timeout = Duration::from_millis(session.max(0) as u64);
        let new_member = |id: String, waiter: Option<JoinWaiter>| Member {
            id,
            instance_id: instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            session_timeout,
            rebalance_timeout,
            protocols: request.protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: waiter,
            sync_waiter: None,
            heartbeat_deadline: now + session_timeout,
        };
        let waiter = Some(JoinWaiter { version, ticket });

        // A known static member's instance id must come with its current member id.
        if let Some(instance) = &instance_id {
            if let Some(current) = group.static_members.get(instance) {
                if !member_id.is_empty() && *current != member_id {
                    return failed(ResponseError::FencedInstanceId);
                }
            }
        }

        if member_id.is_empty() {
            if group.members.len() >= config.size_max {
                return failed(ResponseError::GroupMaxSizeReached);
            }
            let prefix = instance_id.as_deref().unwrap_or(&request.client_id);
            let prefix = &prefix[..prefix.floor_char_boundary(MEMBER_ID_PREFIX_LEN_MAX)];
            let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
            if let Some(instance) = &instance_id {
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    let member = new_member(new_id, None);
                    return replace_static_member(group, outbox, &old_id, member, waiter, now, now_wall);
                }
                group.static_members.insert(instance.clone(), new_id.clone());
            } else if version >= 4 {
                // KIP-394: hand out an id first; the member joins again with it.
                group.pending_members.insert(new_id.clone(), now + session_timeout);
                return Reply::Now(JoinResult::failed(ResponseError::MemberIdRequired, &new_id));
            }
            group.members.insert(new_id.clone(), new_member(new_id, waiter));
            group.protocol_type.get_or_insert(request.protocol_type);
            prepare_rebalance(group, outbox, config, now, now_wall, true);
            maybe_complete_join(group, outbox, now, now_wall);
            return Reply::Parked;
        }

        if group.pending_members.remove(&member_id).is_some() {
            if group.members.len() >= config.size_max {
                return failed(ResponseError::GroupMaxSizeReached);
            }
            group
                .members
                .insert(member_id.clone(), new_member(member_id.clone(), waiter));
            group.protocol_type.get_or_insert(request.protocol_type);
            prepare_rebalance(group, outbox, config, now, now_wall, true);
            maybe_complete_join(group, outbox, now, now_wall);
            return Reply::Parked;
        }

        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        let state = group.state;
        let generation = group.generation;
        let Some(member) = group.members.get_mut(&member_id) else {
            return failed(ResponseError::UnknownMemberId);
        };
        let unchanged = member.protocols == request.protocols;
        member.protocols = request.protocols;
        member.session_timeout = session_timeout;
        member.rebalance_timeout = rebalance_timeout;
        member.heartbeat_deadline = now + session_timeout;
        let current_answer = unchanged
            && generation > 0
            && match state {
                GroupState::CompletingRebalance => true,
                GroupState::Stable => !is_leader,
                _ => false,
            };
        if current_answer {
            return Reply::Now(join_answer(group, &member_id));
        }
        if let Some(old) = member.join_waiter.replace(JoinWaiter { version, ticket }) {
            let superseded = JoinResult::failed(ResponseError::UnknownMemberId, &member_id);
            outbox.answers.push((old.ticket, Answer::Join(superseded)));
        }
        prepare_rebalance(group, outbox, config, now, now_wall, false);
        maybe_complete_join(group, outbox, now, now_wall);
        Reply::Parked
    }

    /// SyncGroup. Members other than the leader wait (parked under `ticket`) until the
    /// leader hands in the assignment.
    pub fn sync(&mut self, group_id: &str, request: SyncRequest, ticket: Ticket, now_wall: i64) -> Reply<SyncResult> {
        let failed = |e| Reply::Now(SyncResult::failed(e));
        let Some(group) = self.groups.get_mut(group_id) else {
            return failed(ResponseError::UnknownMemberId);
        };
        if let Some(c) = &mut group.consumer {
            return Reply::Now(match c.classic_sync(&request.member_id, request.generation) {
                Ok(assignment) => SyncResult {
                    error: None,
                    protocol_type: Some("consumer".to_string()),
                    protocol_name: request.protocol_name.clone(),
                    assignment,
                },
                Err(e) => SyncResult::failed(e),
            });
        }
        if let Err(e) = check_member(group, &request.member_id, request.instance_id.as_deref()) {
            return failed(e);
        }
        if request.generation != group.generation {
            return failed(ResponseError::IllegalGeneration);
        }
        let type_mismatch = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_ref() != Some(t));
        let name_mismatch = request
            .protocol_name
            .as_ref()
            .is_some_and(|n| group.protocol.as_ref() != Some(n));
        if type_mismatch || name_mismatch {
            return failed(ResponseError::InconsistentGroupProtocol);
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => failed(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => failed(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                let assignment = group
                    .members
                    .get(&request.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Reply::Now(sync_answer(group, assignment))
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = group.members.get_mut(&request.member_id) {
                    m.sync_waiter = Some(ticket);
                }
                if group.leader.as_deref() == Some(request.member_id.as_str()) {
                    for m in group.members.values_mut() {
                        m.assignment = request
                            .assignments
                            .iter()
                            .find(|(id, _)| *id == m.id)
                            .map(|(_, a)| a.clone())
                            .unwrap_or_default();
                    }
                    group.set_state(GroupState::Stable, now_wall);
                    let waiting: Vec<(Ticket, Bytes)> = group
                        .members
                        .values_mut()
                        .filter_map(|m| m.sync_waiter.take().map(|t| (t, m.assignment.clone())))
                        .collect();
                    for (waiter, assignment) in waiting {
                        let answer = Answer::Sync(sync_answer(group, assignment));
                        self.outbox.answers.push((waiter, answer));
                    }
                    self.outbox.stores.push((group_id.to_string(), stored_group(group)));
                }
                Reply::Parked
            }
        }
    }

    /// Heartbeat: None when the member is in good standing.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
        now_wall: i64,
    ) -> Option<ResponseError> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if let Some(c) = &mut group.consumer {
            return c.classic_heartbeat(member_id, generation, now_wall).err();
        }
        if let Err(e) = check_member(group, member_id, instance_id) {
            return Some(e);
        }
        if generation != group.generation {
            return Some(ResponseError::IllegalGeneration);
        }
        let state = group.state;
        if let Some(m) = group.members.get_mut(member_id) {
            m.heartbeat_deadline = now + m.session_timeout;
        }
        match state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::Empty | GroupState::Dead => Some(ResponseError::UnknownMemberId),
            _ => None,
        }
    }

    /// LeaveGroup for each (member id, instance id): each member's own error, or the
    /// group's when it does not exist.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now: Instant,
        now_wall: i64,
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if let Some(c) = &mut group.consumer {
            let results = members
                .iter()
                .map(|(member_id, _)| c.classic_leave(member_id, &self.topics).err())
                .collect();
            let state = if c.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            if group.state != state {
                group.set_state(state, now_wall);
            }
            return Ok(results);
        }
        let mut results = Vec::with_capacity(members.len());
        let mut removed_any = false;
        for (member_id, instance_id) in members {
            let resolved = match instance_id {
                Some(instance) => match group.static_members.get(instance) {
                    Some(current) if member_id.is_empty() || current == member_id => Ok(current.clone()),
                    Some(_) => Err(ResponseError::FencedInstanceId),
                    None => Err(ResponseError::UnknownMemberId),
                },
                None if group.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(ResponseError::UnknownMemberId),
            };
            results.push(match resolved {
                Ok(id) => {
                    remove_member(group, &mut self.outbox, &id);
                    removed_any = true;
                    None
                }
                Err(e) => Some(e),
            });
        }
        if removed_any {
            member_left(group, &mut self.outbox, &self.config, now, now_wall);
        }
        Ok(results)
    }

    /// The group-level checks of OffsetCommit (Kafka's `handleCommitOffsets`); a
    /// member's commit counts as a heartbeat.
    pub fn check_commit(&mut self, group_id: &str, commit: &OffsetCommit, now: Instant) -> Result<(), ResponseError> {
        if group_id.is_empty() || group_id.len() > ID_LEN_MAX {
            return Err(ResponseError::InvalidGroupId);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            // A "simple" commit (no membership) creates the group; a member's needs one.
            return if commit.generation < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if let Some(c) = &group.consumer {
            return c.check_commit(&commit.member_id, commit.generation);
        }
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
            m.heartbeat_deadline = now + m.session_timeout;
        }
        Ok(())
    }

    /// ConsumerGroupHeartbeat (KIP-848). A group id in use by a classic group with
    /// members is refused (GROUP_ID_NOT_FOUND: not a consumer group); an empty classic
    /// group, committed offsets and all, becomes a consumer group.
    pub fn consumer_heartbeat(
        &mut self,
        group_id: &str,
        beat: ConsumerBeat,
        now_wall: i64,
        topics: &Topics,
        settings: &ConsumerSettings,
    ) -> Result<ConsumerAnswer, ResponseError> {
        if group_id.is_empty() || group_id.len() > ID_LEN_MAX {
            return Err(ResponseError::InvalidGroupId);
        }
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now_wall));
        if group.consumer.is_none() {
            if !group.members.is_empty() || group.state != GroupState::Empty {
                // KIP-848's online upgrade: a Stable classic consumer group becomes a
                // consumer group whose classic members keep what they own.
                if group.state != GroupState::Stable || group.protocol_type.as_deref() != Some("consumer") {
                    return Err(if group.protocol_type.as_deref() == Some("consumer") {
                        // Mid-rebalance: retried once the classic rebalance is over.
                        ResponseError::CoordinatorNotAvailable
                    } else {
                        ResponseError::GroupIdNotFound
                    });
                }
                let protocol = group.protocol.clone().unwrap_or_default();
                let members = group
                    .members
                    .values()
                    .map(|m| ClassicSnapshot {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        session_timeout_ms: m.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                        rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                        protocols: m.protocols.clone(),
                        metadata: m.metadata_for(&protocol),
                        assignment: m.assignment.clone(),
                    })
                    .collect();
                let converted = ConsumerGroup::from_classic(group.generation, members, topics, now_wall)
                    .ok_or(ResponseError::InconsistentGroupProtocol)?;
                tracing::info!(
                    group = group_id,
                    members = group.members.len(),
                    "classic group becomes a consumer group"
                );
                group.members.clear();
                group.static_members.clear();
                group.pending_members.clear();
                group.leader = None;
                group.consumer = Some(converted);
            } else {
                group.consumer = Some(ConsumerGroup::default());
            }
            group.protocol_type = Some("consumer".to_string());
        }
        let consumer = group.consumer.as_mut().ok_or(ResponseError::CoordinatorNotAvailable)?;
        let answer = consumer.heartbeat(beat, now_wall, topics, settings);
        let state = if consumer.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        if state != group.state {
            group.set_state(state, now_wall);
        }
        answer
    }

    /// Removes KIP-848 members whose session or revocation time ran out.
    pub fn expire_consumer_members(&mut self, now_wall: i64, topics: &Topics) {
        for group in self.groups.values_mut() {
            let Some(consumer) = group.consumer.as_mut() else {
                continue;
            };
            for id in consumer.expire(now_wall, topics) {
                tracing::info!(group = %group.id, member = %id, "consumer-group member expired");
            }
            if consumer.members.is_empty() && group.state != GroupState::Empty {
                group.set_state(GroupState::Empty, now_wall);
            }
        }
    }

    pub fn has_consumer_groups(&self) -> bool {
        self.groups.values().any(|g| g.consumer.is_some())
    }

    /// A KIP-848 group as it stands.
    pub fn consumer_group(&self, group_id: &str) -> Option<ConsumerGroup> {
        self.groups.get(group_id)?.consumer.clone()
    }

    /// The partition-level check of one committed offset.
    pub fn check_offset(&self, offset: &PartitionOffset) -> Result<(), ResponseError> {
        if offset
            .metadata
            .as_ref()
            .is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES)
        {
            return Err(ResponseError::OffsetMetadataTooLarge);
        }
        Ok(())
    }

    /// Records committed offsets (creating the group for a simple commit).
    pub fn record_offsets(&mut self, group_id: &str, offsets: Vec<((String, i32), Committed)>, now_wall: i64) {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now_wall));
        group.offsets.extend(offsets);
    }

    /// OffsetFetch: the named partitions, or every committed one when none are named.
    pub fn committed(&self, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Vec<FetchedOffsets> {
        let group = self.groups.get(group_id);
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
                let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
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

    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                state: GroupState::Dead.name(),
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let protocol = group.protocol.clone().unwrap_or_default();
        let stable = group.state == GroupState::Stable;
        let members = group
            .members
            .values()
            .map(|m| DescribedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: stable.then(|| m.metadata_for(&protocol)),
                assignment: stable.then(|| m.assignment.clone()),
            })
            .collect();
        GroupDescription {
            state: group.state.name(),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        }
    }

    pub fn list(&self) -> Vec<ListedGroup> {
        self.groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| match &g.consumer {
                Some(c) => ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: "consumer".to_string(),
                    state: c.state(),
                    group_type: "consumer",
                },
                None => ListedGroup {
                    group_id: g.id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    state: g.state.name(),
                    group_type: "classic",
                },
            })
            .collect()
    }

    /// DeleteGroups' check: the offsets to tombstone when the group may go.
    pub fn deletable(&self, group_id: &str) -> Result<Vec<(String, i32)>, ResponseError> {
        let Some(group) = self.groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if group.state != GroupState::Empty || !group.members.is_empty() {
            return Err(ResponseError::NonEmptyGroup);
        }
        Ok(group.offsets.keys().cloned().collect())
    }

    pub fn remove(&mut self, group_id: &str) {
        self.groups.remove(group_id);
    }

    /// Drops every group `unloaded` picks (their partition moved to another broker) and
    /// returns the tickets of their parked requests, which must now be answered.
    pub fn unload(&mut self, unloaded: impl Fn(&str) -> bool) -> Vec<Ticket> {
        let mut tickets = Vec::new();
        self.groups.retain(|id, group| {
            if !unloaded(id) {
                return true;
            }
            for member in group.members.values() {
                tickets.extend(member.join_waiter.as_ref().map(|w| w.ticket));
                tickets.extend(member.sync_waiter);
            }
            false
        });
        tickets
    }

    /// OffsetDelete's checks (KIP-496): per partition, whether its offset may go (not
    /// while a member subscribes to the topic), and the offsets that may.
    #[allow(clippy::type_complexity)]
    pub fn offsets_deletable(
        &self,
        group_id: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<(Vec<Vec<Option<ResponseError>>>, Vec<(String, i32)>), ResponseError> {
        let Some(group) = self.groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if group.state != GroupState::Empty && group.protocol_type.as_deref() != Some("consumer") {
            return Err(ResponseError::NonEmptyGroup);
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
                        Some(s) if s.contains(topic) => Some(ResponseError::GroupSubscribedToTopic),
                        None => Some(ResponseError::NonEmptyGroup),
                        _ => {
                            doomed.push((topic.clone(), *p));
                            None
                        }
                    })
                    .collect()
            })
            .collect();
        Ok((errors, doomed))
    }

    pub fn forget_offsets(&mut self, group_id: &str, keys: &[(String, i32)]) {
        if let Some(group) = self.groups.get_mut(group_id) {
            for key in keys {
                group.offsets.remove(key);
            }
        }
    }

    /// Timers: expired sessions and pending ids, join deadlines. Returns the groups
    /// empty for longer than `offsets.retention.minutes`, with their offsets, for the
    /// coordinator to tombstone and then [`Groups::remove`].
    pub fn tick(&mut self, now: Instant, now_wall: i64) -> Vec<(String, Vec<(String, i32)>)> {
        let mut expired_groups = Vec::new();
        for group in self.groups.values_mut() {
            group.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none() && m.heartbeat_deadline <= now)
                .map(|m| m.id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %group.id, member = %id, "session expired");
                remove_member(group, &mut self.outbox, id);
            }
            let was_empty = group.state == GroupState::Empty;
            if !expired.is_empty() {
                member_left(group, &mut self.outbox, &self.config, now, now_wall);
            }
            maybe_complete_join(group, &mut self.outbox, now, now_wall);
            if !was_empty && group.state == GroupState::Empty {
                self.outbox.stores.push((group.id.clone(), stored_group(group)));
            }
            if group.state == GroupState::Empty
                && group.members.is_empty()
                && now_wall.saturating_sub(group.state_since_ms) >= self.config.offsets_retention_ms
            {
                expired_groups.push((group.id.clone(), group.offsets.keys().cloned().collect()));
            }
        }
        expired_groups
    }

    /// Applies one record of `__consumer_offsets` at load (later records win;
    /// tombstones delete).
    pub fn apply_loaded(&mut self, record: OffsetsRecord, now: Instant, now_wall: i64) {
        let groups = &mut self.groups;
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
