//! DeleteTopics: by name (v0–5) or by topic id (v6+); the data is removed from disk.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::admin;
use crate::shard::Shard;

pub(crate) struct DeleteTopicsHandler;

impl Handler for DeleteTopicsHandler {
    type Request = DeleteTopicsRequest;
    type Response = DeleteTopicsResponse;
    const VERSIONS: (i16, i16) = (1, 6);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: DeleteTopicsRequest,
    ) -> Option<DeleteTopicsResponse> {
        // v6 moved the names into `topics`, where a name or an id identifies each topic.
        let wanted: Vec<(Option<String>, uuid::Uuid)> = if ctx.version() >= 6 {
            request
                .topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
                .collect()
        } else {
            request
                .topic_names
                .iter()
                .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let mut responses = Vec::new();
        for (name, id) in wanted {
            let metadata = shard.metadata();
            let found = match &name {
                Some(name) => metadata
                    .topic(name)
                    .cloned()
                    .ok_or(ResponseError::UnknownTopicOrPartition),
                None => metadata.topic_by_id(id).cloned().ok_or(ResponseError::UnknownTopicId),
            };
            let result = match found {
                Ok(topic) if topic.internal => Err((
                    ResponseError::InvalidTopicException,
                    format!("{} is internal", topic.name),
                )),
                Ok(topic) => admin::delete_topic(&shard, &topic.name)
                    .await
                    .map_err(|e| (e.code, e.message)),
                Err(code) => Err((code, "no such topic".to_string())),
            };
            let (name, id, error) = match result {
                Ok(topic) => (Some(topic.name), topic.id, None),
                Err((code, message)) => (name, id, Some((code, message))),
            };
            responses.push(
                DeletableTopicResult::default()
                    .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                    .with_topic_id(id)
                    .with_error_code(error.as_ref().map(|e| e.0.code()).unwrap_or(0))
                    .with_error_message(error.map(|e| StrBytes::from_string(e.1))),
            );
        }
        Some(DeleteTopicsResponse::default().with_responses(responses))
    }
}
