//! Cluster mode: a real etcd (Debian's `etcd-server`) and several real `sluice`
//! processes on loopback, driven by real clients (rdkafka, kcat, kafka-python,
//! confluent-kafka) and exact wire requests. What a user of several brokers sees:
//! every broker listed, leadership spread, keyed data back exactly, a consumer group
//! surviving its coordinator's crash, a killed broker leaving and returning, an etcd
//! outage that stops changes but not traffic, and a duplicate node id refused.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compat_tests::history::{self, Record};
use compat_tests::{Broker, Etcd, RawClient};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::alter_partition_reassignments_response::AlterPartitionReassignmentsResponse;
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreateTopicsRequest,
};
use kafka_protocol::messages::create_topics_response::CreateTopicsResponse;
use kafka_protocol::messages::elect_leaders_request::{ElectLeadersRequest, TopicPartitions};
use kafka_protocol::messages::elect_leaders_response::ElectLeadersResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::FindCoordinatorResponse;
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsResponse;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsRequest;
use kafka_protocol::messages::list_partition_reassignments_response::ListPartitionReassignmentsResponse;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const LEADER_NOT_AVAILABLE: i16 = 5;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const NOT_COORDINATOR: i16 = 16;
const UNKNOWN_MEMBER_ID: i16 = 25;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ELECTION_NOT_NEEDED: i16 = 84;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// Short enough that tests of a dead broker wait little, long enough for a loaded
/// 2-core machine to renew its leases in time.
const SESSION_TIMEOUT_MS: u64 = 3000;

/// etcd and `n` brokers (node ids 1..=n) under a prefix of their own.
struct Cluster {
    /// Kept for its lifetime: dropping it stops etcd.
    _etcd: Etcd,
    brokers: Vec<Broker>,
}

impl Cluster {
    fn start(n: i32, extra: &[&str]) -> Cluster {
        Cluster::start_with_session(n, SESSION_TIMEOUT_MS, extra)
    }

    fn start_with_session(n: i32, session_timeout_ms: u64, extra: &[&str]) -> Cluster {
        let etcd = Etcd::start();
        let url = etcd.url("it");
        let session = session_timeout_ms.to_string();
        let brokers = (1..=n)
            .map(|id| {
                let id = id.to_string();
                let mut args = vec![
                    "--controller",
                    &url,
                    "--node-id",
                    &id,
                    "--broker-session-timeout-ms",
                    &session,
                    "--group-initial-rebalance-delay-ms",
                    "500",
                ];
                args.extend_from_slice(extra);
                Broker::start(&args)
            })
            .collect();
        let cluster = Cluster { _etcd: etcd, brokers };
        cluster.wait_for(|m| m.brokers.len() == n as usize, "every broker registered");
        cluster
    }

    /// Broker with node id `id`.
    fn broker(&mut self, id: i32) -> &mut Broker {
        &mut self.brokers[id as usize - 1]
    }

    fn addr(&self, id: i32) -> String {
        self.brokers[id as usize - 1].addr.clone()
    }

    fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.addr.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Metadata (v12) from broker 1 for `topics` (None: every topic).
    fn metadata(&self, topics: Option<&[&str]>) -> MetadataResponse {
        metadata_from(&self.addr(1), topics)
    }

    /// Waits (up to 30 s) until broker 1's metadata satisfies `done`.
    fn wait_for(&self, done: impl Fn(&MetadataResponse) -> bool, what: &str) -> MetadataResponse {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.metadata(None);
            if done(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}\n{m:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn metadata_from(addr: &str, topics: Option<&[&str]>) -> MetadataResponse {
    let request = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    RawClient::connect(addr).call(ApiKey::Metadata, 12, &request)
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// (leader, leader epoch, error) of each partition of `topic`, by partition.
fn leaders(m: &MetadataResponse, topic: &str) -> BTreeMap<i32, (i32, i32, i16)> {
    m.topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, (p.leader_id.0, p.leader_epoch, p.error_code)))
        .collect()
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, rf: i32) -> Result<(), String> {
    let results = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(rf))],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .map_err(|e| e.to_string())?;
    match &results[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(format!("{code:?}")),
    }
}

/// Counts deliveries, failures, and when each delivery was acknowledged.
#[derive(Default, Clone)]
struct Deliveries {
    failed: Arc<AtomicUsize>,
    acked_at: Arc<Mutex<Vec<Instant>>>,
}
impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.acked_at.lock().expect("lock").push(Instant::now()),
            Err((e, _)) => {
                eprintln!("delivery failed: {e}");
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn producer(bootstrap: &str) -> (BaseProducer<Deliveries>, Deliveries) {
    let context = Deliveries::default();
    let producer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        // Idempotent, as Kafka's own clients are by default: producer ids come from etcd.
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(context.clone())
        .expect("producer");
    (producer, context)
}

fn send(producer: &BaseProducer<Deliveries>, record: BaseRecord<'_, str, str>) {
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send failed: {e}"),
        }
    }
}

/// Every message of `partitions` from the beginning, until `expected` arrived.
fn consume(bootstrap: &str, topic: &str, partitions: i32, expected: usize) -> Vec<(i32, i64, String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "compat-tests-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut got = Vec::with_capacity(expected);
    let deadline = Instant::now() + Duration::from_secs(90);
    while got.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            got.push((m.partition(), m.offset(), key, value));
        }
    }
    got
}

