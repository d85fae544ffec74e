//! Fetch: read stored batches from each partition's owning shard and return them as
//! stored, without re-encoding. Long-polls (`max_wait_ms`, `min_bytes`) by registering
//! a waker with every partition read, so an append wakes the fetch at once; applies
//! `partition_max_bytes` and `max_bytes` with KIP-74's rule that the first batch of the
//! response is returned whole even when larger. Fetch sessions (KIP-227) are answered
//! sessionless (session id 0), which every client accepts. `read_committed` consumers
//! (isolation level 1, KIP-98) read up to the last stable offset and are told which
//! transactions in the range were aborted, so they drop those batches.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};
use kafka_protocol::messages::{BrokerId, ProducerId};
use kafka_protocol::ResponseError;
use sluice_storage::{BatchHeader, Offset, ReadError};
use tokio::sync::Notify;

use super::{error_code, moved_leader, Handler, RequestContext};
use crate::partition::{ReadBound, TopicPartition};
use crate::router::{self, PartitionOp};
use crate::shard::Shard;

/// A failing disk fails every fetch of its partitions: logged at most once per 10 s.
static READ_FAILURES: sluice_storage::sparse::Sparse = sluice_storage::sparse::Sparse::new(10_000);

pub(crate) struct FetchHandler;

/// Kafka's broker-side `fetch.max.bytes` (55 MiB): the most one fetch returns, whatever
/// the client asks, so a request for 2 GB cannot make the broker read and hold 2 GB.
const FETCH_MAX_BYTES: i32 = 57_671_680;

/// What one partition of a fetch asks for.
pub struct FetchItem {
    pub offset: i64,
    pub max_bytes: usize,
    /// KIP-320: the leader epoch the consumer believes current (-1: unchecked).
    pub current_leader_epoch: i32,
    /// A Sluice follower's durable log end, when it reports one apart from its fetch
    /// offset (see `replication::DURABLE_END_TAG`).
    pub durable: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchOutcome {
    pub error: Option<ResponseError>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub records: Bytes,
    /// `read_committed` only: (producer id, first offset) of each aborted transaction
    /// overlapping the records.
    pub aborted: Option<Vec<(i64, i64)>>,
}

/// One pass of a fetch over its partitions' owning shards; each partition read wakes
/// `waker` when data is next appended there (the long poll).
#[derive(Clone)]
pub(crate) struct FetchOp {
    waker: Arc<Notify>,
    /// The follower broker fetching (a replica fetch reads to the log end and reports
    /// the follower's log end to the leader), or None for a consumer.
    replica: Option<i32>,
    /// A consumer with `isolation.level=read_committed`.
    read_committed: bool,
}

impl PartitionOp for FetchOp {
    type Item = FetchItem;
    type Outcome = FetchOutcome;
    const API: ApiKey = ApiKey::Fetch;

    fn current_leader_epoch(item: &FetchItem) -> Option<i32> {
        Some(item.current_leader_epoch)
    }

    fn refused(error: ResponseError) -> FetchOutcome {
        FetchOutcome {
            error: Some(error),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            records: Bytes::new(),
            aborted: None,
        }
    }

