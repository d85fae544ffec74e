//! The KIP-848 consumer group protocol as a pure state machine: members heartbeat
//! (ConsumerGroupHeartbeat), the coordinator assigns partitions itself (the `uniform`
//! and `range` server-side assignors) and reconciles each member towards its target
//! assignment incrementally, with epochs instead of stop-the-world rebalances.
//!
//! Epochs: the group epoch moves with every change of membership, subscriptions or
//! subscribed topics' partitions; the target assignment is computed for it (the
//! assignment epoch); a member's epoch reaches the assignment epoch once it holds no
//! partition it must give up. Worked example, two members and partitions 0–3:
//!
//! ```text
//!   epoch 1: a owns 0 1 2 3            b joins → group epoch 2, target a:0 1  b:2 3
//!   a's heartbeat: assignment 0 1 (2 3 pending revocation), a stays at epoch 1
//!   b's heartbeat: epoch 2, assignment {} (2 3 are not released yet)
//!   a reports owning 0 1 → a at epoch 2;  b's next heartbeat → 2 3
//! ```
//!
//! No I/O and no clock of its own; membership lives in memory (members join again
//! after a coordinator move), committed offsets stay with the group as for classic
//! groups. Kafka's `ConsumerGroup` and `CurrentAssignmentBuilder` are the reference.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

/// Partitions by topic name.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The server-side assignors, by their Kafka names; the first is the default.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// The bound on a subscription regex's compiled size, so a pattern cannot make the
/// coordinator allocate without limit.
const REGEX_SIZE_MAX: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Holds its whole target assignment.
    Stable,
    /// Must give up partitions before it moves on (its epoch waits).
    UnrevokedPartitions,
    /// At the assignment epoch, waiting for partitions others still hold.
    UnreleasedPartitions,
}

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: Vec<String>,
    pub subscribed_regex: Option<String>,
    /// Whether the regex has been matched against the topics yet: as Kafka's broker
    /// resolves a new regex after the heartbeat that brought it (literal topics are
    /// assigned at once, matched ones with a later heartbeat), and clients expect that.
    pub regex_resolved: bool,
    pub server_assignor: Option<String>,
    pub member_epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    /// What the member owns (as last told to it).
    pub assigned: Assignment,
    /// What it must give up before its epoch moves on.
    pub revoking: Assignment,
    /// A static member that left with epoch -2: its partitions wait for its return.
    pub departed: bool,
    /// A member speaking the classic protocol (JoinGroup/SyncGroup/Heartbeat) inside
    /// a consumer group: its protocols and session timeout.
    pub classic: Option<ClassicMember>,
    sent: Option<Assignment>,
    session_deadline_ms: i64,
    revoke_deadline_ms: Option<i64>,
}

/// What a classic member brings: the protocols it joined with (name, metadata) and
/// its own session timeout.
#[derive(Debug, Clone)]
pub struct ClassicMember {
    pub protocols: Vec<(String, bytes::Bytes)>,
    pub session_timeout_ms: i32,
}

/// One heartbeat in the machine's terms.
#[derive(Debug, Clone, Default)]
pub struct ConsumerBeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_names: Option<Vec<String>>,
    pub subscribed_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member reports owning (None: unchanged).
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's assignment when it changed since it was last sent.
    pub assignment: Option<Assignment>,
}

/// The topics a group can subscribe to: name → partition count (internal topics left
/// out, as Kafka's regex subscriptions never match them).
pub type Topics = BTreeMap<String, i32>;

/// Settings from the broker's `group.consumer.*` configs.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerSettings {
    pub session_timeout_ms: i64,
    pub size_max: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// The target assignment of the assignment epoch.
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics and their partition counts the target was computed for.
    subscribed: Topics,
}

