//! The handler table: one module per Kafka API, each declaring its version range. This
//! table is the only source of the ApiVersions answer, so Sluice never advertises an
//! API it does not route (STYLE.md, "One handler per API").

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod api_versions;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_share_group_offsets;
mod describe_transactions;
mod elect_leaders;
mod end_txn;
mod fetch;
pub(crate) mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod partition_reassignments;
mod produce;
mod share_acknowledge;
pub(crate) mod share_fetch;
mod share_group_describe;
mod share_group_heartbeat;
mod share_group_state;
mod sync_group;
mod txn_offset_commit;
mod write_txn_markers;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::frame::{Frame, Splice};
use crate::shard::Shard;

/// Who asked: the request header and the client's address.
pub(crate) struct RequestContext {
    pub header: RequestHeader,
    pub peer: SocketAddr,
}

impl RequestContext {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn client_id(&self) -> String {
        self.header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default()
    }
}

/// One Kafka API: the request it decodes, the versions it serves, and what it does.
pub(crate) trait Handler {
    type Request: Decodable;
    type Response: Encodable + HeaderVersion;
    /// Lowest and highest version served; within what kafka-protocol can decode.
    const VERSIONS: (i16, i16);
    /// The response, or None when Kafka sends none (Produce with acks=0).
    fn handle(
        shard: Rc<Shard>,
        ctx: RequestContext,
        request: Self::Request,
    ) -> impl Future<Output = Option<Self::Response>>;

    /// Buffers of record data in `response` that are written to the socket as they
    /// are instead of being copied into the frame (Fetch, ShareFetch).
    fn shared(_response: &Self::Response) -> Vec<Bytes> {
        Vec::new()
    }
}

/// A decoded request on its way to an encoded response frame (or to no answer).
pub type Pending = Pin<Box<dyn Future<Output = Option<Frame>>>>;

/// Why a frame cannot be answered: the connection is closed, as Kafka does.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is too short for a request header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{0:?} version {1} is not supported")]
    UnsupportedVersion(ApiKey, i16),
    #[error("cannot decode {0:?} v{1}: {2}")]
    Decode(ApiKey, i16, String),
}

macro_rules! handler_table {
    ($($key:ident => $handler:ty),* $(,)?) => {
        /// (API key, min version, max version) of every routed API.
        pub fn supported() -> Vec<(i16, i16, i16)> {
            vec![$((ApiKey::$key as i16, <$handler as Handler>::VERSIONS.0, <$handler as Handler>::VERSIONS.1)),*]
        }

        fn route(shard: Rc<Shard>, key: ApiKey, ctx: RequestContext, body: Bytes) -> Result<Pending, FrameError> {
            match key {
                $(ApiKey::$key => run::<$handler>(shard, key, ctx, body),)*
                _ => Err(FrameError::UnknownApi(key as i16)),
            }
        }
    };
}

