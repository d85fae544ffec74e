//! The group state machine, driven directly with a synthetic clock: joins, syncs,
//! heartbeats, leaves, session expiry, rebalance timeouts, static members, commits
//! and offset expiry, each answered with Kafka's error codes.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::api::{Answer, JoinRequest, JoinResult, OffsetCommit, Reply, SyncRequest, SyncResult};
use super::machine::Groups;
use super::records::Committed;
use super::{GroupConfig, GroupState, Ticket};

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const INITIAL_DELAY_MS: u64 = 3_000;
const RETENTION_MS: i64 = 60_000;
const G: &str = "orders-consumers";

/// The state machine with a clock the test moves, and the answers it hands out.
struct Harness {
    groups: Groups,
    start: Instant,
    now_ms: u64,
    next_ticket: Ticket,
    answers: HashMap<Ticket, Answer>,
    stored: Vec<(String, GroupState)>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            groups: Groups::new(GroupConfig {
                initial_rebalance_delay: Duration::from_millis(INITIAL_DELAY_MS),
                session_timeout_ms_min: 6_000,
                session_timeout_ms_max: 1_800_000,
                size_max: 3,
                offsets_retention_ms: RETENTION_MS,
                consumer: crate::group::consumer::ConsumerSettings {
                    session_timeout_ms: 45_000,
                    size_max: usize::MAX,
                },
                consumer_heartbeat_interval_ms: 5000,
            }),
            start: Instant::now(),
            now_ms: 0,
            next_ticket: 0,
            answers: HashMap::new(),
            stored: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.now_ms)
    }

    fn wall(&self) -> i64 {
        1_700_000_000_000 + self.now_ms as i64
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }

    fn collect(&mut self) {
        let outbox = self.groups.take_outbox();
        self.answers.extend(outbox.answers);
        for (group, stored) in outbox.stores {
            let state = if stored.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
            self.stored.push((group, state));
        }
    }

    fn join(&mut self, request: JoinRequest) -> (Ticket, Reply<JoinResult>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let (now, wall) = (self.now(), self.wall());
        let reply = self.groups.join(G, request, ticket, now, wall);
        self.collect();
        (ticket, reply)
    }

    fn sync(&mut self, request: SyncRequest) -> (Ticket, Reply<SyncResult>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let wall = self.wall();
        let reply = self.groups.sync(G, request, ticket, wall);
        self.collect();
        (ticket, reply)
    }

    fn heartbeat(&mut self, member: &str, generation: i32) -> Option<ResponseError> {
        let now = self.now();
        self.groups
            .heartbeat(G, member, None, generation, now, self.now_ms as i64)
    }

    fn tick(&mut self) -> Vec<(String, Vec<(String, i32)>)> {
        let (now, wall) = (self.now(), self.wall());
        let expired = self.groups.tick(now, wall);
        self.collect();
        expired
    }

    fn joined(&mut self, ticket: Ticket) -> Option<JoinResult> {
        match self.answers.remove(&ticket) {
            Some(Answer::Join(r)) => Some(r),
            Some(other) => panic!("a join answered with {other:?}"),
            None => None,
        }
    }

    fn synced(&mut self, ticket: Ticket) -> Option<SyncResult> {
        match self.answers.remove(&ticket) {
            Some(Answer::Sync(r)) => Some(r),
            Some(other) => panic!("a sync answered with {other:?}"),
            None => None,
        }
    }

    fn state(&self) -> &'static str {
        self.groups.describe(G).state
    }

    /// Members `names` join a new group together (v3: no member id round trip) and
    /// the initial delay passes; returns their member ids and the generation.
    fn form(&mut self, names: &[&str]) -> (Vec<String>, i32) {
        let tickets: Vec<Ticket> = names.iter().map(|n| self.join(join(n, "", None, 3)).0).collect();
        self.advance(INITIAL_DELAY_MS);
        self.tick();
        let results: Vec<JoinResult> = tickets
            .iter()
            .map(|t| self.joined(*t).expect("join answered"))
            .collect();
        let generation = results[0].generation;
        (results.into_iter().map(|r| r.member_id).collect(), generation)
    }

    /// The leader syncs `assignments`; every member waiting gets its own.
    fn settle(&mut self, members: &[String], generation: i32) {
        let followers: Vec<Ticket> = members[1..]
            .iter()
            .map(|m| self.sync(sync(m, generation, vec![])).0)
            .collect();
        let assignments = members
            .iter()
            .map(|m| (m.clone(), Bytes::from(format!("for {m}"))))
            .collect();
        let (_, reply) = self.sync(sync(&members[0], generation, assignments));
        assert!(
            matches!(reply, Reply::Parked),
            "the leader's own answer comes with the others'"
        );
        for t in followers {
            self.synced(t).expect("follower answered");
        }
        assert_eq!(self.state(), "Stable");
    }
}