impl ConsumerGroup {
    /// Kafka's names for a consumer group's states.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.state != MemberState::Stable || m.member_epoch != self.assignment_epoch)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The assignor the group runs: the one its members ask for (the most common),
    /// else `uniform`.
    pub fn assignor(&self) -> &'static str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let chosen = votes.into_iter().max_by_key(|(_, n)| *n).map(|(a, _)| a);
        ASSIGNORS
            .iter()
            .copied()
            .find(|a| Some(*a) == chosen)
            .unwrap_or(ASSIGNORS[0])
    }

    pub fn heartbeat(
        &mut self,
        beat: ConsumerBeat,
        now_ms: i64,
        topics: &Topics,
        settings: &ConsumerSettings,
    ) -> Result<ConsumerAnswer, ResponseError> {
        if let Some(a) = &beat.server_assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return Err(ResponseError::UnsupportedAssignor);
            }
        }
        if let Some(regex) = &beat.subscribed_regex {
            compile(regex)?;
        }
        match beat.member_epoch {
            -1 | -2 => return self.leave(beat, now_ms, settings, topics),
            0 => self.join(&beat, now_ms, settings)?,
            epoch if epoch > 0 => self.check_epoch(&beat, epoch)?,
            _ => return Err(ResponseError::InvalidRequest),
        }
        let member_id = beat.member_id.clone();
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        member.session_deadline_ms = now_ms.saturating_add(settings.session_timeout_ms);
        let mut changed = false;
        if let Some(names) = beat.subscribed_names.clone() {
            changed |= member.subscribed_names != names;
            member.subscribed_names = names;
        }
        if let Some(regex) = &beat.subscribed_regex {
            // An empty regex removes the member's regex subscription.
            let regex = (!regex.is_empty()).then(|| regex.clone());
            if member.subscribed_regex != regex {
                member.regex_resolved = regex.is_none();
                member.subscribed_regex = regex;
                changed = true;
            }
        }
        if beat.server_assignor.is_some() {
            changed |= member.server_assignor != beat.server_assignor;
            member.server_assignor = beat.server_assignor.clone();
        }
        if beat.rebalance_timeout_ms > 0 {
            member.rebalance_timeout_ms = beat.rebalance_timeout_ms;
        }
        if beat.subscribed_names.is_some() && beat.member_epoch > 0 {
            // A full request (after an error or a reconnect) gets its assignment again.
            member.sent = None;
        }
        if changed {
            self.group_epoch += 1;
        }
        self.refresh_target(topics);
        self.reconcile(&member_id, beat.owned.as_ref(), now_ms);
        let member = self.members.get_mut(&member_id).ok_or(ResponseError::UnknownMemberId)?;
        let assignment = (member.sent.as_ref() != Some(&member.assigned)).then(|| member.assigned.clone());
        if assignment.is_some() {
            member.sent = Some(member.assigned.clone());
        }
        let member_epoch = member.member_epoch;
        if !member.regex_resolved {
            // Resolved now: the next heartbeat's target includes what it matches.
            member.regex_resolved = true;
            self.group_epoch += 1;
        }
        Ok(ConsumerAnswer {
            member_id,
            member_epoch,
            assignment,
        })
    }

    fn join(&mut self, beat: &ConsumerBeat, now_ms: i64, settings: &ConsumerSettings) -> Result<(), ResponseError> {
        if beat.subscribed_names.is_none() && beat.subscribed_regex.is_none() {
            return Err(ResponseError::InvalidRequest);
        }
        if beat.member_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        let mut inherited = None;
        if let Some(instance) = &beat.instance_id {
            let holder = self
                .members
                .values()
                .find(|m| m.instance_id.as_deref() == Some(instance.as_str()) && m.member_id != beat.member_id)
                .map(|m| (m.member_id.clone(), m.departed));
            match holder {
                Some((_, false)) => return Err(ResponseError::UnreleasedInstanceId),
                Some((old, true)) => {
                    // KIP-848 static membership: the returning instance takes over the
                    // departed member's partitions and epoch, with no rebalance.
                    let departed = self.members.remove(&old);
                    if let Some(target) = self.target.remove(&old) {
                        self.target.insert(beat.member_id.clone(), target);
                    }
                    inherited = departed;
                }
                None => {}
            }
        }
        let rejoined = self.members.remove(&beat.member_id).is_some();
        if inherited.is_none() && !rejoined && self.members.len() >= settings.size_max {
            return Err(ResponseError::GroupMaxSizeReached);
        }
        let mut member = ConsumerMember {
            member_id: beat.member_id.clone(),
            instance_id: beat.instance_id.clone(),
            rack_id: beat.rack_id.clone(),
            client_id: beat.client_id.clone(),
            client_host: beat.client_host.clone(),
            rebalance_timeout_ms: beat.rebalance_timeout_ms,
            subscribed_names: beat.subscribed_names.clone().unwrap_or_default(),
            subscribed_regex: beat.subscribed_regex.clone().filter(|r| !r.is_empty()),
            regex_resolved: beat.subscribed_regex.as_deref().is_none_or(str::is_empty),
            server_assignor: beat.server_assignor.clone(),
            member_epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            departed: false,
            classic: None,
            sent: None,
            session_deadline_ms: now_ms.saturating_add(settings.session_timeout_ms),
            revoke_deadline_ms: None,
        };
        match inherited {
            Some(old) => {
                member.member_epoch = old.member_epoch;
                member.previous_epoch = old.previous_epoch;
                member.assigned = old.assigned;
                member.revoking = old.revoking;
                member.state = old.state;
                // Unchanged subscriptions keep the epoch; changed ones move it below.
                if member.subscribed_names != old.subscribed_names || member.subscribed_regex != old.subscribed_regex {
                    self.group_epoch += 1;
                }
            }
            None => self.group_epoch += 1,
        }
        self.members.insert(beat.member_id.clone(), member);
        Ok(())
    }

    fn check_epoch(&self, beat: &ConsumerBeat, epoch: i32) -> Result<(), ResponseError> {
        let member = self
            .members
            .get(&beat.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if epoch == member.member_epoch {
            return Ok(());
        }
        // The member missed the answer that moved it on: accepted while what it
        // reports owning is part of what it holds now (Kafka's rule).
        let lost_answer = epoch == member.previous_epoch
            && beat
                .owned
                .as_ref()
                .is_some_and(|owned| contains(&member.assigned, owned) || contains(&member.revoking, owned));
        if lost_answer {
            Ok(())
        } else {
            Err(ResponseError::FencedMemberEpoch)
        }
    }

    fn leave(
        &mut self,
        beat: ConsumerBeat,
        now_ms: i64,
        settings: &ConsumerSettings,
        topics: &Topics,
    ) -> Result<ConsumerAnswer, ResponseError> {
        let static_pause = beat.member_epoch == -2 && beat.instance_id.is_some();
        let Some(member) = self.members.get_mut(&beat.member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        if static_pause {
            // Its partitions wait for the instance to come back (until its session
            // runs out), with no rebalance meanwhile.
            member.departed = true;
            member.session_deadline_ms = now_ms.saturating_add(settings.session_timeout_ms);
        } else {
            self.members.remove(&beat.member_id);
            self.target.remove(&beat.member_id);
            self.group_epoch += 1;
            self.refresh_target(topics);
        }
        Ok(ConsumerAnswer {
            member_id: beat.member_id,
            member_epoch: beat.member_epoch,
            assignment: None,
        })
    }

    /// Removes members whose session ran out or that did not give up partitions
    /// within their rebalance timeout; their ids.
    pub fn expire(&mut self, now_ms: i64, topics: &Topics) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline_ms <= now_ms || m.revoke_deadline_ms.is_some_and(|d| d <= now_ms))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
            self.target.remove(id);
        }
        if !gone.is_empty() {
            self.group_epoch += 1;
            self.refresh_target(topics);
        }
        gone
    }

    /// A classic consumer's JoinGroup in a consumer group (KIP-848's online upgrade):
    /// it becomes (or stays) a classic member, subscribed to what its protocol
    /// metadata names and owning what it reports (a cooperative consumer keeps its
    /// partitions; an eager one gave them all up before joining). Answered at once with
    /// its member epoch as the generation and its first protocol; it is no leader,
    /// since the coordinator assigns.
    #[allow(clippy::too_many_arguments)]
    pub fn classic_join(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        classic: ClassicMember,
        rebalance_timeout_ms: i32,
        client: (&str, &str),
        now_ms: i64,
        topics: &Topics,
        settings: &ConsumerSettings,
    ) -> Result<(i32, String), ResponseError> {
        let Some((protocol, metadata)) = classic.protocols.first().cloned() else {
            return Err(ResponseError::InconsistentGroupProtocol);
        };
        let subscription = parse_subscription(&metadata).ok_or(ResponseError::InconsistentGroupProtocol)?;
        if let Some(instance) = instance_id {
            if self
                .members
                .values()
                .any(|m| m.instance_id.as_deref() == Some(instance) && m.member_id != member_id && !m.departed)
            {
                return Err(ResponseError::FencedInstanceId);
            }
        }
        let session = (classic.session_timeout_ms.max(0) as i64).max(1);
        match self.members.get_mut(member_id) {
            Some(member) => {
                if member.subscribed_names != subscription.topics {
                    member.subscribed_names = subscription.topics.clone();
                    self.group_epoch += 1;
                }
                member.classic = Some(classic);
                member.session_deadline_ms = now_ms.saturating_add(session);
                member.rebalance_timeout_ms = rebalance_timeout_ms;
            }
            None => {
                if self.members.len() >= settings.size_max {
                    return Err(ResponseError::GroupMaxSizeReached);
                }
                self.members.insert(
                    member_id.to_string(),
                    ConsumerMember {
                        member_id: member_id.to_string(),
                        instance_id: instance_id.map(str::to_string),
                        rack_id: subscription.rack_id.clone(),
                        client_id: client.0.to_string(),
                        client_host: client.1.to_string(),
                        rebalance_timeout_ms,
                        subscribed_names: subscription.topics.clone(),
                        subscribed_regex: None,
                        regex_resolved: true,
                        server_assignor: None,
                        member_epoch: 0,
                        previous_epoch: -1,
                        state: MemberState::Stable,
                        assigned: Assignment::new(),
                        revoking: Assignment::new(),
                        departed: false,
                        classic: Some(classic),
                        sent: None,
                        session_deadline_ms: now_ms.saturating_add(session),
                        revoke_deadline_ms: None,
                    },
                );
                self.group_epoch += 1;
            }
        }
        // What it holds now: its cooperative owned partitions, never more than it had.
        if let Some(member) = self.members.get_mut(member_id) {
            member.assigned = intersect(&member.assigned, &subscription.owned);
            member.revoking.clear();
            member.revoke_deadline_ms = None;
        }
        self.refresh_target(topics);
        let owned = self.members.get(member_id).map(|m| m.assigned.clone());
        self.reconcile(member_id, owned.as_ref(), now_ms);
        let member = self.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
        Ok((member.member_epoch, protocol))
    }

    /// A classic member's SyncGroup: its assignment, as ConsumerProtocolAssignment.
    /// What it gives up is gone once it has this (it revokes before it syncs).
    pub fn classic_sync(&mut self, member_id: &str, generation: i32) -> Result<bytes::Bytes, ResponseError> {
        let member = self.members.get_mut(member_id).ok_or(ResponseError::UnknownMemberId)?;
        if member.classic.is_none() {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != member.member_epoch {
            return Err(ResponseError::IllegalGeneration);
        }
        member.revoking.clear();
        member.revoke_deadline_ms = None;
        member.sent = Some(member.assigned.clone());
        Ok(encode_assignment(&member.assigned))
    }

    /// A classic member's Heartbeat: REBALANCE_IN_PROGRESS while its assignment is
    /// not its target yet (it rejoins to move on).
    pub fn classic_heartbeat(&mut self, member_id: &str, generation: i32, now_ms: i64) -> Result<(), ResponseError> {
        let epoch = self.assignment_epoch;
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let member = self.members.get_mut(member_id).ok_or(ResponseError::UnknownMemberId)?;
        let Some(classic) = &member.classic else {
            return Err(ResponseError::UnknownMemberId);
        };
        if generation != member.member_epoch {
            return Err(ResponseError::IllegalGeneration);
        }
        member.session_deadline_ms = now_ms.saturating_add(classic.session_timeout_ms.max(1) as i64);
        if member.member_epoch != epoch || member.assigned != target {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// A classic member's LeaveGroup.
    pub fn classic_leave(&mut self, member_id: &str, topics: &Topics) -> Result<(), ResponseError> {
        self.members.remove(member_id).ok_or(ResponseError::UnknownMemberId)?;
        self.target.remove(member_id);
        self.group_epoch += 1;
        self.refresh_target(topics);
        Ok(())
    }

    /// The consumer group a Stable classic group becomes when its first KIP-848 member
    /// joins: every member keeps its partitions and the group its generation, so
    /// nothing moves until the new member's arrival is reconciled. `members` are
    /// (member id, instance id, client id, host, session timeout ms, rebalance timeout
    /// ms, protocols, the chosen protocol's metadata, assignment).
    pub fn from_classic(
        generation: i32,
        members: Vec<ClassicSnapshot>,
        topics: &Topics,
        now_ms: i64,
    ) -> Option<ConsumerGroup> {
        let mut group = ConsumerGroup {
            group_epoch: generation.max(0),
            assignment_epoch: generation.max(0),
            ..Default::default()
        };
        for m in members {
            let subscription = parse_subscription(&m.metadata)?;
            let assigned = parse_assignment(&m.assignment)?;
            group.target.insert(m.member_id.clone(), assigned.clone());
            group.members.insert(
                m.member_id.clone(),
                ConsumerMember {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    rack_id: subscription.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_names: subscription.topics,
                    subscribed_regex: None,
                    regex_resolved: true,
                    server_assignor: None,
                    member_epoch: generation,
                    previous_epoch: -1,
                    state: MemberState::Stable,
                    sent: Some(assigned.clone()),
                    assigned,
                    revoking: Assignment::new(),
                    departed: false,
                    session_deadline_ms: now_ms.saturating_add(m.session_timeout_ms.max(1) as i64),
                    classic: Some(ClassicMember {
                        protocols: m.protocols,
                        session_timeout_ms: m.session_timeout_ms,
                    }),
                    revoke_deadline_ms: None,
                },
            );
        }
        group.subscribed = group.subscribed_topics(topics);
        Some(group)
    }

    /// The commit check of KIP-848: a member commits with its current epoch.
    pub fn check_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), ResponseError> {
        if member_id.is_empty() && member_epoch < 0 {
            // An admin's commit: only while no member could be committing.
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        let member = self.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
        if member_epoch != member.member_epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// The topics every member subscribes to, resolved against `topics`.
    fn subscribed_topics(&self, topics: &Topics) -> Topics {
        let mut out = Topics::new();
        for m in self.members.values() {
            for (name, partitions) in member_topics(m, topics) {
                out.insert(name, partitions);
            }
        }
        out
    }

    /// Recomputes the target when the group epoch moved or the subscribed topics
    /// changed (created, deleted, more partitions; a regex matching a new topic).
    fn refresh_target(&mut self, topics: &Topics) {
        let subscribed = self.subscribed_topics(topics);
        if subscribed != self.subscribed {
            self.subscribed = subscribed;
            self.group_epoch += 1;
        }
        if self.group_epoch > self.assignment_epoch {
            self.target = assign(self.assignor(), &self.members, &self.target, topics);
            self.assignment_epoch = self.group_epoch;
        }
    }

    /// Moves one member towards its target: first it gives up what is not in its
    /// target (its epoch waits until it reports it no longer owns those), then it
    /// reaches the assignment epoch and takes the partitions no other member holds.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: Assignment =
            self.members
                .values()
                .filter(|m| m.member_id != member_id)
                .fold(Assignment::new(), |mut all, m| {
                    merge(&mut all, &m.assigned);
                    merge(&mut all, &m.revoking);
                    all
                });
        let epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        if !member.revoking.is_empty() {
            match owned {
                Some(owned) if !intersects(owned, &member.revoking) => {
                    member.revoking.clear();
                    member.revoke_deadline_ms = None;
                }
                _ => return,
            }
        }
        let revoke = minus(&member.assigned, &target);
        if !revoke.is_empty() {
            member.assigned = intersect(&member.assigned, &target);
            member.revoking = revoke;
            member.state = MemberState::UnrevokedPartitions;
            member.revoke_deadline_ms = Some(now_ms.saturating_add(member.rebalance_timeout_ms.max(0) as i64));
            return;
        }
        let free = minus(&minus(&target, &member.assigned), &held_by_others);
        merge(&mut member.assigned, &free);
        if member.member_epoch != epoch {
            member.previous_epoch = member.member_epoch;
            member.member_epoch = epoch;
        }
        member.state = if member.assigned == target {
            MemberState::Stable
        } else {
            MemberState::UnreleasedPartitions
        };
    }
}

/// A classic group's member as the conversion to a consumer group needs it.
#[derive(Debug, Clone)]
pub struct ClassicSnapshot {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, bytes::Bytes)>,
    pub metadata: bytes::Bytes,
    pub assignment: bytes::Bytes,
}

/// What a ConsumerProtocolSubscription (v0–v3) says: topics, owned partitions (v1+)
/// and rack (v3).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub owned: Assignment,
    pub rack_id: Option<String>,
}

