//! Exact requests on the wire: error codes a client sees, long-polling fetches, bad
//! frames that close only their own connection, and ids that survive a restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use compat_tests::{batch_offsets, record_batch, Broker, RawClient};
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::create_partitions_request::{CreatePartitionsRequest, CreatePartitionsTopic};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsResponse;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::create_topics_response::CreateTopicsResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchResponse;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsResponse;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const UNSUPPORTED_VERSION: i16 = 35;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
const INVALID_RECORD: i16 = 87;
const INVALID_REQUIRED_ACKS: i16 = 21;
const INVALID_PARTITIONS: i16 = 37;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create(client: &mut RawClient, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let configs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(k.to_string()))
                .with_value(Some(StrBytes::from_string(v.to_string())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(configs)]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(
        response.topics[0].error_code, 0,
        "{:?}",
        response.topics[0].error_message
    );
}

fn produce(client: &mut RawClient, topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    client.call(ApiKey::Produce, 9, &request)
}

fn produce_error(client: &mut RawClient, topic: &str, partition: i32, records: Bytes) -> i16 {
    produce(client, topic, partition, -1, records).responses[0].partition_responses[0].error_code
}

fn fetch_request(
    topic: &str,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
    partition_max: i32,
    max: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(
            vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(partition_max)],
        )])
}

#[test]
fn produce_errors_carry_kafkas_codes() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    create(&mut client, "errors", 1, &[]);

    let good = record_batch(&[b"hello"], 1000);
    let answer = produce(&mut client, "errors", 0, -1, good.clone());
    let p = &answer.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset, p.log_append_time_ms, p.log_start_offset),
        (0, 0, -1, 0)
    );

    assert_eq!(
        produce_error(&mut client, "errors", 7, good.clone()),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        produce_error(&mut client, "nowhere", 0, good.clone()),
        UNKNOWN_TOPIC_OR_PARTITION
    );

    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(produce_error(&mut client, "errors", 0, corrupt.into()), CORRUPT_MESSAGE);

    let mut magic1 = good.to_vec();
    magic1[16] = 1;
    assert_eq!(
        produce_error(&mut client, "errors", 0, magic1.into()),
        UNSUPPORTED_FOR_MESSAGE_FORMAT
    );

    let big = vec![b'x'; 1_100_000];
    assert_eq!(
        produce_error(&mut client, "errors", 0, record_batch(&[&big], 1000)),
        MESSAGE_TOO_LARGE
    );

    // Two batches in one partition's records: Kafka requires exactly one.
    let mut two = good.to_vec();
    two.extend_from_slice(&good);
    assert_eq!(produce_error(&mut client, "errors", 0, two.into()), INVALID_RECORD);

    let bad_acks = produce(&mut client, "errors", 0, 2, good.clone());
    assert_eq!(
        bad_acks.responses[0].partition_responses[0].error_code,
        INVALID_REQUIRED_ACKS
    );

    // None of the refused batches took an offset.
    let answer = produce(&mut client, "errors", 0, 1, good);
    assert_eq!(answer.responses[0].partition_responses[0].base_offset, 1);
}

#[test]
fn idempotent_retries_get_the_original_offsets() {
    use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
    use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    create(&mut client, "idem", 1, &[]);
    let init = InitProducerIdRequest::default().with_transaction_timeout_ms(60_000);
    let a: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &init);
    let b: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &init);
    assert_eq!((a.error_code, a.producer_epoch), (0, 0));
    assert_ne!(a.producer_id, b.producer_id, "every producer gets its own id");
    let batch = |sequence: i32| {
        let mut b = record_batch(&[b"once", b"only"], 1).to_vec();
        b[43..51].copy_from_slice(&a.producer_id.0.to_be_bytes());
        b[51..53].copy_from_slice(&0i16.to_be_bytes());
        b[53..57].copy_from_slice(&sequence.to_be_bytes());
        let crc = compat_tests::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    };
    let first = produce(&mut client, "idem", 0, -1, batch(0));
    let retry = produce(&mut client, "idem", 0, -1, batch(0));
    let offset = |r: &ProduceResponse| {
        (
            r.responses[0].partition_responses[0].error_code,
            r.responses[0].partition_responses[0].base_offset,
        )
    };
    assert_eq!(offset(&first), (0, 0));
    assert_eq!(offset(&retry), (0, 0), "a retry is answered with the original offset");
    const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    assert_eq!(
        offset(&produce(&mut client, "idem", 0, -1, batch(7))).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(offset(&produce(&mut client, "idem", 0, -1, batch(2))), (0, 2));
    let r: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("idem", 0, 0, 1, 1 << 20, 1 << 20));
    assert_eq!(
        batch_offsets(r.responses[0].partitions[0].records.clone().unwrap()),
        vec![(0, 2), (2, 2)]
    );
}