    /// Every partition's read at once: data still in a write-behind tail comes from
    /// memory, the rest through the shard's storage backend.
    async fn serve(self, shard: Rc<Shard>, items: Vec<(TopicPartition, FetchItem)>) -> Vec<FetchOutcome> {
        let now = crate::now_ms();
        let reads = items.into_iter().map(|(tp, item)| {
            let started = {
                let mut partitions = shard.partitions.borrow_mut();
                partitions.get_mut(&tp).and_then(|p| {
                    let bound = match self.replica {
                        Some(follower) => {
                            let durable = Offset(item.durable.unwrap_or(item.offset));
                            if !p.follower_fetched(follower, Offset(item.offset), durable, now) {
                                return None;
                            }
                            ReadBound::LogEnd
                        }
                        None if self.read_committed => ReadBound::LastStable,
                        None => ReadBound::HighWatermark,
                    };
                    p.watch(&self.waker);
                    let offsets = p.offsets();
                    let read = p.read(Offset(item.offset), item.max_bytes, bound);
                    Some((offsets, read, p.log().clone()))
                })
            };
            let read_committed = self.read_committed && self.replica.is_none();
            async move {
                let Some((offsets, read, log)) = started else {
                    return Self::refused(ResponseError::UnknownTopicOrPartition);
                };
                let mut out = FetchOutcome {
                    error: None,
                    high_watermark: offsets.high_watermark.value(),
                    last_stable_offset: offsets.last_stable.value(),
                    log_start_offset: offsets.log_start.value(),
                    records: Bytes::new(),
                    aborted: read_committed.then(Vec::new),
                };
                match read.await {
                    Ok(records) => {
                        if read_committed {
                            if let Some(last) = last_offset(&records) {
                                out.aborted = Some(
                                    log.aborted_overlapping(Offset(item.offset), last)
                                        .into_iter()
                                        .map(|a| (a.producer_id, a.first_offset.value()))
                                        .collect(),
                                );
                            }
                        }
                        out.records = records;
                    }
                    Err(ReadError::OffsetOutOfRange { .. }) => out.error = Some(ResponseError::OffsetOutOfRange),
                    Err(ReadError::Io(e)) => {
                        if let Some(unlogged) = READ_FAILURES.due() {
                            tracing::error!(topic = %tp.topic, partition = tp.partition, unlogged_since_last = unlogged, "read failed: {e}");
                        }
                        out.error = Some(ResponseError::KafkaStorageError);
                    }
                }
                out
            }
        });
        futures_util::future::join_all(reads).await
    }
}

impl Handler for FetchHandler {
    type Request = FetchRequest;
    type Response = FetchResponse;
    // v13+ names topics by id only; capped until topic ids are routed in Fetch.
    const VERSIONS: (i16, i16) = (4, 12);

    fn shared(response: &FetchResponse) -> Vec<Bytes> {
        let partitions = response.responses.iter().flat_map(|t| &t.partitions);
        partitions.filter_map(|p| p.records.clone()).collect()
    }

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: FetchRequest) -> Option<FetchResponse> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.max(0) as u64);
        // Followers name themselves with replica_id (up to v14; v15's ReplicaState is
        // beyond the versions served).
        let replica = (request.replica_id.0 >= 0).then_some(request.replica_id.0);
        let op = FetchOp {
            waker: Arc::new(Notify::new()),
            replica,
            read_committed: request.isolation_level == 1,
        };
        let mut shutdown = shard.cluster.shutdown.clone();
        loop {
            let items = request
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| {
                        let item = FetchItem {
                            offset: p.fetch_offset,
                            max_bytes: p.partition_max_bytes.clamp(0, FETCH_MAX_BYTES) as usize,
                            current_leader_epoch: p.current_leader_epoch,
                            durable: replica.and(crate::replication::durable_end(p)),
                        };
                        (TopicPartition::new(t.topic.as_str(), p.partition), item)
                    })
                })
                .collect();
            let mut outcomes = router::route(&shard, op.clone(), items).await;
            let partition_limits = request
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.partition_max_bytes));
            let max_bytes = request.max_bytes.min(FETCH_MAX_BYTES);
            let total = apply_byte_limits(&mut outcomes, partition_limits, max_bytes);
            let has_error = outcomes.iter().any(|o| o.error.is_some());
            let done = total >= request.min_bytes.max(0) as usize
                || has_error
                || tokio::time::Instant::now() >= deadline
                || *shutdown.borrow();
            if done {
                count_fetched(&shard, &request, &outcomes);
                return Some(response(&shard, &request, outcomes));
            }
            tokio::select! {
                _ = op.waker.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// KIP-74: walk partitions in request order; each keeps the whole batches that fit both
/// its `partition_max_bytes` and what is left of `max_bytes`, except that the first
/// partition with data keeps at least its first batch. Returns the bytes kept.
fn apply_byte_limits(
    outcomes: &mut [FetchOutcome],
    partition_limits: impl Iterator<Item = i32>,
    max_bytes: i32,
) -> usize {
    let mut remaining = max_bytes.max(0) as usize;
    let mut total = 0;
    for (o, limit) in outcomes.iter_mut().zip(partition_limits) {
        if o.records.is_empty() {
            continue;
        }
        let limit = (limit.max(0) as usize).min(remaining);
        let mut keep = whole_batches_within(&o.records, limit);
        if keep == 0 && total == 0 {
            keep = whole_batches_within(&o.records, usize::MAX).min(first_batch_len(&o.records));
        }
        o.records = o.records.slice(..keep);
        remaining = remaining.saturating_sub(keep);
        total += keep;
    }
    total
}

/// Bytes, records and error codes a fetch answers with, for the metrics.
fn count_fetched(shard: &Shard, request: &FetchRequest, outcomes: &[FetchOutcome]) {
    let mut metrics = shard.metrics.borrow_mut();
    let topics = request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |_| t.topic.as_str()));
    for (topic, o) in topics.zip(outcomes) {
        metrics.error(ApiKey::Fetch as i16, error_code(o.error));
        if o.records.is_empty() {
            continue;
        }
        let mut records = 0u64;
        let mut rest = &o.records[..];
        while let Ok(h) = BatchHeader::parse(rest) {
            records += h.record_count.max(0) as u64;
            rest = &rest[h.size.min(rest.len())..];
        }
        let io = metrics.topic(topic);
        io.bytes_out += o.records.len() as u64;
        io.records_out += records;
    }
}

