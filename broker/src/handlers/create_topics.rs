//! CreateTopics: partitions, replication factor (1 on a single node), manual
//! assignments, per-topic configs and `validate_only`, with Kafka's per-topic errors.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::admin::{self, AdminError};
use crate::shard::Shard;
use crate::topic_config;

pub(crate) struct CreateTopicsHandler;

impl Handler for CreateTopicsHandler {
    type Request = CreateTopicsRequest;
    type Response = CreateTopicsResponse;
    const VERSIONS: (i16, i16) = (2, 7);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: CreateTopicsRequest) -> Option<CreateTopicsResponse> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for t in &request.topics {
            *seen.entry(t.name.as_str()).or_default() += 1;
        }
        let mut results = Vec::new();
        for topic in &request.topics {
            let name = topic.name.as_str();
            let result = if seen.get(name).copied().unwrap_or(0) > 1 {
                Err(AdminError::new(
                    ResponseError::InvalidRequest,
                    format!("topic '{name}' appears more than once"),
                ))
            } else {
                create(&shard, topic, request.validate_only).await
            };
            results.push(match result {
                Ok(r) => r,
                Err(e) => CreatableTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_error_code(e.code.code())
                    .with_error_message(Some(StrBytes::from_string(e.message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
                    .with_configs(None),
            });
        }
        Some(CreateTopicsResponse::default().with_topics(results))
    }
}

async fn create(
    shard: &Rc<Shard>,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<CreatableTopicResult, AdminError> {
    let name = topic.name.as_str();
    let live = shard.metadata().brokers.clone();
    let mut chosen = None;
    let (partitions, replication_factor) = if topic.assignments.is_empty() {
        let partitions = if topic.num_partitions == -1 {
            shard.config().num_partitions
        } else {
            topic.num_partitions
        };
        let rf = if topic.replication_factor == -1 {
            shard.config().default_replication_factor
        } else {
            topic.replication_factor
        };
        (partitions, rf)
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(AdminError::new(
                ResponseError::InvalidRequest,
                "give either assignments or num_partitions and replication_factor, not both",
            ));
        }
        let mut lists = Vec::with_capacity(topic.assignments.len());
        for (i, a) in topic.assignments.iter().enumerate() {
            if a.partition_index != i as i32 {
                return Err(AdminError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "partitions must be numbered from 0 in order",
                ));
            }
            lists.push(a.broker_ids.iter().map(|b| b.0).collect::<Vec<i32>>());
        }
        let rf = sluice_controller::placement::validate(&lists, &live)?;
        chosen = Some(lists);
        (topic.assignments.len() as i32, rf)
    };
    if partitions < 1 {
        return Err(AdminError::new(
            ResponseError::InvalidPartitions,
            "number of partitions must be at least 1",
        ));
    }
    if replication_factor < 1 || replication_factor as usize > live.len() {
        return Err(AdminError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {replication_factor} is larger than the {} live broker(s)",
                live.len()
            ),
        ));
    }
    let mut configs = BTreeMap::new();
    for c in &topic.configs {
        match &c.value {
            Some(v) => configs.insert(c.name.to_string(), v.to_string()),
            None => {
                return Err(AdminError::new(
                    ResponseError::InvalidConfig,
                    format!("config {} has no value", c.name),
                ))
            }
        };
    }
    admin::validate_configs(&configs)?;
    if let Err(why) = sluice_controller::validate_topic_name(name) {
        return Err(AdminError::new(ResponseError::InvalidTopicException, why));
    }
    let topic_id = if validate_only {
        if shard.metadata().topic(name).is_some() {
            return Err(AdminError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        uuid::Uuid::nil()
    } else {
        admin::create_topic(shard, name, partitions, replication_factor, configs.clone(), chosen)
            .await?
            .id
    };
    let described = topic_config::resolve(shard.config(), &shard.metadata(), &configs)
        .into_iter()
        .map(|r| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(r.key))
                .with_value(Some(StrBytes::from_string(r.value)))
                .with_config_source(r.source)
        })
        .collect();
    Ok(CreatableTopicResult::default()
        .with_name(topic.name.clone())
        .with_topic_id(topic_id)
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_configs(Some(described)))
}
