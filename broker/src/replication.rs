//! Replication, the follower's side and the leader's upkeep (Kafka's
//! `ReplicaFetcherThread` and `Partition.maybeShrinkIsr` / `maybeExpandIsr`).
//!
//! A shard runs one fetcher per leader broker it follows partitions of: one connection
//! and one long-polling Fetch (with `replica_id`) covering all of them, as Kafka does
//! per source broker and fetcher thread. Under a new leader epoch a follower first asks
//! OffsetForLeaderEpoch where its latest epoch ended in the leader's log and truncates
//! anything after it (KIP-101), then fetches from its log end; it appends the leader's
//! batches as they are (offsets and epochs kept) and takes the leader's high watermark.
//! With `--acks-all-fsync` (the default) an acks=all answer means the batch is on the
//! disks of every in-sync replica: a follower reports how far its log is on its disk
//! apart from its fetch offset, in a tagged field of its Fetch ([`DURABLE_END_TAG`]),
//! and the leader's high watermark follows that. So a follower fetches the next
//! batches while the previous ones are being synced, rather than one fetch per sync:
//! with RF 3 on one disk, waiting for each sync before the next fetch left followers
//! tens of MB behind, past the leader's read cache.
//!
//! The leader side: the partition records followers' fetch offsets (see `partition`);
//! a timer here compares each follower with `replica.lag.time.max.ms` and asks the
//! controller to shrink or expand the in-sync set (Kafka's AlterPartition), comparing
//! the epochs it decided on.

use std::collections::HashSet;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_controller::{ClusterMetadata, NO_LEADER};
use sluice_storage::{AppendReceipt, Durability, Offset};

use crate::now_ms;
use crate::partition::TopicPartition;
use crate::peer::Peer;
use crate::shard::Shard;

/// Kafka's `replica.fetch.wait.max.ms`: how long a follower's fetch waits at the leader
/// for new data. It also bounds how late a follower learns a new high watermark.
const FETCH_WAIT_MAX_MS: i32 = 500;
/// Kafka's `replica.fetch.max.bytes` (per partition) and
/// `replica.fetch.response.max.bytes` (per fetch), raised from Kafka's 1 MiB / 10 MiB:
/// a follower that fell behind catches up in fewer round trips (RF 3 acks=all 148 → 166
/// MB/s in benches/replication.sh here, when followers still synced before each fetch).
const FETCH_PARTITION_MAX_BYTES: i32 = 4 << 20;
const FETCH_RESPONSE_MAX_BYTES: i32 = 16 << 20;
/// Kafka's `replica.fetch.backoff.ms`: the pause after a failed fetch.
const FETCH_BACKOFF: Duration = Duration::from_millis(200);
/// Kafka's `replica.high.watermark.checkpoint.interval.ms`.
const HIGH_WATERMARK_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Versions spoken to the leader: the newest this broker serves.
const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;

/// Sluice's own tagged field of a FetchRequest partition: a follower's log end on its
/// disk (8 bytes, big-endian), when it is behind the fetch offset because a sync is
/// still under way. Kafka's tags there are 0 and 1 (v17+, v18+); this one is far
/// above any it will use, and a Kafka broker skips tags it does not know. Without
/// it, the fetch offset is taken as durable too (Kafka's meaning).
pub(crate) const DURABLE_END_TAG: i32 = 10_000;

/// The durable log end a follower's fetch reports, if it reports one.
pub(crate) fn durable_end(partition: &FetchPartition) -> Option<i64> {
    let raw = partition.unknown_tagged_fields.get(&DURABLE_END_TAG)?;
    let bytes: [u8; 8] = raw.as_ref().try_into().ok()?;
    Some(i64::from_be_bytes(bytes)).filter(|end| *end >= 0)
}