#[tokio::test]
async fn three_brokers_share_leadership_and_carry_keyed_messages_exactly() {
    let cluster = Cluster::start(3, &[]);
    let bootstrap = cluster.addr(1);
    create_topic(&bootstrap, "spread", 12, 1).await.expect("create");
    let m = cluster.wait_for(
        |m| {
            leaders(m, "spread")
                .values()
                .filter(|(l, _, e)| *l > 0 && *e == 0)
                .count()
                == 12
        },
        "12 partitions with leaders",
    );
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    for (leader, _, _) in leaders(&m, "spread").values() {
        *led.entry(*leader).or_default() += 1;
    }
    assert_eq!(led, BTreeMap::from([(1, 4), (2, 4), (3, 4)]), "leaders spread evenly");
    assert_eq!(m.brokers.len(), 3);
    let cluster_ids: BTreeSet<String> = (1..=3)
        .map(|id| {
            metadata_from(&cluster.addr(id), None)
                .cluster_id
                .map(|c| c.to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(cluster_ids.len(), 1, "one cluster id: {cluster_ids:?}");

    // kcat against another broker lists all three.
    let listing = Command::new("kcat")
        .args(["-b", &cluster.addr(2), "-L"])
        .output()
        .expect("kcat");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("3 brokers:"), "{listing}");
    for id in 1..=3 {
        assert!(
            listing.contains(&format!("broker {id} at {}", cluster.addr(id))),
            "{listing}"
        );
    }

    // The Python admin clients see the same cluster.
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/cluster_admin.py"))
        .arg(&bootstrap)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    assert_eq!(seen["confluent_brokers"], serde_json::json!([1, 2, 3]), "{seen}");
    assert_eq!(seen["kafka_python_brokers"], serde_json::json!([1, 2, 3]), "{seen}");
    assert!(matches!(seen["controller"].as_i64(), Some(1..=3)), "{seen}");
    assert_eq!(
        seen["cluster_id"].as_str(),
        m.cluster_id.as_ref().map(|s| s.as_str()),
        "{seen}"
    );

    // 60,000 keyed messages through one bootstrap broker, back exactly.
    let (producer, deliveries) = producer(&bootstrap);
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..60_000 {
        let key = format!("key-{}", i % 500);
        let seq = sent.get(&key).map_or(0, Vec::len);
        let value = format!("{key}/{seq}");
        send(
            &producer,
            BaseRecord::to("spread").key(key.as_str()).payload(value.as_str()),
        );
        sent.entry(key).or_default().push(value);
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    assert_eq!(deliveries.failed.load(Ordering::Relaxed), 0);
    let got = consume(&cluster.addr(3), "spread", 12, 60_000);
    assert_eq!(got.len(), 60_000, "consumed count");
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    for (partition, offset, key, value) in &got {
        let expected = next_offset.entry(*partition).or_insert(0);
        assert_eq!(offset, expected, "partition {partition}: offsets dense and in order");
        *expected += 1;
        assert_eq!(
            *partition_of.entry(key).or_insert(*partition),
            *partition,
            "{key} in one partition"
        );
        by_key.entry(key).or_default().push(value);
    }
    for (key, values) in &sent {
        let want: Vec<&str> = values.iter().map(String::as_str).collect();
        assert_eq!(by_key.get(key.as_str()), Some(&want), "messages of {key}");
    }
    assert_eq!(next_offset.len(), 12, "every partition got keys");
}

/// A group id whose coordinator (asked through broker 1) is another broker.
fn group_coordinated_elsewhere(cluster: &Cluster) -> (String, i32) {
    let mut client = RawClient::connect(&cluster.addr(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        let group = format!("workers-{i}");
        loop {
            let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.clone()));
            let found: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 3, &request);
            if found.error_code == 0 {
                if found.node_id.0 != 1 {
                    return (group, found.node_id.0);
                }
                break;
            }
            // The first request creates __consumer_offsets; its leaders follow.
            assert!(Instant::now() < deadline, "no coordinator: {found:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    unreachable!()
}

/// A member's final assignment and the (partition, offset) of what it consumed.
type MemberResult = (BTreeSet<i32>, Vec<(i32, i64)>);

/// A member of a consumer group: consumes and commits until told to stop; returns
/// its final assignment and what it consumed.
fn group_member(
    bootstrap: String,
    group: String,
    consumed: Arc<AtomicUsize>,
    stop: Arc<AtomicUsize>,
    assignment_now: Arc<Mutex<BTreeSet<i32>>>,
) -> std::thread::JoinHandle<MemberResult> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .expect("consumer");
        consumer.subscribe(&["work"]).expect("subscribe");
        let mut got = Vec::new();
        while stop.load(Ordering::Relaxed) == 0 {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                got.push((m.partition(), m.offset()));
                consumed.fetch_add(1, Ordering::Relaxed);
                consumer.commit_message(&m, CommitMode::Sync).expect("commit");
            }
            if let Ok(a) = consumer.assignment() {
                *assignment_now.lock().expect("lock") = a.elements().iter().map(|e| e.partition()).collect();
            }
        }
        let assignment = consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        consumer.unsubscribe();
        (assignment, got)
    })
}

/// Three rdkafka members split a topic and commit; the group's coordinator is killed
/// for good; a kafka-python member of the same group then finds the new coordinator
/// (a replica of the group's `__consumer_offsets` partition) and reads only what came
/// after the commits.
#[tokio::test]
async fn a_consumer_group_resumes_after_its_coordinator_is_killed() {
    let mut cluster = Cluster::start(3, &[]);
    let bootstrap = cluster.addr(1);
    create_topic(&bootstrap, "work", 6, 3).await.expect("create");
    let (group, coordinator) = group_coordinated_elsewhere(&cluster);
    let (producer, deliveries) = producer(&bootstrap);
    for i in 0..600 {
        let key = format!("k{i}");
        send(&producer, BaseRecord::to("work").key(key.as_str()).payload("first"));
    }
    producer.flush(Duration::from_secs(60)).expect("flush");

    // Three rdkafka members split the partitions, consume everything and commit.
    let consumed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));
    let assignments: Vec<Arc<Mutex<BTreeSet<i32>>>> = (0..3).map(|_| Arc::default()).collect();
    let members: Vec<_> = assignments
        .iter()
        .map(|a| {
            group_member(
                bootstrap.clone(),
                group.clone(),
                consumed.clone(),
                stop.clone(),
                a.clone(),
            )
        })
        .collect();
    // Until everything is consumed and the group has settled with all three members
    // splitting the six partitions (members join at their own pace, so the first
    // generations may have fewer).
    let settled = || {
        let now: Vec<BTreeSet<i32>> = assignments.iter().map(|a| a.lock().expect("lock").clone()).collect();
        let total: usize = now.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<i32> = now.iter().flatten().copied().collect();
        now.iter().all(|a| !a.is_empty()) && total == 6 && union.len() == 6
    };
    // Settled means so for 3 s on end: members' views may briefly come from different
    // generations while a rebalance is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settled_since: Option<Instant> = None;
    while Instant::now() < deadline {
        if consumed.load(Ordering::Relaxed) >= 600 && settled() {
            let since = *settled_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                break;
            }
        } else {
            settled_since = None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let split: Vec<BTreeSet<i32>> = assignments.iter().map(|a| a.lock().expect("lock").clone()).collect();
    assert!(
        settled_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)),
        "the three members never settled on splitting the six partitions: {split:?}"
    );
    stop.store(1, Ordering::Relaxed);
    let results: Vec<_> = members.into_iter().map(|m| m.join().expect("member")).collect();
    let mut seen = BTreeSet::new();
    for (_, got) in &results {
        seen.extend(got.iter().copied());
    }
    assert_eq!(seen.len(), 600, "every message consumed once");

    // The coordinator dies hard and stays dead: a replica of its offsets partition
    // takes over, with the group's commits (replicated before OffsetCommit answered).
    cluster.broker(coordinator).kill9();
    let mut client = RawClient::connect(&bootstrap);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.clone()));
        let found: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 3, &request);
        if found.error_code == 0 && found.node_id.0 != coordinator {
            break;
        }
        assert!(Instant::now() < deadline, "no new coordinator: {found:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..300 {
        let key = format!("k{i}");
        send(&producer, BaseRecord::to("work").key(key.as_str()).payload("second"));
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    assert_eq!(deliveries.failed.load(Ordering::Relaxed), 0);

    // A kafka-python member of the same group reads only what came after the commits.
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/group_member.py"))
        .args([&bootstrap, "work", &group, "15"])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let resumed: Vec<(i32, i64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("msg "))
        .filter_map(|l| l.split_once(' '))
        .map(|(p, o)| (p.parse().expect("partition"), o.parse().expect("offset")))
        .collect();
    assert_eq!(resumed.len(), 300, "only the 300 new messages: {text}");
    assert!(resumed.iter().all(|m| !seen.contains(m)), "nothing consumed twice");
}