/// Bounds-checked reads of the classic consumer protocol's encodings.
struct Wire<'a>(&'a [u8]);

impl Wire<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Some(h)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        Some(Some(String::from_utf8_lossy(self.take(len as usize)?).into_owned()))
    }
    fn skip_bytes(&mut self) -> Option<()> {
        let len = self.i32()?;
        if len > 0 {
            self.take(len as usize)?;
        }
        Some(())
    }
    /// An array of (topic, partitions); its length is checked against what is left
    /// before anything is allocated.
    fn topic_partitions(&mut self) -> Option<Assignment> {
        let count = self.i32()?;
        let mut out = Assignment::new();
        for _ in 0..count.max(0).min(self.0.len() as i32) {
            let topic = self.string()??;
            let n = self.i32()?;
            if n < 0 || n as usize > self.0.len() / 4 {
                return None;
            }
            let ps = out.entry(topic).or_default();
            for _ in 0..n {
                ps.insert(self.i32()?);
            }
        }
        out.retain(|_, ps| !ps.is_empty());
        Some(out)
    }
}

/// Parses a ConsumerProtocolSubscription; None when damaged.
pub fn parse_subscription(bytes: &[u8]) -> Option<Subscription> {
    let mut w = Wire(bytes);
    let version = w.i16()?;
    let count = w.i32()?;
    let mut topics = Vec::new();
    for _ in 0..count.max(0).min(bytes.len() as i32) {
        topics.push(w.string()??);
    }
    let mut out = Subscription {
        topics,
        ..Default::default()
    };
    if w.skip_bytes().is_none() {
        return Some(out);
    }
    if version >= 1 {
        out.owned = w.topic_partitions().unwrap_or_default();
    }
    if version >= 3 {
        let _generation = w.i32();
        out.rack_id = w.string().flatten();
    }
    Some(out)
}

