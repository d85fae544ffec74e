//! Dead-letter topics for share groups (KIP-1191): a record archived because a
//! consumer rejected it or because it reached its delivery limit is written to the
//! group's dead-letter topic, with headers naming where it came from and why, and (with
//! `errors.deadletterqueue.copy.record.enable`) its key and value. The topic is
//! created on first use when `auto.create.topics.enable` allows it.
//!
//! Writes are at least once: a dead-letter record is written after its archive is
//! decided and before nothing else; a crash between the two may write it again.

use std::rc::Rc;

use bytes::Bytes;
use sluice_storage::{batch, compression, Durability, Offset};

use super::partition::ArchivedRecord;
use crate::admin;
use crate::partition::{ReadBound, TopicPartition};
use crate::router;
use crate::shard::Shard;

/// Header names of a dead-letter record.
pub const HEADER_TOPIC: &str = "__dlq.errors.topic";
pub const HEADER_PARTITION: &str = "__dlq.errors.partition";
pub const HEADER_OFFSET: &str = "__dlq.errors.offset";
pub const HEADER_GROUP: &str = "__dlq.errors.group";
pub const HEADER_DELIVERY_COUNT: &str = "__dlq.errors.delivery.count";
pub const HEADER_REASON: &str = "__dlq.errors.reason";

/// The largest source record copied (bigger ones go without key and value): the
/// source batch is read whole, so this bounds the read.
const SOURCE_READ_BYTES_MAX: usize = 8 << 20;

/// Writes `archived` records of `source` (owned by this shard) to `topic` in the
/// background.
pub(crate) fn spawn(
    shard: &Rc<Shard>,
    source: TopicPartition,
    group: String,
    topic: String,
    copy: bool,
    archived: Vec<ArchivedRecord>,
) {
    let shard = shard.clone();
    tokio::task::spawn_local(async move {
        // A topic created a moment ago may not have a leader in this broker's metadata
        // yet, and a leader may be moving: tried again with a growing pause.
        let mut pause = WRITE_RETRY_FIRST;
        for attempt in 1..=WRITE_ATTEMPTS {
            match write(&shard, &source, &group, &topic, copy, &archived).await {
                Ok(()) => return,
                Err(why) if attempt == WRITE_ATTEMPTS => tracing::warn!(
                    group,
                    topic,
                    records = archived.len(),
                    "cannot write to the dead-letter topic, giving up: {why}"
                ),
                Err(why) => {
                    tracing::debug!(group, topic, attempt, "dead-letter write failed, retrying: {why}");
                    let mut shutdown = shard.cluster.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => return,
                    }
                    pause = (pause * 2).min(WRITE_RETRY_MAX);
                }
            }
        }
    });
}

/// Dead-letter writes are tried this often, pausing from 50 ms up to 2 s between
/// tries (about 20 s in all), before one is given up (and logged).
const WRITE_ATTEMPTS: u32 = 14;
const WRITE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const WRITE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