#[tokio::test]
async fn a_killed_broker_leaves_metadata_and_its_partitions_return_with_it() {
    let mut cluster = Cluster::start(3, &[]);
    let bootstrap = cluster.addr(1);
    create_topic(&bootstrap, "three", 3, 1).await.expect("create");
    let m = cluster.wait_for(
        |m| leaders(m, "three").values().filter(|(l, _, _)| *l > 0).count() == 3,
        "3 partitions with leaders",
    );
    let before = leaders(&m, "three");
    let led_by_3: Vec<i32> = before.iter().filter(|(_, l)| l.0 == 3).map(|(p, _)| *p).collect();
    assert_eq!(led_by_3.len(), 1, "{before:?}");
    let (producer, deliveries) = producer(&bootstrap);
    for p in 0..3 {
        for _ in 0..30 {
            send(
                &producer,
                BaseRecord::to("three").partition(p).key("k").payload("before"),
            );
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    cluster.broker(3).kill9();
    let killed = Instant::now();
    cluster.wait_for(|m| m.brokers.len() == 2, "broker 3 gone from Metadata");
    let gone_after = killed.elapsed();
    eprintln!("a killed broker left Metadata after {gone_after:?}");
    assert!(
        gone_after < Duration::from_millis(SESSION_TIMEOUT_MS + 2000),
        "gone after {gone_after:?}"
    );
    let m = cluster.wait_for(
        |m| leaders(m, "three")[&led_by_3[0]].2 == LEADER_NOT_AVAILABLE,
        "its partition offline",
    );
    assert_eq!(leaders(&m, "three")[&led_by_3[0]].0, -1);
    // The other partitions keep working.
    for p in (0..3).filter(|p| !led_by_3.contains(p)) {
        for _ in 0..10 {
            send(
                &producer,
                BaseRecord::to("three").partition(p).key("k").payload("during"),
            );
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(deliveries.failed.load(Ordering::Relaxed), 0);

    cluster.broker(3).restart();
    let m = cluster.wait_for(
        |m| m.brokers.len() == 3 && leaders(m, "three")[&led_by_3[0]].0 == 3,
        "broker 3 back, leading its partition again",
    );
    let (_, epoch, error) = leaders(&m, "three")[&led_by_3[0]];
    assert_eq!(error, 0);
    assert!(epoch > before[&led_by_3[0]].1, "a new leader epoch: {epoch}");
    let got = consume(&bootstrap, "three", 3, 110);
    assert_eq!(got.len(), 110, "data written before the kill is still there");
}

#[tokio::test]
async fn an_etcd_outage_stops_changes_but_not_produce() {
    // The default session timeout (9 s): etcd is gone for longer, so on its return the
    // leases have expired and the brokers register again.
    let etcd = Etcd::start();
    let url = etcd.url("outage");
    let mut brokers = Vec::new();
    for id in ["1", "2"] {
        brokers.push(Broker::start(&["--controller", &url, "--node-id", id]));
    }
    let bootstrap = format!("{},{}", brokers[0].addr, brokers[1].addr);
    create_topic(&bootstrap, "steady", 4, 1).await.expect("create");
    let (producer, deliveries) = producer(&bootstrap);
    let started = Instant::now();
    let mut paused = None;
    let mut resumed = None;
    let mut refused = None;
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let key = format!("k{sent}");
        send(&producer, BaseRecord::to("steady").key(key.as_str()).payload("v"));
        sent += 1;
        producer.poll(Duration::from_millis(20));
        if paused.is_none() && started.elapsed() > Duration::from_secs(2) {
            etcd.pause();
            paused = Some(Instant::now());
            // A change needs etcd: it fails cleanly with REQUEST_TIMED_OUT.
            refused = Some(create_topic(&bootstrap, "during-outage", 1, 1).await);
        }
        if resumed.is_none() && paused.is_some_and(|p| p.elapsed() > Duration::from_secs(14)) {
            etcd.resume();
            resumed = Some(Instant::now());
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let (paused, resumed) = (paused.expect("paused"), resumed.expect("resumed"));
    assert_eq!(
        refused.expect("tried").expect_err("no change without etcd"),
        format!("{:?}", RDKafkaErrorCode::RequestTimedOut)
    );
    assert_eq!(
        deliveries.failed.load(Ordering::Relaxed),
        0,
        "every message acknowledged"
    );
    let acked = deliveries.acked_at.lock().expect("lock").clone();
    assert_eq!(acked.len(), sent);
    let during = acked.iter().filter(|t| **t > paused && **t < resumed).count();
    assert!(
        during > 100,
        "produce went on while etcd was away ({during} acknowledged)"
    );
    // But not past the brokers' sessions (9 s): a broker that cannot renew its lease
    // stops leading before another could have been elected in its place.
    let fenced = paused + Duration::from_millis(9500);
    let zombie = acked.iter().filter(|t| **t > fenced && **t < resumed).count();
    assert_eq!(zombie, 0, "acknowledged after every session had ended");
    // Changes work again once etcd is back (after the brokers re-registered).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match create_topic(&bootstrap, "after-outage", 1, 1).await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "still refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = consume(&bootstrap, "steady", 4, sent);
    assert_eq!(got.len(), sent);
}

#[test]
fn a_second_broker_with_a_live_node_id_or_without_etcd_is_refused() {
    let etcd = Etcd::start();
    let url = etcd.url("dupes");
    let _first = Broker::start(&["--controller", &url, "--node-id", "7"]);
    let refused = Broker::start_refused(&["--controller", &url, "--node-id", "7"]);
    assert!(refused.contains("broker 7 is already registered"), "{refused}");
    let dead = format!("etcd://127.0.0.1:{}", compat_tests::free_port());
    let refused = Broker::start_refused(&["--controller", &dead, "--node-id", "8"]);
    assert!(refused.contains("cannot reach etcd"), "{refused}");
}

#[tokio::test]
async fn topics_grow_and_go_cluster_wide() {
    let cluster = Cluster::start(2, &[]);
    // Admin clients send CreateTopics to Metadata's controller: it is a live broker from
    // the first moment, even before one has taken the controller duty.
    let m = cluster.metadata(None);
    assert!(m.brokers.iter().any(|b| b.node_id == m.controller_id), "{m:?}");
    create_topic(&cluster.addr(1), "grow", 2, 2)
        .await
        .expect("create with RF 2");
    let grown = admin(&cluster.addr(2))
        .create_partitions(&[rdkafka::admin::NewPartitions::new("grow", 4)], &AdminOptions::new())
        .await
        .expect("create partitions");
    assert!(grown[0].is_ok(), "{grown:?}");
    let m = cluster.wait_for(
        |m| leaders(m, "grow").len() == 4 && leaders(m, "grow").values().all(|l| l.0 > 0),
        "4 partitions with leaders",
    );
    for t in m
        .topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "grow"))
    {
        for p in &t.partitions {
            assert_eq!(p.replica_nodes.len(), 2, "two replicas each: {p:?}");
        }
    }
    let dirs = |b: &Broker| -> Vec<String> {
        std::fs::read_dir(b.data_dir().join("data"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect::<Vec<String>>()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|n: &String| n.starts_with("grow-"))
            .collect()
    };
    // Every broker holds a replica of every partition (RF 2 over 2 brokers).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.brokers.iter().any(|b| dirs(b).len() != 4) {
        assert!(
            Instant::now() < deadline,
            "replica directories: {:?}",
            cluster.brokers.iter().map(dirs).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deleted = admin(&cluster.addr(1))
        .delete_topics(&["grow"], &AdminOptions::new())
        .await
        .expect("delete");
    assert!(deleted[0].is_ok(), "{deleted:?}");
    cluster.wait_for(|m| leaders(m, "grow").is_empty(), "topic gone");
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.brokers.iter().any(|b| !dirs(b).is_empty()) {
        assert!(Instant::now() < deadline, "data left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_broker_stopped_cleanly_leaves_the_cluster_at_once() {
    let mut cluster = Cluster::start(2, &[]);
    let stopping = Instant::now();
    assert!(cluster.broker(2).stop(), "clean exit");
    cluster.wait_for(|m| m.brokers.len() == 1, "broker 2 gone");
    // Well inside the session timeout: the registration went with the broker.
    assert!(
        stopping.elapsed() < Duration::from_millis(SESSION_TIMEOUT_MS),
        "{:?}",
        stopping.elapsed()
    );
}

fn produce_v10(addr: &str, topic: &str, partition: i32) -> ProduceResponse {
    produce_acks(addr, topic, partition, -1)
}

fn produce_acks(addr: &str, topic: &str, partition: i32, acks: i16) -> ProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(compat_tests::record_batch(&[b"v"], 0)))])]);
    RawClient::connect(addr).call(ApiKey::Produce, 10, &request)
}

fn fetch_error(addr: &str, topic: &str, epoch: i32) -> (i16, i32) {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(
            vec![FetchPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(epoch)
                .with_partition_max_bytes(1 << 20)],
        )]);
    let response: FetchResponse = RawClient::connect(addr).call(ApiKey::Fetch, 12, &request);
    let p = &response.responses[0].partitions[0];
    (p.error_code, p.current_leader.leader_id.0)
}

