//! ShareFetch (KIP-932): a share consumer's fetch. Within a share session (epoch 0
//! opens one with the listed partitions, each later request carries the next epoch and
//! adds or forgets partitions, -1 closes it and releases what the member holds), it
//! applies the acknowledgements piggybacked on the request, then acquires records on
//! each partition for the member and returns the batches holding them with the
//! acquired ranges. Long-polls (`max_wait_ms`) until a partition has records for it:
//! new ones appended, or old ones coming back (released, lock expired).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ShareFetchRequest, ShareFetchResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{moved_leader, Handler, RequestContext};
use crate::partition::TopicPartition;
use crate::router::{self, PartitionOp};
use crate::shard::Shard;
use crate::share::manager::{PartitionResult, Session};
use crate::share::GroupSettings;

pub(crate) struct ShareFetchHandler;

/// The longest a share fetch waits for records (Kafka bounds it by the request timeout).
const WAIT_MAX: Duration = Duration::from_secs(30);
/// Kafka's broker-side fetch.max.bytes, as for Fetch.
const FETCH_MAX_BYTES: usize = 57_671_680;
/// The smallest share of a fetch's bytes one partition gets.
const PARTITION_BYTES_MIN: usize = 64 << 10;
/// Records per partition when the client sets no max_records (its max.poll.records).
const RECORDS_DEFAULT: usize = 500;
/// Share sessions one shard keeps (Kafka's group.share.max.share.sessions is 2000 per
/// broker): a new one beyond gets SHARE_SESSION_LIMIT_REACHED.
const SESSIONS_MAX: usize = 2000;

/// A partition as the share APIs name it.
pub(crate) type SharePartitionId = (Uuid, i32);

/// Acknowledgement batches of one partition: (first offset, last offset, types).
pub(crate) type AckBatches = Vec<(i64, i64, Vec<i8>)>;

/// One partition's part of a ShareFetch or ShareAcknowledge.
pub(crate) struct ShareItem {
    pub topic_id: Uuid,
    pub acks: AckBatches,
    pub fetch: bool,
}

/// The work of one pass on the shard owning the partitions.
#[derive(Clone)]
pub(crate) struct ShareOp {
    pub group: String,
    pub member: String,
    pub settings: GroupSettings,
    pub records_max: usize,
    pub bytes_max: usize,
    pub waker: Arc<Notify>,
}

impl PartitionOp for ShareOp {
    type Item = ShareItem;
    type Outcome = PartitionResult;
    const API: ApiKey = ApiKey::ShareFetch;

    fn refused(error: ResponseError) -> PartitionResult {
        PartitionResult {
            error: Some(error),
            ..Default::default()
        }
    }

    async fn serve(self, shard: Rc<Shard>, items: Vec<(TopicPartition, ShareItem)>) -> Vec<PartitionResult> {
        let member: Rc<str> = Rc::from(self.member.as_str());
        let mut out = Vec::with_capacity(items.len());
        for (tp, item) in items {
            let entry = match shard.shares.get(&shard, &self.group, &tp, item.topic_id).await {
                Ok(e) => e,
                Err(e) => {
                    out.push(Self::refused(e));
                    continue;
                }
            };
            let mut result = PartitionResult::default();
            if !item.acks.is_empty() {
                result.ack_error = shard
                    .shares
                    .acknowledge(&shard, &entry, &self.member, &item.acks, &self.settings)
                    .await;
            }
            if item.fetch {
                match shard
                    .shares
                    .acquire(
                        &shard,
                        &entry,
                        &member,
                        &self.settings,
                        self.records_max,
                        self.bytes_max,
                        &self.waker,
                    )
                    .await
                {
                    Ok((records, acquired)) => {
                        result.records = records;
                        result.acquired = acquired;
                    }
                    Err(e) => result.error = Some(e),
                }
            }
            out.push(result);
        }
        out
    }
}

/// Why a share request cannot go on in its session.
pub(crate) fn session_error(shard: &Shard, group: &str, member: &str, epoch: i32) -> Option<ResponseError> {
    let sessions = shard.shares.sessions.borrow();
    match (epoch, sessions.get(&(group.to_string(), member.to_string()))) {
        (0, _) => None,
        (_, None) => Some(ResponseError::ShareSessionNotFound),
        (-1, Some(_)) => None,
        (e, Some(s)) if e != s.next_epoch => Some(ResponseError::InvalidShareSessionEpoch),
        _ => None,
    }
}

