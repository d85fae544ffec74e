//! Exactly-once (KIP-98): transactional producers through librdkafka (the `rdkafka`
//! crate) and confluent-kafka, `read_committed` consumers through librdkafka and
//! kafka-python, a consume-transform-produce application killed at random points, a
//! broker killed with a transaction open, zombie fencing, and the coordinator's error
//! codes on the wire.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compat_tests::{create_topic, Broker, RawClient};
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, ProduceResponse,
    ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;
const TIMEOUT: Duration = Duration::from_secs(30);

fn python() -> &'static str {
    "python3"
}

fn script(name: &str) -> String {
    format!("{}/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn transactional_producer(broker: &Broker, id: &str, extra: &[(&str, &str)]) -> BaseProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.addr)
        .set("transactional.id", id)
        .set("linger.ms", "5");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let producer: BaseProducer = config.create().expect("producer");
    producer.init_transactions(TIMEOUT).expect("init_transactions");
    producer
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, value: &str) {
    let mut record = BaseRecord::<str, str>::to(topic).partition(partition).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((e, r)) => {
                // A full queue: let deliveries drain, then try again.
                assert!(
                    matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "{e}"
                );
                producer.poll(Duration::from_millis(10));
                record = r;
            }
        }
    }
}

/// Every record of `topic` with librdkafka at `isolation`, per partition in offset
/// order, once the consumer has read to the end it saw for `settle` without new data.
fn read_rdkafka(broker: &Broker, topic: &str, isolation: &str, expected: usize) -> BTreeMap<i32, Vec<String>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", format!("reader-{topic}-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    let mut count = 0;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                out.entry(m.partition()).or_default().push(value);
                count += 1;
                quiet_since = Instant::now();
            }
            Some(Err(e)) => panic!("consume: {e}"),
            // Read what is expected, then make sure nothing more arrives.
            None if count >= expected && quiet_since.elapsed() > Duration::from_secs(2) => break,
            None => {}
        }
    }
    out
}

