//! TxnOffsetCommit (KIP-98, KIP-447): a transactional producer commits a group's
//! offsets inside its transaction; sent to the group's coordinator, they become the
//! group's committed offsets only when the transaction commits.

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::{ask_group, fenced_for, Handler, RequestContext};
use crate::group::api::{OffsetCommit, PartitionOffset};
use crate::shard::Shard;

pub(crate) struct TxnOffsetCommitHandler;

impl Handler for TxnOffsetCommitHandler {
    type Request = TxnOffsetCommitRequest;
    type Response = TxnOffsetCommitResponse;
    // v5 belongs to KIP-890 part 2 (not served, as EndTxn v5).
    const VERSIONS: (i16, i16) = (0, 4);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: TxnOffsetCommitRequest,
    ) -> Option<TxnOffsetCommitResponse> {
        let group_id = request.group_id.to_string();
        let producer = (request.producer_id.0, request.producer_epoch);
        let commit = OffsetCommit {
            generation: request.generation_id,
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            topics: request
                .topics
                .iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| PartitionOffset {
                            partition: p.partition_index,
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        })
                        .collect();
                    (t.name.to_string(), parts)
                })
                .collect(),
        };
        let key = group_id.clone();
        let errors = ask_group(&shard, &key, move |s| async move {
            s.groups.txn_commit(&*s, &group_id, producer, commit).await
        })
        .await;
        let topics = request
            .topics
            .iter()
            .enumerate()
            .map(|(t, topic)| {
                let partitions = topic
                    .partitions
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let error = match &errors {
                            Ok(e) => e.get(t).and_then(|v| v.get(i)).copied().flatten(),
                            Err(e) => Some(*e),
                        };
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(fenced_for(ctx.version(), 3, error))
                    })
                    .collect();
                TxnOffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        Some(TxnOffsetCommitResponse::default().with_topics(topics))
    }
}
