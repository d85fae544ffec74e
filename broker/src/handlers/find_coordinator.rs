//! FindCoordinator: a group's coordinator is the broker leading the group's partition of
//! `__consumer_offsets` (created here on first use in a cluster, as Kafka does, so its
//! partitions spread over the brokers that have joined by then); a transactional id's is
//! the leader of its `__transaction_state` partition, created on first use the same
//! way. v4+ asks for several keys at once (KIP-699).

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Handler, RequestContext};
use crate::admin::{self, AdminError};
use crate::coordinator::Coordinator as _;
use crate::group::coordinator::GroupCoordinator;
use crate::shard::Shard;
use crate::txn::coordinator::TxnCoordinator;

/// Creates `__consumer_offsets` if no broker has yet.
async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<(), AdminError> {
    if shard.metadata().topic(GroupCoordinator::TOPIC).is_some() {
        return Ok(());
    }
    let mut topic = crate::group::offsets_topic(shard.config());
    // Kafka refuses to create it with fewer live brokers than the factor; Sluice caps
    // the factor instead (so a cluster's first group works while brokers still start),
    // and says so.
    let live = shard.metadata().brokers.len().max(1) as i16;
    if topic.replication_factor > live {
        tracing::warn!(
            wanted = topic.replication_factor,
            live,
            "creating {} with fewer replicas than offsets.topic.replication.factor: only {live} broker(s) are live",
            GroupCoordinator::TOPIC
        );
        topic.replication_factor = live;
    }
    let created = admin::create(shard, topic).await;
    match created {
        Err(e) if e.code != ResponseError::TopicAlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Creates `__transaction_state` if no broker has yet, with its replicas capped to the
/// live brokers (as for `__consumer_offsets`).
pub(crate) async fn ensure_transaction_state_topic(shard: &Rc<Shard>) -> Result<(), AdminError> {
    if shard.metadata().topic(TxnCoordinator::TOPIC).is_some() {
        return Ok(());
    }
    let live = shard.metadata().brokers.len().max(1) as i16;
    let topic = crate::txn::transaction_state_topic(shard.config(), live);
    if shard.config().controller != "local"
        && topic.replication_factor < shard.config().transaction_state_log_replication_factor
    {
        tracing::warn!(
            wanted = shard.config().transaction_state_log_replication_factor,
            live,
            "creating {} with fewer replicas than transaction.state.log.replication.factor",
            TxnCoordinator::TOPIC
        );
    }
    match admin::create(shard, topic).await {
        Err(e) if e.code != ResponseError::TopicAlreadyExists => Err(e),
        _ => Ok(()),
    }
}

pub(crate) struct FindCoordinatorHandler;

/// Key types: consumer and share groups, transactional ids (KIP-98), and KIP-932's
/// share-partition keys (`group:topicId:partition`, the share coordinator's).
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
const KEY_TYPE_SHARE: i8 = 2;

impl Handler for FindCoordinatorHandler {
    type Request = FindCoordinatorRequest;
    type Response = FindCoordinatorResponse;
    const VERSIONS: (i16, i16) = (0, 6);

    async fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: FindCoordinatorRequest,
    ) -> Option<FindCoordinatorResponse> {
        let valid = matches!(request.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION | KEY_TYPE_SHARE);
        if request.key_type == KEY_TYPE_GROUP {
            if let Err(e) = ensure_offsets_topic(&shard).await {
                tracing::warn!("cannot create {}: {}", GroupCoordinator::TOPIC, e.message);
            }
        }
        if request.key_type == KEY_TYPE_SHARE {
            let _ = crate::share::ensure_share_state_topic(&shard).await;
        }
        if request.key_type == KEY_TYPE_TRANSACTION {
            if let Err(e) = ensure_transaction_state_topic(&shard).await {
                tracing::warn!("cannot create {}: {}", TxnCoordinator::TOPIC, e.message);
            }
        }
        let find = |key: &str| {
            if !valid {
                return Err(ResponseError::InvalidRequest);
            }
            let metadata = shard.metadata();
            let tp = match request.key_type {
                KEY_TYPE_TRANSACTION => shard.cluster.coordinator_partition::<TxnCoordinator>(key),
                KEY_TYPE_SHARE => shard
                    .cluster
                    .coordinator_partition::<crate::share::state::ShareCoordinator>(key),
                _ => shard.cluster.coordinator_partition::<GroupCoordinator>(key),
            };
            metadata
                .partition(&tp.topic, tp.partition)
                .and_then(|s| metadata.brokers.get(&s.leader))
                .map(|b| (BrokerId(b.id), StrBytes::from_string(b.host.clone()), b.port as i32))
                .ok_or(ResponseError::CoordinatorNotAvailable)
        };
        if ctx.version() >= 4 {
            let coordinators = request
                .coordinator_keys
                .into_iter()
                .map(|key| match find(&key) {
                    Ok((node, host, port)) => Coordinator::default()
                        .with_key(key)
                        .with_node_id(node)
                        .with_host(host)
                        .with_port(port),
                    Err(e) => Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_error_code(e.code()),
                })
                .collect();
            return Some(FindCoordinatorResponse::default().with_coordinators(coordinators));
        }
        Some(match find(&request.key) {
            Ok((node, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(node)
                .with_host(host)
                .with_port(port),
            Err(e) => FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1)),
        })
    }
}
