//! The group coordinator a shard hosts (Kafka's GroupCoordinator): the state machine of
//! the groups whose `__consumer_offsets` partition the shard owns, the requests parked
//! while a rebalance moves on, and the persistence of offsets and group metadata to
//! that partition, replayed at start-up. It reaches its partitions only through the
//! [`Host`] seam, so it knows neither the shard nor the wire.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_storage::batch::{self, BATCH_HEADER_LEN};
use sluice_storage::Durability;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::api::{
    Answer, FetchedOffsets, GroupDescription, JoinRequest, JoinResult, ListedGroup, OffsetCommit, Reply, SyncRequest,
    SyncResult,
};
use super::machine::Groups;
use super::records::{self, Committed};
use super::{GroupConfig, Ticket, OFFSETS_TOPIC};
use crate::coordinator::{kafka_partition_for, replay, Coordinator, Host};
use crate::metrics::GroupStats;
use crate::now_ms;
use crate::partition::TopicPartition;

/// Kafka's `offsets.commit.timeout.ms`: how long a commit waits to be durable.
const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the answer to a parked request goes.
enum Parked {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<SyncResult>),
}

/// Offsets a transaction committed (TxnOffsetCommit) and its marker has not decided
/// yet, by (`__consumer_offsets` partition, producer id): (group, (topic, partition),
/// offset) in commit order.
type PendingTxnOffsets = HashMap<(i32, i64), Vec<(String, (String, i32), Committed)>>;

/// An offset commit after its checks: per topic and partition the error (None when
/// accepted), the records to write, and each accepted offset with its position.
struct CheckedCommit {
    errors: Vec<Vec<Option<ResponseError>>>,
    records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    #[allow(clippy::type_complexity)]
    accepted: Vec<((usize, usize), ((String, i32), Committed))>,
}

pub(crate) struct GroupCoordinator {
    groups: RefCell<Groups>,
    pending_txn: RefCell<PendingTxnOffsets>,
    parked: RefCell<HashMap<Ticket, Parked>>,
    next_ticket: std::cell::Cell<Ticket>,
    /// Partitions of `__consumer_offsets`, which place every group.
    offsets_partitions: i32,
}

impl Coordinator for GroupCoordinator {
    const TOPIC: &'static str = OFFSETS_TOPIC;

    fn partition_for(group: &str, partitions: i32) -> i32 {
        kafka_partition_for(group, partitions)
    }

    /// Rebuilds the groups of `partitions` by replaying each from its start (later
    /// records win; tombstones delete).
    async fn load(&self, host: &impl Host, partitions: &[TopicPartition]) -> Result<(), String> {
        let now = Instant::now();
        let now_wall = now_ms();
        for tp in partitions {
            replay(host, tp, |h, batch| {
                if h.is_control() {
                    // A transaction's marker decides its offset commits.
                    if let Some(control) = sluice_storage::txn::control_type(batch) {
                        self.complete_txn(tp, h.producer_id, control == sluice_storage::ControlType::Commit);
                    }
                    return;
                }
                if h.compression() != 0 {
                    return;
                }
                if h.is_transactional() {
                    let mut pending = self.pending_txn.borrow_mut();
                    let entry = pending.entry((tp.partition, h.producer_id)).or_default();
                    let _ = batch::for_each_record(&batch[BATCH_HEADER_LEN..], |r| {
                        if let Some(records::OffsetsRecord::Offset {
                            group,
                            topic,
                            partition,
                            value: Some(c),
                        }) = r.key.and_then(|k| records::decode(k, r.value))
                        {
                            entry.push((group, (topic, partition), c));
                        }
                        Ok(())
                    });
                    return;
                }
                let mut groups = self.groups.borrow_mut();
                let _ = batch::for_each_record(&batch[BATCH_HEADER_LEN..], |r| {
                    if let Some(record) = r.key.and_then(|k| records::decode(k, r.value)) {
                        groups.apply_loaded(record, now, now_wall);
                    }
                    Ok(())
                });
            })
            .await?;
        }
        Ok(())
    }