/// Moves the member's share session on by one request: opens it (epoch 0, with
/// `added`), checks and advances its epoch and applies `added` and `forgotten`, or
/// closes it (-1). The session's partitions after the request.
pub(crate) fn step_session(
    shard: &Shard,
    group: &str,
    member: &str,
    epoch: i32,
    added: &[SharePartitionId],
    forgotten: &[SharePartitionId],
) -> Result<Vec<SharePartitionId>, ResponseError> {
    if let Some(e) = session_error(shard, group, member, epoch) {
        return Err(e);
    }
    let key = (group.to_string(), member.to_string());
    let now = crate::now_ms();
    let mut sessions = shard.shares.sessions.borrow_mut();
    match epoch {
        0 => {
            if !sessions.contains_key(&key) && sessions.len() >= SESSIONS_MAX {
                return Err(ResponseError::ShareSessionLimitReached);
            }
            let mut partitions = Vec::new();
            for p in added {
                if !partitions.contains(p) {
                    partitions.push(*p);
                }
            }
            sessions.insert(
                key,
                Session {
                    partitions: partitions.clone(),
                    next_epoch: 1,
                    touched_ms: now,
                },
            );
            Ok(partitions)
        }
        -1 => Ok(sessions.remove(&key).map(|s| s.partitions).unwrap_or_default()),
        e => {
            let Some(s) = sessions.get_mut(&key) else {
                return Err(ResponseError::ShareSessionNotFound);
            };
            s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
            s.touched_ms = now;
            s.partitions.retain(|p| !forgotten.contains(p));
            for p in added {
                if !s.partitions.contains(p) {
                    s.partitions.push(*p);
                }
            }
            Ok(s.partitions.clone())
        }
    }
}

/// Releases what the member holds on every shard (its share session closed).
pub(crate) async fn release_member(shard: &Rc<Shard>, group: &str, member: &str) {
    let (group, member) = (group.to_string(), member.to_string());
    router::broadcast(shard, move |s| {
        let (group, member) = (group.clone(), member.clone());
        async move { s.shares.release_member(&s, &group, &member) }
    })
    .await;
}

/// Runs one pass of `op` over `items` (topic id, partition → item), naming each
/// partition by its topic; unknown topic ids get UNKNOWN_TOPIC_ID.
pub(crate) async fn pass(
    shard: &Rc<Shard>,
    op: &ShareOp,
    items: Vec<(SharePartitionId, ShareItem)>,
) -> Vec<(SharePartitionId, PartitionResult)> {
    let metadata = shard.metadata();
    let names: HashMap<Uuid, &str> = metadata.topics.values().map(|t| (t.id, t.name.as_str())).collect();
    let mut known = Vec::new();
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for ((topic_id, partition), item) in items {
        match names.get(&topic_id) {
            Some(name) => {
                ids.push((topic_id, partition));
                known.push((TopicPartition::new(name, partition), item));
            }
            None => out.push(((topic_id, partition), ShareOp::refused(ResponseError::UnknownTopicId))),
        }
    }
    let results = router::route(shard, op.clone(), known).await;
    out.extend(ids.into_iter().zip(results));
    out
}

/// The topic name of a topic id in the current metadata.
pub(crate) fn topic_name(shard: &Shard, topic_id: Uuid) -> Option<String> {
    shard.metadata().topic_by_id(topic_id).map(|t| t.name.clone())
}

impl Handler for ShareFetchHandler {
    type Request = ShareFetchRequest;
    type Response = ShareFetchResponse;
    const VERSIONS: (i16, i16) = (1, 1);

