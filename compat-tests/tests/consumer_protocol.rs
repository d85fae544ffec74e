//! The KIP-848 consumer group protocol as librdkafka 2.12 uses it
//! (`group.protocol=consumer`): the broker assigns, members reconcile incrementally,
//! commits check member epochs, and classic groups live beside new ones.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use compat_tests::{create_topic, Broker, RawClient};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, JoinGroupRequest, JoinGroupResponse,
    ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Members heartbeat every 300 ms (Kafka: 5 s), so reconciliation steps are quick.
const BROKER_FLAGS: &[&str] = &[
    "--group-consumer-heartbeat-interval-ms",
    "300",
    "--group-initial-rebalance-delay-ms",
    "300",
];

fn produce(broker: &Broker, topic: &str, count: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in 0..count {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&value))
            .expect("send");
        if i % 500 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn consumer(broker: &Broker, group: &str, protocol: &str) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", group)
        .set("group.protocol", protocol)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    if protocol == "classic" {
        config
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500");
    }
    config.create().expect("consumer")
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer (keeping what they read) until `done` holds for their
/// assignments, or panics.
fn poll_until(
    consumers: &[&BaseConsumer],
    got: &mut Vec<(usize, i32, i64)>,
    what: &str,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        for (i, c) in consumers.iter().enumerate() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(30)) {
                got.push((i, m.partition(), m.offset()));
            }
        }
        let now: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();
        if done(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: assignments are {now:?}");
    }
}

fn split(sets: &[BTreeSet<i32>], partitions: usize) -> bool {
    let all: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    let disjoint = sets.iter().map(|s| s.len()).sum::<usize>() == all.len();
    let even = sets.iter().all(|s| s.len() == partitions / sets.len());
    disjoint && even && all.len() == partitions
}

#[tokio::test]
async fn three_members_split_six_partitions_and_a_leaving_members_partitions_move() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "kip848", 6).await;
    produce(&broker, "kip848", 3000);
    let members: Vec<BaseConsumer> = (0..3).map(|_| consumer(&broker, "new-protocol", "consumer")).collect();
    for m in &members {
        m.subscribe(&["kip848"]).expect("subscribe");
    }
    let mut got = Vec::new();
    let refs: Vec<&BaseConsumer> = members.iter().collect();
    poll_until(&refs, &mut got, "3 members of 6 partitions", |a| split(a, 6));
    let mut members = members;
    let leaving = members.pop().expect("a third member");
    drop(leaving); // close: a heartbeat with epoch -1
    let refs: Vec<&BaseConsumer> = members.iter().collect();
    poll_until(&refs, &mut got, "the leaver's partitions move to the others", |a| {
        split(a, 6)
    });
    // The two left read everything that is left, with no partition read by two at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unique: BTreeSet<(i32, i64)> = got.iter().map(|(_, p, o)| (*p, *o)).collect();
        if unique.len() == 3000 {
            break;
        }
        assert!(Instant::now() < deadline, "read {} of 3000", unique.len());
        for (i, c) in refs.iter().enumerate() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(30)) {
                got.push((i, m.partition(), m.offset()));
            }
        }
    }
    let mut client = RawClient::connect(&broker.addr);
    let described: ConsumerGroupDescribeResponse = client.call(
        ApiKey::ConsumerGroupDescribe,
        0,
        &ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_static_str("new-protocol"))]),
    );
    let group = &described.groups[0];
    assert_eq!(group.error_code, 0);
    assert_eq!(group.members.len(), 2);
    assert_eq!(group.assignor_name.as_str(), "uniform");
    assert!(
        group.group_epoch >= 3,
        "joins and a leave moved the epoch: {}",
        group.group_epoch
    );
    let listed: ListGroupsResponse = client.call(
        ApiKey::ListGroups,
        5,
        &ListGroupsRequest::default().with_types_filter(vec![StrBytes::from_static_str("consumer")]),
    );
    assert!(listed
        .groups
        .iter()
        .any(|g| g.group_id.as_str() == "new-protocol" && g.group_type.as_str() == "consumer"));
}

