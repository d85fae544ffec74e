//! Share groups (KIP-932) and dead-letter topics (KIP-1191) as users meet them:
//! confluent-kafka 2.16's ShareConsumer against the real broker, and the share APIs'
//! error answers on the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use compat_tests::{Broker, RawClient};
use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatch,
};
use kafka_protocol::messages::share_fetch_request::{AcknowledgementBatch, FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, GroupId, MetadataRequest,
    MetadataResponse, ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
    ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/share_consumers.py");

/// Short locks for the tests (Kafka's floor is 15 s; the broker may lower it).
const LOCK_FLOOR: [&str; 2] = ["--group-share-min-record-lock-duration-ms", "1000"];

fn script(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (see .ci/run): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}

fn values(run: &Value) -> BTreeSet<String> {
    run["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

fn expected(prefix: &str, count: usize) -> BTreeSet<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn three_share_consumers_accept_every_record_exactly_once_and_share_a_partition() {
    let broker = Broker::start(&[]);
    let b = broker.addr.as_str();
    script(&["produce", b, "work", "2", "3000", "m"]);
    let described = script(&["configure", b, "workers", "share.auto.offset.reset=earliest"]);
    assert_eq!(described["share.auto.offset.reset"], "earliest", "{described}");
    assert_eq!(described["share.delivery.count.limit"], "5", "{described}");
    let run = script(&["consume", b, "work", "workers", "3", "3000", "90"]);
    assert_eq!(
        run["accepted"], 3000,
        "every record accepted once: {}",
        run["by_consumer"]
    );
    assert_eq!(values(&run), expected("m", 3000));
    // Three members on two partitions: one partition is shared, and both of its
    // members got work from it.
    let mut members_per_partition: BTreeMap<String, usize> = BTreeMap::new();
    for per_partition in run["by_consumer"].as_object().expect("by_consumer").values() {
        for (partition, count) in per_partition.as_object().expect("partitions") {
            if count.as_u64().unwrap_or(0) > 0 {
                *members_per_partition.entry(partition.clone()).or_default() += 1;
            }
        }
    }
    assert!(
        members_per_partition.values().any(|n| *n >= 2),
        "no partition was shared: {}",
        run["by_consumer"]
    );
    eprintln!(
        "3 share consumers accepted {} records/s (explicit acks, commit_sync per poll)",
        run["records_per_second"]
    );
}

#[test]
fn records_a_killed_consumer_held_come_back_once_their_lock_expires() {
    let broker = Broker::start(&LOCK_FLOOR);
    let b = broker.addr.as_str();
    script(&["produce", b, "held", "1", "50", "m"]);
    script(&[
        "configure",
        b,
        "holders",
        "share.auto.offset.reset=earliest",
        "share.record.lock.duration.ms=2000",
    ]);
    let mut holder = Command::new("python3")
        .args([SCRIPT, "hold", b, "held", "holders"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the holder reports what it holds");
    let held: Value = serde_json::from_str(&line).expect("json");
    let held_values: BTreeSet<String> = held["held"]
        .as_array()
        .expect("held")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect();
    assert!(!held_values.is_empty());
    holder.kill().expect("kill -9 the holder");
    let _ = holder.wait();
    let run = script(&["consume", b, "held", "holders", "1", "50", "30"]);
    assert_eq!(values(&run), expected("m", 50), "every record, the held ones too");
    for v in &held_values {
        assert_eq!(
            run["deliveries"][v],
            serde_json::json!([2]),
            "{v} was held once and delivered again once"
        );
    }
    // The lock is honoured: nothing came back before it ran out (the holder's time is
    // taken after its poll returned, so allow a little for that).
    let acquired_at = held["at"].as_f64().expect("at");
    let first = run["first_delivery_at"].as_f64().expect("first delivery");
    assert!(
        first >= acquired_at + 2.0 - 0.5,
        "records came back {:.3} s after they were taken, before their 2 s lock ran out",
        first - acquired_at
    );
    eprintln!("redelivered {:.3} s after acquisition (lock 2 s)", first - acquired_at);
}

#[test]
fn poison_records_reach_the_dead_letter_topic_after_their_delivery_limit() {
    let broker = Broker::start(&LOCK_FLOOR);
    let b = broker.addr.as_str();
    script(&["produce", b, "orders", "1", "20", "m"]);
    script(&["produce", b, "orders", "1", "3", "poison"]);
    script(&["produce", b, "orders", "1", "2", "reject"]);
    script(&[
        "configure",
        b,
        "billing",
        "share.auto.offset.reset=earliest",
        "share.delivery.count.limit=3",
        "errors.deadletterqueue.copy.record.enable=true",
    ]);
    let run = script(&["consume", b, "orders", "billing", "2", "20", "60"]);
    assert_eq!(values(&run), expected("m", 20), "every other record is processed");
    for i in 0..3 {
        assert_eq!(
            run["deliveries"][format!("poison{i}")],
            serde_json::json!([1, 2, 3]),
            "a released record is delivered exactly share.delivery.count.limit times"
        );
    }
    for i in 0..2 {
        assert_eq!(run["deliveries"][format!("reject{i}")], serde_json::json!([1]));
    }
    let dead = script(&["read", b, "dlq.billing"]);
    let dead = dead.as_array().expect("records");
    let by_value: BTreeMap<&str, &Value> = dead
        .iter()
        .map(|r| (r["value"].as_str().expect("copied value"), &r["headers"]))
        .collect();
    assert_eq!(
        by_value.keys().copied().collect::<Vec<_>>(),
        vec!["poison0", "poison1", "poison2", "reject0", "reject1"],
        "{dead:?}"
    );
    let poison = by_value["poison1"];
    assert_eq!(poison["__dlq.errors.topic"], "orders");
    assert_eq!(poison["__dlq.errors.partition"], "0");
    assert_eq!(poison["__dlq.errors.offset"], "21");
    assert_eq!(poison["__dlq.errors.group"], "billing");
    assert_eq!(poison["__dlq.errors.delivery.count"], "3");
    assert_eq!(poison["__dlq.errors.reason"], "MAX_DELIVERY_ATTEMPTS_REACHED");
    assert_eq!(by_value["reject0"]["__dlq.errors.reason"], "REJECTED");
    assert_eq!(by_value["reject0"]["__dlq.errors.delivery.count"], "1");
}

#[test]
fn a_broker_killed_mid_run_redelivers_nothing_accepted_and_loses_nothing_unacknowledged() {
    let mut broker = Broker::start(&LOCK_FLOOR);
    let b = broker.addr.clone();
    script(&["produce", &b, "jobs", "2", "500", "m"]);
    script(&[
        "configure",
        &b,
        "runners",
        "share.auto.offset.reset=earliest",
        "share.record.lock.duration.ms=2000",
    ]);
    let first = script(&["consume", &b, "jobs", "runners", "2", "200", "60", "exact"]);
    let first = values(&first);
    assert!(first.len() >= 200, "{}", first.len());
    broker.kill9();
    broker.restart();
    let b = broker.addr.clone();
    let rest = 500 - first.len();
    let second = values(&script(&[
        "consume",
        &b,
        "jobs",
        "runners",
        "2",
        &rest.to_string(),
        "60",
    ]));
    assert!(
        first.is_disjoint(&second),
        "accepted before the crash and delivered again: {:?}",
        first.intersection(&second).collect::<Vec<_>>()
    );
    let all: BTreeSet<String> = first.union(&second).cloned().collect();
    assert_eq!(all, expected("m", 500), "every record accepted once across the crash");
}

#[test]
fn share_requests_out_of_their_session_get_kafkas_error_codes() {
    let broker = Broker::start(&[]);
    let b = broker.addr.as_str();
    script(&["produce", b, "wire", "1", "10", "m"]);
    script(&["configure", b, "raw", "share.auto.offset.reset=earliest"]);
    let mut client = RawClient::connect(b);
    let name = TopicName(StrBytes::from_static_str("wire"));
    let meta: MetadataResponse = client.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(Some(name)),
        ])),
    );
    let id = meta.topics[0].topic_id;
    let group = || Some(GroupId(StrBytes::from_static_str("raw")));
    let member = || Some(StrBytes::from_static_str("member-1"));
    let joined: ShareGroupHeartbeatResponse = client.call(
        ApiKey::ShareGroupHeartbeat,
        1,
        &ShareGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("raw")))
            .with_member_id(StrBytes::from_static_str("member-1"))
            .with_member_epoch(0)
            .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str("wire"))])),
    );
    assert_eq!(joined.error_code, 0);
    assert!(joined.member_epoch > 0);
    let fetch = |epoch: i32, acks: Vec<AcknowledgementBatch>| {
        ShareFetchRequest::default()
            .with_group_id(group())
            .with_member_id(member())
            .with_share_session_epoch(epoch)
            .with_max_wait_ms(2000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_max_records(100)
            .with_topics(vec![FetchTopic::default().with_topic_id(id).with_partitions(vec![
                FetchPartition::default()
                    .with_partition_index(0)
                    .with_acknowledgement_batches(acks),
            ])])
    };
    // A session that was never opened.
    let answer: ShareFetchResponse = client.call(ApiKey::ShareFetch, 1, &fetch(3, vec![]));
    assert_eq!(answer.error_code, ResponseError::ShareSessionNotFound.code());
    let answer: ShareAcknowledgeResponse = client.call(
        ApiKey::ShareAcknowledge,
        1,
        &ShareAcknowledgeRequest::default()
            .with_group_id(group())
            .with_member_id(member())
            .with_share_session_epoch(0),
    );
    assert_eq!(answer.error_code, ResponseError::InvalidShareSessionEpoch.code());
    // Open a session: all ten records are acquired, in one range, delivered once.
    let answer: ShareFetchResponse = client.call(ApiKey::ShareFetch, 1, &fetch(0, vec![]));
    assert_eq!(answer.error_code, 0);
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let acquired: Vec<(i64, i64, i16)> = partition
        .acquired_records
        .iter()
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect();
    assert_eq!(acquired, vec![(0, 9, 1)]);
    // The same epoch again is out of order.
    let answer: ShareFetchResponse = client.call(ApiKey::ShareFetch, 1, &fetch(2, vec![]));
    assert_eq!(answer.error_code, ResponseError::InvalidShareSessionEpoch.code());
    // Acknowledging offsets nobody acquired is refused; the good batch is applied.
    let ack = |first: i64, last: i64, ty: i8| {
        AcknowledgementBatch::default()
            .with_first_offset(first)
            .with_last_offset(last)
            .with_acknowledge_types(vec![ty])
    };
    let accept = |first: i64, last: i64| {
        AckBatch::default()
            .with_first_offset(first)
            .with_last_offset(last)
            .with_acknowledge_types(vec![1])
    };
    let answer: ShareAcknowledgeResponse = client.call(
        ApiKey::ShareAcknowledge,
        1,
        &ShareAcknowledgeRequest::default()
            .with_group_id(group())
            .with_member_id(member())
            .with_share_session_epoch(1)
            .with_topics(vec![AcknowledgeTopic::default().with_topic_id(id).with_partitions(
                vec![AcknowledgePartition::default()
                    .with_partition_index(0)
                    .with_acknowledgement_batches(vec![accept(0, 4)])],
            )]),
    );
    assert_eq!(answer.error_code, 0);
    assert_eq!(answer.responses[0].partitions[0].error_code, 0);
    let answer: ShareAcknowledgeResponse = client.call(
        ApiKey::ShareAcknowledge,
        1,
        &ShareAcknowledgeRequest::default()
            .with_group_id(group())
            .with_member_id(member())
            .with_share_session_epoch(2)
            .with_topics(vec![AcknowledgeTopic::default().with_topic_id(id).with_partitions(
                vec![AcknowledgePartition::default()
                    .with_partition_index(0)
                    .with_acknowledgement_batches(vec![accept(0, 4)])],
            )]),
    );
    assert_eq!(
        answer.responses[0].partitions[0].error_code,
        ResponseError::InvalidRecordState.code(),
        "offsets already accepted"
    );
    // The accepted records moved the share-partition start offset to 5.
    let offsets: DescribeShareGroupOffsetsResponse = client.call(
        ApiKey::DescribeShareGroupOffsets,
        0,
        &DescribeShareGroupOffsetsRequest::default()
            .with_groups(vec![DescribeShareGroupOffsetsRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("raw")))
                .with_topics(None)]),
    );
    let partition = &offsets.groups[0].topics[0].partitions[0];
    assert_eq!((partition.partition_index, partition.start_offset), (0, 5));
    // Releasing 5..9 in a fetch hands them straight back, delivered a second time.
    let answer: ShareFetchResponse = client.call(ApiKey::ShareFetch, 1, &fetch(3, vec![ack(5, 9, 2)]));
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.acknowledge_error_code, 0);
    let acquired: Vec<(i64, i64, i16)> = partition
        .acquired_records
        .iter()
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect();
    assert_eq!(acquired, vec![(5, 9, 2)]);
}

