//! DeleteRecords: moves partitions' log start offsets forward (Kafka's
//! `deleteRecordsOnLeader`). The offset must be at most the high watermark (-1 means
//! the high watermark itself); the answer's low watermark is the new log start. A
//! topic whose `cleanup.policy` lacks `delete` gets POLICY_VIOLATION, as in Kafka.
//! Segments wholly below it are deleted at once; consumers below it get
//! OFFSET_OUT_OF_RANGE and reset. Followers move their own start when their next fetch
//! tells them the leader's, so the answer does not wait for them (Kafka does, up to the
//! request's timeout).

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;
use sluice_controller::TopicMetadata;
use sluice_storage::{DeleteRecordsError, Offset};

use super::{error_code, Handler, RequestContext};
use crate::partition::TopicPartition;
use crate::router::{self, PartitionOp};
use crate::shard::Shard;

pub(crate) struct DeleteRecordsHandler;

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

#[derive(Clone, Copy)]
pub(crate) struct DeleteRecordsOp;

impl PartitionOp for DeleteRecordsOp {
    type Item = i64;
    /// The error, or the new low watermark.
    type Outcome = Result<i64, ResponseError>;
    const API: ApiKey = ApiKey::DeleteRecords;

    fn refused(error: ResponseError) -> Self::Outcome {
        Err(error)
    }

    /// Kafka keeps internal topics' records away from DeleteRecords.
    fn admit(&self, topic: &TopicMetadata, _offset: &i64) -> Result<(), ResponseError> {
        if topic.internal {
            Err(ResponseError::InvalidTopicException)
        } else {
            Ok(())
        }
    }

    async fn serve(self, shard: Rc<Shard>, items: Vec<(TopicPartition, i64)>) -> Vec<Self::Outcome> {
        let partitions = shard.partitions.borrow();
        items
            .into_iter()
            .map(|(tp, offset)| {
                let p = partitions.get(&tp).ok_or(ResponseError::UnknownTopicOrPartition)?;
                if !p.log().config().cleanup_delete {
                    // Kafka keeps a compact-only topic's records from DeleteRecords.
                    return Err(ResponseError::PolicyViolation);
                }
                let high_watermark = p.offsets().high_watermark.offset();
                let target = match offset {
                    HIGH_WATERMARK => high_watermark,
                    o if o < 0 => return Err(ResponseError::OffsetOutOfRange),
                    o => Offset(o),
                };
                match p.log().delete_records(target, high_watermark) {
                    Ok(start) => {
                        tracing::info!(topic = %tp.topic, partition = tp.partition, log_start = start.value(), "DeleteRecords moved the log start");
                        Ok(start.value())
                    }
                    Err(DeleteRecordsError::OutOfRange { .. }) => Err(ResponseError::OffsetOutOfRange),
                    Err(DeleteRecordsError::Io(e)) => {
                        tracing::error!(topic = %tp.topic, partition = tp.partition, "DeleteRecords failed: {e}");
                        Err(ResponseError::KafkaStorageError)
                    }
                }
            })
            .collect()
    }
}

impl Handler for DeleteRecordsHandler {
    type Request = DeleteRecordsRequest;
    type Response = DeleteRecordsResponse;
    const VERSIONS: (i16, i16) = (0, 2);

    async fn handle(
        shard: Rc<Shard>,
        _ctx: RequestContext,
        request: DeleteRecordsRequest,
    ) -> Option<DeleteRecordsResponse> {
        let items = request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (TopicPartition::new(t.name.as_str(), p.partition_index), p.offset))
            })
            .collect();
        let mut outcomes = router::route(&shard, DeleteRecordsOp, items).await.into_iter();
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let outcome = outcomes.next().unwrap_or(Err(ResponseError::UnknownServerError));
                        DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(*outcome.as_ref().unwrap_or(&-1))
                            .with_error_code(error_code(outcome.err()))
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        Some(DeleteRecordsResponse::default().with_topics(topics))
    }
}
