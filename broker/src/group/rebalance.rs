//! The rebalance steps the state machine is made of (Kafka's GroupCoordinator:
//! `prepareRebalance`, `maybeCompleteJoin`, `removeMemberAndUpdateGroup`, static
//! member replacement). Each changes one group and leaves answers to parked requests
//! in the outbox.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::api::{Answer, JoinResult, JoinedMember, Outbox, Reply, SyncResult};
use super::records::{StoredGroup, StoredMember};
use super::{Group, GroupConfig, GroupState, JoinWaiter, Member};

/// A member id (and instance id, if given) must match a current member.
pub(super) fn check_member(group: &Group, member_id: &str, instance_id: Option<&str>) -> Result<(), ResponseError> {
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

pub(super) fn remove_member(group: &mut Group, outbox: &mut Outbox, member_id: &str) {
    if let Some(m) = group.members.shift_remove(member_id) {
        if let Some(instance) = &m.instance_id {
            if group.static_members.get(instance).map(String::as_str) == Some(member_id) {
                group.static_members.remove(instance);
            }
        }
        if let Some(w) = m.join_waiter {
            let answer = JoinResult::failed(ResponseError::UnknownMemberId, member_id);
            outbox.answers.push((w.ticket, Answer::Join(answer)));
        }
        if let Some(ticket) = m.sync_waiter {
            let answer = SyncResult::failed(ResponseError::UnknownMemberId);
            outbox.answers.push((ticket, Answer::Sync(answer)));
        }
    }
    if group.leader.as_deref() == Some(member_id) {
        group.leader = None;
    }
}

/// After members left: a settled group rebalances; a rebalancing one may now be done.
pub(super) fn member_left(group: &mut Group, outbox: &mut Outbox, config: &GroupConfig, now: Instant, now_wall: i64) {
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            if group.members.is_empty() {
                group.generation += 1;
                group.protocol = None;
                group.leader = None;
                group.set_state(GroupState::Empty, now_wall);
            } else {
                prepare_rebalance(group, outbox, config, now, now_wall, false);
            }
        }
        GroupState::PreparingRebalance => maybe_complete_join(group, outbox, now, now_wall),
        _ => {}
    }
}

/// Moves the group into PreparingRebalance (if it is not already there).
pub(super) fn prepare_rebalance(
    group: &mut Group,
    outbox: &mut Outbox,
    config: &GroupConfig,
    now: Instant,
    now_wall: i64,
    new_member: bool,
) {
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
                if let Some(ticket) = m.sync_waiter.take() {
                    let answer = SyncResult::failed(ResponseError::RebalanceInProgress);
                    outbox.answers.push((ticket, Answer::Sync(answer)));
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
pub(super) fn maybe_complete_join(group: &mut Group, outbox: &mut Outbox, now: Instant, now_wall: i64) {
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
        remove_member(group, outbox, &id);
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
        outbox
            .answers
            .push((waiter.ticket, Answer::Join(join_answer(group, &id))));
    }
}

/// The JoinGroup answer for a member of the current generation; the leader also gets
/// every member's metadata for the chosen protocol.
pub(super) fn join_answer(group: &Group, member_id: &str) -> JoinResult {
    let protocol = group.protocol.clone().unwrap_or_default();
    let is_leader = group.leader.as_deref() == Some(member_id);
    let members = if is_leader {
        group
            .members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinResult {
        error: None,
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol_name: Some(protocol),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members,
        skip_assignment: false,
    }
}

pub(super) fn sync_answer(group: &Group, assignment: Bytes) -> SyncResult {
    SyncResult {
        error: None,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol.clone(),
        assignment,
    }
}

/// KIP-345: a static member restarting gets a new member id in place of its old one.
/// With nothing else changed, a settled group keeps its assignment and skips the
/// rebalance; otherwise the group rebalances.
pub(super) fn replace_static_member(
    group: &mut Group,
    outbox: &mut Outbox,
    old_id: &str,
    mut member: Member,
    waiter: Option<JoinWaiter>,
    now: Instant,
    now_wall: i64,
) -> Reply<JoinResult> {
    let new_id = member.id.clone();
    let version = waiter.as_ref().map(|w| w.version).unwrap_or_default();
    let old = group.members.shift_remove(old_id);
    if let Some(instance) = &member.instance_id {
        group.static_members.insert(instance.clone(), new_id.clone());
    }
    let unchanged = old.as_ref().is_some_and(|o| o.protocols == member.protocols);
    if let Some(old) = old {
        member.assignment = old.assignment;
        if let Some(w) = old.join_waiter {
            let answer = JoinResult::failed(ResponseError::FencedInstanceId, old_id);
            outbox.answers.push((w.ticket, Answer::Join(answer)));
        }
        if let Some(ticket) = old.sync_waiter {
            let answer = SyncResult::failed(ResponseError::FencedInstanceId);
            outbox.answers.push((ticket, Answer::Sync(answer)));
        }
    }
    let was_leader = group.leader.as_deref() == Some(old_id);
    if was_leader {
        group.leader = Some(new_id.clone());
    }
    if group.state == GroupState::Stable && unchanged {
        group.members.insert(new_id.clone(), member);
        let mut answer = join_answer(group, &new_id);
        // A restarted static leader gets the member list but must not reassign (v9,
        // KIP-814); older leaders' SyncGroup in a Stable group just returns the current
        // assignment, so either way nothing moves.
        answer.skip_assignment = was_leader && version >= 9;
        return Reply::Now(answer);
    }
    member.join_waiter = waiter;
    group.members.insert(new_id, member);
    let config = GroupConfig {
        initial_rebalance_delay: Duration::ZERO,
        session_timeout_ms_min: 0,
        session_timeout_ms_max: i32::MAX,
        size_max: usize::MAX,
        offsets_retention_ms: i64::MAX,
        consumer: crate::group::consumer::ConsumerSettings {
            session_timeout_ms: 45_000,
            size_max: usize::MAX,
        },
        consumer_heartbeat_interval_ms: 5000,
    };
    prepare_rebalance(group, outbox, &config, now, now_wall, false);
    maybe_complete_join(group, outbox, now, now_wall);
    Reply::Parked
}

pub(super) fn stored_group(group: &Group) -> StoredGroup {
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
