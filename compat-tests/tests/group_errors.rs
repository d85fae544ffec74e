//! Bad group requests get Kafka's error codes, and the broker keeps serving.

use bytes::Bytes;
use compat_tests::{Broker, RawClient};
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::delete_groups_response::DeleteGroupsResponse;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::DescribeGroupsResponse;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use kafka_protocol::messages::join_group_response::JoinGroupResponse;
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::ListGroupsResponse;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_commit_response::OffsetCommitResponse;
use kafka_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{ApiKey, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;

const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const INVALID_REQUEST: i16 = 42;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn join(group: &str, member: &str, instance: Option<&str>, session_ms: i32) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(session_ms)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_group_instance_id(instance.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(Bytes::from_static(b"m"))])
}

/// Joins `group` as a new dynamic member and returns (member id, generation).
fn join_fully(client: &mut RawClient, group: &str) -> (String, i32) {
    let first: JoinGroupResponse = client.call(ApiKey::JoinGroup, 5, &join(group, "", None, 10_000));
    assert_eq!(
        first.error_code, MEMBER_ID_REQUIRED,
        "KIP-394: the first join only hands out a member id"
    );
    let member = first.member_id.to_string();
    let joined: JoinGroupResponse = client.call(ApiKey::JoinGroup, 5, &join(group, &member, None, 10_000));
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader.as_str(), member, "the only member leads");
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(s(&member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&member))
            .with_assignment(Bytes::from_static(b"all yours"))]);
    let synced: SyncGroupResponse = client.call(ApiKey::SyncGroup, 3, &sync);
    assert_eq!((synced.error_code, synced.assignment.as_ref()), (0, &b"all yours"[..]));
    (member, joined.generation_id)
}

fn commit(group: &str, member: &str, generation: i32, topic: &str) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)])])
}

#[test]
fn group_requests_get_kafkas_error_codes() {
    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0", "--num-partitions", "1"]);
    let mut c = RawClient::connect(&broker.addr);

    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join("", "", None, 10_000));
    assert_eq!(r.error_code, INVALID_GROUP_ID, "empty group id");
    let long = "g".repeat(40_000);
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 6, &join(&long, "", None, 10_000));
    assert_eq!(r.error_code, INVALID_GROUP_ID, "group id longer than Kafka can store");
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join("g", "", None, 1_000));
    assert_eq!(
        r.error_code, INVALID_SESSION_TIMEOUT,
        "below group.min.session.timeout.ms"
    );
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join("g", "nobody", None, 10_000));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID, "a member id the group never gave out");

    let (member, generation) = join_fully(&mut c, "g");
    let hb = |member: &str, generation: i32| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(generation)
            .with_member_id(s(member))
    };
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &hb(&member, generation));
    assert_eq!(r.error_code, 0);
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &hb("stranger", generation));
    assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &hb(&member, generation - 1));
    assert_eq!(r.error_code, ILLEGAL_GENERATION);

    // Commits need the current generation from a member; the topic is auto-created.
    let _: kafka_protocol::messages::MetadataResponse = c.call(
        ApiKey::Metadata,
        9,
        &kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(s("t")))),
        ])),
    );
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &commit("g", &member, generation + 7, "t"));
    assert_eq!(
        r.topics[0].partitions[0].error_code, ILLEGAL_GENERATION,
        "stale generation"
    );
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &commit("g", "stranger", generation, "t"));
    assert_eq!(r.topics[0].partitions[0].error_code, UNKNOWN_MEMBER_ID);
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &commit("g", &member, generation, "t"));
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    // A different protocol type cannot join a group of consumers.
    let mut connect = join("g", "", None, 10_000).with_protocol_type(s("connect"));
    connect.protocols[0].name = s("other");
    let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &connect);
    assert_eq!(r.error_code, INCONSISTENT_GROUP_PROTOCOL);

    let r: DeleteGroupsResponse = c.call(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g")), GroupId(s("none"))]),
    );
    assert_eq!(r.results[0].error_code, NON_EMPTY_GROUP);
    assert_eq!(r.results[1].error_code, GROUP_ID_NOT_FOUND);

    let r: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        2,
        &FindCoordinatorRequest::default().with_key(s("g")).with_key_type(9),
    );
    assert_eq!(r.error_code, INVALID_REQUEST, "unknown key type");
    let r: FindCoordinatorResponse = c.call(
        ApiKey::FindCoordinator,
        2,
        &FindCoordinatorRequest::default().with_key(s("g")),
    );
    assert_eq!((r.error_code, r.node_id.0), (0, 1));

    let r: DescribeGroupsResponse = c.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    let g = &r.groups[0];
    assert_eq!(
        (g.group_state.as_str(), g.protocol_data.as_str(), g.members.len()),
        ("Stable", "range", 1)
    );
    assert_eq!(g.members[0].member_assignment.as_ref(), b"all yours");
    let r: ListGroupsResponse = c.call(
        ApiKey::ListGroups,
        4,
        &ListGroupsRequest::default().with_states_filter(vec![s("Stable")]),
    );
    assert_eq!(
        r.groups.iter().map(|g| g.group_id.as_str()).collect::<Vec<_>>(),
        vec!["g"]
    );
}

#[test]
fn a_duplicate_static_member_is_fenced() {
    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let mut c = RawClient::connect(&broker.addr);
    let first: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join("s", "", Some("pod-a"), 10_000));
    assert_eq!(first.error_code, 0, "static members skip MEMBER_ID_REQUIRED");
    let old = first.member_id.to_string();
    // The same instance id joins again (a restarted pod): it gets a new member id...
    let second: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join("s", "", Some("pod-a"), 10_000));
    let new = second.member_id.to_string();
    assert_ne!(new, old);
    // ...and the old incarnation is fenced.
    let hb = HeartbeatRequest::default()
        .with_group_id(GroupId(s("s")))
        .with_generation_id(second.generation_id)
        .with_member_id(s(&old))
        .with_group_instance_id(Some(s("pod-a")));
    let r: HeartbeatResponse = c.call(ApiKey::Heartbeat, 3, &hb);
    assert_eq!(r.error_code, FENCED_INSTANCE_ID);
}

#[test]
fn pipelined_commits_keep_the_last_offset() {
    use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
    use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponse;
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::Encodable;
    let broker = Broker::start(&["--num-partitions", "1"]);
    let mut c = RawClient::connect(&broker.addr);
    let _: kafka_protocol::messages::MetadataResponse = c.call(
        ApiKey::Metadata,
        9,
        &kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(s("p")))),
        ])),
    );
    // Twenty commits sent back to back, as librdkafka's async commits are; each waits
    // for the disk, and their waits may end in any order. The last one sent must win.
    for offset in 1..=20i64 {
        let mut request = commit("simple", "", -1, "p");
        request.topics[0].partitions[0].committed_offset = offset;
        let mut frame = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::OffsetCommit as i16)
            .with_request_api_version(8)
            .with_correlation_id(offset as i32)
            .encode(&mut frame, ApiKey::OffsetCommit.request_header_version(8))
            .unwrap();
        request.encode(&mut frame, 8).unwrap();
        c.send_frame(&frame);
    }
    for _ in 1..=20 {
        c.read_frame().expect("commit answer");
    }
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("simple")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("p")))
            .with_partition_indexes(vec![0])]));
    let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &fetch);
    assert_eq!(r.topics[0].partitions[0].committed_offset, 20);
}
