//! OffsetDelete (KIP-496): removes a group's committed offsets for partitions of topics
//! its members are not subscribed to.

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{ask_group, error_code, Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct OffsetDeleteHandler;

impl Handler for OffsetDeleteHandler {
    type Request = OffsetDeleteRequest;
    type Response = OffsetDeleteResponse;
    const VERSIONS: (i16, i16) = (0, 0);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: OffsetDeleteRequest) -> Option<OffsetDeleteResponse> {
        let group_id = request.group_id.to_string();
        let topics: Vec<(String, Vec<i32>)> = request
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.to_string(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect();
        let key = group_id.clone();
        let answer = ask_group(&shard, &key, move |s| async move {
            s.groups.delete_offsets(&*s, &group_id, topics).await
        })
        .await
        .unwrap_or_else(Err);
        let errors = match answer {
            Ok(errors) => errors,
            Err(e) => return Some(OffsetDeleteResponse::default().with_error_code(e.code())),
        };
        let topics = request
            .topics
            .iter()
            .zip(errors)
            .map(|(t, codes)| {
                let partitions = t
                    .partitions
                    .iter()
                    .zip(codes)
                    .map(|(p, error)| {
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error_code(error))
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        Some(OffsetDeleteResponse::default().with_topics(topics))
    }
}
