//! AlterConfigs (the whole set of a resource's overrides, KIP-133) and
//! IncrementalAlterConfigs (SET, DELETE, APPEND, SUBTRACT per key, KIP-339) for TOPIC
//! and BROKER resources, with `validate_only`. Each resource is answered on its own:
//! INVALID_CONFIG for an unknown key or a bad value, INVALID_REQUEST for a static
//! broker config or a key named twice, UNKNOWN_TOPIC_OR_PARTITION for a missing topic.

use std::rc::Rc;

use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::admin::AdminError;
use crate::configs::{self, Change, RESOURCE_BROKER, RESOURCE_GROUP, RESOURCE_TOPIC};
use crate::shard::Shard;

pub(crate) struct AlterConfigsHandler;
pub(crate) struct IncrementalAlterConfigsHandler;

async fn alter(
    shard: &Rc<Shard>,
    resource_type: i8,
    name: &str,
    change: Change,
    validate_only: bool,
) -> Result<(), AdminError> {
    match resource_type {
        RESOURCE_TOPIC => configs::alter_topic(shard, name, change, validate_only).await,
        RESOURCE_BROKER => configs::alter_broker(shard, name, change, validate_only).await,
        RESOURCE_GROUP => configs::alter_group(shard, name, change, validate_only).await,
        other => Err(AdminError::new(
            ResponseError::InvalidRequest,
            format!("configs of resource type {other} are not supported"),
        )),
    }
}

fn outcome(result: Result<(), AdminError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => (e.code.code(), Some(StrBytes::from_string(e.message))),
    }
}

impl Handler for AlterConfigsHandler {
    type Request = AlterConfigsRequest;
    type Response = AlterConfigsResponse;
    const VERSIONS: (i16, i16) = (0, 2);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: AlterConfigsRequest) -> Option<AlterConfigsResponse> {
        let mut responses = Vec::new();
        for resource in &request.resources {
            let change = Change::Replace(
                resource
                    .configs
                    .iter()
                    .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                    .collect(),
            );
            let name = resource.resource_name.as_str();
            let (code, message) =
                outcome(alter(&shard, resource.resource_type, name, change, request.validate_only).await);
            responses.push(
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone()),
            );
        }
        Some(AlterConfigsResponse::default().with_responses(responses))
    }
}

impl Handler for IncrementalAlterConfigsHandler {
    type Request = IncrementalAlterConfigsRequest;
    type Response = IncrementalAlterConfigsResponse;
    const VERSIONS: (i16, i16) = (0, 1);

    async fn handle(
        shard: Rc<Shard>,
        _: RequestContext,
        request: IncrementalAlterConfigsRequest,
    ) -> Option<IncrementalAlterConfigsResponse> {
        let mut responses = Vec::new();
        for resource in &request.resources {
            let change = Change::Ops(
                resource
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.to_string(),
                            c.config_operation,
                            c.value.as_ref().map(|v| v.to_string()),
                        )
                    })
                    .collect(),
            );
            let name = resource.resource_name.as_str();
            let (code, message) =
                outcome(alter(&shard, resource.resource_type, name, change, request.validate_only).await);
            responses.push(
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone()),
            );
        }
        Some(IncrementalAlterConfigsResponse::default().with_responses(responses))
    }
}
