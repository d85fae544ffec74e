//! ApiVersions (KIP-35, KIP-511): the versions Sluice serves, straight from the handler
//! table.

use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::{encode_response, supported, Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct ApiVersionsHandler;

impl Handler for ApiVersionsHandler {
    type Request = ApiVersionsRequest;
    type Response = ApiVersionsResponse;
    const VERSIONS: (i16, i16) = (0, 4);

    async fn handle(_: Rc<Shard>, _: RequestContext, _: ApiVersionsRequest) -> Option<ApiVersionsResponse> {
        Some(response(0))
    }
}

fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = supported()
        .into_iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// The v0 answer to an ApiVersions request newer than we serve.
pub(super) fn unsupported_version(correlation_id: i32) -> Option<crate::frame::Frame> {
    encode_response(correlation_id, 0, &response(ResponseError::UnsupportedVersion.code())).ok()
}