fn list_offsets_error(addr: &str, topic: &str, epoch: i32) -> i16 {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(epoch)
                .with_timestamp(-1)])]);
    let response: ListOffsetsResponse = RawClient::connect(addr).call(ApiKey::ListOffsets, 7, &request);
    response.topics[0].partitions[0].error_code
}

fn create_raw(addr: &str, topic: CreatableTopic) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![topic]);
    let response: CreateTopicsResponse = RawClient::connect(addr).call(ApiKey::CreateTopics, 7, &request);
    response.topics[0].error_code
}

#[test]
fn requests_to_the_wrong_broker_or_epoch_get_kafkas_errors() {
    let mut cluster = Cluster::start(2, &[]);
    let assigned = |brokers: &[i32]| {
        CreatableTopic::default()
            .with_name(name("placed"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())])
    };
    // Placement errors first.
    let too_many = CreatableTopic::default()
        .with_name(name("wide"))
        .with_num_partitions(1)
        .with_replication_factor(3);
    assert_eq!(create_raw(&cluster.addr(1), too_many), INVALID_REPLICATION_FACTOR);
    assert_eq!(create_raw(&cluster.addr(1), assigned(&[9])), INVALID_REPLICA_ASSIGNMENT);
    // Partition 0 on broker 2, as the client chose.
    assert_eq!(create_raw(&cluster.addr(1), assigned(&[2])), 0);
    cluster.wait_for(
        |m| leaders(m, "placed").get(&0).is_some_and(|l| l.0 == 2),
        "placed on 2",
    );
    let wait_applied = Instant::now() + Duration::from_secs(10);
    while metadata_from(&cluster.addr(2), Some(&["placed"])).topics[0]
        .partitions
        .is_empty()
    {
        assert!(Instant::now() < wait_applied);
        std::thread::sleep(Duration::from_millis(50));
    }

    // Broker 1 does not lead it: NOT_LEADER_OR_FOLLOWER, naming broker 2 (KIP-951).
    let wrong = produce_v10(&cluster.addr(1), "placed", 0);
    let p = &wrong.responses[0].partition_responses[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id.0, 2);
    assert_eq!(wrong.node_endpoints.len(), 1);
    assert_eq!(
        format!("{}:{}", wrong.node_endpoints[0].host, wrong.node_endpoints[0].port),
        cluster.addr(2)
    );
    assert_eq!(fetch_error(&cluster.addr(1), "placed", -1), (NOT_LEADER_OR_FOLLOWER, 2));
    assert_eq!(
        list_offsets_error(&cluster.addr(1), "placed", -1),
        NOT_LEADER_OR_FOLLOWER
    );
    // Broker 2 leads it at epoch 0.
    assert_eq!(
        produce_v10(&cluster.addr(2), "placed", 0).responses[0].partition_responses[0].error_code,
        0
    );
    assert_eq!(fetch_error(&cluster.addr(2), "placed", 0).0, 0);
    assert_eq!(fetch_error(&cluster.addr(2), "placed", 1).0, UNKNOWN_LEADER_EPOCH);

    // Group requests go to the group's coordinator; another broker says NOT_COORDINATOR.
    let (group, coordinator) = group_coordinated_elsewhere(&cluster);
    let heartbeat = |addr: &str| -> i16 {
        let request = HeartbeatRequest::default()
            .with_group_id(StrBytes::from_string(group.clone()).into())
            .with_generation_id(1)
            .with_member_id(StrBytes::from_static_str("nobody"));
        let response: HeartbeatResponse = RawClient::connect(addr).call(ApiKey::Heartbeat, 3, &request);
        response.error_code
    };
    assert_eq!(heartbeat(&cluster.addr(1)), NOT_COORDINATOR);
    assert_eq!(heartbeat(&cluster.addr(coordinator)), UNKNOWN_MEMBER_ID);

    // Broker 2 dies and returns: a new epoch, and the old one is fenced.
    cluster.broker(2).kill9();
    cluster.wait_for(|m| leaders(m, "placed")[&0].2 == LEADER_NOT_AVAILABLE, "offline");
    assert_eq!(
        produce_v10(&cluster.addr(1), "placed", 0).responses[0].partition_responses[0].error_code,
        LEADER_NOT_AVAILABLE
    );
    cluster.broker(2).restart();
    cluster.wait_for(|m| leaders(m, "placed")[&0].0 == 2, "back on 2");
    let wait_applied = Instant::now() + Duration::from_secs(10);
    while fetch_error(&cluster.addr(2), "placed", -1).0 != 0 {
        assert!(Instant::now() < wait_applied);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fetch_error(&cluster.addr(2), "placed", 0).0, FENCED_LEADER_EPOCH);
    assert_eq!(list_offsets_error(&cluster.addr(2), "placed", 0), FENCED_LEADER_EPOCH);
}