handler_table! {
    Produce => produce::ProduceHandler,
    Fetch => fetch::FetchHandler,
    ListOffsets => list_offsets::ListOffsetsHandler,
    Metadata => metadata::MetadataHandler,
    ApiVersions => api_versions::ApiVersionsHandler,
    CreateTopics => create_topics::CreateTopicsHandler,
    DeleteTopics => delete_topics::DeleteTopicsHandler,
    DeleteRecords => delete_records::DeleteRecordsHandler,
    CreatePartitions => create_partitions::CreatePartitionsHandler,
    InitProducerId => init_producer_id::InitProducerIdHandler,
    FindCoordinator => find_coordinator::FindCoordinatorHandler,
    JoinGroup => join_group::JoinGroupHandler,
    SyncGroup => sync_group::SyncGroupHandler,
    Heartbeat => heartbeat::HeartbeatHandler,
    LeaveGroup => leave_group::LeaveGroupHandler,
    OffsetCommit => offset_commit::OffsetCommitHandler,
    OffsetFetch => offset_fetch::OffsetFetchHandler,
    DescribeGroups => describe_groups::DescribeGroupsHandler,
    ListGroups => list_groups::ListGroupsHandler,
    DeleteGroups => delete_groups::DeleteGroupsHandler,
    OffsetDelete => offset_delete::OffsetDeleteHandler,
    DescribeCluster => describe_cluster::DescribeClusterHandler,
    DescribeConfigs => describe_configs::DescribeConfigsHandler,
    DescribeLogDirs => describe_log_dirs::DescribeLogDirsHandler,
    AlterConfigs => alter_configs::AlterConfigsHandler,
    IncrementalAlterConfigs => alter_configs::IncrementalAlterConfigsHandler,
    OffsetForLeaderEpoch => offset_for_leader_epoch::OffsetForLeaderEpochHandler,
    ElectLeaders => elect_leaders::ElectLeadersHandler,
    AlterPartitionReassignments => partition_reassignments::AlterPartitionReassignmentsHandler,
    ListPartitionReassignments => partition_reassignments::ListPartitionReassignmentsHandler,
    AddPartitionsToTxn => add_partitions_to_txn::AddPartitionsToTxnHandler,
    AddOffsetsToTxn => add_offsets_to_txn::AddOffsetsToTxnHandler,
    EndTxn => end_txn::EndTxnHandler,
    WriteTxnMarkers => write_txn_markers::WriteTxnMarkersHandler,
    TxnOffsetCommit => txn_offset_commit::TxnOffsetCommitHandler,
    DescribeTransactions => describe_transactions::DescribeTransactionsHandler,
    ListTransactions => list_transactions::ListTransactionsHandler,
    ConsumerGroupHeartbeat => consumer_group_heartbeat::ConsumerGroupHeartbeatHandler,
    ConsumerGroupDescribe => consumer_group_describe::ConsumerGroupDescribeHandler,
    ShareGroupHeartbeat => share_group_heartbeat::ShareGroupHeartbeatHandler,
    ShareGroupDescribe => share_group_describe::ShareGroupDescribeHandler,
    ShareFetch => share_fetch::ShareFetchHandler,
    ShareAcknowledge => share_acknowledge::ShareAcknowledgeHandler,
    DescribeShareGroupOffsets => describe_share_group_offsets::DescribeShareGroupOffsetsHandler,
    ReadShareGroupState => share_group_state::ReadShareGroupStateHandler,
    WriteShareGroupState => share_group_state::WriteShareGroupStateHandler,
}

/// Decodes one request frame (without its length prefix) and returns the work that
/// answers it. Errors mean the connection must close.
pub fn dispatch(shard: &Rc<Shard>, peer: SocketAddr, mut frame: Bytes) -> Result<Pending, FrameError> {
    // api_key, api_version and correlation_id must be there before anything is read.
    if frame.len() < 8 {
        return Err(FrameError::Short(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| FrameError::UnknownApi(raw_key))?;
    let Some((_, min, max)) = supported().into_iter().find(|(k, _, _)| *k == raw_key) else {
        return Err(FrameError::UnknownApi(raw_key));
    };
    if key == ApiKey::ApiVersions && version > max {
        // KIP-511: answer a too-new ApiVersions with UNSUPPORTED_VERSION in a v0 body so
        // the client can retry with a version both sides know.
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        return Ok(Box::pin(std::future::ready(api_versions::unsupported_version(
            correlation_id,
        ))));
    }
    if version < min || version > max {
        return Err(FrameError::UnsupportedVersion(key, version));
    }
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(|e| FrameError::Decode(key, version, format!("header: {e}")))?;
    route(shard.clone(), key, RequestContext { header, peer }, frame)
}

fn run<H: Handler + 'static>(
    shard: Rc<Shard>,
    key: ApiKey,
    ctx: RequestContext,
    mut body: Bytes,
) -> Result<Pending, FrameError>
where
    H::Request: 'static,
{
    let version = ctx.version();
    let request =
        H::Request::decode(&mut body, version).map_err(|e| FrameError::Decode(key, version, e.to_string()))?;
    Ok(Box::pin(async move {
        let correlation_id = ctx.header.correlation_id;
        let started = tokio::time::Instant::now();
        let metrics_shard = shard.clone();
        let response = H::handle(shard, ctx, request).await;
        metrics_shard
            .metrics
            .borrow_mut()
            .request(key as i16, started.elapsed());
        let response = response?;
        match encode_sharing(correlation_id, version, &response, H::shared(&response)) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!(api = ?key, version, "cannot encode response: {e}");
                None
            }
        }
    }))
}

