//! DeleteGroups: removes empty groups and their offsets (NON_EMPTY_GROUP while members
//! remain, GROUP_ID_NOT_FOUND for unknown groups).

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{ask_group, error_code, Handler, RequestContext};
use crate::shard::Shard;

pub(crate) struct DeleteGroupsHandler;

impl Handler for DeleteGroupsHandler {
    type Request = DeleteGroupsRequest;
    type Response = DeleteGroupsResponse;
    const VERSIONS: (i16, i16) = (0, 2);

    async fn handle(shard: Rc<Shard>, _: RequestContext, request: DeleteGroupsRequest) -> Option<DeleteGroupsResponse> {
        let mut results = Vec::new();
        for group_id in request.groups_names {
            let id = group_id.to_string();
            let error = ask_group(
                &shard,
                &group_id,
                move |s| async move { s.groups.delete(&*s, &id).await },
            )
            .await
            .unwrap_or_else(Some);
            let code = error_code(error);
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id)
                    .with_error_code(code),
            );
        }
        Some(DeleteGroupsResponse::default().with_results(results))
    }
}