/// In-sync replicas of each partition of `topic`, by partition.
fn isrs(m: &MetadataResponse, topic: &str) -> BTreeMap<i32, BTreeSet<i32>> {
    m.topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.isr_nodes.iter().map(|b| b.0).collect()))
        .collect()
}

async fn create_topic_with(bootstrap: &str, topic: &str, partitions: i32, rf: i32, configs: &[(&str, &str)]) {
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let results = admin(bootstrap)
        .create_topics(
            &[new],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(20))),
        )
        .await
        .expect("create topics");
    assert!(results[0].is_ok(), "{results:?}");
}

/// What the broker acknowledged: partition, offset and value of every delivered record.
#[derive(Default, Clone)]
struct Acks {
    acked: Arc<Mutex<Vec<Record>>>,
    failed: Arc<AtomicUsize>,
}
impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => self.acked.lock().expect("lock").push(Record {
                partition: m.partition(),
                offset: m.offset(),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string(),
            }),
            Err((e, _)) => {
                eprintln!("delivery failed: {e}");
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn signal(broker: &Broker, sig: &str) {
    let pid = broker.pid().expect("running broker");
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The failover test: RF 3, min.insync.replicas 2, an idempotent acks=all
/// producer sending keyed records all along, and the leader of the busiest partition
/// killed with SIGKILL five times (restarted each time). A kafka-python reader then
/// reads every partition from the final leaders, and the history checker finds no
/// acknowledged record lost, none duplicated, reordered, divergent or phantom.
#[tokio::test]
async fn acknowledged_records_survive_five_leader_kills() {
    let mut cluster = Cluster::start(3, &[]);
    let bootstrap = cluster.bootstrap();
    create_topic_with(&bootstrap, "ledger", 4, 3, &[("min.insync.replicas", "2")]).await;
    cluster.wait_for(
        |m| isrs(m, "ledger").values().filter(|i| i.len() == 3).count() == 4,
        "every replica in sync",
    );
    let acks = Acks::default();
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create_with_context(acks.clone())
        .expect("producer");
    let mut sent: HashSet<String> = HashSet::new();
    let mut sequences = [0u64; 16];
    let mut produce_for = |producer: &BaseProducer<Acks>, how_long: Duration, sent: &mut HashSet<String>| {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            for (k, seq) in sequences.iter_mut().enumerate() {
                let key = format!("key{k}");
                let value = format!("{key}-{seq}");
                *seq += 1;
                let record = BaseRecord::to("ledger").key(key.as_str()).payload(value.as_str());
                if producer.send(record).is_ok() {
                    sent.insert(value);
                }
            }
            producer.poll(Duration::from_millis(20));
        }
    };
    let mut kills = Vec::new();
    for _ in 0..5 {
        produce_for(&producer, Duration::from_millis(1500), &mut sent);
        let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
        for r in acks.acked.lock().expect("lock").iter() {
            *per_partition.entry(r.partition).or_default() += 1;
        }
        let busiest = per_partition.iter().max_by_key(|(_, n)| **n).map_or(0, |(p, _)| *p);
        let leader = leaders(&cluster.metadata(Some(&["ledger"])), "ledger")[&busiest].0;
        assert!(leader > 0, "partition {busiest} has a leader");
        cluster.broker(leader).kill9();
        kills.push((busiest, leader));
        produce_for(&producer, Duration::from_millis(1500), &mut sent);
        cluster.broker(leader).restart();
        // Keep producing until the restarted broker has caught up and is in sync again.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            produce_for(&producer, Duration::from_millis(300), &mut sent);
            let m = metadata_from(&cluster.addr(if leader == 1 { 2 } else { 1 }), Some(&["ledger"]));
            if isrs(&m, "ledger").values().all(|i| i.len() == 3) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {leader} never rejoined the in-sync sets: {m:?}"
            );
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let acknowledged = acks.acked.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 1000,
        "the producer kept going: {}",
        acknowledged.len()
    );

    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/read_all.py"))
        .args([&bootstrap, "ledger", "4", "120"])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: Vec<Record> = text
        .lines()
        .filter_map(|l| l.strip_prefix("rec "))
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            Some(Record {
                partition: f.next()?.parse().ok()?,
                offset: f.next()?.parse().ok()?,
                value: f.next()?.to_string(),
            })
        })
        .collect();
    let report = history::check(&sent, &acknowledged, &read);
    eprintln!("kills (partition, leader): {kills:?}; history: {}", report.counts());
    assert!(report.is_clean(), "{}\n{report:?}", report.counts());
    assert_eq!(acks.failed.load(Ordering::Relaxed), 0, "every record acknowledged");
}

/// A follower that stops fetching leaves the in-sync set after replica.lag.time.max.ms
/// (here while its registration is still live, so it is the leader's doing), acks=all
/// then needs min.insync.replicas in sync (NOT_ENOUGH_REPLICAS below it, while acks=1
/// still works), and followers that resume rejoin once caught up.
#[tokio::test]
async fn a_stalled_follower_leaves_the_isr_and_acks_all_needs_min_insync() {
    let mut cluster = Cluster::start_with_session(3, 20_000, &["--replica-lag-time-max-ms", "1000"]);
    let bootstrap = cluster.bootstrap();
    create_topic_with(&bootstrap, "isr", 1, 3, &[("min.insync.replicas", "2")]).await;
    let m = cluster.wait_for(|m| isrs(m, "isr").get(&0).is_some_and(|i| i.len() == 3), "all in sync");
    let leader = leaders(&m, "isr")[&0].0;
    let followers: Vec<i32> = (1..=3).filter(|id| *id != leader).collect();
    let leader_addr = cluster.addr(leader);
    let metadata = || metadata_from(&leader_addr, Some(&["isr"]));

    signal(cluster.broker(followers[0]), "-STOP");
    let stalled = Instant::now();
    let deadline = stalled + Duration::from_secs(15);
    let m = loop {
        let m = metadata();
        if isrs(&m, "isr")[&0].len() == 2 {
            break m;
        }
        assert!(Instant::now() < deadline, "the stalled follower stayed in sync: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!isrs(&m, "isr")[&0].contains(&followers[0]));
    assert!(
        m.brokers.iter().any(|b| b.node_id.0 == followers[0]),
        "removed for lagging, while its registration still lasts"
    );
    eprintln!("stalled follower left the ISR after {:?}", stalled.elapsed());
    assert_eq!(
        produce_acks(&leader_addr, "isr", 0, -1).responses[0].partition_responses[0].error_code,
        0
    );

    signal(cluster.broker(followers[1]), "-STOP");
    let deadline = Instant::now() + Duration::from_secs(15);
    while isrs(&metadata(), "isr")[&0].len() != 1 {
        assert!(Instant::now() < deadline, "the second stalled follower stayed in sync");
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = produce_acks(&leader_addr, "isr", 0, -1);
    assert_eq!(all.responses[0].partition_responses[0].error_code, NOT_ENOUGH_REPLICAS);
    let one = produce_acks(&leader_addr, "isr", 0, 1);
    assert_eq!(
        one.responses[0].partition_responses[0].error_code, 0,
        "acks=1 needs only the leader"
    );

    signal(cluster.broker(followers[0]), "-CONT");
    signal(cluster.broker(followers[1]), "-CONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    while isrs(&metadata(), "isr")[&0].len() != 3 {
        assert!(
            Instant::now() < deadline,
            "the resumed followers never rejoined: {:?}",
            metadata()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        produce_acks(&leader_addr, "isr", 0, -1).responses[0].partition_responses[0].error_code,
        0
    );
    // Every replica holds the same records: read them from the leader's high watermark.
    let got = consume(&bootstrap, "isr", 1, 3);
    assert_eq!(got.len(), 3, "the three acknowledged records");
}

/// ElectLeaders' error for each partition named, in order.
fn elect(addr: &str, election_type: i8, topic: &str, partitions: &[i32]) -> Vec<i16> {
    let request = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(name(topic))
            .with_partitions(partitions.to_vec())]));
    let response: ElectLeadersResponse = RawClient::connect(addr).call(ApiKey::ElectLeaders, 2, &request);
    response
        .replica_election_results
        .iter()
        .flat_map(|r| r.partition_result.iter().map(|p| p.error_code))
        .collect()
}

fn reassign(addr: &str, topic: &str, partition: i32, replicas: Option<&[i32]>) -> i16 {
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    replicas.map(|r| r.iter().map(|id| BrokerId(*id)).collect()),
                )])]);
    let response: AlterPartitionReassignmentsResponse =
        RawClient::connect(addr).call(ApiKey::AlterPartitionReassignments, 0, &request);
    response.responses[0].partitions[0].error_code
}