async fn write(
    shard: &Rc<Shard>,
    source: &TopicPartition,
    group: &str,
    topic: &str,
    copy: bool,
    archived: &[ArchivedRecord],
) -> Result<(), String> {
    let partitions = match shard.metadata().topic(topic) {
        Some(t) => t.partitions,
        None if shard.config().auto_create_topics => {
            let config = shard.config();
            match admin::create_topic(
                shard,
                topic,
                config.num_partitions,
                config.default_replication_factor,
                Default::default(),
                None,
            )
            .await
            {
                Ok(t) => t.partitions,
                Err(e) if e.code == kafka_protocol::ResponseError::TopicAlreadyExists => {
                    shard.metadata().topic(topic).map_or(1, |t| t.partitions)
                }
                Err(e) => return Err(e.message),
            }
        }
        None => return Err("it does not exist and auto.create.topics.enable is false".into()),
    };
    let mut records = Vec::with_capacity(archived.len());
    for a in archived {
        let original = if copy {
            read_record(shard, source, a.offset).await
        } else {
            None
        };
        records.push((a, original));
    }
    let strings: Vec<[String; 6]> = records
        .iter()
        .map(|(a, _)| {
            [
                source.topic.clone(),
                source.partition.to_string(),
                a.offset.to_string(),
                group.to_string(),
                a.delivery_count.to_string(),
                a.reason.name().to_string(),
            ]
        })
        .collect();
    let names = [
        HEADER_TOPIC,
        HEADER_PARTITION,
        HEADER_OFFSET,
        HEADER_GROUP,
        HEADER_DELIVERY_COUNT,
        HEADER_REASON,
    ];
    let headers: Vec<Vec<batch::Header>> = strings
        .iter()
        .map(|values| {
            names
                .iter()
                .zip(values.iter())
                .map(|(n, v)| (n.as_bytes(), Some(v.as_bytes())))
                .collect()
        })
        .collect();
    let built: Vec<(batch::KeyValue, &[batch::Header])> = records
        .iter()
        .zip(headers.iter())
        .map(|((_, original), h)| {
            let kv = match original {
                Some((k, v)) => (k.as_deref(), v.as_deref()),
                None => (None, None),
            };
            (kv, h.as_slice())
        })
        .collect();
    let bytes = Bytes::from(batch::build_with_headers(&built, crate::now_ms()));
    let target = TopicPartition::new(topic, source.partition % partitions.max(1));
    let metadata = shard.metadata();
    let leader = metadata
        .partition(&target.topic, target.partition)
        .map(|s| s.leader)
        .ok_or("its partition has no leader")?;
    if !shard.leads(&metadata, leader) {
        return produce_to(shard, leader, &target, bytes).await;
    }
    let owner = shard.cluster.owner_of(&target.topic, target.partition);
    let appended = router::run_on(shard, owner, move |s| async move {
        match s.append(&target, bytes, crate::now_ms(), Durability::Synced) {
            Ok(a) => match a.receipt {
                Some(r) => r.wait().await.map_err(|e| e.to_string()),
                None => Ok(()),
            },
            Err(r) => Err(format!("{:?}", r.code)),
        }
    })
    .await;
    appended.unwrap_or_else(|| Err("the broker is shutting down".into()))
}

/// Produces `batch` (acks=all) to `target` on broker `leader`, which leads it.
async fn produce_to(shard: &Rc<Shard>, leader: i32, target: &TopicPartition, batch: Bytes) -> Result<(), String> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let broker = shard
        .metadata()
        .brokers
        .get(&leader)
        .map(|b| (b.host.clone(), b.port))
        .ok_or("its leader is not live")?;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(target.topic.clone())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(target.partition)
                .with_records(Some(batch))])]);
    let mut peer = crate::peer::Peer::connect(broker, format!("sluice-dlq-{}", shard.cluster.me.id))
        .await
        .map_err(|e| e.to_string())?;
    let response = peer.call(&request, 9).await.map_err(|e| e.to_string())?;
    let code = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .map_or(-1, |p| p.error_code);
    if code == 0 {
        Ok(())
    } else {
        Err(format!("the leader answered error {code}"))
    }
}

/// The key and value of the record at `offset` of a partition this shard owns.
async fn read_record(
    shard: &Rc<Shard>,
    tp: &TopicPartition,
    offset: i64,
) -> Option<(Option<Vec<u8>>, Option<Vec<u8>>)> {
    let read = {
        let partitions = shard.partitions.borrow();
        partitions
            .get(tp)?
            .read(Offset(offset), SOURCE_READ_BYTES_MAX, ReadBound::LogEnd)
    };
    let bytes = read.await.ok()?;
    let mut rest = &bytes[..];
    while let Ok(h) = sluice_storage::BatchHeader::parse(rest) {
        if h.size > rest.len() {
            return None;
        }
        let (whole, tail) = rest.split_at(h.size);
        rest = tail;
        if h.last_offset().value() < offset {
            continue;
        }
        let body = compression::records_of(whole, &h, sluice_storage::log::DECOMPRESSED_BATCH_MAX).ok()?;
        let mut found = None;
        let _ = batch::for_each_record(&body, |r| {
            if h.base_offset.value() + r.offset_delta == offset {
                found = Some((r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
            }
            Ok(())
        });
        return found;
    }
    None
}
