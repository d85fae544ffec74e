//! CreatePartitions (KIP-195): grow a topic's partition count; existing keyed data stays
//! where it is, as in Kafka.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::admin::{self, AdminError};
use crate::shard::Shard;

pub(crate) struct CreatePartitionsHandler;

impl Handler for CreatePartitionsHandler {
    type Request = CreatePartitionsRequest;
    type Response = CreatePartitionsResponse;
    const VERSIONS: (i16, i16) = (0, 3);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: CreatePartitionsRequest,
    ) -> Option<CreatePartitionsResponse> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for t in &request.topics {
            *seen.entry(t.name.as_str()).or_default() += 1;
        }
        let mut results = Vec::new();
        for topic in &request.topics {
            let name = topic.name.as_str();
            let current = shard.metadata().topic(name).map(|t| (t.partitions, t.internal));
            let result = match current {
                _ if seen.get(name).copied().unwrap_or(0) > 1 => Err(AdminError::new(
                    ResponseError::InvalidRequest,
                    "topic named more than once",
                )),
                None => Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name}"),
                )),
                Some((_, true)) => Err(AdminError::new(
                    ResponseError::InvalidTopicException,
                    "internal topics keep their partitions",
                )),
                Some((n, _)) if topic.count <= n => Err(AdminError::new(
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic {name} has {n} partitions; the new count must be larger, not {}",
                        topic.count
                    ),
                )),
                Some((n, _))
                    if topic
                        .assignments
                        .as_ref()
                        .is_some_and(|a| a.len() as i32 != topic.count - n) =>
                {
                    Err(AdminError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("{} new partitions need as many replica lists", topic.count - n),
                    ))
                }
                Some(_) => grow(&shard, name, topic, request.validate_only).await,
            };
            let (code, message) = match result {
                Ok(()) => (0, None),
                Err(e) => (e.code.code(), Some(StrBytes::from_string(e.message))),
            };
            results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        Some(CreatePartitionsResponse::default().with_results(results))
    }
}

/// Adds the partitions, on the brokers the client chose (checked) or where the
/// controller places them.
async fn grow(
    shard: &Rc<Shard>,
    name: &str,
    topic: &kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), AdminError> {
    let chosen: Option<Vec<Vec<i32>>> = topic
        .assignments
        .as_ref()
        .map(|a| a.iter().map(|r| r.broker_ids.iter().map(|b| b.0).collect()).collect());
    if let Some(lists) = &chosen {
        sluice_controller::placement::validate(lists, &shard.metadata().brokers)?;
    }
    if validate_only {
        return Ok(());
    }
    admin::create_partitions(shard, name, topic.count, chosen)
        .await
        .map(|_| ())
}