fn join(client: &str, member_id: &str, instance: Option<&str>, version: i16) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        instance_id: instance.map(str::to_string),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_string(),
        protocols: vec![
            ("range".to_string(), Bytes::from(format!("{client} range"))),
            ("roundrobin".to_string(), Bytes::from(format!("{client} rr"))),
        ],
        client_id: client.to_string(),
        client_host: "/127.0.0.1".to_string(),
        version,
    }
}

fn sync(member: &str, generation: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
    SyncRequest {
        member_id: member.to_string(),
        instance_id: None,
        generation,
        protocol_type: Some("consumer".to_string()),
        protocol_name: Some("range".to_string()),
        assignments,
    }
}

fn now<T: std::fmt::Debug>(reply: Reply<T>) -> T {
    match reply {
        Reply::Now(r) => r,
        Reply::Parked => panic!("expected an answer now"),
    }
}

#[test]
fn a_new_member_gets_an_id_first_then_waits_out_the_initial_delay() {
    let mut h = Harness::new();
    // KIP-394 (v4+): the first join only hands out a member id.
    let first = now(h.join(join("app", "", None, 5)).1);
    assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
    assert!(first.member_id.starts_with("app-"));
    let (ticket, reply) = h.join(join("app", &first.member_id, None, 5));
    assert_eq!(reply, Reply::Parked);
    assert_eq!(h.state(), "PreparingRebalance");
    h.advance(INITIAL_DELAY_MS - 1);
    h.tick();
    assert!(
        h.joined(ticket).is_none(),
        "a new group waits group.initial.rebalance.delay.ms"
    );
    h.advance(1);
    h.tick();
    let joined = h.joined(ticket).expect("answered once the delay is over");
    assert_eq!(joined.error, None);
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, first.member_id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.members.len(), 1, "the leader sees every member's metadata");
    assert_eq!(joined.members[0].metadata, Bytes::from("app range"));
    assert_eq!(h.state(), "CompletingRebalance");
}

#[test]
fn members_joining_together_share_a_generation_and_sync_hands_each_its_assignment() {
    let mut h = Harness::new();
    let a = h.join(join("a", "", None, 3)).0;
    h.advance(1_000);
    let b = h.join(join("b", "", None, 3)).0;
    // B's arrival during the delay extends it: nothing at 3 s after A.
    h.advance(2_000);
    h.tick();
    assert!(h.joined(a).is_none());
    h.advance(1_000);
    h.tick();
    let (a, b) = (h.joined(a).expect("a answered"), h.joined(b).expect("b answered"));
    assert_eq!((a.generation, b.generation), (1, 1));
    assert_eq!(a.leader, a.member_id, "the first to join leads");
    assert_eq!(b.leader, a.member_id);
    assert_eq!(a.members.len(), 2);
    assert!(b.members.is_empty(), "only the leader gets the member list");
    let (follower, reply) = h.sync(sync(&b.member_id, 1, vec![]));
    assert_eq!(reply, Reply::Parked, "a follower waits for the leader's assignment");
    let assignments = vec![
        (a.member_id.clone(), Bytes::from("p0,p1")),
        (b.member_id.clone(), Bytes::from("p2")),
    ];
    let (leader, reply) = h.sync(sync(&a.member_id, 1, assignments));
    assert_eq!(reply, Reply::Parked);
    assert_eq!(
        h.synced(leader).expect("leader answered").assignment,
        Bytes::from("p0,p1")
    );
    assert_eq!(
        h.synced(follower).expect("follower answered").assignment,
        Bytes::from("p2")
    );
    assert_eq!(h.state(), "Stable");
    assert_eq!(
        h.stored,
        vec![(G.to_string(), GroupState::Stable)],
        "a settled group is stored"
    );
    // A later sync in the same generation returns the member's assignment at once.
    assert_eq!(
        now(h.sync(sync(&b.member_id, 1, vec![])).1).assignment,
        Bytes::from("p2")
    );
}