/// The last offset of the last whole batch in `records`.
fn last_offset(records: &[u8]) -> Option<Offset> {
    let mut rest = records;
    let mut last = None;
    while let Ok(h) = BatchHeader::parse(rest) {
        if h.size > rest.len() {
            break;
        }
        last = Some(h.last_offset());
        rest = &rest[h.size..];
    }
    last
}

fn first_batch_len(records: &[u8]) -> usize {
    BatchHeader::parse(records)
        .map(|h| h.size.min(records.len()))
        .unwrap_or(records.len())
}

/// Length of the longest run of whole batches at the start of `records` within `limit`.
fn whole_batches_within(records: &[u8], limit: usize) -> usize {
    let mut end = 0;
    while let Ok(h) = BatchHeader::parse(&records[end..]) {
        if end + h.size > records.len() || end + h.size > limit {
            break;
        }
        end += h.size;
    }
    end
}

fn response(shard: &Shard, request: &FetchRequest, outcomes: Vec<FetchOutcome>) -> FetchResponse {
    let metadata = shard.metadata();
    let mut outcomes = outcomes.into_iter();
    let responses = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let o = outcomes.next().unwrap_or_default();
                    let leader = moved_leader(&metadata, o.error, topic.topic.as_str(), p.partition).map_or_else(
                        LeaderIdAndEpoch::default,
                        |(id, epoch)| {
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(id))
                                .with_leader_epoch(epoch)
                        },
                    );
                    PartitionData::default()
                        .with_current_leader(leader)
                        .with_partition_index(p.partition)
                        .with_error_code(error_code(o.error))
                        .with_high_watermark(o.high_watermark)
                        .with_last_stable_offset(o.last_stable_offset)
                        .with_log_start_offset(o.log_start_offset)
                        .with_aborted_transactions(o.aborted.map(|list| {
                            list.into_iter()
                                .map(|(producer_id, first_offset)| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(producer_id))
                                        .with_first_offset(first_offset)
                                })
                                .collect()
                        }))
                        .with_records(Some(o.records))
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    FetchResponse::default().with_session_id(0).with_responses(responses)
}