#[test]
fn log_append_time_topics_stamp_the_broker_time() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    create(
        &mut client,
        "stamped",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let answer = produce(&mut client, "stamped", 0, 1, record_batch(&[b"a"], 42));
    let stamped = answer.responses[0].partition_responses[0].log_append_time_ms;
    assert!(
        stamped >= before - 1000,
        "log_append_time_ms {stamped} must be the broker's clock"
    );
}

#[test]
fn fetch_long_poll_returns_as_soon_as_data_arrives() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    create(&mut client, "poll", 1, &[]);
    let addr = broker.addr.clone();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let mut producer = RawClient::connect(&addr);
        produce(&mut producer, "poll", 0, 1, record_batch(&[b"wake up"], 1));
    });
    let started = Instant::now();
    let response: FetchResponse = client.call(
        ApiKey::Fetch,
        12,
        &fetch_request("poll", 0, 20_000, 1, 1 << 20, 1 << 20),
    );
    let waited = started.elapsed();
    producer.join().unwrap();
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(batch_offsets(p.records.clone().unwrap()), vec![(0, 1)]);
    assert!(
        waited < Duration::from_secs(10),
        "fetch waited {waited:?} with max_wait 20 s although data came at 0.5 s"
    );
    assert!(
        waited >= Duration::from_millis(400),
        "fetch returned before any data existed"
    );

    // With nothing to read, the fetch waits out max_wait_ms and returns empty.
    let started = Instant::now();
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("poll", 1, 300, 1, 1 << 20, 1 << 20));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(response.responses[0].partitions[0]
        .records
        .as_ref()
        .is_none_or(|r| r.is_empty()));
    assert_eq!(response.responses[0].partitions[0].high_watermark, 1);
}

#[test]
fn fetch_limits_follow_kip_74_and_report_out_of_range() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    create(&mut client, "limits", 1, &[]);
    let payload = vec![b'p'; 1000];
    for _ in 0..5 {
        produce(&mut client, "limits", 0, 1, record_batch(&[&payload], 1));
    }
    // partition_max_bytes of 10 still returns the first whole batch.
    let r: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("limits", 0, 0, 1, 10, 1 << 20));
    assert_eq!(
        batch_offsets(r.responses[0].partitions[0].records.clone().unwrap()),
        vec![(0, 1)]
    );
    // 2500 bytes hold two whole batches of ~1070 bytes.
    let r: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("limits", 1, 0, 1, 1 << 20, 2500));
    assert_eq!(
        batch_offsets(r.responses[0].partitions[0].records.clone().unwrap()),
        vec![(1, 1), (2, 1)]
    );
    let p = &r.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.log_start_offset, p.last_stable_offset), (5, 0, 5));
    let r: FetchResponse = client.call(ApiKey::Fetch, 12, &fetch_request("limits", 99, 0, 1, 1 << 20, 1 << 20));
    assert_eq!(r.responses[0].partitions[0].error_code, OFFSET_OUT_OF_RANGE);
}

#[test]
fn list_offsets_earliest_latest_max_timestamp_and_by_time() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    create(&mut client, "offsets", 1, &[]);
    for ts in [1000, 5000, 3000] {
        produce(&mut client, "offsets", 0, 1, record_batch(&[b"a", b"b"], ts));
    }
    let query = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("offsets"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(ts)])])
    };
    let mut ask = |ts: i64| {
        let r: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 8, &query(ts));
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.offset, p.timestamp)
    };
    assert_eq!(ask(-2), (0, 0, -1));
    assert_eq!(ask(-1), (0, 6, -1));
    assert_eq!(
        ask(-3),
        (0, 3, 5000),
        "max timestamp: the last record of the 5000 batch"
    );
    assert_eq!(ask(4000).1, 2, "first record at or after 4000 is offset 2 (time 5000)");
    assert_eq!(ask(9000), (0, -1, -1));
}

