//! DescribeLogDirs (KIP-113): this broker's one log directory (`--data-dir`), the size
//! of every partition replica in it, and (v4, KIP-827) the filesystem's total and
//! usable bytes. `topics` null asks for every partition.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Handler, RequestContext};
use crate::router;
use crate::shard::Shard;

pub(crate) struct DescribeLogDirsHandler;

/// One replica here: (topic, partition, bytes, offset lag).
type Replica = (String, i32, u64, i64);

impl Handler for DescribeLogDirsHandler {
    type Request = DescribeLogDirsRequest;
    type Response = DescribeLogDirsResponse;
    const VERSIONS: (i16, i16) = (1, 4);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: DescribeLogDirsRequest,
    ) -> Option<DescribeLogDirsResponse> {
        let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.as_ref().map(|topics| {
            topics
                .iter()
                .map(|t| (t.topic.to_string(), t.partitions.clone()))
                .collect()
        });
        let answers = router::broadcast(&shard, |s| async move {
            s.partitions
                .borrow()
                .iter()
                .map(|(tp, p)| {
                    let o = p.offsets();
                    // Kafka's lag of the current log: how far its end trails the high
                    // watermark (0 on a leader).
                    let lag = (o.high_watermark.value() - o.log_end.value()).max(0);
                    (tp.topic.clone(), tp.partition, p.log().size_bytes(), lag)
                })
                .collect::<Vec<Replica>>()
        })
        .await;
        let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
        for (topic, partition, size, lag) in answers.into_iter().flatten().flatten() {
            let asked = wanted
                .as_ref()
                .is_none_or(|w| w.iter().any(|(t, parts)| *t == topic && parts.contains(&partition)));
            if asked {
                by_topic.entry(topic).or_default().push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(partition)
                        .with_partition_size(size as i64)
                        .with_offset_lag(lag)
                        .with_is_future_key(false),
                );
            }
        }
        let topics = by_topic
            .into_iter()
            .map(|(name, mut partitions)| {
                partitions.sort_by_key(|p| p.partition_index);
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect();
        let dir = &shard.config().data_dir;
        let (total, usable) = sluice_storage::io::disk_space(dir).map_or((-1, -1), |(t, u)| (t as i64, u as i64));
        let result = DescribeLogDirsResult::default()
            .with_log_dir(StrBytes::from_string(
                std::fs::canonicalize(dir)
                    .unwrap_or_else(|_| dir.clone())
                    .display()
                    .to_string(),
            ))
            .with_topics(topics)
            .with_total_bytes(total)
            .with_usable_bytes(usable);
        Some(DescribeLogDirsResponse::default().with_results(vec![result]))
    }
}