/// Length prefix, response header, body.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<Frame, String> {
    encode_sharing(correlation_id, version, body, Vec::new())
}

/// The same, with the slices of `shared` that the body holds going out as they are.
fn encode_sharing<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
    shared: Vec<Bytes>,
) -> Result<Frame, String> {
    let header_version = R::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(|e| e.to_string())?
        + body.compute_size(version).map_err(|e| e.to_string())?;
    let size = i32::try_from(size).map_err(|_| format!("a response of {size} bytes is too large"))?;
    let mut buf = Splice::new(4 + size as usize, shared);
    buf.put_i32(size);
    header.encode(&mut buf, header_version).map_err(|e| e.to_string())?;
    body.encode(&mut buf, version).map_err(|e| e.to_string())?;
    Ok(buf.finish())
}

/// Runs `work` on the shard that coordinates `group_id` and returns its answer, or why
/// this broker cannot (NOT_COORDINATOR and the like).
pub(crate) async fn ask_group<T, F, Fut>(
    shard: &Rc<Shard>,
    group_id: &str,
    work: F,
) -> Result<T, kafka_protocol::ResponseError>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    crate::router::ask::<crate::group::coordinator::GroupCoordinator, _, _, _>(shard, group_id, work).await
}

/// The leader and leader epoch a client should move to after NOT_LEADER_OR_FOLLOWER or
/// FENCED_LEADER_EPOCH (KIP-951's `current_leader`); None for other answers.
pub(crate) fn moved_leader(
    metadata: &sluice_controller::ClusterMetadata,
    error: Option<kafka_protocol::ResponseError>,
    topic: &str,
    partition: i32,
) -> Option<(i32, i32)> {
    use kafka_protocol::ResponseError::{FencedLeaderEpoch, NotLeaderOrFollower};
    if !matches!(error, Some(NotLeaderOrFollower | FencedLeaderEpoch)) {
        return None;
    }
    metadata
        .partition(topic, partition)
        .filter(|s| s.leader != sluice_controller::NO_LEADER)
        .map(|s| (s.leader, s.leader_epoch))
}

/// The controller id Metadata and DescribeCluster give clients: the broker running the
/// controller duty, or this broker while none does (a cluster's first second, or
/// after the holder died). Admin clients send CreateTopics and the like to that id, and
/// any broker can serve them; with -1 librdkafka waits for a metadata refresh that
/// names one, which made a new cluster's first CreateTopics time out. Kafka in KRaft
/// mode likewise answers with an alive broker.
pub(crate) fn controller_for_clients(shard: &Shard, metadata: &sluice_controller::ClusterMetadata) -> i32 {
    if metadata.brokers.contains_key(&metadata.controller_id) {
        metadata.controller_id
    } else {
        shard.cluster.me.id
    }
}

/// Helpers shared by handlers.
pub(crate) fn error_code(error: Option<kafka_protocol::ResponseError>) -> i16 {
    error.map(|e| e.code()).unwrap_or(0)
}

/// KIP-588: clients of a transactional API older than `fenced_since` know no
/// PRODUCER_FENCED; Kafka answers them INVALID_PRODUCER_EPOCH.
pub(crate) fn fenced_for(version: i16, fenced_since: i16, error: Option<kafka_protocol::ResponseError>) -> i16 {
    use kafka_protocol::ResponseError::{InvalidProducerEpoch, ProducerFenced};
    match error {
        Some(ProducerFenced) if version < fenced_since => InvalidProducerEpoch.code(),
        other => error_code(other),
    }
}