/// Starts a fetcher for every leader this shard follows partitions of and has none
/// for yet. A fetcher ends by itself once it has nothing left to fetch.
pub fn follow_leaders(shard: &Rc<Shard>, metadata: &ClusterMetadata) {
    let me = shard.cluster.me.id;
    let leaders: HashSet<i32> = shard
        .partitions
        .borrow()
        .iter()
        .filter(|(_, p)| !p.is_leader())
        .filter_map(|(tp, _)| metadata.partition(&tp.topic, tp.partition))
        .filter(|s| s.leader != NO_LEADER && s.leader != me && s.replicas.contains(&me))
        .map(|s| s.leader)
        .collect();
    for leader in leaders {
        if shard.fetchers.borrow_mut().insert(leader) {
            tokio::task::spawn_local(fetch_from(shard.clone(), leader));
        }
    }
}

/// One partition a fetcher copies.
struct Following {
    tp: TopicPartition,
    fetch_offset: Offset,
    /// How much of the log is on disk, when a sync of the rest is under way.
    syncing_from: Option<Offset>,
    leader_epoch: i32,
    /// The follower's latest epoch, when it must truncate before fetching.
    truncate_from_epoch: Option<Option<i32>>,
}

/// The partitions this shard follows `leader` for, as things stand.
fn following(shard: &Shard, leader: i32) -> Vec<Following> {
    let metadata = shard.metadata();
    let fsync = shard.config().acks_all_fsync;
    shard
        .partitions
        .borrow()
        .iter()
        .filter(|(_, p)| !p.is_leader())
        .filter(|(tp, _)| {
            metadata
                .partition(&tp.topic, tp.partition)
                .is_some_and(|s| s.leader == leader)
        })
        .map(|(tp, p)| {
            let log_end = p.offsets().log_end.offset();
            let durable = p.log().flushed().min(log_end);
            Following {
                tp: tp.clone(),
                fetch_offset: log_end,
                syncing_from: (fsync && durable < log_end).then_some(durable),
                leader_epoch: p.leader_epoch(),
                truncate_from_epoch: p.needs_truncation.then(|| p.log().latest_epoch().map(|e| e.epoch)),
            }
        })
        .collect()
}

/// Copies every partition this shard follows `leader` for, until there are none.
async fn fetch_from(shard: Rc<Shard>, leader: i32) {
    let mut peer: Option<Peer> = None;
    // The syncs of what the previous fetch brought, still under way.
    let mut syncing: Vec<AppendReceipt> = Vec::new();
    let shutdown = shard.cluster.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let work = following(&shard, leader);
        if work.is_empty() {
            break;
        }
        let Some(address) = shard.metadata().brokers.get(&leader).map(|b| (b.host.clone(), b.port)) else {
            // The leader is not registered (yet): wait for the controller to say more.
            tokio::time::sleep(FETCH_BACKOFF).await;
            continue;
        };
        if peer.as_ref().is_none_or(|p| p.address != address) {
            match Peer::connect(
                address.clone(),
                format!("sluice-replica-fetcher-{}", shard.cluster.me.id),
            )
            .await
            {
                Ok(p) => peer = Some(p),
                Err(e) => {
                    tracing::debug!(shard = shard.id, leader, "cannot reach the leader: {e}");
                    tokio::time::sleep(FETCH_BACKOFF).await;
                    continue;
                }
            }
        }
        let Some(connection) = peer.as_mut() else { continue };
        let (truncating, fetching): (Vec<Following>, Vec<Following>) =
            work.into_iter().partition(|f| f.truncate_from_epoch.is_some());
        let result = if !truncating.is_empty() {
            truncate(&shard, connection, truncating).await
        } else {
            fetch(&shard, connection, fetching, &mut syncing).await
        };
        if let Err(e) = result {
            tracing::debug!(shard = shard.id, leader, "fetch from the leader failed: {e}");
            peer = None;
            tokio::time::sleep(FETCH_BACKOFF).await;
        }
    }
    shard.fetchers.borrow_mut().remove(&leader);
}