/// Every offset one raw ShareFetch session of `group` acquires from partition 0 of
/// `topic` (fetching until a fetch brings nothing).
fn acquired_offsets(addr: &str, topic: &str, group: &str) -> BTreeSet<i64> {
    let mut client = RawClient::connect(addr);
    let meta: MetadataResponse = client.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(topic.to_string())))),
        ])),
    );
    let id = meta.topics[0].topic_id;
    let mut offsets = BTreeSet::new();
    for epoch in 0..10 {
        let request = ShareFetchRequest::default()
            .with_group_id(Some(GroupId(StrBytes::from_string(group.to_string()))))
            .with_member_id(Some(StrBytes::from_static_str("raw-member")))
            .with_share_session_epoch(epoch)
            .with_max_wait_ms(500)
            .with_max_bytes(1 << 20)
            .with_max_records(100)
            .with_topics(vec![FetchTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![FetchPartition::default().with_partition_index(0)])]);
        let answer: ShareFetchResponse = client.call(ApiKey::ShareFetch, 1, &request);
        assert_eq!(answer.error_code, 0);
        let before = offsets.len();
        for p in answer.responses.iter().flat_map(|t| t.partitions.iter()) {
            for a in &p.acquired_records {
                offsets.extend(a.first_offset..=a.last_offset);
            }
        }
        if offsets.len() == before && epoch > 0 {
            break;
        }
    }
    offsets
}

#[test]
fn a_read_committed_share_group_never_gets_aborted_records() {
    let broker = Broker::start(&[]);
    let b = broker.addr.as_str();
    // Offsets 0-9 committed, 10 marker, 11-20 aborted, 21 marker, 22-31 committed, 32 marker.
    script(&["produce_txn", b, "ledger"]);
    for (group, level) in [("committed", "read_committed"), ("everything", "read_uncommitted")] {
        script(&[
            "configure",
            b,
            group,
            "share.auto.offset.reset=earliest",
            &format!("share.isolation.level={level}"),
        ]);
    }
    let committed: BTreeSet<i64> = (0..10).chain(22..32).collect();
    assert_eq!(acquired_offsets(b, "ledger", "committed"), committed);
    let everything: BTreeSet<i64> = (0..10).chain(11..21).chain(22..32).collect();
    assert_eq!(
        acquired_offsets(b, "ledger", "everything"),
        everything,
        "read_uncommitted hands out aborted records too (never markers)"
    );
}