/// Replicas of each partition of `topic` as Metadata lists them.
fn replicas(m: &MetadataResponse, topic: &str) -> BTreeMap<i32, Vec<i32>> {
    m.topics
        .iter()
        .filter(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.replica_nodes.iter().map(|b| b.0).collect()))
        .collect()
}

/// With automatic rebalancing off, a preferred replica that comes back stays a
/// follower until ElectLeaders (preferred) gives it leadership back; a second election
/// is not needed, an unclean one is refused while a leader lives, and an unknown
/// partition is named as such.
#[test]
fn elect_leaders_moves_leadership_back_to_the_preferred_replica() {
    let mut cluster = Cluster::start(3, &["--auto-leader-rebalance-enable=false"]);
    let addr = cluster.addr(1);
    let assigned = |brokers: &[i32]| {
        CreatableTopic::default()
            .with_name(name("elect"))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![CreatableReplicaAssignment::default()
                .with_partition_index(0)
                .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())])
    };
    assert_eq!(create_raw(&addr, assigned(&[2, 3, 1])), 0);
    cluster.wait_for(
        |m| isrs(m, "elect").get(&0).is_some_and(|i| i.len() == 3),
        "all in sync",
    );
    cluster.broker(2).kill9();
    let m = cluster.wait_for(
        |m| leaders(m, "elect")[&0].0 > 0 && leaders(m, "elect")[&0].0 != 2,
        "another took over",
    );
    let took_over = leaders(&m, "elect")[&0].0;
    cluster.broker(2).restart();
    cluster.wait_for(|m| isrs(m, "elect")[&0].len() == 3, "broker 2 back in sync");
    assert_eq!(
        leaders(&cluster.metadata(Some(&["elect"])), "elect")[&0].0,
        took_over,
        "no automatic rebalance"
    );

    assert_eq!(elect(&addr, 0, "elect", &[0, 7]), vec![0, UNKNOWN_TOPIC_OR_PARTITION]);
    cluster.wait_for(|m| leaders(m, "elect")[&0].0 == 2, "the preferred replica leads again");
    assert_eq!(elect(&addr, 0, "elect", &[0]), vec![ELECTION_NOT_NEEDED]);
    assert_eq!(elect(&addr, 1, "elect", &[0]), vec![ELECTION_NOT_NEEDED]);
    // The new leader serves writes.
    let produced = produce_v10(&cluster.addr(2), "elect", 0);
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
}

/// A partition moved from broker 1 to brokers 2 and 3: the new replicas copy the log,
/// the move completes once they are in sync, leadership moves with it, and every
/// record written before is read back from the new leader.
#[tokio::test]
async fn a_reassignment_moves_a_partition_and_its_records() {
    let cluster = Cluster::start(3, &[]);
    let addr = cluster.addr(1);
    let topic = CreatableTopic::default()
        .with_name(name("moving"))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(1)])]);
    assert_eq!(create_raw(&addr, topic), 0);
    cluster.wait_for(
        |m| leaders(m, "moving").get(&0).is_some_and(|l| l.0 == 1),
        "broker 1 leads",
    );
    let (producer, deliveries) = producer(&cluster.bootstrap());
    for i in 0..500 {
        let key = format!("k{i}");
        send(&producer, BaseRecord::to("moving").key(key.as_str()).payload("before"));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(deliveries.failed.load(Ordering::Relaxed), 0);
    assert_eq!(reassign(&addr, "moving", 0, None), NO_REASSIGNMENT_IN_PROGRESS);
    assert_eq!(
        reassign(&addr, "moving", 0, Some(&[2, 3, 2])),
        INVALID_REPLICA_ASSIGNMENT
    );
    assert_eq!(reassign(&addr, "moving", 0, Some(&[2, 3])), 0);
    let m = cluster.wait_for(
        |m| replicas(m, "moving").get(&0).is_some_and(|r| *r == [2, 3]),
        "the move completed",
    );
    let (leader, epoch, _) = leaders(&m, "moving")[&0];
    assert!(
        leader == 2 || leader == 3,
        "leadership moved with the replicas: {leader}"
    );
    assert!(epoch > 0);
    let listed: ListPartitionReassignmentsResponse = RawClient::connect(&addr).call(
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000),
    );
    assert!(listed.topics.is_empty(), "nothing under way: {listed:?}");
    let got = consume(&cluster.bootstrap(), "moving", 1, 500);
    assert_eq!(got.len(), 500, "every record moved");
    assert!(got.iter().enumerate().all(|(i, m)| m.1 == i as i64));
}