/// KIP-101: asks the leader where each partition's latest local epoch ended there, and
/// cuts the local log to that point (or to where that epoch ends locally, if sooner).
async fn truncate(shard: &Rc<Shard>, peer: &mut Peer, work: Vec<Following>) -> io::Result<()> {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    for f in &work {
        let partition = OffsetForLeaderPartition::default()
            .with_partition(f.tp.partition)
            .with_current_leader_epoch(f.leader_epoch)
            .with_leader_epoch(f.truncate_from_epoch.flatten().unwrap_or(-1));
        match topics.iter_mut().find(|t| t.topic.as_str() == f.tp.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(f.tp.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(shard.cluster.me.id))
        .with_topics(topics);
    let response = peer.call(&request, OFFSET_FOR_LEADER_EPOCH_VERSION).await?;
    let mut refused = false;
    for topic in response.topics {
        for answer in topic.partitions {
            let tp = TopicPartition::new(topic.topic.as_str(), answer.partition);
            let Some(f) = work.iter().find(|f| f.tp == tp) else {
                continue;
            };
            if answer.error_code != 0 {
                // Not the leader (yet) or a stale epoch: the controller's next change
                // brings the right one; try again after a pause.
                tracing::debug!(topic = %tp.topic, partition = tp.partition, code = answer.error_code, "OffsetForLeaderEpoch refused");
                refused = true;
                continue;
            }
            let (log, local_end, high_watermark) = match shard.partitions.borrow().get(&tp) {
                Some(p) if p.leader_epoch() == f.leader_epoch && !p.is_leader() => {
                    let o = p.offsets();
                    (p.log().clone(), o.log_end.offset(), o.high_watermark.offset())
                }
                _ => continue,
            };
            let target = if answer.leader_epoch < 0 || answer.end_offset < 0 {
                // The leader knows no epoch this old (or this log has none): keep only
                // what was committed, as Kafka falls back to the high watermark.
                high_watermark
            } else {
                let leader_end = Offset(answer.end_offset);
                // Where the answered epoch ends here, if this log has it.
                let here = log
                    .end_offset_for_epoch(answer.leader_epoch)
                    .filter(|(e, _)| *e == answer.leader_epoch)
                    .map_or(leader_end, |(_, o)| o);
                leader_end.min(here).min(local_end)
            };
            if target < local_end {
                tracing::info!(
                    topic = %tp.topic,
                    partition = tp.partition,
                    from = local_end.value(),
                    to = target.value(),
                    "truncating a divergent tail before following the new leader"
                );
                log.truncate(target, false).await?;
            }
            if let Some(p) = shard.partitions.borrow_mut().get_mut(&tp) {
                if p.leader_epoch() == f.leader_epoch {
                    p.truncated();
                }
            }
        }
    }
    if refused {
        tokio::time::sleep(FETCH_BACKOFF).await;
    }
    Ok(())
}

/// One fetch from the leader, and the appends of what it brought. Their syncs are not
/// waited for here (with `--acks-all-fsync`): the next fetch says how far the log is on
/// disk, and goes out once the syncs of the fetch before this one are done, so one
/// sync runs while the next batches are fetched. A fetch that reports a sync under
/// way does not wait at the leader for new data (the leader must hear of the sync's
/// end soon, it moves acks=all answers); when it brings nothing, the fetcher waits for
/// the syncs before it fetches again.
async fn fetch(
    shard: &Rc<Shard>,
    peer: &mut Peer,
    work: Vec<Following>,
    syncing: &mut Vec<AppendReceipt>,
) -> io::Result<()> {
    if work.is_empty() {
        tokio::time::sleep(FETCH_BACKOFF).await;
        return Ok(());
    }
    let mut topics: Vec<FetchTopic> = Vec::new();
    for f in &work {
        let mut partition = FetchPartition::default()
            .with_partition(f.tp.partition)
            .with_current_leader_epoch(f.leader_epoch)
            .with_fetch_offset(f.fetch_offset.value())
            .with_partition_max_bytes(FETCH_PARTITION_MAX_BYTES);
        if let Some(durable) = f.syncing_from {
            partition
                .unknown_tagged_fields
                .insert(DURABLE_END_TAG, Bytes::copy_from_slice(&durable.value().to_be_bytes()));
        }
        match topics.iter_mut().find(|t| t.topic.as_str() == f.tp.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(f.tp.topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let sync_under_way = work.iter().any(|f| f.syncing_from.is_some());
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(shard.cluster.me.id))
        .with_max_wait_ms(if sync_under_way { 0 } else { FETCH_WAIT_MAX_MS })
        .with_min_bytes(1)
        .with_max_bytes(FETCH_RESPONSE_MAX_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let response = peer.call(&request, FETCH_VERSION).await?;
    let durability = if shard.config().acks_all_fsync {
        Durability::Synced
    } else {
        Durability::Appended
    };
    let now = now_ms();
    let mut receipts = Vec::new();
    let mut restarts = Vec::new();
    let mut failed = false;
    for topic in response.responses {
        for answer in topic.partitions {
            let tp = TopicPartition::new(topic.topic.as_str(), answer.partition_index);
            let Some(f) = work.iter().find(|f| f.tp == tp) else {
                continue;
            };
            let mut partitions = shard.partitions.borrow_mut();
            let Some(p) = partitions.get_mut(&tp) else { continue };
            if p.is_leader() || p.leader_epoch() != f.leader_epoch || p.offsets().log_end.offset() != f.fetch_offset {
                // Leadership moved while the fetch was out: this answer is stale.
                continue;
            }
            match ResponseError::try_from_code(answer.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    let leader_start = Offset(answer.log_start_offset);
                    if answer.log_start_offset >= 0 && f.fetch_offset < leader_start {
                        // The leader no longer has what comes next here (retention):
                        // start again where its log starts.
                        restarts.push((p.log().clone(), leader_start));
                    } else {
                        // Ahead of the leader: find where the logs diverge.
                        p.needs_truncation = true;
                    }
                    continue;
                }
                Some(e) => {
                    tracing::debug!(topic = %tp.topic, partition = tp.partition, "the leader refused a fetch: {e:?}");
                    failed = true;
                    continue;
                }
            }
            let records = answer.records.unwrap_or_default();
            match p.append_replicated(&records, Offset(answer.high_watermark.max(0)), now, durability) {
                Ok(Some(receipt)) => receipts.push(receipt),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = %tp.topic, partition = tp.partition, "cannot append the leader's batches: {e}");
                    failed = true;
                }
            }
            // The leader's log start moved (DeleteRecords, retention): so does this
            // replica's, as far as its own high watermark (Kafka's
            // `maybeIncrementLogStartOffset` on a follower).
            let offsets = p.offsets();
            let leader_start = Offset(answer.log_start_offset);
            if leader_start > offsets.log_start.offset() {
                let upto = leader_start.min(offsets.high_watermark.offset());
                if upto > offsets.log_start.offset() {
                    if let Err(e) = p.log().delete_records(upto, offsets.high_watermark.offset()) {
                        tracing::warn!(topic = %tp.topic, partition = tp.partition, "cannot follow the leader's log start: {e}");
                    }
                }
            }
        }
    }
    for (log, start) in restarts {
        log.truncate(start, true).await?;
    }
    let brought = !receipts.is_empty();
    let mut waits = std::mem::replace(syncing, receipts);
    if !brought && sync_under_way {
        // Nothing new: wait until the leader can be told everything is on disk. The
        // unsynced part may also predate these fetches (written as a leader with
        // acks=1), so ask for the sync rather than only wait for the ones under way.
        waits.append(syncing);
        let partitions = shard.partitions.borrow();
        for f in work.iter().filter(|f| f.syncing_from.is_some()) {
            if let Some(receipt) = partitions.get(&f.tp).and_then(|p| p.log().sync()) {
                waits.push(receipt);
            }
        }
    }
    for receipt in waits {
        if receipt.wait().await.is_err() {
            failed = true;
        }
    }
    if failed {
        // Not a broken connection: pause, then carry on with what the metadata says.
        tokio::time::sleep(FETCH_BACKOFF).await;
    }
    Ok(())
}

/// The leader's upkeep of its in-sync sets, every half `replica.lag.time.max.ms` as in
/// Kafka: a follower that has not caught up for that long leaves, one that caught up
/// joins. Each change is an AlterPartition through the controller.
pub async fn maintain_isr(shard: Rc<Shard>) {
    let lag_max = shard.config().replica_lag_time_max_ms;
    // Also the checkpoint's clock: at most as long as its interval.
    let every = Duration::from_millis((lag_max / 2).clamp(50, 5000));
    let mut shutdown = shard.cluster.shutdown.clone();
    let mut last_checkpoint = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if last_checkpoint.elapsed() >= HIGH_WATERMARK_CHECKPOINT_INTERVAL {
            last_checkpoint = tokio::time::Instant::now();
            for (tp, p) in shard.partitions.borrow_mut().iter_mut() {
                if let Err(e) = p.checkpoint_high_watermark() {
                    tracing::warn!(topic = %tp.topic, partition = tp.partition, "cannot checkpoint the high watermark: {e}");
                }
            }
        }
        let now = now_ms();
        let changes: Vec<(TopicPartition, sluice_controller::AlterIsr)> = shard
            .partitions
            .borrow_mut()
            .iter_mut()
            .filter_map(|(tp, p)| {
                let change = p.wanted_isr(now, lag_max as i64)?;
                p.isr_change_pending = true;
                Some((tp.clone(), change))
            })
            .collect();
        for (tp, change) in changes {
            let controller = shard.cluster.controller.clone();
            let shard = shard.clone();
            tokio::task::spawn_local(async move {
                tracing::info!(
                    topic = %tp.topic,
                    partition = tp.partition,
                    isr = ?change.isr,
                    "changing the in-sync replicas"
                );
                let shrink = change.isr.len() < shard.partitions.borrow().get(&tp).map_or(0, |p| p.isr().len());
                let result = controller.alter_isr(&tp.topic, tp.partition, change).await;
                if let Err(e) = result {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, "in-sync set change refused: {e}");
                    if let Some(p) = shard.partitions.borrow_mut().get_mut(&tp) {
                        p.isr_change_pending = false;
                    }
                } else if shrink {
                    shard.metrics.borrow_mut().isr_shrinks += 1;
                } else {
                    shard.metrics.borrow_mut().isr_expands += 1;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::{durable_end, DURABLE_END_TAG, FETCH_VERSION};

    /// The durable end a follower puts in its fetch reaches the leader through
    /// kafka-protocol's encoding, and a malformed one is ignored.
    #[test]
    fn the_durable_end_tag_survives_the_wire_and_bad_ones_are_ignored() {
        let mut tagged = FetchPartition::default().with_fetch_offset(100);
        tagged
            .unknown_tagged_fields
            .insert(DURABLE_END_TAG, Bytes::copy_from_slice(&42i64.to_be_bytes()));
        let mut short = FetchPartition::default().with_partition(1);
        short
            .unknown_tagged_fields
            .insert(DURABLE_END_TAG, Bytes::from_static(b"\x01\x02"));
        let plain = FetchPartition::default().with_partition(2);
        let request = FetchRequest::default()
            .with_topics(vec![FetchTopic::default().with_partitions(vec![tagged, short, plain])]);
        let mut buf = BytesMut::new();
        request.encode(&mut buf, FETCH_VERSION).unwrap();
        let decoded = FetchRequest::decode(&mut buf.freeze(), FETCH_VERSION).unwrap();
        let got: Vec<Option<i64>> = decoded.topics[0].partitions.iter().map(durable_end).collect();
        assert_eq!(got, vec![Some(42), None, None]);
    }
}