    fn shared(response: &ShareFetchResponse) -> Vec<bytes::Bytes> {
        let partitions = response.responses.iter().flat_map(|t| &t.partitions);
        partitions.filter_map(|p| p.records.clone()).collect()
    }

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: ShareFetchRequest) -> Option<ShareFetchResponse> {
        let group = request.group_id.as_ref().map(|g| g.to_string()).unwrap_or_default();
        let member = request.member_id.as_ref().map(|m| m.to_string()).unwrap_or_default();
        let settings = GroupSettings::resolve(shard.config(), &shard.metadata(), &group);
        let refused = |e: ResponseError| Some(ShareFetchResponse::default().with_error_code(e.code()));
        if group.is_empty() || member.is_empty() {
            return refused(ResponseError::InvalidRequest);
        }
        let epoch = request.share_session_epoch;
        let mut acks: BTreeMap<SharePartitionId, AckBatches> = BTreeMap::new();
        let mut added = Vec::new();
        for topic in &request.topics {
            for p in &topic.partitions {
                let id = (topic.topic_id, p.partition_index);
                added.push(id);
                acks.entry(id).or_default().extend(
                    p.acknowledgement_batches
                        .iter()
                        .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone())),
                );
            }
        }
        acks.retain(|_, batches| !batches.is_empty());
        // Their answers are listed even when nothing else happened there.
        let acked: Vec<SharePartitionId> = acks.keys().copied().collect();
        let forgotten: Vec<SharePartitionId> = request
            .forgotten_topics_data
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p)))
            .collect();
        if epoch == 0 && !acks.is_empty() {
            // A new session has acquired nothing yet to acknowledge.
            return refused(ResponseError::InvalidRequest);
        }
        let session = match step_session(&shard, &group, &member, epoch, &added, &forgotten) {
            Ok(s) => s,
            Err(e) => return refused(e),
        };
        let fetching = epoch != -1 && request.max_records != 0;
        let records_max = if request.max_records > 0 {
            request.max_records as usize
        } else {
            RECORDS_DEFAULT
        };
        let parts = session.len().max(1);
        let bytes_max = (request.max_bytes.max(1) as usize).min(FETCH_MAX_BYTES) / parts;
        let op = ShareOp {
            group: group.clone(),
            member: member.clone(),
            settings: settings.clone(),
            records_max,
            bytes_max: bytes_max.max(PARTITION_BYTES_MIN),
            waker: Arc::new(Notify::new()),
        };
        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(WAIT_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        let mut results: BTreeMap<SharePartitionId, PartitionResult> = BTreeMap::new();
        let mut first = true;
        loop {
            let mut items: Vec<(SharePartitionId, ShareItem)> = Vec::new();
            let mut wanted: Vec<SharePartitionId> = if fetching { session.clone() } else { Vec::new() };
            if first {
                for id in acks.keys() {
                    if !wanted.contains(id) {
                        wanted.push(*id);
                    }
                }
            }
            for id in wanted {
                items.push((
                    id,
                    ShareItem {
                        topic_id: id.0,
                        acks: if first {
                            acks.remove(&id).unwrap_or_default()
                        } else {
                            Vec::new()
                        },
                        fetch: fetching && session.contains(&id),
                    },
                ));
            }
            let had_acks = first && items.iter().any(|(_, i)| !i.acks.is_empty());
            for (id, r) in pass(&shard, &op, items).await {
                let kept = results.entry(id).or_default();
                if r.ack_error.is_some() || had_acks {
                    kept.ack_error = kept.ack_error.or(r.ack_error);
                }
                kept.error = r.error;
                kept.records = r.records;
                kept.acquired = r.acquired;
            }
            first = false;
            let ready = had_acks || results.values().any(|r| !r.acquired.is_empty() || r.error.is_some()) || !fetching;
            if ready || tokio::time::Instant::now() >= deadline {
                break;
            }
            let mut shutdown = shard.cluster.shutdown.clone();
            tokio::select! {
                _ = op.waker.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => break,
            }
        }
        if epoch == -1 {
            release_member(&shard, &group, &member).await;
        }
        let metadata = shard.metadata();
        let mut topics: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
        for ((topic_id, partition), r) in results {
            if r.acquired.is_empty()
                && r.error.is_none()
                && r.ack_error.is_none()
                && !acked.contains(&(topic_id, partition))
            {
                continue;
            }
            let name = topic_name(&shard, topic_id).unwrap_or_default();
            let leader = moved_leader(&metadata, r.error, &name, partition)
                .or_else(|| metadata.partition(&name, partition).map(|s| (s.leader, s.leader_epoch)))
                .unwrap_or((-1, -1));
            topics.entry(topic_id).or_default().push(
                PartitionData::default()
                    .with_partition_index(partition)
                    .with_error_code(r.error.map_or(0, |e| e.code()))
                    .with_acknowledge_error_code(r.ack_error.map_or(0, |e| e.code()))
                    .with_acknowledge_error_message(r.ack_error.map(|e| StrBytes::from_string(e.to_string())))
                    .with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(leader.0)
                            .with_leader_epoch(leader.1),
                    )
                    .with_records(Some(r.records))
                    .with_acquired_records(
                        r.acquired
                            .iter()
                            .map(|a| {
                                AcquiredRecords::default()
                                    .with_first_offset(a.first)
                                    .with_last_offset(a.last)
                                    .with_delivery_count(a.delivery_count)
                            })
                            .collect(),
                    ),
            );
        }
        Some(
            ShareFetchResponse::default()
                .with_acquisition_lock_timeout_ms(settings.limits.lock_ms.min(i32::MAX as i64) as i32)
                .with_responses(
                    topics
                        .into_iter()
                        .map(|(topic_id, partitions)| {
                            ShareFetchableTopicResponse::default()
                                .with_topic_id(topic_id)
                                .with_partitions(partitions)
                        })
                        .collect(),
                ),
        )
    }
}
