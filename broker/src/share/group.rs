//! Share-group membership (KIP-932's ShareGroupHeartbeat): members join with the topics
//! they subscribe to, the coordinator assigns partitions to them (several members may
//! share one partition, which is what makes a share group a queue), and a member that
//! stops heartbeating leaves after `group.share.session.timeout.ms`. Pure: the
//! coordinator shard hosts it and gives it the time and the topics' partition counts.
//!
//! There is no revocation step: every partition may be fetched by any number of
//! members at once, so a member takes its new assignment as soon as the group epoch
//! moves, and its member epoch is the group epoch.

use std::collections::BTreeMap;

/// A member's assignment: partitions per topic name.
pub type Assignment = BTreeMap<String, Vec<i32>>;

#[derive(Debug, Clone)]
pub struct ShareMember {
    pub member_id: String,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub rack_id: Option<String>,
    pub subscribed: Vec<String>,
    pub assignment: Assignment,
    /// The assignment last sent to the member (sent again only when it changes).
    sent: Option<Assignment>,
    deadline_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ShareGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub members: BTreeMap<String, ShareMember>,
}

/// A heartbeat as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct Beat {
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub subscribed: Option<Vec<String>>,
    pub client_id: String,
    pub client_host: String,
}

/// What a heartbeat answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's assignment when it is new to the member.
    pub assignment: Option<Assignment>,
}

/// Why a heartbeat is refused (Kafka's errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatError {
    UnknownMemberId,
    GroupMaxSizeReached,
    FencedMemberEpoch,
    InvalidRequest,
}

impl ShareGroup {
    pub fn new(group_id: &str) -> ShareGroup {
        ShareGroup {
            group_id: group_id.to_string(),
            ..Default::default()
        }
    }

    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else {
            "Stable"
        }
    }

    /// [`ShareGroup::heartbeat_within`] with no size limit.
    #[cfg(test)]
    pub fn heartbeat(
        &mut self,
        beat: Beat,
        now_ms: i64,
        session_timeout_ms: i64,
        partitions: &dyn Fn(&str) -> Option<i32>,
    ) -> Result<BeatAnswer, BeatError> {
        self.heartbeat_within(beat, now_ms, session_timeout_ms, usize::MAX, partitions)
    }

    /// One heartbeat at `now_ms`; `partitions` gives a topic's partition count (None:
    /// no such topic). A new member sends epoch 0 (and its own member id, or none for
    /// the coordinator to make one); -1 leaves. A new member beyond `size_max`
    /// (`group.share.max.size`) is refused (GROUP_MAX_SIZE_REACHED).
    pub fn heartbeat_within(
        &mut self,
        beat: Beat,
        now_ms: i64,
        session_timeout_ms: i64,
        size_max: usize,
        partitions: &dyn Fn(&str) -> Option<i32>,
    ) -> Result<BeatAnswer, BeatError> {
        let member_id = if beat.member_epoch == 0 && beat.member_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            beat.member_id.clone()
        };
        let mut membership = beat.member_epoch == 0;
        match beat.member_epoch {
            -1 => {
                if self.members.remove(&member_id).is_none() {
                    return Err(BeatError::UnknownMemberId);
                }
                self.reassign(true, partitions);
                return Ok(BeatAnswer {
                    member_id,
                    member_epoch: -1,
                    assignment: None,
                });
            }
            0 => {
                let Some(subscribed) = beat.subscribed else {
                    return Err(BeatError::InvalidRequest);
                };
                if !self.members.contains_key(&member_id) && self.members.len() >= size_max {
                    return Err(BeatError::GroupMaxSizeReached);
                }
                self.members.insert(
                    member_id.clone(),
                    ShareMember {
                        member_id: member_id.clone(),
                        member_epoch: 0,
                        client_id: beat.client_id,
                        client_host: beat.client_host,
                        rack_id: beat.rack_id,
                        subscribed,
                        assignment: Assignment::new(),
                        sent: None,
                        deadline_ms: 0,
                    },
                );
            }
            epoch if epoch > 0 => {
                let Some(member) = self.members.get_mut(&member_id) else {
                    return Err(BeatError::UnknownMemberId);
                };
                if epoch != member.member_epoch {
                    return Err(BeatError::FencedMemberEpoch);
                }
                if let Some(subscribed) = beat.subscribed {
                    membership = member.subscribed != subscribed;
                    member.subscribed = subscribed;
                    // A full request (after a reconnect) gets the assignment again.
                    member.sent = None;
                }
            }
            _ => return Err(BeatError::InvalidRequest),
        }
        self.reassign(membership, partitions);
        let epoch = self.group_epoch;
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err(BeatError::UnknownMemberId);
        };
        member.deadline_ms = now_ms.saturating_add(session_timeout_ms);
        member.member_epoch = epoch;
        let assignment = (member.sent.as_ref() != Some(&member.assignment)).then(|| member.assignment.clone());
        if assignment.is_some() {
            member.sent = Some(member.assignment.clone());
        }
        Ok(BeatAnswer {
            member_id,
            member_epoch: epoch,
            assignment,
        })
    }

    /// Removes the members whose session ran out; their ids.
    pub fn expire(&mut self, now_ms: i64, partitions: &dyn Fn(&str) -> Option<i32>) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.deadline_ms <= now_ms)
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
        }
        if !gone.is_empty() {
            self.reassign(true, partitions);
        }
        gone
    }

    /// Recomputes every member's assignment; the group epoch moves when membership or
    /// a subscription changed (`membership`) or any assignment did (members get theirs
    /// with their next heartbeat).
    fn reassign(&mut self, membership: bool, partitions: &dyn Fn(&str) -> Option<i32>) {
        let target = assign(&self.members, partitions);
        let mut changed = membership;
        for (id, member) in self.members.iter_mut() {
            let next = target.get(id).cloned().unwrap_or_default();
            if member.assignment != next {
                changed = true;
                member.assignment = next;
            }
        }
        if changed {
            self.group_epoch += 1;
        }
    }
}

