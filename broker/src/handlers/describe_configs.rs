//! DescribeConfigs (KIP-133, KIP-226): every config of a TOPIC or BROKER resource with
//! its value, source, read-only flag, type, and (when asked) its synonyms in
//! precedence order. `configuration_keys` narrows the answer; unknown keys are left
//! out, as Kafka does. Other resource types get INVALID_REQUEST.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::admin::AdminError;
use crate::configs::{self, RESOURCE_BROKER, RESOURCE_GROUP, RESOURCE_TOPIC};
use crate::shard::Shard;

pub(crate) struct DescribeConfigsHandler;

impl Handler for DescribeConfigsHandler {
    type Request = DescribeConfigsRequest;
    type Response = DescribeConfigsResponse;
    const VERSIONS: (i16, i16) = (1, 4);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: DescribeConfigsRequest,
    ) -> Option<DescribeConfigsResponse> {
        let results = request
            .resources
            .iter()
            .map(|resource| {
                let name = resource.resource_name.as_str();
                let described = match resource.resource_type {
                    RESOURCE_TOPIC => configs::describe_topic(&shard, name),
                    RESOURCE_BROKER => configs::describe_broker(&shard, name),
                    RESOURCE_GROUP => configs::describe_group(&shard, name),
                    other => Err(AdminError::new(
                        ResponseError::InvalidRequest,
                        format!("configs of resource type {other} are not supported"),
                    )),
                };
                let result = DescribeConfigsResult::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
                match described {
                    Ok(all) => {
                        let wanted = |n: &str| {
                            resource
                                .configuration_keys
                                .as_ref()
                                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == n))
                        };
                        let configs = all
                            .into_iter()
                            .filter(|d| wanted(&d.name))
                            .map(|d| {
                                let synonyms = if request.include_synonyms {
                                    d.synonyms
                                        .into_iter()
                                        .map(|s| {
                                            DescribeConfigsSynonym::default()
                                                .with_name(StrBytes::from_string(s.name))
                                                .with_value(Some(StrBytes::from_string(s.value)))
                                                .with_source(s.source)
                                        })
                                        .collect()
                                } else {
                                    Vec::new()
                                };
                                DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_string(d.name))
                                    .with_value(d.value.map(StrBytes::from_string))
                                    .with_read_only(d.read_only)
                                    .with_config_source(d.source)
                                    .with_is_sensitive(false)
                                    .with_synonyms(synonyms)
                                    .with_config_type(if ctx.version() >= 3 { d.kind as i8 } else { 0 })
                            })
                            .collect();
                        result.with_configs(configs)
                    }
                    Err(e) => result
                        .with_error_code(e.code.code())
                        .with_error_message(Some(StrBytes::from_string(e.message))),
                }
            })
            .collect();
        Some(DescribeConfigsResponse::default().with_results(results))
    }
}