#[test]
fn metadata_ids_survive_restart_and_bad_names_are_refused() {
    let mut broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    create(&mut client, "ids", 3, &[]);
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(name("ids"))),
        MetadataRequestTopic::default().with_name(Some(name("bad name!"))),
    ]));
    let before: MetadataResponse = client.call(ApiKey::Metadata, 12, &request);
    assert_eq!(before.topics[0].partitions.len(), 3);
    assert_eq!(before.topics[1].error_code, INVALID_TOPIC_EXCEPTION);
    assert!(!before.topics[0].topic_id.is_nil(), "topics have ids");
    broker.restart();
    let mut client = RawClient::connect(&broker.addr);
    let after: MetadataResponse = client.call(ApiKey::Metadata, 12, &request);
    assert_eq!(
        after.cluster_id, before.cluster_id,
        "cluster id is stable across restarts"
    );
    assert_eq!(
        after.topics[0].topic_id, before.topics[0].topic_id,
        "topic id is stable across restarts"
    );
}

#[test]
fn api_versions_lists_the_handlers_and_answers_a_too_new_request_with_v0() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    let r: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    let keys: Vec<i16> = r.api_keys.iter().map(|k| k.api_key).collect();
    for key in [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::ApiVersions,
    ] {
        assert!(keys.contains(&(key as i16)), "{key:?} missing from {keys:?}");
    }
    let fetch = r.api_keys.iter().find(|k| k.api_key == ApiKey::Fetch as i16).unwrap();
    assert!(
        fetch.max_version <= 12,
        "Fetch v13+ needs topic ids, which are not routed"
    );

    // A version from the future gets UNSUPPORTED_VERSION in a v0 body.
    let mut raw = RawClient::connect(&broker.addr);
    let mut frame = Vec::new();
    frame.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    frame.extend_from_slice(&99i16.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&(-1i16).to_be_bytes());
    raw.send_frame(&frame);
    let mut answer = raw.read_frame().expect("an answer, not a closed connection");
    use bytes::Buf;
    assert_eq!(answer.get_i32(), 7, "correlation id");
    use kafka_protocol::protocol::Decodable;
    let v0 = ApiVersionsResponse::decode(&mut answer, 0).expect("v0 body");
    assert_eq!(v0.error_code, UNSUPPORTED_VERSION);
    assert!(!v0.api_keys.is_empty());
}

/// Another client keeps working while one connection misbehaves.
fn assert_serving(broker: &mut Broker) {
    assert!(broker.is_running(), "broker died; log:\n{}", broker.log());
    let mut other = RawClient::connect(&broker.addr);
    let r: ApiVersionsResponse = other.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
}

#[test]
fn an_oversized_frame_closes_only_its_connection() {
    let mut broker = Broker::start(&[]);
    let mut bad = RawClient::connect(&broker.addr);
    let mut bystander = RawClient::connect(&broker.addr);
    // Announce 2 GB; socket.request.max.bytes is 100 MiB.
    bad.send_raw(&(2_000_000_000i32).to_be_bytes()).unwrap();
    assert!(bad.is_closed_by_broker());
    let r: ApiVersionsResponse = bystander.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);
    assert_serving(&mut broker);
}

#[test]
fn garbage_frames_close_only_their_connection() {
    let mut broker = Broker::start(&[]);
    let frames: Vec<Vec<u8>> = vec![
        // Metadata v0 whose topic array claims 2^31 entries in 5 bytes: unpatched, enough
        // to make a decoder allocate gigabytes and abort.
        vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xb6],
        // An API key that does not exist.
        vec![0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0, 0],
        // Produce at a version below the lowest served.
        vec![0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 2, 3],
        // Shorter than a request header.
        vec![1, 2, 3],
        // Random bytes.
        (0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(),
    ];
    for frame in frames {
        let mut bad = RawClient::connect(&broker.addr);
        bad.send_frame(&frame);
        assert!(bad.is_closed_by_broker(), "frame {frame:?} should close its connection");
        assert_serving(&mut broker);
    }
}