/// Parses a ConsumerProtocolAssignment; None when damaged (empty bytes: nothing).
pub fn parse_assignment(bytes: &[u8]) -> Option<Assignment> {
    if bytes.is_empty() {
        return Some(Assignment::new());
    }
    let mut w = Wire(bytes);
    let _version = w.i16()?;
    w.topic_partitions()
}

/// A ConsumerProtocolAssignment v0 of `assignment`, with null user data.
pub fn encode_assignment(assignment: &Assignment) -> bytes::Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(assignment.len() as i32).to_be_bytes());
    for (topic, partitions) in assignment {
        let name = &topic.as_bytes()[..topic.len().min(i16::MAX as usize)];
        out.extend_from_slice(&(name.len() as i16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for p in partitions {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.extend_from_slice(&(-1i32).to_be_bytes());
    bytes::Bytes::from(out)
}

/// The topics (and partition counts) one member subscribes to.
fn member_topics(m: &ConsumerMember, topics: &Topics) -> Vec<(String, i32)> {
    let mut out: Vec<(String, i32)> = m
        .subscribed_names
        .iter()
        .filter_map(|n| topics.get(n).map(|p| (n.clone(), *p)))
        .collect();
    let regex = m.subscribed_regex.as_deref().filter(|_| m.regex_resolved);
    if let Some(re) = regex.and_then(|r| compile(r).ok()) {
        out.extend(
            topics
                .iter()
                .filter(|(n, _)| re.is_match(n))
                .map(|(n, p)| (n.clone(), *p)),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// A subscription regex with RE2/J's meaning in Kafka: it must match the whole name.
fn compile(regex: &str) -> Result<regex::Regex, ResponseError> {
    regex::RegexBuilder::new(&format!("^(?:{regex})$"))
        .size_limit(REGEX_SIZE_MAX)
        .build()
        .map_err(|_| ResponseError::InvalidRegularExpression)
}

/// The target assignment: every subscribed partition to exactly one subscribed member.
/// `range` gives each member of a topic a contiguous range of its partitions (members
/// sorted by id); `uniform` spreads all partitions so that member counts differ by at
/// most one where subscriptions allow, keeping a partition with its previous owner
/// while that owner is under its share (fewer moves, so faster reconciliation).
pub fn assign(
    assignor: &str,
    members: &BTreeMap<String, ConsumerMember>,
    previous: &BTreeMap<String, Assignment>,
    topics: &Topics,
) -> BTreeMap<String, Assignment> {
    let mut subscribers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for m in members.values() {
        for (topic, _) in member_topics(m, topics) {
            subscribers.entry(topic).or_default().push(m.member_id.as_str());
        }
    }
    let mut out: BTreeMap<String, Assignment> = members.keys().map(|id| (id.clone(), Assignment::new())).collect();
    let give = |out: &mut BTreeMap<String, Assignment>, member: &str, topic: &str, p: i32| {
        if let Some(a) = out.get_mut(member) {
            a.entry(topic.to_string()).or_default().insert(p);
        }
    };
    if assignor == "range" {
        for (topic, members) in &subscribers {
            let n = topics.get(topic).copied().unwrap_or(0).max(0) as usize;
            let m = members.len();
            let (base, extra) = (n / m, n % m);
            let mut next = 0usize;
            for (i, member) in members.iter().enumerate() {
                let take = base + usize::from(i < extra);
                for p in next..next + take {
                    give(&mut out, member, topic, p as i32);
                }
                next += take;
            }
        }
        return out;
    }
    let total: usize = subscribers
        .keys()
        .map(|t| topics.get(t).copied().unwrap_or(0).max(0) as usize)
        .sum();
    // Each member gets `floor` partitions, `extra` of them one more: counts differ by
    // at most one (where subscriptions allow).
    let n = members.len().max(1);
    let (floor, mut extra) = (total / n, total % n);
    let mut counts: BTreeMap<&str, usize> = members.keys().map(|id| (id.as_str(), 0)).collect();
    let owner_of = |topic: &str, p: i32, subs: &[&str]| {
        previous
            .iter()
            .find(|(id, a)| a.get(topic).is_some_and(|ps| ps.contains(&p)) && subs.contains(&id.as_str()))
            .map(|(id, _)| id.clone())
    };
    let mut unplaced = Vec::new();
    // First every previous owner keeps up to `floor`...
    for (topic, subs) in &subscribers {
        for p in 0..topics.get(topic).copied().unwrap_or(0).max(0) {
            match owner_of(topic, p, subs) {
                Some(id) if counts.get(id.as_str()).is_some_and(|c| *c < floor) => {
                    give(&mut out, &id, topic, p);
                    if let Some(c) = counts.get_mut(id.as_str()) {
                        *c += 1;
                    }
                }
                owner => unplaced.push((topic.as_str(), p, subs, owner)),
            }
        }
    }
    // ...then one more while extras are left, then the rest to the least loaded.
    let mut rest = Vec::new();
    for (topic, p, subs, owner) in unplaced {
        match owner {
            Some(id) if extra > 0 && counts.get(id.as_str()) == Some(&floor) => {
                give(&mut out, &id, topic, p);
                if let Some(c) = counts.get_mut(id.as_str()) {
                    *c += 1;
                }
                extra -= 1;
            }
            _ => rest.push((topic, p, subs)),
        }
    }
    for (topic, p, subs) in rest {
        let Some(least) = subs
            .iter()
            .min_by_key(|id| (counts.get(**id).copied().unwrap_or(0), **id))
        else {
            continue;
        };
        give(&mut out, least, topic, p);
        if let Some(c) = counts.get_mut(*least) {
            *c += 1;
        }
    }
    out
}

fn merge(into: &mut Assignment, more: &Assignment) {
    for (t, ps) in more {
        into.entry(t.clone()).or_default().extend(ps.iter().copied());
    }
    into.retain(|_, ps| !ps.is_empty());
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let left: BTreeSet<i32> = match b.get(t) {
            Some(bs) => ps.difference(bs).copied().collect(),
            None => ps.clone(),
        };
        if !left.is_empty() {
            out.insert(t.clone(), left);
        }
    }
    out
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        if let Some(bs) = b.get(t) {
            let both: BTreeSet<i32> = ps.intersection(bs).copied().collect();
            if !both.is_empty() {
                out.insert(t.clone(), both);
            }
        }
    }
    out
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    !intersect(a, b).is_empty()
}

fn contains(whole: &Assignment, part: &Assignment) -> bool {
    minus(part, whole).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ConsumerSettings = ConsumerSettings {
        session_timeout_ms: 45_000,
        size_max: usize::MAX,
    };

    fn topics() -> Topics {
        [("t".to_string(), 4), ("other".to_string(), 2)].into()
    }

    fn beat(id: &str, epoch: i32, owned: Option<&[i32]>) -> ConsumerBeat {
        ConsumerBeat {
            member_id: id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: 10_000,
            subscribed_names: (epoch == 0).then(|| vec!["t".to_string()]),
            owned: owned.map(|ps| [("t".to_string(), ps.iter().copied().collect())].into()),
            ..Default::default()
        }
    }

    fn parts(a: &Option<Assignment>) -> Vec<i32> {
        a.as_ref()
            .and_then(|a| a.get("t"))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_second_member_gets_its_partitions_once_the_first_revoked_them() {
        let mut g = ConsumerGroup::default();
        let a = g.heartbeat(beat("a", 0, None), 0, &topics(), &SETTINGS).unwrap();
        assert_eq!(parts(&a.assignment), vec![0, 1, 2, 3]);
        let a_epoch = a.member_epoch;
        let b = g.heartbeat(beat("b", 0, None), 0, &topics(), &SETTINGS).unwrap();
        // b reaches the new epoch at once, but a still owns what b's target holds.
        assert!(b.member_epoch > a_epoch);
        assert_eq!(parts(&b.assignment), Vec::<i32>::new());
        // a is told to keep half and stays at its epoch until it gives the rest up.
        let a2 = g
            .heartbeat(beat("a", a_epoch, Some(&[0, 1, 2, 3])), 1, &topics(), &SETTINGS)
            .unwrap();
        assert_eq!(a2.member_epoch, a_epoch);
        let kept = parts(&a2.assignment);
        assert_eq!(kept.len(), 2);
        assert_eq!(g.state(), "Reconciling");
        let a3 = g
            .heartbeat(beat("a", a_epoch, Some(&kept)), 2, &topics(), &SETTINGS)
            .unwrap();
        assert_eq!(a3.member_epoch, b.member_epoch);
        let b2 = g
            .heartbeat(beat("b", b.member_epoch, Some(&[])), 3, &topics(), &SETTINGS)
            .unwrap();
        let given = parts(&b2.assignment);
        assert_eq!(given.len(), 2);
        assert!(given.iter().all(|p| !kept.contains(p)));
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn stale_and_unknown_members_are_fenced_and_commits_check_the_epoch() {
        let mut g = ConsumerGroup::default();
        let a = g.heartbeat(beat("a", 0, None), 0, &topics(), &SETTINGS).unwrap();
        assert_eq!(
            g.heartbeat(beat("a", a.member_epoch + 5, None), 0, &topics(), &SETTINGS),
            Err(ResponseError::FencedMemberEpoch)
        );
        assert_eq!(
            g.heartbeat(beat("x", 3, None), 0, &topics(), &SETTINGS),
            Err(ResponseError::UnknownMemberId)
        );
        assert_eq!(g.check_commit("a", a.member_epoch), Ok(()));
        assert_eq!(
            g.check_commit("a", a.member_epoch - 1),
            Err(ResponseError::StaleMemberEpoch)
        );
        assert_eq!(g.check_commit("", -1), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn a_member_that_leaves_or_times_out_frees_its_partitions() {
        let mut g = ConsumerGroup::default();
        let a = g.heartbeat(beat("a", 0, None), 0, &topics(), &SETTINGS).unwrap();
        g.heartbeat(beat("b", 0, None), 10, &topics(), &SETTINGS).unwrap();
        let a2 = g
            .heartbeat(beat("a", a.member_epoch, Some(&[0, 1, 2, 3])), 10, &topics(), &SETTINGS)
            .unwrap();
        let kept = parts(&a2.assignment);
        g.heartbeat(beat("a", a.member_epoch, Some(&kept)), 20, &topics(), &SETTINGS)
            .unwrap();
        // b's session runs out: a gets everything back.
        assert_eq!(g.expire(45_015, &topics()), vec!["b".to_string()]);
        let epoch = g.members["a"].member_epoch;
        let again = g
            .heartbeat(beat("a", epoch, Some(&kept)), 45_006, &topics(), &SETTINGS)
            .unwrap();
        assert_eq!(parts(&again.assignment), vec![0, 1, 2, 3]);
        let left = g.heartbeat(beat("a", -1, None), 45_007, &topics(), &SETTINGS).unwrap();
        assert_eq!(left.member_epoch, -1);
        assert_eq!(g.state(), "Empty");
        assert_eq!(g.check_commit("", -1), Ok(()));
    }

    #[test]
    fn range_splits_each_topic_and_a_regex_subscribes_to_matching_topics() {
        let mut g = ConsumerGroup::default();
        let mut b = beat("a", 0, None);
        b.subscribed_names = None;
        b.subscribed_regex = Some("o.*".into());
        b.server_assignor = Some("range".into());
        let a = g.heartbeat(b, 0, &topics(), &SETTINGS).unwrap();
        assert_eq!(
            a.assignment,
            Some(Assignment::new()),
            "a new regex is matched after its heartbeat"
        );
        let a = g
            .heartbeat(beat("a", a.member_epoch, Some(&[])), 1, &topics(), &SETTINGS)
            .unwrap();
        let assigned = a.assignment.unwrap();
        assert_eq!(
            assigned.keys().collect::<Vec<_>>(),
            vec!["other"],
            "t does not match o.*"
        );
        let mut bad = beat("c", 0, None);
        bad.subscribed_regex = Some("(".into());
        assert_eq!(
            g.heartbeat(bad, 0, &topics(), &SETTINGS),
            Err(ResponseError::InvalidRegularExpression)
        );
        let mut unknown = beat("d", 0, None);
        unknown.server_assignor = Some("sticky".into());
        assert_eq!(
            g.heartbeat(unknown, 0, &topics(), &SETTINGS),
            Err(ResponseError::UnsupportedAssignor)
        );
    }

    #[test]
    fn a_static_member_returns_to_its_partitions_without_a_rebalance() {
        let mut g = ConsumerGroup::default();
        let mut first = beat("a1", 0, None);
        first.instance_id = Some("i".into());
        let a = g.heartbeat(first, 0, &topics(), &SETTINGS).unwrap();
        let epoch = g.group_epoch;
        let mut pause = beat("a1", -2, None);
        pause.instance_id = Some("i".into());
        g.heartbeat(pause, 1, &topics(), &SETTINGS).unwrap();
        let mut other = beat("z", 0, None);
        other.instance_id = Some("i".into());
        other.member_id = "a2".into();
        let back = g.heartbeat(other, 2, &topics(), &SETTINGS).unwrap();
        assert_eq!(g.group_epoch, epoch, "no rebalance");
        assert_eq!(back.member_epoch, a.member_epoch);
        assert_eq!(parts(&back.assignment), vec![0, 1, 2, 3]);
        let mut clash = beat("a3", 0, None);
        clash.instance_id = Some("i".into());
        assert_eq!(
            g.heartbeat(clash, 3, &topics(), &SETTINGS),
            Err(ResponseError::UnreleasedInstanceId)
        );
    }

    #[test]
    fn uniform_spreads_partitions_and_keeps_owners() {
        let mut members = BTreeMap::new();
        for id in ["a", "b", "c"] {
            let mut m = ConsumerGroup::default();
            m.heartbeat(beat(id, 0, None), 0, &topics(), &SETTINGS).unwrap();
            members.insert(id.to_string(), m.members.remove(id).unwrap());
        }
        let first = assign("uniform", &members, &BTreeMap::new(), &topics());
        let sizes: Vec<usize> = first.values().map(|a| a.get("t").map_or(0, |s| s.len())).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 4);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        // A newcomer to two members holding two partitions each gets one of them.
        let two: BTreeMap<String, ConsumerMember> = members
            .iter()
            .filter(|(id, _)| *id != "c")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let held = assign("uniform", &two, &BTreeMap::new(), &topics());
        let three = assign("uniform", &members, &held, &topics());
        assert_eq!(three["c"].get("t").map_or(0, |s| s.len()), 1, "{three:?}");
        members.remove("c");
        let second = assign("uniform", &members, &first, &topics());
        for id in ["a", "b"] {
            assert!(contains(&second[id], &first[id]), "{id} kept what it had");
        }
    }
}