#[tokio::test]
async fn commits_check_the_member_epoch_and_survive_a_restart() {
    let mut broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "resume", 2).await;
    produce(&broker, "resume", 200);
    {
        let c = consumer(&broker, "resumers", "consumer");
        c.subscribe(&["resume"]).expect("subscribe");
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while read < 120 {
            assert!(Instant::now() < deadline, "read {read}");
            if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                read += 1;
            }
        }
        c.commit_consumer_state(CommitMode::Sync)
            .expect("commit with the member epoch");
    }
    broker.kill9();
    broker.restart();
    let c = consumer(&broker, "resumers", "consumer");
    c.subscribe(&["resume"]).expect("subscribe");
    let mut rest = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rest.len() < 80 && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            rest.insert((m.partition(), m.offset()));
        }
    }
    assert_eq!(rest.len(), 80, "the restarted member resumes at the committed offsets");
}

#[tokio::test]
async fn classic_and_consumer_groups_live_side_by_side() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "both", 3).await;
    produce(&broker, "both", 300);
    let new = consumer(&broker, "new-group", "consumer");
    let old = consumer(&broker, "old-group", "classic");
    new.subscribe(&["both"]).expect("subscribe");
    old.subscribe(&["both"]).expect("subscribe");
    let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
    let deadline = Instant::now() + Duration::from_secs(45);
    while (a.len() < 300 || b.len() < 300) && Instant::now() < deadline {
        if let Some(Ok(m)) = new.poll(Duration::from_millis(30)) {
            a.insert((m.partition(), m.offset()));
        }
        if let Some(Ok(m)) = old.poll(Duration::from_millis(30)) {
            b.insert((m.partition(), m.offset()));
        }
    }
    assert_eq!((a.len(), b.len()), (300, 300), "each group reads every message");
    // A member of another classic protocol type cannot join the consumer group.
    let mut client = RawClient::connect(&broker.addr);
    let join: JoinGroupResponse = client.call(
        ApiKey::JoinGroup,
        5,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("new-group")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_static_str(""))
            .with_protocol_type(StrBytes::from_static_str("connect"))
            .with_protocols(vec![
                kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("default"))
                    .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
            ]),
    );
    assert_eq!(join.error_code, ResponseError::InconsistentGroupProtocol.code());
}

/// KIP-848's online upgrade: classic consumers of a group keep consuming while a
/// `group.protocol=consumer` member joins; the group becomes a consumer group, the
/// coordinator assigns the classic members too, and when they leave the new member
/// holds everything.
#[tokio::test]
async fn a_classic_group_upgrades_in_place_when_a_new_protocol_member_joins() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "rolling", 4).await;
    produce(&broker, "rolling", 400);
    let old: Vec<BaseConsumer> = (0..2).map(|_| consumer(&broker, "rolling-group", "classic")).collect();
    for c in &old {
        c.subscribe(&["rolling"]).expect("subscribe");
    }
    let mut got = Vec::new();
    let refs: Vec<&BaseConsumer> = old.iter().collect();
    poll_until(&refs, &mut got, "two classic members split 4 partitions", |a| {
        split(a, 4)
    });
    let new = consumer(&broker, "rolling-group", "consumer");
    new.subscribe(&["rolling"]).expect("subscribe");
    let all: Vec<&BaseConsumer> = old.iter().chain(std::iter::once(&new)).collect();
    poll_until(
        &all,
        &mut got,
        "three members, classic and new, share the partitions",
        |a| {
            let union: BTreeSet<i32> = a.iter().flatten().copied().collect();
            let disjoint = a.iter().map(|s| s.len()).sum::<usize>() == union.len();
            disjoint && union.len() == 4 && a.iter().all(|s| !s.is_empty())
        },
    );
    let mut client = RawClient::connect(&broker.addr);
    let described: ConsumerGroupDescribeResponse = client.call(
        ApiKey::ConsumerGroupDescribe,
        1,
        &ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_static_str("rolling-group"))]),
    );
    let kinds: BTreeSet<i8> = described.groups[0].members.iter().map(|m| m.member_type).collect();
    assert_eq!(
        kinds,
        [0, 1].into(),
        "classic (0) and consumer (1) members in one group"
    );
    drop(old);
    poll_until(
        &[&new],
        &mut got,
        "the new member holds everything once the classic ones left",
        |a| a[0].len() == 4,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unique: BTreeSet<(i32, i64)> = got.iter().map(|(_, p, o)| (*p, *o)).collect();
        if unique.len() == 400 {
            break;
        }
        assert!(Instant::now() < deadline, "read {} of 400", unique.len());
        if let Some(Ok(m)) = new.poll(Duration::from_millis(50)) {
            got.push((2, m.partition(), m.offset()));
        }
    }
}