#[test]
fn responses_leave_in_request_order_and_acks_0_gets_no_answer() {
    let broker = Broker::start(&[]);
    let mut setup = RawClient::connect(&broker.addr);
    create(&mut setup, "ordered", 1, &[]);
    // A long-polling fetch, a fire-and-forget produce, then ApiVersions, all pipelined on
    // one connection before reading anything. ApiVersions finishes first inside the
    // broker, yet its answer must come after the fetch's; the acks=0 produce gets none.
    let mut client = RawClient::connect(&broker.addr);
    let send = |client: &mut RawClient,
                key: ApiKey,
                version: i16,
                correlation_id: i32,
                body: &dyn Fn(&mut bytes::BytesMut)| {
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::protocol::Encodable;
        let mut buf = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body(&mut buf);
        client.send_frame(&buf);
    };
    use kafka_protocol::protocol::Encodable;
    send(&mut client, ApiKey::Fetch, 12, 1, &|b| {
        fetch_request("ordered", 0, 1500, 1, 1 << 20, 1 << 20)
            .encode(b, 12)
            .unwrap()
    });
    let produce = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("ordered"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(record_batch(&[b"x"], 1)))])]);
    send(&mut client, ApiKey::Produce, 9, 2, &|b| produce.encode(b, 9).unwrap());
    send(&mut client, ApiKey::ApiVersions, 3, 3, &|b| {
        ApiVersionsRequest::default().encode(b, 3).unwrap()
    });
    use bytes::Buf;
    let first = client.read_frame().expect("first answer").get_i32();
    let second = client.read_frame().expect("second answer").get_i32();
    assert_eq!((first, second), (1, 3), "answers in request order, none for acks=0");
}

#[test]
fn create_topics_validate_only_creates_nothing() {
    let broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    let request = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name("dry-run"))
            .with_num_partitions(3)
            .with_replication_factor(1)]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(
        (response.topics[0].error_code, response.topics[0].num_partitions),
        (0, 3)
    );
    let metadata: MetadataResponse = client.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None));
    assert!(
        metadata
            .topics
            .iter()
            .all(|t| t.name.as_ref().map(|n| n.as_str()) != Some("dry-run")),
        "validate_only must not create the topic"
    );
}

#[test]
fn an_absurd_partition_count_is_refused_and_the_broker_serves_on() {
    let mut broker = Broker::start(&[]);
    let mut client = RawClient::connect(&broker.addr);
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name("huge"))
            .with_num_partitions(2_000_000_000)
            .with_replication_factor(1)]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(response.topics[0].error_code, INVALID_PARTITIONS);
    assert_serving(&mut broker);
}