    /// Expired sessions and pending ids, join deadlines, and the offsets of groups empty
    /// for longer than `offsets.retention.minutes`.
    fn tick(&self, host: &impl Host) {
        let now_wall = now_ms();
        let expired = self.groups.borrow_mut().tick(Instant::now(), now_wall);
        if self.groups.borrow().has_consumer_groups() {
            let topics = subscribable_topics(&host.metadata());
            let mut groups = self.groups.borrow_mut();
            groups.expire_consumer_members(now_wall, &topics);
            groups.set_topics(topics);
        }
        self.flush(host);
        for (group_id, keys) in expired {
            tracing::info!(group = %group_id, offsets = keys.len(), "expiring the offsets of a long-empty group");
            let mut tombstones: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys
                .iter()
                .map(|(t, p)| (records::offset_key(&group_id, t, *p), None))
                .collect();
            tombstones.push((records::group_key(&group_id), None));
            if self.append(host, &group_id, &tombstones, Durability::Appended).is_ok() {
                self.groups.borrow_mut().remove(&group_id);
            }
        }
    }
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig, offsets_partitions: i32) -> GroupCoordinator {
        GroupCoordinator {
            groups: RefCell::new(Groups::new(config)),
            pending_txn: RefCell::new(HashMap::new()),
            parked: RefCell::new(HashMap::new()),
            next_ticket: std::cell::Cell::new(0),
            offsets_partitions,
        }
    }

    /// ConsumerGroupHeartbeat (KIP-848) for a group this shard coordinates; the
    /// heartbeat interval to tell the member.
    pub fn consumer_heartbeat(
        &self,
        host: &impl Host,
        group_id: &str,
        beat: super::consumer::ConsumerBeat,
    ) -> Result<(super::consumer::ConsumerAnswer, i32), ResponseError> {
        let topics = subscribable_topics(&host.metadata());
        let mut groups = self.groups.borrow_mut();
        groups.set_topics(topics.clone());
        let settings = groups.config().consumer;
        let interval = groups.config().consumer_heartbeat_interval_ms;
        groups
            .consumer_heartbeat(group_id, beat, now_ms(), &topics, &settings)
            .map(|a| (a, interval))
    }

    /// A KIP-848 group (ConsumerGroupDescribe).
    pub fn consumer_group(&self, group_id: &str) -> Option<super::consumer::ConsumerGroup> {
        self.groups.borrow().consumer_group(group_id)
    }

    /// The `__consumer_offsets` partition of a group.
    pub fn partition_of(&self, group_id: &str) -> TopicPartition {
        TopicPartition::new(OFFSETS_TOPIC, Self::partition_for(group_id, self.offsets_partitions))
    }

    /// Forgets the groups of `tp`, whose leadership moved away: their parked requests
    /// are answered NOT_COORDINATOR so members find the new coordinator.
    pub fn unload(&self, tp: &TopicPartition) {
        self.pending_txn.borrow_mut().retain(|(p, _), _| *p != tp.partition);
        let tickets = self.groups.borrow_mut().unload(|id| self.partition_of(id) == *tp);
        let mut parked = self.parked.borrow_mut();
        for ticket in tickets {
            match parked.remove(&ticket) {
                Some(Parked::Join(tx)) => {
                    let _ = tx.send(JoinResult::failed(ResponseError::NotCoordinator, ""));
                }
                Some(Parked::Sync(tx)) => {
                    let _ = tx.send(SyncResult::failed(ResponseError::NotCoordinator));
                }
                None => {}
            }
        }
    }

    /// Parks a request: its answer comes through the returned receiver.
    fn park<T>(&self, wrap: impl FnOnce(oneshot::Sender<T>) -> Parked) -> (Ticket, oneshot::Receiver<T>) {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.parked.borrow_mut().insert(ticket, wrap(tx));
        (ticket, rx)
    }

    /// Delivers what the machine left in its outbox: answers to parked requests, and
    /// group metadata to store (acks=0: a lost write costs a rebalance, not data).
    fn flush(&self, host: &impl Host) {
        let outbox = self.groups.borrow_mut().take_outbox();
        {
            let mut parked = self.parked.borrow_mut();
            for (ticket, answer) in outbox.answers {
                match (parked.remove(&ticket), answer) {
                    (Some(Parked::Join(tx)), Answer::Join(r)) => {
                        let _ = tx.send(r);
                    }
                    (Some(Parked::Sync(tx)), Answer::Sync(r)) => {
                        let _ = tx.send(r);
                    }
                    _ => tracing::warn!(ticket, "an answer for a request that is not parked"),
                }
            }
        }
        for (group_id, stored) in outbox.stores {
            let record = (records::group_key(&group_id), Some(records::group_value(&stored)));
            if let Err(error) = self.append(host, &group_id, &[record], Durability::Appended) {
                tracing::warn!(group = %group_id, "cannot store group metadata: {error:?}");
            }
        }
    }

    pub async fn join(&self, host: &impl Host, group_id: &str, request: JoinRequest) -> JoinResult {
        let member_id = request.member_id.clone();
        let call = |groups: &mut Groups, ticket| groups.join(group_id, request, ticket, Instant::now(), now_ms());
        let answer = self.call_parkable(host, Parked::Join, call).await;
        answer.unwrap_or_else(|| JoinResult::failed(ResponseError::UnknownMemberId, &member_id))
    }

    pub async fn sync(&self, host: &impl Host, group_id: &str, request: SyncRequest) -> SyncResult {
        let call = |groups: &mut Groups, ticket| groups.sync(group_id, request, ticket, now_ms());
        let answer = self.call_parkable(host, Parked::Sync, call).await;
        answer.unwrap_or_else(|| SyncResult::failed(ResponseError::RebalanceInProgress))
    }

    /// Runs a machine call that may park its request: the answer now, or when the
    /// rebalance moves on; None if the parked request was dropped unanswered.
    async fn call_parkable<T>(
        &self,
        host: &impl Host,
        wrap: impl FnOnce(oneshot::Sender<T>) -> Parked,
        call: impl FnOnce(&mut Groups, Ticket) -> Reply<T>,
    ) -> Option<T> {
        let (ticket, answer) = self.park(wrap);
        let reply = call(&mut self.groups.borrow_mut(), ticket);
        self.flush(host);
        match reply {
            Reply::Now(result) => {
                self.parked.borrow_mut().remove(&ticket);
                Some(result)
            }
            Reply::Parked => answer.await.ok(),
        }
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ResponseError> {
        self.groups
            .borrow_mut()
            .heartbeat(group_id, member_id, instance_id, generation, Instant::now(), now_ms())
    }

    pub fn leave(
        &self,
        host: &impl Host,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let result = self
            .groups
            .borrow_mut()
            .leave(group_id, members, Instant::now(), now_ms());
        self.flush(host);
        result
    }

    /// OffsetCommit: per topic and partition, the error (None when committed). The
    /// offsets are applied in the same step as their append, so pipelined commits land
    /// in log order even when their durability waits finish in another order.
    pub async fn commit(
        &self,
        host: &impl Host,
        group_id: &str,
        commit: OffsetCommit,
    ) -> Vec<Vec<Option<ResponseError>>> {
        let now_wall = now_ms();
        let group_check = self.groups.borrow_mut().check_commit(group_id, &commit, Instant::now());
        let CheckedCommit {
            mut errors,
            records,
            accepted,
        } = self.check_offsets(host, group_id, &commit, group_check, now_wall);
        if accepted.is_empty() {
            return errors;
        }
        let (positions, offsets): (Vec<_>, Vec<_>) = accepted.into_iter().unzip();
        let apply = || self.groups.borrow_mut().record_offsets(group_id, offsets, now_wall);
        if let Err(e) = self.persist(host, group_id, &records, apply).await {
            for (t, i) in positions {
                errors[t][i] = Some(e);
            }
        }
        errors
    }

    /// The partition-level checks of an offset commit (after the group-level
    /// `group_check`), and the records of the offsets that passed.
    fn check_offsets(
        &self,
        host: &impl Host,
        group_id: &str,
        commit: &OffsetCommit,
        group_check: Result<(), ResponseError>,
        now_wall: i64,
    ) -> CheckedCommit {
        let metadata = host.metadata();
        let mut checked = CheckedCommit {
            errors: commit.topics.iter().map(|(_, parts)| vec![None; parts.len()]).collect(),
            records: Vec::new(),
            accepted: Vec::new(),
        };
        for (t, (topic, parts)) in commit.topics.iter().enumerate() {
            let known = metadata.topic(topic).map(|m| m.partitions);
            for (i, p) in parts.iter().enumerate() {
                let check = group_check.and_then(|()| {
                    if !known.is_some_and(|n| (0..n).contains(&p.partition)) {
                        return Err(ResponseError::UnknownTopicOrPartition);
                    }
                    self.groups.borrow().check_offset(p)
                });
                if let Err(e) = check {
                    checked.errors[t][i] = Some(e);
                    continue;
                }
                let committed = Committed {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: p.metadata.clone().unwrap_or_default(),
                    commit_timestamp_ms: now_wall,
                };
                checked.records.push((
                    records::offset_key(group_id, topic, p.partition),
                    Some(records::offset_value(&committed)),
                ));
                checked
                    .accepted
                    .push(((t, i), ((topic.clone(), p.partition), committed)));
            }
        }
        checked
    }

    /// TxnOffsetCommit (KIP-98, KIP-447): the offsets are written to the group's
    /// partition as part of the producer's transaction and take effect when its COMMIT
    /// marker lands there ([`GroupCoordinator::complete_txn`]); an ABORT drops them.
    /// Per topic and partition, the error (None when written).
    pub async fn txn_commit(
        &self,
        host: &impl Host,
        group_id: &str,
        producer: (i64, i16),
        commit: OffsetCommit,
    ) -> Vec<Vec<Option<ResponseError>>> {
        let now_wall = now_ms();
        // A producer that is no group member (generation -1, no member id) commits
        // without membership checks, as Kafka allows.
        let group_check = if commit.generation < 0 && commit.member_id.is_empty() {
            if group_id.is_empty() || group_id.len() > super::ID_LEN_MAX {
                Err(ResponseError::InvalidGroupId)
            } else {
                Ok(())
            }
        } else {
            self.groups.borrow_mut().check_commit(group_id, &commit, Instant::now())
        };
        let CheckedCommit {
            mut errors,
            records,
            accepted,
        } = self.check_offsets(host, group_id, &commit, group_check, now_wall);
        if accepted.is_empty() {
            return errors;
        }
        let tp = self.partition_of(group_id);
        let pairs: Vec<batch::KeyValue> = records
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let mut built = batch::build(&pairs, now_wall);
        batch::set_producer(&mut built, producer.0, producer.1, -1, true, false);
        let (positions, offsets): (Vec<_>, Vec<_>) = accepted.into_iter().unzip();
        let offsets: Vec<_> = offsets
            .into_iter()
            .map(|(key, committed)| (group_id.to_string(), key, committed))
            .collect();
        let pending_key = (tp.partition, producer.0);
        let outcome = match host.append(&tp, Bytes::from(built), Durability::Synced) {
            Ok(appended) => {
                self.pending_txn
                    .borrow_mut()
                    .entry(pending_key)
                    .or_default()
                    .extend(offsets);
                self.wait_durable(host, group_id, &tp, appended).await
            }
            Err(error) => {
                tracing::error!(group = group_id, "cannot write to {OFFSETS_TOPIC}: {error:?}");
                Err(ResponseError::CoordinatorNotAvailable)
            }
        };
        if let Err(e) = outcome {
            for (t, i) in positions {
                errors[t][i] = Some(e);
            }
        }
        errors
    }

    /// A transaction marker landed in `tp` for `producer_id`: its pending offset
    /// commits take effect (COMMIT) or are dropped (ABORT).
    pub fn complete_txn(&self, tp: &TopicPartition, producer_id: i64, commit: bool) {
        let Some(pending) = self.pending_txn.borrow_mut().remove(&(tp.partition, producer_id)) else {
            return;
        };
        if !commit {
            return;
        }
        let now_wall = now_ms();
        let mut groups = self.groups.borrow_mut();
        for (group, key, committed) in pending {
            groups.record_offsets(&group, vec![(key, committed)], now_wall);
        }
    }

    /// Whether a transaction has an undecided offset commit for this group's
    /// partition (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT).
    pub fn has_pending_txn_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        let offsets_partition = self.partition_of(group_id).partition;
        self.pending_txn.borrow().iter().any(|((p, _), offsets)| {
            *p == offsets_partition
                && offsets
                    .iter()
                    .any(|(g, (t, q), _)| g == group_id && t == topic && *q == partition)
        })
    }

    pub fn committed(&self, group_id: &str, topics: Option<Vec<(String, Vec<i32>)>>) -> Vec<FetchedOffsets> {
        self.groups.borrow().committed(group_id, topics)
    }

    pub fn describe(&self, group_id: &str) -> GroupDescription {
        self.groups.borrow().describe(group_id)
    }

    pub fn list(&self) -> Vec<ListedGroup> {
        self.groups.borrow().list()
    }

    /// DeleteGroups of one group: its offsets and metadata are tombstoned.
    pub async fn delete(&self, host: &impl Host, group_id: &str) -> Option<ResponseError> {
        let keys = match self.groups.borrow().deletable(group_id) {
            Ok(keys) => keys,
            Err(e) => return Some(e),
        };
        let mut tombstones: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys
            .iter()
            .map(|(t, p)| (records::offset_key(group_id, t, *p), None))
            .collect();
        tombstones.push((records::group_key(group_id), None));
        let remove = || self.groups.borrow_mut().remove(group_id);
        self.persist(host, group_id, &tombstones, remove).await.err()
    }

    /// OffsetDelete: per partition, the error (None when deleted).
    pub async fn delete_offsets(
        &self,
        host: &impl Host,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
    ) -> Result<Vec<Vec<Option<ResponseError>>>, ResponseError> {
        let (errors, doomed) = self.groups.borrow().offsets_deletable(group_id, &topics)?;
        if doomed.is_empty() {
            return Ok(errors);
        }
        let tombstones: Vec<_> = doomed
            .iter()
            .map(|(t, p)| (records::offset_key(group_id, t, *p), None))
            .collect();
        let forget = || self.groups.borrow_mut().forget_offsets(group_id, &doomed);
        self.persist(host, group_id, &tombstones, forget).await?;
        Ok(errors)
    }

    /// Every group's state and offsets, for a metrics scrape.
    pub fn stats(&self) -> Vec<GroupStats> {
        self.groups
            .borrow()
            .iter()
            .map(|g| GroupStats {
                group: g.id.clone(),
                state: g.state.name(),
                members: g.members.len(),
                generation: g.generation,
                offsets: g.offsets.iter().map(|((t, p), c)| (t.clone(), *p, c.offset)).collect(),
            })
            .collect()
    }

    /// Appends records to the group's partition as one batch.
    fn append(
        &self,
        host: &impl Host,
        group_id: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
        durability: Durability,
    ) -> Result<sluice_storage::Appended, ResponseError> {
        let tp = self.partition_of(group_id);
        let pairs: Vec<batch::KeyValue> = records
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let batch = Bytes::from(batch::build(&pairs, now_ms()));
        host.append(&tp, batch, durability)
    }

    /// Appends records to the group's partition and waits for them to be durable (as
    /// acks=all is). `apply` updates the in-memory state once the records are in the
    /// log, before the wait for the disk.
    async fn persist(
        &self,
        host: &impl Host,
        group_id: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
        apply: impl FnOnce(),
    ) -> Result<(), ResponseError> {
        let appended = match self.append(host, group_id, records, Durability::Synced) {
            Ok(appended) => appended,
            Err(error) => {
                tracing::error!(group = group_id, "cannot write to {OFFSETS_TOPIC}: {error:?}");
                return Err(ResponseError::CoordinatorNotAvailable);
            }
        };
        apply();
        let tp = self.partition_of(group_id);
        self.wait_durable(host, group_id, &tp, appended).await
    }

    /// Waits until an append to the group's partition is durable and on every in-sync
    /// replica (as acks=all), with Kafka's answers for a commit that did not take.
    async fn wait_durable(
        &self,
        host: &impl Host,
        group_id: &str,
        tp: &TopicPartition,
        appended: sluice_storage::Appended,
    ) -> Result<(), ResponseError> {
        let what = format!("commit of group {group_id}");
        crate::coordinator::wait_durable(host, tp, appended, OFFSETS_COMMIT_TIMEOUT, &what).await
    }
}

/// The topics KIP-848 members can subscribe to: every topic but the internal ones.
fn subscribable_topics(metadata: &sluice_controller::ClusterMetadata) -> super::consumer::Topics {
    metadata
        .topics
        .values()
        .filter(|t| !t.internal)
        .map(|t| (t.name.clone(), t.partitions))
        .collect()
}