/// Kafka's simple share assignor, in spirit: per topic, with `m` subscribers (sorted by
/// member id) and `n` partitions, every partition has at least one member; when
/// `m >= n` member `i` gets partition `i % n` (partitions are shared), otherwise
/// partition `j` goes to member `j % m`.
pub fn assign(
    members: &BTreeMap<String, ShareMember>,
    partitions: &dyn Fn(&str) -> Option<i32>,
) -> BTreeMap<String, Assignment> {
    let mut by_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in members.values() {
        for t in &m.subscribed {
            by_topic.entry(t.as_str()).or_default().push(m.member_id.as_str());
        }
    }
    let mut out: BTreeMap<String, Assignment> = BTreeMap::new();
    for (topic, mut subscribers) in by_topic {
        subscribers.sort_unstable();
        subscribers.dedup();
        let Some(n) = partitions(topic).filter(|n| *n > 0) else {
            continue;
        };
        let m = subscribers.len() as i32;
        let mut give = |member: &str, p: i32| {
            out.entry(member.to_string())
                .or_default()
                .entry(topic.to_string())
                .or_default()
                .push(p)
        };
        if m >= n {
            for (i, member) in subscribers.iter().enumerate() {
                give(member, i as i32 % n);
            }
        } else {
            for p in 0..n {
                give(subscribers[(p % m) as usize], p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(id: &str, epoch: i32, topics: Option<&[&str]>) -> Beat {
        Beat {
            member_id: id.to_string(),
            member_epoch: epoch,
            rack_id: None,
            subscribed: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    fn two(topic: &str) -> Option<i32> {
        (topic == "t").then_some(2)
    }

    #[test]
    fn three_members_share_two_partitions_and_every_partition_has_one() {
        let mut g = ShareGroup::new("g");
        for id in ["a", "b", "c"] {
            g.heartbeat(beat(id, 0, Some(&["t"])), 0, 45_000, &two).unwrap();
        }
        let assigned: Vec<Vec<i32>> = g.members.values().map(|m| m.assignment["t"].clone()).collect();
        assert_eq!(assigned, vec![vec![0], vec![1], vec![0]]);
        // The first member learns of its smaller share with its next heartbeat, and
        // is not sent it again after that.
        let epoch = g.members["a"].member_epoch;
        let answer = g.heartbeat(beat("a", epoch, None), 1, 45_000, &two).unwrap();
        assert_eq!(answer.member_epoch, g.group_epoch);
        assert_eq!(answer.assignment.unwrap()["t"], vec![0]);
        let again = g
            .heartbeat(beat("a", answer.member_epoch, None), 2, 45_000, &two)
            .unwrap();
        assert_eq!(again.assignment, None, "a's assignment did not change");
    }

    #[test]
    fn one_member_gets_every_partition_and_loses_half_when_another_joins() {
        let mut g = ShareGroup::new("g");
        let first = g.heartbeat(beat("a", 0, Some(&["t"])), 0, 45_000, &two).unwrap();
        assert_eq!(first.assignment.unwrap()["t"], vec![0, 1]);
        g.heartbeat(beat("b", 0, Some(&["t"])), 0, 45_000, &two).unwrap();
        let again = g
            .heartbeat(beat("a", first.member_epoch, None), 0, 45_000, &two)
            .unwrap();
        assert_eq!(again.assignment.unwrap()["t"], vec![0]);
        assert_eq!(again.member_epoch, g.group_epoch);
        // An epoch the member never had is fenced.
        assert_eq!(
            g.heartbeat(beat("a", first.member_epoch, None), 0, 45_000, &two),
            Err(BeatError::FencedMemberEpoch)
        );
    }

    #[test]
    fn a_silent_member_expires_and_a_leaving_one_goes_at_once() {
        let mut g = ShareGroup::new("g");
        g.heartbeat(beat("a", 0, Some(&["t"])), 0, 1000, &two).unwrap();
        g.heartbeat(beat("b", 0, Some(&["t"])), 500, 1000, &two).unwrap();
        assert_eq!(g.expire(1000, &two), vec!["a".to_string()]);
        assert_eq!(g.members["b"].assignment["t"], vec![0, 1]);
        let epoch = g.members["b"].member_epoch;
        assert_eq!(
            g.heartbeat(beat("b", -1, None), 600, 1000, &two).unwrap().member_epoch,
            -1
        );
        assert!(g.members.is_empty());
        assert_eq!(
            g.heartbeat(beat("b", epoch, None), 700, 1000, &two),
            Err(BeatError::UnknownMemberId)
        );
    }

    #[test]
    fn a_full_group_refuses_new_members() {
        let mut g = ShareGroup::new("g");
        g.heartbeat_within(beat("a", 0, Some(&["t"])), 0, 1000, 1, &two)
            .unwrap();
        assert_eq!(
            g.heartbeat_within(beat("b", 0, Some(&["t"])), 0, 1000, 1, &two),
            Err(BeatError::GroupMaxSizeReached)
        );
        assert!(
            g.heartbeat_within(beat("a", 0, Some(&["t"])), 0, 1000, 1, &two).is_ok(),
            "a rejoin is no new member"
        );
    }

    #[test]
    fn a_join_without_topics_is_invalid_and_unknown_topics_assign_nothing() {
        let mut g = ShareGroup::new("g");
        assert_eq!(
            g.heartbeat(beat("a", 0, None), 0, 1000, &two),
            Err(BeatError::InvalidRequest)
        );
        let answer = g.heartbeat(beat("a", 0, Some(&["nope"])), 0, 1000, &two).unwrap();
        assert_eq!(answer.assignment, Some(Assignment::new()));
    }
}