/// A second broker started by mistake on a running one's port or data directory is
/// refused (SO_REUSEPORT would otherwise let it join the port and split connections,
/// and two processes would append to the same segments); the first goes on serving.
#[test]
fn a_second_broker_on_the_same_port_or_data_directory_is_refused() {
    use std::process::Command;
    let broker = Broker::start(&[]);
    let other = tempfile::tempdir().expect("temp dir");
    let attempts = [
        (broker.addr.clone(), other.path().join("data"), "is listening there"),
        (
            "127.0.0.1:0".to_string(),
            broker.data_dir().join("data"),
            "in use by another sluice process",
        ),
    ];
    for (listen, data_dir, why) in attempts {
        let out = Command::new(compat_tests::sluice_bin())
            .args(["--listen", &listen, "--metrics-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("run sluice");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a second broker started on {listen} / {}",
            data_dir.display()
        );
        assert!(err.contains(why), "{err}");
    }
    let mut client = RawClient::connect(&broker.addr);
    let answer: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(answer.error_code, 0);
}

/// A CreateTopics the broker cannot satisfy (here: one partition's directory cannot
/// be made, because a file of that name is in the way) leaves no trace: the client
/// gets the error, Metadata does not list the topic, the directories it made are
/// gone, a smaller topic still works, and a restart agrees. The same for a
/// CreatePartitions.
#[test]
fn a_topic_whose_storage_cannot_be_created_leaves_no_trace() {
    let mut broker = Broker::start(&[]);
    std::fs::write(broker.data_dir().join("data").join("too-big-150"), b"in the way").expect("plant a file");
    let mut client = RawClient::connect(&broker.addr);
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(name("too-big"))
            .with_num_partitions(300)
            .with_replication_factor(1)]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(
        response.topics[0].error_code,
        kafka_protocol::ResponseError::KafkaStorageError.code(),
        "{:?}",
        response.topics[0].error_message
    );
    // Every topic Metadata lists, with its partition count.
    let topics = |client: &mut RawClient| -> HashMap<String, usize> {
        let m: MetadataResponse = client.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None));
        m.topics
            .iter()
            .filter_map(|t| Some((t.name.as_ref()?.to_string(), t.partitions.len())))
            .collect()
    };
    let listed = |client: &mut RawClient| -> Vec<String> { topics(client).into_keys().collect() };
    assert!(
        !listed(&mut client).contains(&"too-big".to_string()),
        "the refused topic is listed; log:\n{}",
        broker.log()
    );
    let leftovers = |b: &Broker| {
        std::fs::read_dir(b.data_dir().join("data"))
            .expect("data dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("too-big-") && e.path().is_dir())
            .count()
    };
    assert_eq!(
        leftovers(&broker),
        0,
        "partition directories of the refused topic remain"
    );
    create(&mut client, "fits", 4, &[]);
    assert!(listed(&mut client).contains(&"fits".to_string()));
    // CreatePartitions the same way: a new partition's directory cannot be made, so
    // the topic keeps its 4 partitions and none of the new directories stay.
    std::fs::write(broker.data_dir().join("data").join("fits-7"), b"in the way").expect("plant a file");
    let grow = CreatePartitionsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(name("fits"))
            .with_count(10)
            .with_assignments(None)]);
    let grown: CreatePartitionsResponse = client.call(ApiKey::CreatePartitions, 3, &grow);
    assert_eq!(
        grown.results[0].error_code,
        kafka_protocol::ResponseError::KafkaStorageError.code(),
        "{:?}",
        grown.results[0].error_message
    );
    let partitions_of =
        |client: &mut RawClient, topic: &str| -> usize { topics(client).get(topic).copied().unwrap_or(0) };
    assert_eq!(
        partitions_of(&mut client, "fits"),
        4,
        "Metadata lists partitions that do not exist"
    );
    let grown_dirs = |b: &Broker| {
        (4..10)
            .filter(|p| b.data_dir().join("data").join(format!("fits-{p}")).is_dir())
            .count()
    };
    assert_eq!(grown_dirs(&broker), 0, "directories of the refused partitions remain");
    broker.restart();
    let mut client = RawClient::connect(&broker.addr);
    let topics = listed(&mut client);
    assert!(
        topics.contains(&"fits".to_string()) && !topics.contains(&"too-big".to_string()),
        "{topics:?}"
    );
    assert_eq!(partitions_of(&mut client, "fits"), 4);
    assert_eq!(leftovers(&broker), 0);
    assert_eq!(grown_dirs(&broker), 0);
}