/// The high watermark reaches the followers with their fetches, and every replica
/// checkpoints it (Kafka's `replication-offset-checkpoint`, here one file per
/// partition directory), so a restarted broker knows what was committed.
#[tokio::test]
async fn every_replica_learns_and_checkpoints_the_high_watermark() {
    let cluster = Cluster::start(3, &[]);
    create_topic(&cluster.bootstrap(), "marked", 1, 3)
        .await
        .expect("create");
    cluster.wait_for(
        |m| isrs(m, "marked").get(&0).is_some_and(|i| i.len() == 3),
        "all in sync",
    );
    let (producer, deliveries) = producer(&cluster.bootstrap());
    for i in 0..100 {
        let key = format!("k{i}");
        send(&producer, BaseRecord::to("marked").key(key.as_str()).payload("v"));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(deliveries.failed.load(Ordering::Relaxed), 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let marks: Vec<String> = cluster
            .brokers
            .iter()
            .map(|b| std::fs::read_to_string(b.data_dir().join("data/marked-0/high-watermark")).unwrap_or_default())
            .collect();
        // One line: the mark in 20 digits, then its checksum.
        let mark = |m: &str| m.split_whitespace().next().and_then(|d| d.parse::<i64>().ok());
        if marks.iter().all(|m| mark(m) == Some(100)) {
            break;
        }
        assert!(Instant::now() < deadline, "checkpoints: {marks:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A network namespace joined to the test's by a veth pair: a broker inside it can be
/// cut off from etcd and the other brokers (and healed) without touching anything
/// else. Traffic stays on this machine. Dropping it removes both.
struct Netns {
    name: String,
    outer_link: String,
    /// The address on the test's side, and the one inside the namespace.
    outer_ip: String,
    inner_ip: String,
}

impl Netns {
    /// None (with the reason) where namespaces cannot be made: not root, or no iproute2.
    fn create() -> Result<Netns, String> {
        let id = std::process::id() % 200;
        let ns = Netns {
            name: format!("sluice-it-{}", std::process::id()),
            outer_link: format!("slo{}", std::process::id() % 100_000),
            outer_ip: format!("10.213.{id}.1"),
            inner_ip: format!("10.213.{id}.2"),
        };
        let inner_link = format!("sli{}", std::process::id() % 100_000);
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), ns.name.clone()],
            vec![
                "link".into(),
                "add".into(),
                ns.outer_link.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                inner_link.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                inner_link.clone(),
                "netns".into(),
                ns.name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/24", ns.outer_ip),
                "dev".into(),
                ns.outer_link.clone(),
            ],
            vec!["link".into(), "set".into(), ns.outer_link.clone(), "up".into()],
            vec![
                "-n".into(),
                ns.name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", ns.inner_ip),
                "dev".into(),
                inner_link.clone(),
            ],
            vec![
                "-n".into(),
                ns.name.clone(),
                "link".into(),
                "set".into(),
                inner_link,
                "up".into(),
            ],
            vec![
                "-n".into(),
                ns.name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for step in steps {
            let out = Command::new("ip")
                .args(&step)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ip {}: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(ns)
    }

    fn link(&self, state: &str) {
        let status = Command::new("ip")
            .args(["link", "set", &self.outer_link, state])
            .status()
            .expect("ip");
        assert!(status.success());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Removing the namespace removes the veth pair with it; the second is for a
        // namespace that was never made whole.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.outer_link]).output();
    }
}

/// The partition test. Broker 3 leads an RF 3 partition (min.insync.replicas
/// 2) from its own network namespace; a producer inside the namespace writes with
/// acks=1. The namespace is cut off: broker 3 stops acknowledging within its session
/// (it can no longer know it leads), the majority elects a new leader that takes
/// acks=all writes, and after healing broker 3 truncates the tail only it had, rejoins,
/// and leads again: no acks=all record is lost, and nothing of that tail is ever read.
#[tokio::test]
async fn a_leader_cut_off_by_a_network_partition_is_fenced_and_truncated() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED: network namespaces are not available here ({why})");
            return;
        }
    };
    let etcd = Etcd::start_on(&ns.outer_ip);
    let url = etcd.url("partition");
    let session = SESSION_TIMEOUT_MS.to_string();
    let args = |id: &'static str| {
        vec![
            "--controller",
            url.as_str(),
            "--node-id",
            id,
            "--broker-session-timeout-ms",
            session.as_str(),
        ]
    };
    let _b1 = Broker::start_in(None, &ns.outer_ip, &args("1"));
    let _b2 = Broker::start_in(None, &ns.outer_ip, &args("2"));
    let b3 = Broker::start_in(Some(&ns.name), &ns.inner_ip, &args("3"));
    let bootstrap = format!("{},{}", _b1.addr, _b2.addr);
    let topic = CreatableTopic::default()
        .with_name(name("split"))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(vec![CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(3), BrokerId(1), BrokerId(2)])])
        .with_configs(vec![
            kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("min.insync.replicas"))
                .with_value(Some(StrBytes::from_static_str("2"))),
        ]);
    assert_eq!(create_raw(&_b1.addr, topic), 0);
    let wait = |done: &dyn Fn(&MetadataResponse) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let m = metadata_from(&_b1.addr, Some(&["split"]));
            if done(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}\n{m:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let m = wait(
        &|m| isrs(m, "split").get(&0).is_some_and(|i| i.len() == 3) && leaders(m, "split")[&0].0 == 3,
        "broker 3 leads, all in sync",
    );
    let epoch_before = leaders(&m, "split")[&0].1;

    // acks=all writes before the cut, all acknowledged by the three.
    let root_producer = |acks: &Acks| -> BaseProducer<Acks> {
        ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create_with_context(acks.clone())
            .expect("producer")
    };
    let acks = Acks::default();
    let mut sent = HashSet::new();
    {
        let producer = root_producer(&acks);
        for i in 0..200 {
            let value = format!("before-{i}");
            send_acks(&producer, &value);
            sent.insert(value);
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
    // The producer inside the namespace, with acks=1, through the cut and after it.
    let mut inside = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/acks_producer.py"))
        .args([&b3.addr, "split", "inside", "1", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    // Read its output as it comes: a full pipe would stall the producer.
    let mut stdout = inside.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    std::thread::sleep(Duration::from_secs(2));
    let cut = std::time::SystemTime::now();
    ns.link("down");
    // Anything acknowledged after this was appended when no follower could fetch it.
    let isolated = std::time::SystemTime::now() + Duration::from_millis(100);
    let m = wait(
        &|m| leaders(m, "split")[&0].0 == 1 || leaders(m, "split")[&0].0 == 2,
        "a new leader on the majority side",
    );
    assert!(leaders(&m, "split")[&0].1 > epoch_before);
    {
        let producer = root_producer(&acks);
        for i in 0..200 {
            let value = format!("after-{i}");
            send_acks(&producer, &value);
            sent.insert(value);
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
    assert!(inside.wait().expect("inside producer").success());
    ns.link("up");
    let text = reader.join().expect("reader");
    let cut_secs = cut.duration_since(std::time::UNIX_EPOCH).expect("time").as_secs_f64();
    let mut tail = Vec::new();
    let mut before_cut = 0;
    for line in text.lines() {
        let mut f = line.split(' ');
        match f.next() {
            Some("ack") => {
                let (_, value, at) = (
                    f.next(),
                    f.next().unwrap_or_default(),
                    f.next().and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0),
                );
                sent.insert(value.to_string());
                if at > cut_secs {
                    tail.push((value.to_string(), at - cut_secs));
                } else {
                    before_cut += 1;
                }
            }
            Some("fail") => {
                if let Some(v) = f.next() {
                    sent.insert(v.to_string());
                }
            }
            _ => {}
        }
    }
    let session_secs = SESSION_TIMEOUT_MS as f64 / 1000.0;
    let last_ack = tail.iter().map(|(_, at)| *at).fold(0.0, f64::max);
    eprintln!(
        "inside producer: {before_cut} acks before the cut, {} after it, the last {last_ack:.2} s after",
        tail.len()
    );
    assert!(before_cut > 0, "the inside producer wrote before the cut:\n{text}");
    assert!(
        !tail.is_empty(),
        "broker 3 went on acknowledging acks=1 after the cut, until its session ended"
    );
    assert!(
        last_ack < session_secs + 0.5,
        "broker 3 acknowledged {last_ack:.2} s after the cut, past its session"
    );

    // Healed: broker 3 truncates its tail, catches up and (preferred) leads again.
    wait(
        &|m| isrs(m, "split")[&0].len() == 3 && leaders(m, "split")[&0].0 == 3,
        "broker 3 back in sync and leading",
    );
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/read_all.py"))
        .args([&b3.addr, "split", "1", "60"])
        .output()
        .expect("python3");
    let read: Vec<Record> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("rec "))
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            Some(Record {
                partition: f.next()?.parse().ok()?,
                offset: f.next()?.parse().ok()?,
                value: f.next()?.to_string(),
            })
        })
        .collect();
    let acknowledged = acks.acked.lock().expect("lock").clone();
    let report = history::check(&sent, &acknowledged, &read);
    eprintln!("history: {}", report.counts());
    assert!(report.is_clean(), "{}\n{report:?}", report.counts());
    let isolated_secs = isolated
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs_f64()
        - cut_secs;
    let truncated: Vec<&String> = tail
        .iter()
        .filter(|(_, at)| *at > isolated_secs)
        .map(|(v, _)| v)
        .filter(|v| read.iter().any(|r| &r.value == *v))
        .collect();
    assert!(
        truncated.is_empty(),
        "records only the cut-off leader had were read: {truncated:?}"
    );
    drop(etcd);
}

fn send_acks(producer: &BaseProducer<Acks>, value: &str) {
    loop {
        match producer.send(BaseRecord::to("split").partition(0).key("k").payload(value)) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("send failed: {e}"),
        }
    }
}

/// Topic configs and dynamic broker configs are kept in etcd: a change through one
/// broker is what every broker describes and applies; DeleteRecords through the leader
/// moves the followers' log start too.
#[tokio::test(flavor = "multi_thread")]
async fn configs_altered_on_one_broker_hold_on_every_broker_and_delete_records_reaches_followers() {
    use rdkafka::admin::{AlterConfig, ConfigSource, ResourceSpecifier};
    let cluster = Cluster::start(2, &[]);
    create_topic(&cluster.addr(1), "tuned", 1, 2)
        .await
        .expect("create with RF 2");
    let (p, acked) = producer(&cluster.bootstrap());
    for i in 0..30 {
        send(
            &p,
            BaseRecord::to("tuned").partition(0).key("k").payload(&format!("v{i}")),
        );
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(acked.acked_at.lock().unwrap().len(), 30);

    let alter = AlterConfig::new(ResourceSpecifier::Topic("tuned")).set("retention.ms", "3600000");
    let altered = admin(&cluster.addr(2))
        .alter_configs(&[alter], &AdminOptions::new())
        .await
        .expect("alter topic");
    assert!(altered[0].is_ok(), "{altered:?}");
    let alter = AlterConfig::new(ResourceSpecifier::Broker(2)).set("log.retention.bytes", "123456789");
    let altered = admin(&cluster.addr(1))
        .alter_configs(&[alter], &AdminOptions::new())
        .await
        .expect("alter broker");
    assert!(altered[0].is_ok(), "{altered:?}");

    for id in [1, 2] {
        let described = admin(&cluster.addr(id))
            .describe_configs(
                &[ResourceSpecifier::Topic("tuned"), ResourceSpecifier::Broker(id)],
                &AdminOptions::new(),
            )
            .await
            .expect("describe");
        let topic = described[0].as_ref().expect("topic configs");
        let retention = topic.get("retention.ms").expect("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("3600000"), "broker {id}");
        assert!(
            matches!(retention.source, ConfigSource::DynamicTopic),
            "broker {id}: {retention:?}"
        );
        let broker = described[1].as_ref().expect("broker configs");
        let bytes = broker.get("log.retention.bytes").expect("log.retention.bytes");
        if id == 2 {
            assert_eq!(bytes.value.as_deref(), Some("123456789"));
            assert!(matches!(bytes.source, ConfigSource::DynamicBroker), "{bytes:?}");
        } else {
            assert_eq!(bytes.value.as_deref(), Some("-1"), "broker 1 has no override");
        }
    }

    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("tuned", 0, Offset::Offset(10))
        .expect("tpl");
    let deleted = admin(&cluster.bootstrap())
        .delete_records(&offsets, &AdminOptions::new())
        .await
        .expect("delete records");
    assert_eq!(deleted.elements()[0].offset(), Offset::Offset(10), "{deleted:?}");
    // Both replicas now start at 10: the leader at once, the follower from its next fetch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let starts = |c: &Cluster| -> Vec<String> {
        c.brokers
            .iter()
            .map(|b| std::fs::read_to_string(b.data_dir().join("data/tuned-0/log-start-offset")).unwrap_or_default())
            .collect()
    };
    while starts(&cluster).iter().any(|s| s != "0\n10\n") {
        assert!(Instant::now() < deadline, "log starts: {:?}", starts(&cluster));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Share groups on a cluster: the share-partitions live with their partitions'
/// leaders, and their state with share coordinators that are often on other brokers
/// (ReadShareGroupState / WriteShareGroupState between brokers). Every record is
/// accepted once, and a second run finds nothing left.
#[test]
fn share_consumers_on_a_cluster_accept_every_record_once() {
    let cluster = Cluster::start(3, &[]);
    let b = cluster.bootstrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/share_consumers.py");
    let run = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new("python3")
            .arg(script)
            .args(args)
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("json")
    };
    run(&["produce", &b, "cluster-queue", "6", "600", "m"]);
    run(&["configure", &b, "cluster-workers", "share.auto.offset.reset=earliest"]);
    let first = run(&["consume", &b, "cluster-queue", "cluster-workers", "2", "600", "60"]);
    assert_eq!(first["accepted"], 600, "{}", first["by_consumer"]);
    assert_eq!(first["distinct"], 600);
    let again = run(&["consume", &b, "cluster-queue", "cluster-workers", "1", "1", "5"]);
    assert_eq!(again["accepted"], 0, "accepted records are not delivered again");
    // Rejected records from partitions led by every broker reach the one dead-letter
    // partition, wherever it is led.
    run(&["produce", &b, "cluster-queue", "6", "6", "reject"]);
    // Runs its full 10 s (it never reaches a million acceptances), so both consumers
    // have fetched from every partition.
    run(&["consume", &b, "cluster-queue", "cluster-workers", "2", "1000000", "10"]);
    let dead = run(&["read", &b, "dlq.cluster-workers"]);
    let mut rejected: Vec<String> = dead
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            r["headers"]["__dlq.errors.offset"]
                .as_str()
                .unwrap_or_default()
                .to_string()
                + "@"
                + r["headers"]["__dlq.errors.partition"].as_str().unwrap_or_default()
        })
        .collect();
    rejected.sort();
    rejected.dedup();
    assert_eq!(rejected.len(), 6, "{dead}");
}