#[test]
fn a_silent_member_expires_and_the_rest_rebalance_without_it() {
    let mut h = Harness::new();
    let (members, generation) = h.form(&["a", "b"]);
    h.settle(&members, generation);
    // The join completed at 3 s, so B's session runs out at 13 s; A heartbeats at 8 s
    // and 13 s.
    for _ in 0..2 {
        h.advance(SESSION_MS as u64 / 2);
        assert_eq!(h.heartbeat(&members[0], generation), None);
        assert_eq!(h.state(), "Stable");
        h.tick();
    }
    // B never heartbeat: its session ran out and the group rebalances.
    assert_eq!(h.state(), "PreparingRebalance");
    assert_eq!(
        h.heartbeat(&members[1], generation),
        Some(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        h.heartbeat(&members[0], generation),
        Some(ResponseError::RebalanceInProgress),
        "a heartbeat tells the survivor to rejoin"
    );
    let (ticket, reply) = h.join(join("a", &members[0], None, 3));
    assert_eq!(reply, Reply::Parked);
    let rejoined = h
        .joined(ticket)
        .expect("the only member rejoined: the join phase ends at once");
    assert_eq!(rejoined.generation, generation + 1);
    assert_eq!(rejoined.members.len(), 1);
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let mut h = Harness::new();
    let (members, generation) = h.form(&["a", "b"]);
    h.settle(&members, generation);
    // A rejoins (say its subscription changed); B keeps heartbeating but never rejoins.
    let mut changed = join("a", &members[0], None, 3);
    changed.protocols.reverse();
    let (ticket, _) = h.join(changed);
    assert_eq!(h.state(), "PreparingRebalance");
    let mut waited = 0;
    while waited + 1_000 < REBALANCE_MS as u64 {
        h.advance(1_000);
        waited += 1_000;
        assert_eq!(
            h.heartbeat(&members[1], generation),
            Some(ResponseError::RebalanceInProgress)
        );
        h.tick();
        assert!(h.joined(ticket).is_none(), "still waiting for b at {waited} ms");
    }
    h.advance(1_000);
    h.tick();
    let joined = h.joined(ticket).expect("the rebalance timeout ends the join phase");
    assert_eq!(joined.generation, generation + 1);
    assert_eq!(joined.members.len(), 1, "b was dropped");
    assert_eq!(
        h.heartbeat(&members[1], joined.generation),
        Some(ResponseError::UnknownMemberId)
    );
}

#[test]
fn leave_removes_a_member_and_the_rest_rebalance() {
    let mut h = Harness::new();
    let (members, generation) = h.form(&["a", "b"]);
    h.settle(&members, generation);
    let (now_i, wall) = (h.now(), h.wall());
    let left = h
        .groups
        .leave(
            G,
            &[(members[1].clone(), None), ("nobody".to_string(), None)],
            now_i,
            wall,
        )
        .expect("the group exists");
    assert_eq!(left, vec![None, Some(ResponseError::UnknownMemberId)]);
    assert_eq!(h.state(), "PreparingRebalance");
    assert_eq!(
        h.groups
            .leave("no-such-group", &[(members[0].clone(), None)], now_i, wall),
        Err(ResponseError::UnknownMemberId)
    );
    // The last member leaving empties the group, which is stored as such.
    h.groups
        .leave(G, &[(members[0].clone(), None)], now_i, wall)
        .expect("leave");
    h.collect();
    let (ticket, _) = h.join(join("c", "", None, 3));
    assert_eq!(h.state(), "PreparingRebalance");
    h.advance(INITIAL_DELAY_MS);
    h.tick();
    assert_eq!(h.joined(ticket).expect("c leads a new generation").members.len(), 1);
}

#[test]
fn a_restarted_static_member_keeps_its_assignment_without_a_rebalance() {
    let mut h = Harness::new();
    let (ticket, _) = h.join(join("s", "", Some("instance-1"), 9));
    h.advance(INITIAL_DELAY_MS);
    h.tick();
    let first = h.joined(ticket).expect("joined");
    h.settle(std::slice::from_ref(&first.member_id), first.generation);
    // Restarted: same instance id, no member id.
    let again = now(h.join(join("s", "", Some("instance-1"), 9)).1);
    assert_eq!(again.error, None);
    assert_ne!(again.member_id, first.member_id, "a new member id replaces the old one");
    assert_eq!(again.generation, first.generation, "no rebalance");
    assert!(
        again.skip_assignment,
        "a restarted static leader must not reassign (KIP-814)"
    );
    assert_eq!(h.state(), "Stable");
    let mine = now(h.sync(sync(&again.member_id, again.generation, vec![])).1);
    assert_eq!(mine.assignment, Bytes::from(format!("for {}", first.member_id)));
    // The old incarnation is fenced.
    let (now_i, wall) = (h.now(), h.wall());
    assert_eq!(
        h.groups.leave(
            G,
            &[(first.member_id.clone(), Some("instance-1".to_string()))],
            now_i,
            wall
        ),
        Ok(vec![Some(ResponseError::FencedInstanceId)])
    );
    assert_eq!(
        now(h.join(join("s", &first.member_id, Some("instance-1"), 9)).1).error,
        Some(ResponseError::FencedInstanceId)
    );
}

#[test]
fn bad_joins_get_kafkas_errors() {
    let mut h = Harness::new();
    let mut bad = join("x", "", None, 3);
    bad.session_timeout_ms = 1_000;
    assert_eq!(now(h.join(bad).1).error, Some(ResponseError::InvalidSessionTimeout));
    let mut bad = join("x", "", None, 3);
    bad.protocols.clear();
    assert_eq!(now(h.join(bad).1).error, Some(ResponseError::InconsistentGroupProtocol));
    let ticket = h.next_ticket;
    let (now_i, wall) = (h.now(), h.wall());
    let reply = h.groups.join("", join("x", "", None, 3), ticket, now_i, wall);
    assert_eq!(now(reply).error, Some(ResponseError::InvalidGroupId));
    assert_eq!(
        now(h.join(join("x", "made-up-id", None, 3)).1).error,
        Some(ResponseError::UnknownMemberId),
        "a member id the group never handed out"
    );
    let (members, generation) = h.form(&["a", "b", "c"]);
    let mut other_type = join("d", "", None, 3);
    other_type.protocol_type = "connect".to_string();
    assert_eq!(
        now(h.join(other_type).1).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
    assert_eq!(
        now(h.join(join("d", "", None, 3)).1).error,
        Some(ResponseError::GroupMaxSizeReached),
        "group.max.size is 3 here"
    );
    // Sync and heartbeat errors.
    assert_eq!(
        now(h.sync(sync(&members[1], generation + 7, vec![])).1).error,
        Some(ResponseError::IllegalGeneration)
    );
    assert_eq!(
        h.heartbeat("stranger", generation),
        Some(ResponseError::UnknownMemberId)
    );
    let mut wrong = sync(&members[1], generation, vec![]);
    wrong.protocol_name = Some("roundrobin".to_string());
    assert_eq!(
        now(h.sync(wrong).1).error,
        Some(ResponseError::InconsistentGroupProtocol)
    );
}

#[test]
fn a_join_that_is_superseded_by_a_newer_one_is_answered_with_an_error() {
    let mut h = Harness::new();
    let (members, generation) = h.form(&["a", "b"]);
    h.settle(&members, generation);
    // B rejoins (its subscription changed) twice while A has not: the first request
    // is answered with an error.
    let mut changed = join("b", &members[1], None, 3);
    changed.protocols.reverse();
    let (first, _) = h.join(changed.clone());
    let (second, _) = h.join(changed);
    let superseded = h.joined(first).expect("the older join is answered");
    assert_eq!(superseded.error, Some(ResponseError::UnknownMemberId));
    h.join(join("a", &members[0], None, 3));
    assert_eq!(
        h.joined(second).expect("the newer one completes").generation,
        generation + 1
    );
}

#[test]
fn commits_are_checked_against_membership_and_an_empty_group_expires() {
    let mut h = Harness::new();
    let simple = |generation| OffsetCommit {
        generation,
        member_id: String::new(),
        instance_id: None,
        topics: vec![],
    };
    let now_i = h.now();
    // A "simple" commit (no membership) creates the group; a member's needs one.
    assert_eq!(h.groups.check_commit("tools", &simple(-1), now_i), Ok(()));
    assert_eq!(
        h.groups.check_commit("tools", &simple(3), now_i),
        Err(ResponseError::IllegalGeneration)
    );
    let committed = Committed {
        offset: 42,
        leader_epoch: 0,
        metadata: String::new(),
        commit_timestamp_ms: h.wall(),
    };
    let wall = h.wall();
    h.groups
        .record_offsets("tools", vec![(("orders".to_string(), 0), committed)], wall);
    let fetched = h.groups.committed("tools", None);
    assert_eq!(fetched[0].partitions[0].offset, 42);
    // A member's commit during CompletingRebalance is refused.
    let (ticket, _) = h.join(join("a", "", None, 3));
    h.advance(INITIAL_DELAY_MS);
    h.tick();
    let a = h.joined(ticket).expect("joined");
    let member_commit = OffsetCommit {
        generation: a.generation,
        member_id: a.member_id.clone(),
        instance_id: None,
        topics: vec![],
    };
    let now_i = h.now();
    assert_eq!(
        h.groups.check_commit(G, &member_commit, now_i),
        Err(ResponseError::RebalanceInProgress)
    );
    // "tools" has been empty since it was created: its offsets expire after retention.
    h.advance(RETENTION_MS as u64 - INITIAL_DELAY_MS - 1);
    assert!(h.tick().iter().all(|(g, _)| g != "tools"));
    h.advance(1);
    let expired = h.tick();
    assert_eq!(expired, vec![("tools".to_string(), vec![("orders".to_string(), 0)])]);
}