/// Idle connections use up the connections' share of the descriptors (under
/// `ulimit -n 256`: 128): the ones over it are closed at accept and counted, existing
/// clients go on being answered, and once the idle connections close the broker
/// answers new clients again by itself.
#[test]
fn running_out_of_descriptors_for_connections_never_wedges_the_broker() {
    let broker = Broker::start_under(&["prlimit", "--nofile=256:256"], &[]);
    assert!(broker.log().contains("descriptor budget"), "{}", broker.log());
    let mut existing = RawClient::connect(&broker.addr);
    let versions = |client: &mut RawClient| -> i16 {
        let answer: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        answer.error_code
    };
    assert_eq!(versions(&mut existing), 0);
    create(&mut existing, "busy", 1, &[]);
    // More connections than the broker has descriptors: the kernel completes them into
    // the accept queue, and the broker closes those over its share.
    let idle: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(&broker.addr).ok())
        .collect();
    assert!(idle.len() > 256, "only {} connections were made", idle.len());
    let turned_away = || -> f64 {
        compat_tests::http_get(&broker.metrics_addr, "/metrics")
            .map(|(_, body)| {
                body.lines()
                    .filter(|l| {
                        l.starts_with("sluice_accept_errors_total")
                            || l.starts_with("sluice_connections_refused_total{limit=\"descriptors\"}")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0)
    };
    // The existing client produces and reads back meanwhile (acks=all: written and
    // synced, so segment files open and close under the budget too).
    for i in 0..20i64 {
        let value = format!("while-full-{i}");
        let answer = produce(&mut existing, "busy", 0, -1, record_batch(&[value.as_bytes()], 0));
        let partition = &answer.responses[0].partition_responses[0];
        assert_eq!((partition.error_code, partition.base_offset), (0, i), "produce {i}");
        let r: FetchResponse = existing.call(ApiKey::Fetch, 12, &fetch_request("busy", i, 0, 1, 1 << 20, 1 << 20));
        let records = r.responses[0].partitions[0].records.clone().expect("records");
        assert_eq!(batch_offsets(records), vec![(i, 1)], "fetch {i}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refused = turned_away();
    while refused < 250.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        refused = turned_away();
    }
    assert!(
        refused >= 250.0,
        "only {refused} connections over the share were turned away"
    );
    drop(idle);
    // Back to normal without a restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fresh = RawClient::connect(&broker.addr);
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| versions(&mut fresh)));
        if answered.is_ok_and(|code| code == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "new clients stayed unanswered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(versions(&mut existing), 0);
}

/// A raw client whose connection comes from `local` (any 127.x address is this
/// machine), to be another IP address to the broker.
fn connect_from(local: &str, addr: &str) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr.parse().unwrap()).await.unwrap().into_std().unwrap();
        // tokio hands the socket over in non-blocking mode.
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

fn scrape_value(broker: &Broker, series: &str) -> f64 {
    broker.metric(series).unwrap_or(0.0)
}

/// Whether the broker answers ApiVersions on `stream` (false: it closed it).
fn answers(stream: &std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    let mut stream = stream;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // ApiVersions v0, correlation id 7, no client id.
    let request = [0u8, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff];
    if stream.write_all(&request).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return false;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).is_ok() && body[..4] == [0, 0, 0, 7]
}

/// `max.connections.per.ip=50`: the 51st connection from 127.0.0.1 is closed at once
/// and counted while the 50 keep being answered; an address with an override of 60
/// holds 60; a closed connection frees its place; `max.connections` caps the total.
#[test]
fn connections_over_the_per_ip_and_total_limits_are_closed_and_counted() {
    let broker = Broker::start(&[
        "--max-connections-per-ip",
        "50",
        "--max-connections-per-ip-overrides",
        "127.0.0.2:60",
        "--max-connections",
        "115",
    ]);
    // The start-up check's own connection must be gone before counting from zero.
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape_value(&broker, "sluice_connections_open") != 0.0 {
        assert!(Instant::now() < deadline, "a connection stayed open");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut first: Vec<std::net::TcpStream> = (0..50).map(|_| connect_from("127.0.0.1", &broker.addr)).collect();
    assert!(first.iter().all(answers), "the first 50 are served");
    let over = connect_from("127.0.0.1", &broker.addr);
    assert!(!answers(&over), "the 51st from 127.0.0.1 must be closed");
    assert_eq!(
        scrape_value(
            &broker,
            "sluice_connections_refused_total{limit=\"max.connections.per.ip\"}"
        ),
        1.0
    );
    assert!(first.iter().all(answers), "the 50 keep working");
    let second: Vec<std::net::TcpStream> = (0..60).map(|_| connect_from("127.0.0.2", &broker.addr)).collect();
    assert!(second.iter().all(answers), "127.0.0.2's override lets it hold 60");
    assert!(!answers(&connect_from("127.0.0.2", &broker.addr)), "but not 61");
    // 110 open: five more from a third address fit under max.connections (115), the
    // sixth does not.
    let third: Vec<std::net::TcpStream> = (0..5).map(|_| connect_from("127.0.0.3", &broker.addr)).collect();
    assert!(third.iter().all(answers));
    assert!(
        !answers(&connect_from("127.0.0.3", &broker.addr)),
        "over max.connections"
    );
    assert_eq!(
        scrape_value(&broker, "sluice_connections_refused_total{limit=\"max.connections\"}"),
        1.0
    );
    // A connection that closes gives its place back.
    drop(first.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = connect_from("127.0.0.1", &broker.addr);
        if answers(&again) {
            break;
        }
        assert!(Instant::now() < deadline, "a freed place was never taken again");
        std::thread::sleep(Duration::from_millis(100));
    }
}