/// Every record of `topic` up to its end offsets, with kafka-python at `isolation`.
fn read_kafka_python(broker: &Broker, topic: &str, isolation: &str) -> BTreeMap<i32, Vec<String>> {
    let out = Command::new(python())
        .args([
            script("read_all.py").as_str(),
            &broker.addr,
            topic,
            &PARTITIONS.to_string(),
            "60",
            isolation,
        ])
        .output()
        .expect("python3 runs (see scripts/install-deps.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut records: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.splitn(4, ' ');
        if fields.next() == Some("rec") {
            let p: i32 = fields.next().and_then(|p| p.parse().ok()).expect("partition");
            let _offset = fields.next();
            records
                .entry(p)
                .or_default()
                .push(fields.next().unwrap_or_default().to_string());
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn read_committed_consumers_see_exactly_the_committed_transactions() {
    let broker = Broker::start(&[]);
    let topic = "txn-mixed";
    create_topic(&broker, topic, PARTITIONS).await;
    let producer = transactional_producer(&broker, "txn-mixed-producer", &[]);
    // 20 transactions of 500 records over 6 partitions; every third is aborted (after
    // its records reached the broker, so the log holds them).
    let mut committed: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut everything: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for txn in 0..20 {
        producer.begin_transaction().expect("begin");
        let mut written: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for i in 0..500 {
            let partition = i % PARTITIONS;
            let value = format!("t{txn}-r{i}");
            send(&producer, topic, partition, &value);
            written.entry(partition).or_default().push(value);
        }
        producer.flush(TIMEOUT).expect("flush");
        for (p, values) in &written {
            everything.entry(*p).or_default().extend(values.iter().cloned());
        }
        if txn % 3 == 2 {
            producer.abort_transaction(TIMEOUT).expect("abort");
        } else {
            producer.commit_transaction(TIMEOUT).expect("commit");
            for (p, values) in written {
                committed.entry(p).or_default().extend(values);
            }
        }
    }
    let committed_count: usize = committed.values().map(Vec::len).sum();
    assert_eq!(committed_count, 14 * 500);
    let read = read_rdkafka(&broker, topic, "read_committed", committed_count);
    assert_eq!(read, committed, "librdkafka read_committed");
    let read = read_kafka_python(&broker, topic, "read_committed");
    assert_eq!(read, committed, "kafka-python read_committed");
    let read = read_rdkafka(&broker, topic, "read_uncommitted", 20 * 500);
    assert_eq!(read, everything, "librdkafka read_uncommitted sees aborted records too");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zombie_producer_is_fenced_and_its_open_transaction_aborted() {
    let broker = Broker::start(&[]);
    let topic = "txn-zombie";
    create_topic(&broker, topic, PARTITIONS).await;
    let zombie = transactional_producer(&broker, "txn-zombie-id", &[]);
    zombie.begin_transaction().expect("begin");
    for i in 0..50 {
        send(&zombie, topic, i % PARTITIONS, &format!("zombie-{i}"));
    }
    zombie.flush(TIMEOUT).expect("flush");
    // The same transactional id starts again elsewhere: the open transaction is
    // aborted and the old producer fenced.
    let successor = transactional_producer(&broker, "txn-zombie-id", &[]);
    let fenced = zombie.commit_transaction(TIMEOUT);
    assert!(fenced.is_err(), "the zombie's commit must fail");
    let after = zombie
        .begin_transaction()
        .and_then(|()| zombie.commit_transaction(TIMEOUT));
    assert!(after.is_err(), "a fenced producer cannot go on");
    successor.begin_transaction().expect("begin");
    for i in 0..30 {
        send(&successor, topic, i % PARTITIONS, &format!("successor-{i}"));
    }
    successor.commit_transaction(TIMEOUT).expect("commit");
    let read = read_rdkafka(&broker, topic, "read_committed", 30);
    let values: Vec<&String> = read.values().flatten().collect();
    assert_eq!(values.len(), 30, "{values:?}");
    assert!(values.iter().all(|v| v.starts_with("successor-")), "{values:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_open_when_the_broker_is_killed_is_aborted_after_restart() {
    let mut broker = Broker::start(&["--transaction-abort-timed-out-transaction-cleanup-interval-ms", "200"]);
    let topic = "txn-crash";
    create_topic(&broker, topic, PARTITIONS).await;
    {
        let producer = transactional_producer(&broker, "txn-crash-id", &[("transaction.timeout.ms", "3000")]);
        producer.begin_transaction().expect("begin");
        for i in 0..100 {
            send(&producer, topic, i % PARTITIONS, &format!("open-{i}"));
        }
        producer.flush(TIMEOUT).expect("flush");
        broker.kill9();
        // The producer dies with the broker (as an application would be cut off).
    }
    broker.restart();
    // The open transaction is never half-visible: read_committed sees nothing until the
    // coordinator aborts it (its timeout passes), then the stable offset moves past it.
    let started = Instant::now();
    let lso_moved = loop {
        let read = read_kafka_python(&broker, topic, "read_committed");
        assert!(read.values().flatten().next().is_none(), "{read:?}");
        if stable_equals_high_watermark(&broker, topic) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(lso_moved, "the last stable offset never reached the high watermark");
    // The producer's successor goes on after init_transactions.
    let producer = transactional_producer(&broker, "txn-crash-id", &[]);
    producer.begin_transaction().expect("begin");
    for i in 0..40 {
        send(&producer, topic, i % PARTITIONS, &format!("after-{i}"));
    }
    producer.commit_transaction(TIMEOUT).expect("commit");
    let read = read_rdkafka(&broker, topic, "read_committed", 40);
    let values: Vec<&String> = read.values().flatten().collect();
    assert_eq!(values.len(), 40, "{values:?}");
    assert!(values.iter().all(|v| v.starts_with("after-")), "{values:?}");
    let log = broker.log();
    assert!(log.contains("aborting a transaction past its timeout"), "{log}");
}

/// Whether ListOffsets latest under read_committed equals read_uncommitted's, for every
/// partition of `topic` (no transaction holds the stable offset back).
fn stable_equals_high_watermark(broker: &Broker, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let uncommitted: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    (0..PARTITIONS).all(|p| {
        let stable = consumer.fetch_watermarks(topic, p, Duration::from_secs(5));
        let marks = uncommitted.fetch_watermarks(topic, p, Duration::from_secs(5));
        matches!((stable, marks), (Ok((_, s)), Ok((_, h))) if s == h)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn consume_transform_produce_killed_at_random_points_writes_each_input_once() {
    let broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    create_topic(&broker, "ctp-in", PARTITIONS).await;
    create_topic(&broker, "ctp-out", PARTITIONS).await;
    let input: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    const INPUTS: usize = 3000;
    for i in 0..INPUTS {
        let value = format!("input-{i:05}");
        let record = BaseRecord::<str, str>::to("ctp-in")
            .partition((i % PARTITIONS as usize) as i32)
            .payload(&value);
        input.send(record).map_err(|(e, _)| e).expect("send");
        if i % 500 == 0 {
            input.poll(Duration::ZERO);
        }
    }
    input.flush(TIMEOUT).expect("flush input");
    let run = |idle: &str| {
        Command::new(python())
            .args([
                script("transform.py").as_str(),
                &broker.addr,
                "ctp-in",
                "ctp-out",
                "ctp-group",
                "ctp-app",
                idle,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs")
    };
    // 20 runs of the application, each `kill -9`ed after a pseudo-random 0.5–2.4 s
    // (a fixed sequence, so a failure can be replayed).
    let mut seed: u64 = 0x5eed_cafe;
    for _ in 0..20 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let millis = 500 + (seed >> 33) % 1900;
        let mut app = run("60");
        std::thread::sleep(Duration::from_millis(millis));
        let _ = app.kill();
        let _ = app.wait();
    }
    // A last run to the end.
    let last = run("5").wait_with_output().expect("last run");
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    let out = read_kafka_python(&broker, "ctp-out", "read_committed");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for v in out.values().flatten() {
        *seen.entry(v.clone()).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "written more than once: {duplicated:?}");
    let missing: Vec<String> = (0..INPUTS)
        .map(|i| format!("INPUT-{i:05}"))
        .filter(|v| !seen.contains_key(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} inputs never written, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len(), INPUTS);
}

/// One record in a batch of producer `pid`/`epoch` at `sequence`, transactional or not.
fn producer_batch(pid: i64, epoch: i16, sequence: i32, transactional: bool) -> bytes::Bytes {
    let mut b = compat_tests::record_batch(&[b"wire"], 0).to_vec();
    let attributes: i16 = if transactional { 0x10 } else { 0 };
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = compat_tests::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}

fn txn_id(s: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(s.to_string()))
}

#[test]
fn the_coordinator_answers_kafkas_error_codes() {
    let broker = Broker::start(&["--transaction-max-timeout-ms", "60000"]);
    let mut client = RawClient::connect(&broker.addr);
    let found: FindCoordinatorResponse = client.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("wire-txn"))
            .with_key_type(1),
    );
    assert_eq!(found.error_code, 0);
    assert_eq!(found.node_id.0, 1);
    let init = |client: &mut RawClient, timeout_ms: i32| -> InitProducerIdResponse {
        client.call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(txn_id("wire-txn")))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
    };
    // The coordinator's partitions load right after the topic is made.
    let started = Instant::now();
    let mut first = init(&mut client, 60001);
    while first.error_code != 50 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        first = init(&mut client, 60001);
    }
    assert_eq!(first.error_code, 50, "INVALID_TRANSACTION_TIMEOUT");
    let ok = init(&mut client, 10000);
    assert_eq!(ok.error_code, 0);
    let (pid, epoch) = (ok.producer_id, ok.producer_epoch);
    let end = |client: &mut RawClient, pid: i64, epoch: i16| -> EndTxnResponse {
        client.call(
            ApiKey::EndTxn,
            3,
            &EndTxnRequest::default()
                .with_transactional_id(txn_id("wire-txn"))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_committed(true),
        )
    };
    assert_eq!(end(&mut client, pid.0, epoch).error_code, 48, "INVALID_TXN_STATE");
    assert_eq!(
        end(&mut client, pid.0 + 1, epoch).error_code,
        49,
        "INVALID_PRODUCER_ID_MAPPING"
    );
    assert_eq!(end(&mut client, pid.0, epoch - 1).error_code, 90, "PRODUCER_FENCED");
    let add = |client: &mut RawClient, topic: &str| -> AddPartitionsToTxnResponse {
        client.call(
            ApiKey::AddPartitionsToTxn,
            3,
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(txn_id("wire-txn"))
                .with_v3_and_below_producer_id(pid)
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![
                    kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![0]),
                ]),
        )
    };
    let unknown = add(&mut client, "no-such-topic");
    assert_eq!(
        unknown.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    // A topic made by Metadata's auto-creation, then a real transaction.
    let _ = client.call::<_, kafka_protocol::messages::MetadataResponse>(
        ApiKey::Metadata,
        9,
        &kafka_protocol::messages::MetadataRequest::default()
            .with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("wire-txn-topic")))),
            ]))
            .with_allow_auto_topic_creation(true),
    );
    // KIP-890: a transactional batch for a partition the transaction never added is
    // refused (the coordinator says it is not in the transaction).
    let produce = |client: &mut RawClient, transactional: bool, sequence: i32| -> i16 {
        let batch = producer_batch(pid.0, epoch, sequence, transactional);
        let request = ProduceRequest::default()
            .with_transactional_id(Some(txn_id("wire-txn")))
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("wire-txn-topic")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
        response.responses[0].partition_responses[0].error_code
    };
    assert_eq!(
        produce(&mut client, true, 0),
        48,
        "INVALID_TXN_STATE before AddPartitionsToTxn"
    );
    let added = add(&mut client, "wire-txn-topic");
    assert_eq!(
        added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    assert_eq!(produce(&mut client, true, 0), 0, "the added partition takes the batch");
    assert_eq!(
        produce(&mut client, false, 1),
        48,
        "a non-transactional batch while the producer's transaction is open"
    );
    assert_eq!(end(&mut client, pid.0, epoch).error_code, 0);
    // A retried EndTxn of the same outcome succeeds again; the other outcome is refused.
    assert_eq!(end(&mut client, pid.0, epoch).error_code, 0);
    let abort: EndTxnResponse = client.call(
        ApiKey::EndTxn,
        3,
        &EndTxnRequest::default()
            .with_transactional_id(txn_id("wire-txn"))
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_committed(false),
    );
    assert_eq!(abort.error_code, 48, "INVALID_TXN_STATE");
}
